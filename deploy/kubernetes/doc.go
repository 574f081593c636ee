// Package kubernetes holds sstrace's DaemonSet manifest
// (sstrace-daemonset.yaml) and its test, which decodes the manifest
// strictly into the Kubernetes API types and checks it against the daemon
// it runs: its flags, its probe, the systemd unit's capabilities. It is a
// module of its own so that the sstrace module does not depend on k8s.io.
package kubernetes
