package cgroup2

import "strings"

// containerPrefixes are the prefixes container runtimes give the cgroup of
// a container, before its id (and, under the systemd cgroup driver, a
// ".scope" suffix after it):
//
//	docker-ID.scope          Docker (dockerd, also under kubepods with dockershim)
//	cri-containerd-ID.scope  containerd's CRI plugin (Kubernetes)
//	crio-ID.scope            CRI-O
//	libpod-ID.scope, libpod-ID   podman (systemd and cgroupfs managers)
//	nerdctl-ID.scope         containerd driven by nerdctl
//
// The cgroupfs drivers name the directory by the bare id instead:
// /docker/ID, /kubepods/burstable/podUID/ID. A runtime's monitor (CRI-O's
// and podman's conmon, in crio-conmon-ID.scope and libpod-conmon-ID.scope)
// is not the container and is not taken for it.
var containerPrefixes = []string{"docker-", "cri-containerd-", "crio-", "libpod-", "nerdctl-"}

// ContainerID returns the id of the container a cgroup path names, or ""
// when it names none. The innermost component that names one wins (Docker
// in Docker, a container's own sub-cgroups such as libpod-ID.scope/container),
// so the components are read from the last. Every runtime above uses 64
// lowercase hex digits: a component is taken for a container only with
// such an id, so that a unit like docker-compose.scope is not one.
func ContainerID(path string) string {
	for path != "" {
		i := strings.LastIndexByte(path, '/')
		comp := path[i+1:]
		path = path[:max(i, 0)]
		if id, ok := containerComponent(comp); ok {
			return id
		}
	}
	return ""
}

// containerComponent reads one path component as a container's cgroup.
func containerComponent(comp string) (string, bool) {
	comp = strings.TrimSuffix(comp, ".scope")
	if isContainerID(comp) {
		return comp, true
	}
	for _, p := range containerPrefixes {
		if id, ok := strings.CutPrefix(comp, p); ok && isContainerID(id) {
			return id, true
		}
	}
	return "", false
}

// isContainerID reports 64 lowercase hex digits.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
