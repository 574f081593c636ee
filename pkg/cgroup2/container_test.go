package cgroup2

import (
	"strings"
	"testing"
)

// TestContainerID reads the cgroup paths each runtime makes, as they
// appear in /proc/PID/cgroup on real hosts, under both cgroup drivers.
func TestContainerID(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4)
	other := strings.Repeat("fedcba9876543210", 4)
	for _, c := range []struct {
		path, want string
	}{
		// Docker: systemd driver, cgroupfs driver, rootless.
		{"/system.slice/docker-" + id + ".scope", id},
		{"/docker/" + id, id},
		{"/user.slice/user-1000.slice/user@1000.service/user.slice/docker-" + id + ".scope", id},
		// Docker in Docker: the innermost container.
		{"/docker/" + other + "/docker/" + id, id},
		// Kubernetes with containerd: systemd and cgroupfs drivers.
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f0b3e5a_7c2d_4e8b_9a61_0c3d5e7f9a1b.slice/cri-containerd-" + id + ".scope", id},
		{"/kubepods/burstable/pod1f0b3e5a-7c2d-4e8b-9a61-0c3d5e7f9a1b/" + id, id},
		{"/kubepods/pod1f0b3e5a-7c2d-4e8b-9a61-0c3d5e7f9a1b/" + id, id},
		// Kubernetes with CRI-O; its conmon is not the container.
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1f0b3e5a_7c2d.slice/crio-" + id + ".scope", id},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1f0b3e5a_7c2d.slice/crio-conmon-" + id + ".scope", ""},
		// Kubernetes with dockershim.
		{"/kubepods.slice/kubepods-pod1f0b3e5a_7c2d.slice/docker-" + id + ".scope", id},
		// podman: systemd (rootful, rootless, a container's own
		// sub-cgroup) and cgroupfs managers; conmon again.
		{"/machine.slice/libpod-" + id + ".scope", id},
		{"/machine.slice/libpod-" + id + ".scope/container", id},
		{"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope", id},
		{"/libpod_parent/libpod-" + id, id},
		{"/machine.slice/libpod-conmon-" + id + ".scope", ""},
		// containerd through nerdctl.
		{"/system.slice/nerdctl-" + id + ".scope", id},
		// Not containers: the root, services, slices, a pod's own
		// cgroup, ids of the wrong length or case, units that only look
		// alike.
		{"/", ""},
		{"", ""},
		{"/system.slice/docker.service", ""},
		{"/system.slice/docker-compose.scope", ""},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f0b3e5a_7c2d.slice", ""},
		{"/docker/" + id[:63], ""},
		{"/docker/" + strings.ToUpper(id), ""},
		{"/system.slice/docker-" + id + "0.scope", ""},
		{"/user.slice/user-1000.slice/session-3.scope", ""},
	} {
		if got := ContainerID(c.path); got != c.want {
			t.Errorf("ContainerID(%q) = %q, want %q", c.path, got, c.want)
		}
	}
}
