package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestResolveErrors: arguments that are not network namespaces fail with a
// message that begins with the argument and names the problem. None of
// these needs privileges.
func TestResolveErrors(t *testing.T) {
	cases := []struct {
		arg, want string
		notExist  bool
	}{
		{"/etc/passwd", "/etc/passwd: not a namespace file", false},
		{"/proc/self/ns/mnt", "/proc/self/ns/mnt: a mount namespace, not a network namespace", false},
		{"/proc/self/ns/uts", "/proc/self/ns/uts: a UTS namespace, not a network namespace", false},
		{"/nonexistent/ns", "/nonexistent/ns: file does not exist", true},
		{"sstrace-no-such-ns", `sstrace-no-such-ns: no network namespace of that name (/run/netns/sstrace-no-such-ns)`, true},
		// Far above any inode the kernel hands out for namespaces.
		{"18446744073709551615", "18446744073709551615: no network namespace with that inode", true},
		{"", `"": empty namespace name`, false},
	}
	for _, c := range cases {
		ns, err := Resolve(c.arg)
		if err == nil {
			t.Errorf("Resolve(%q) = %v, want an error", c.arg, ns)
			continue
		}
		if !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Resolve(%q) error = %q, want it to start with %q", c.arg, err, c.want)
		}
		if c.notExist != errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Resolve(%q): errors.Is(fs.ErrNotExist) = %v, want %v", c.arg, !c.notExist, c.notExist)
		}
	}
}

// TestResolveUnknownInode: only a number that is no namespace's inode
// gives an InodeNotFoundError (a tracer may filter on it all the same);
// other failures do not.
func TestResolveUnknownInode(t *testing.T) {
	_, err := Resolve("4294967000")
	var unknown *InodeNotFoundError
	if !errors.As(err, &unknown) || unknown.Inode != 4294967000 || unknown.Arg != "4294967000" {
		t.Errorf("Resolve(4294967000) = %v, want an InodeNotFoundError for it", err)
	}
	for _, arg := range []string{"/etc/passwd", "/proc/self/ns/mnt", "sstrace-no-such-ns", ""} {
		if _, err := Resolve(arg); err == nil || errors.As(err, &unknown) {
			t.Errorf("Resolve(%q) = %v, want an error that is no InodeNotFoundError", arg, err)
		}
	}
}

// TestResolveNameIgnoresCurrentDirectory: a bare name is looked up under
// /run/netns only, as `ip netns` does, even when the current directory has
// a namespace file of that name.
func TestResolveNameIgnoresCurrentDirectory(t *testing.T) {
	dir := t.TempDir()
	const name = "sstrace-cwd-ns"
	if err := os.Symlink("/proc/self/ns/net", filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if ns, err := Resolve(name); err == nil {
		t.Fatalf("Resolve(%q) = %v, resolved from the current directory", name, ns)
	}
	// Written as a path, the same file is accepted.
	ns, err := Resolve("./" + name)
	if err != nil {
		t.Fatalf("Resolve(./%s): %v", name, err)
	}
	if ns.Path != "./"+name {
		t.Errorf("Resolve(./%s) = %v", name, ns)
	}
}

// TestResolveOwn: the caller's namespace by path and by inode.
func TestResolveOwn(t *testing.T) {
	self, err := Namespace{}.Inode()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := Resolve("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if ino, err := ns.Inode(); err != nil || ino != self {
		t.Errorf("Resolve(/proc/self/ns/net).Inode() = %d, %v; want %d", ino, err, self)
	}
	ns, err = Resolve(strconv.FormatUint(self, 10))
	if err != nil {
		t.Fatal(err)
	}
	if ns != (Namespace{}) {
		t.Errorf("Resolve(own inode) = %v, want the zero Namespace", ns)
	}
}

// TestResolveNamed: a namespace made by `ip netns add` resolves by name,
// path and inode, all to something with its inode.
func TestResolveNamed(t *testing.T) {
	testutil.RequireRoot(t)
	n := testutil.NewNS(t)
	for _, arg := range []string{n.Name, RunDir + "/" + n.Name, strconv.FormatUint(n.Inode, 10)} {
		ns, err := Resolve(arg)
		if err != nil {
			t.Errorf("Resolve(%q): %v", arg, err)
			continue
		}
		if ino, err := ns.Inode(); err != nil || ino != n.Inode {
			t.Errorf("Resolve(%q) = %v with inode %d, %v; want %d", arg, ns, ino, err, n.Inode)
		}
	}
	if ns, _ := Resolve(n.Name); ns != ByName(n.Name) {
		t.Errorf("Resolve(%q) = %v, want %v", n.Name, ns, ByName(n.Name))
	}
}

// TestDo: Do runs in the namespace and comes back; DoWithInode reports the
// namespace's inode; a missing or wrong namespace fails clearly.
func TestDo(t *testing.T) {
	self, err := Namespace{}.Inode()
	if err != nil {
		t.Fatal(err)
	}
	// The own namespace needs no privileges.
	ino, err := Namespace{}.DoWithInode(func() error { return nil })
	if err != nil || ino != self {
		t.Errorf("DoWithInode(self) = %d, %v; want %d", ino, err, self)
	}
	err = ByName("sstrace-no-such-ns").Do(func() error { return nil })
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), `no network namespace named "sstrace-no-such-ns"`) {
		t.Errorf("Do(missing name) = %v", err)
	}
	err = ByPID(1 << 30).Do(func() error { return nil })
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no process 1073741824") {
		t.Errorf("Do(missing pid) = %v", err)
	}
	err = Namespace{Path: "/proc/self/ns/ipc"}.Do(func() error { return nil })
	if err == nil || !strings.Contains(err.Error(), "an IPC namespace, not a network namespace") {
		t.Errorf("Do(ipc namespace) = %v", err)
	}

	testutil.RequireRoot(t)
	n := testutil.NewNS(t)
	var inside uint64
	ino, err = ByName(n.Name).DoWithInode(func() error {
		var err error
		inside, err = statIno(selfPath)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if ino != n.Inode || inside != n.Inode {
		t.Errorf("DoWithInode(%s) = %d, ran in %d; want %d", n.Name, ino, inside, n.Inode)
	}
	if now, err := (Namespace{}).Inode(); err != nil || now != self {
		t.Errorf("after Do, own namespace is %d, %v; want %d", now, err, self)
	}
	sentinel := errors.New("from fn")
	if err := ByName(n.Name).Do(func() error { return sentinel }); err != sentinel {
		t.Errorf("Do returned %v, want fn's error unchanged", err)
	}
}

func TestAllFindsTestNamespaces(t *testing.T) {
	testutil.RequireRoot(t)
	a := testutil.NewNS(t)
	b := testutil.NewNS(t)
	list, err := All()
	if err != nil {
		t.Fatal(err)
	}
	inodes := make(map[uint64]int)
	for _, ns := range list {
		ino, err := ns.Inode()
		if err != nil {
			continue // a process went away since the listing
		}
		inodes[ino]++
	}
	for ino, n := range inodes {
		if n > 1 {
			t.Errorf("namespace inode %d listed %d times", ino, n)
		}
	}
	self, err := Namespace{}.Inode()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{a.Inode, b.Inode, self} {
		if inodes[want] != 1 {
			t.Errorf("namespace inode %d not listed once (%d)", want, inodes[want])
		}
	}
	if list[0].Path != "" {
		t.Errorf("first namespace is %v, want our own (zero value)", list[0])
	}
}

// mainAwayEnv runs the test binary as TestAllWhileMainThreadAway's child:
// "NAME" of the namespace its main thread goes to.
const mainAwayEnv = "SSTRACE_NETNS_MAIN_AWAY"

func init() {
	if os.Getenv(mainAwayEnv) != "" {
		// Keeps the main goroutine on the main thread through TestMain.
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if name := os.Getenv(mainAwayEnv); name != "" {
		os.Exit(listWhileMainThreadAway(name))
	}
	os.Exit(m.Run())
}

// listWhileMainThreadAway moves the main thread into namespace name, as a
// goroutine's Namespace.Do does when the scheduler runs it there, and lists
// the namespaces from another goroutine: both the caller's own and name
// must be listed. It returns the exit code.
func listWhileMainThreadAway(name string) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		return 1
	}
	away, err := ByName(name).Inode()
	if err != nil {
		return fail("%v", err)
	}
	own, err := statIno("/proc/self/ns/net")
	if err != nil {
		return fail("%v", err)
	}
	h, err := ByName(name).open()
	if err != nil {
		return fail("%v", err)
	}
	if err := unix.Setns(int(h), unix.CLONE_NEWNET); err != nil {
		return fail("setns: %v", err)
	}
	done := make(chan map[uint64]int)
	go func() {
		list, err := All()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		seen := map[uint64]int{}
		for _, ns := range list {
			if ino, err := ns.Inode(); err == nil {
				seen[ino]++
			}
		}
		done <- seen
	}()
	seen := <-done
	if seen[own] != 1 || seen[away] != 1 {
		return fail("listed the caller's namespace %d times and the main thread's %d times, want once each", seen[own], seen[away])
	}
	return 0
}

// TestAllWhileMainThreadAway: the main thread of a Go process runs
// goroutines, so it may be inside another namespace for a while (a
// Namespace.Do there); listing the namespaces meanwhile must still list
// that one and the caller's own. It did not, and the daemon's dump
// skipped the namespace and closed its sockets as gone (seen in CI as
// TestSeedDuringChurn).
func TestAllWhileMainThreadAway(t *testing.T) {
	testutil.RequireRoot(t)
	n := testutil.NewNS(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mainAwayEnv+"="+n.Name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}
