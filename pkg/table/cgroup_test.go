package table

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/sstrace/sstrace/pkg/cgroup2"
	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestOwnersCgroups: an owner carries its cgroup, named (path and
// container) from real cgroups made like a runtime's: a client's from its
// process-context events, a seeded listener's from the seed, an accepted
// child's from its listener; a softirq's bystander never lends its own;
// and a container's cgroup removed after its connection closed still
// names it.
func TestOwnersCgroups(t *testing.T) {
	dockerID := strings.Repeat("d0c4e2", 10) + "abcd"
	kubeID := strings.Repeat("c0de", 16)
	base := fmt.Sprintf("/sstrace-test-%d.slice", os.Getpid())
	docker := testutil.NewCgroup(t, base+"/docker-"+dockerID+".scope")
	kube := testutil.NewCgroup(t, base+"/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b2c3d_4e5f.slice/cri-containerd-"+kubeID+".scope")
	names, err := cgroup2.NewNames(0)
	if err != nil {
		testutil.Unavailable(t, "cgroup names: %v", err)
	}
	defer names.Close()

	server := event.Task{PID: 100, UID: 0, Comm: "server"}
	client := event.Task{PID: 200, UID: 1000, Comm: "client"}
	lst := newSk(1, "0.0.0.0:80", "0.0.0.0:0", server)
	h := seeded(t, Options{Cgroups: names}, []*sock.Socket{row(lst, sock.Listen, 10)},
		map[uint64]event.Owner{10: {PID: server.PID, Comm: server.Comm, CgroupID: kube.ID}})
	cli := newSk(2, "127.0.0.1:5000", "127.0.0.1:80", client)
	cli.cgroup = docker.ID
	child := newSk(3, "127.0.0.1:80", "127.0.0.1:5000", server)
	h.run(cli, clientOpen[0])
	h.run(child, serverOpen...)
	h.run(cli, clientOpen[1])
	h.run(cli, closeLocalFirst...)
	h.run(child, closePeerFirst[0]) // the FIN, in softirq

	want := func(c Conn, cg *testutil.Cgroup, container string) {
		t.Helper()
		if c.Owner.CgroupID != cg.ID || c.Cgroup != cg.Path || c.Container != container {
			t.Errorf("cookie %d: owner's cgroup %d %q container %q; want %d %q %q",
				c.Cookie, c.Owner.CgroupID, c.Cgroup, c.Container, cg.ID, cg.Path, container)
		}
		j := c.JSON(h.wall(h.now()))
		if j.CgroupID != cg.ID || j.Cgroup != cg.Path || j.Container != container {
			t.Errorf("cookie %d: JSON %d %q %q", c.Cookie, j.CgroupID, j.Cgroup, j.Container)
		}
	}
	want(h.conn(lst.cookie), kube, kubeID)
	want(h.conn(child.cookie), kube, kubeID)
	if err := docker.Remove(); err != nil {
		t.Fatal(err)
	}
	c := h.conn(cli.cookie) // closed, in TIME-WAIT
	if c.FullClosed.IsZero() {
		t.Errorf("client: not closed")
	}
	want(c, docker, dockerID)
}
