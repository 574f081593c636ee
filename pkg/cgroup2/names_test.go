package cgroup2_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/sstrace/sstrace/pkg/cgroup2"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestNames makes real cgroups named like containers' and checks that the
// cache names them by id, keeps naming one after it is removed, and
// resolves nothing for an id that never existed.
func TestNames(t *testing.T) {
	id := strings.Repeat("c0ffee", 10) + "beef"
	base := fmt.Sprintf("/sstrace-test-%d.slice", os.Getpid())
	docker := testutil.NewCgroup(t, base+"/docker-"+id+".scope")
	plain := testutil.NewCgroup(t, base+"/plain.scope")
	n, err := cgroup2.NewNames(0)
	if err != nil {
		testutil.Unavailable(t, "cgroup names: %v", err)
	}
	defer n.Close()

	for _, cg := range []*testutil.Cgroup{docker, plain} {
		n.Intern(cg.ID)
		n.Intern(cg.ID) // the fast path
	}
	if got, ok := n.Lookup(docker.ID); !ok || got.Path != docker.Path || got.Container != id {
		t.Errorf("Lookup(docker) = %+v, %v; want %s, %s", got, ok, docker.Path, id)
	}
	if got, ok := n.Lookup(plain.ID); !ok || got.Path != plain.Path || got.Container != "" {
		t.Errorf("Lookup(plain) = %+v, %v; want %s and no container", got, ok, plain.Path)
	}
	if err := docker.Remove(); err != nil {
		t.Fatal(err)
	}
	n.Intern(docker.ID)
	if got, ok := n.Lookup(docker.ID); !ok || got.Path != docker.Path {
		t.Errorf("after removal: Lookup(docker) = %+v, %v; want it still named %s", got, ok, docker.Path)
	}
	// An id no cgroup has: remembered as unresolved, never named.
	const never = 1 << 62
	n.Intern(never)
	if got, ok := n.Lookup(never); ok {
		t.Errorf("Lookup(never existed) = %+v", got)
	}
	// This process's own cgroup, read from /proc for a process scan's
	// owners.
	self, ok := n.OfProcess(os.Getpid())
	path, err := cgroup2.ProcessPath(os.Getpid())
	if !ok || err != nil {
		t.Fatalf("OfProcess(self) = %d, %v; ProcessPath: %v", self, ok, err)
	}
	if got, ok := n.Lookup(self); !ok || got.Path != path {
		t.Errorf("Lookup(own cgroup %d) = %+v, %v; want %s", self, got, ok, path)
	}
}

// TestNamesBound fills a small cache: it never holds more than its bound,
// and the names seen last are kept.
func TestNamesBound(t *testing.T) {
	base := fmt.Sprintf("/sstrace-test-%d.slice/bound", os.Getpid())
	var cgs []*testutil.Cgroup
	for i := range 20 {
		cgs = append(cgs, testutil.NewCgroup(t, fmt.Sprintf("%s/c%d", base, i)))
	}
	n, err := cgroup2.NewNames(8)
	if err != nil {
		testutil.Unavailable(t, "cgroup names: %v", err)
	}
	defer n.Close()
	for _, cg := range cgs {
		n.Intern(cg.ID)
		n.Intern(cgs[0].ID) // seen all the time: never the least recent
		if n.Len() > 8 {
			t.Fatalf("%d names cached, bound 8", n.Len())
		}
	}
	for _, cg := range []*testutil.Cgroup{cgs[0], cgs[len(cgs)-1]} {
		if got, ok := n.Lookup(cg.ID); !ok || got.Path != cg.Path {
			t.Errorf("Lookup(%s) = %+v, %v after eviction", cg.Path, got, ok)
		}
	}
	if _, ok := n.Lookup(cgs[1].ID); ok {
		t.Errorf("%s, seen once long ago, is still cached", cgs[1].Path)
	}
}

// BenchmarkIntern measures what the table pays per process-context event:
// "same" repeats one cgroup (the last-id check), "alternating" switches
// between two (a map lookup under a read lock). Both are known: the first
// sight of a cgroup (a resolution) happens once per cgroup.
func BenchmarkIntern(b *testing.B) {
	cg := testutil.NewCgroup(b, fmt.Sprintf("/sstrace-test-%d.slice/bench.scope", os.Getpid()))
	n, err := cgroup2.NewNames(0)
	if err != nil {
		testutil.Unavailable(b, "cgroup names: %v", err)
	}
	defer n.Close()
	ids := [2]uint64{1, cg.ID}
	for _, tc := range []struct {
		name string
		mask int
	}{{"same", 0}, {"alternating", 1}} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				n.Intern(ids[i&tc.mask])
			}
		})
	}
}
