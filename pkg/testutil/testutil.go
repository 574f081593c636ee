// Package testutil holds what the privileged end-to-end tests share: stating
// their requirements up front, running code inside a fresh network
// namespace, and making cgroups to start processes in.
//
// The rule for requirements: outside CI a test that lacks root or a kernel
// feature skips with the reason; under CI=true it fails, because a CI run
// whose privileged tests silently skipped proves nothing.
package testutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/cgroup2"
)

// InCI reports whether the tests run under CI (CI=true), where missing
// privileges or kernel features fail a test instead of skipping it.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// Unavailable ends the test because a requirement is missing: t.Fatal under
// CI, t.Skip otherwise.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("requirement missing under CI=true (privileged tests must run): %s", msg)
	}
	t.Skipf("requirement missing: %s", msg)
}

// RequireRoot ends the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
	}
}

// NS is a fresh network namespace with its loopback interface up. It is
// bind-mounted under /run/netns/Name, so `ss -N Name` and `ip netns exec
// Name` reach it too.
type NS struct {
	Name   string
	Handle netns.NsHandle
	// Inode is the namespace's inode number, as tracer events and
	// /proc/PID/ns/net report it.
	Inode uint64
}

var nsCounter atomic.Uint64

// NewNS creates a fresh network namespace for the test and removes it when
// the test ends.
func NewNS(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	name := fmt.Sprintf("sstrace-test-%d-%d", os.Getpid(), nsCounter.Add(1))
	ns := &NS{Name: name}
	err := runLocked(func() error {
		orig, err := netns.Get()
		if err != nil {
			return fmt.Errorf("get current netns: %w", err)
		}
		defer orig.Close()
		defer netns.Set(orig) //nolint:errcheck // best effort: the thread is discarded anyway
		h, err := netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("create netns %s: %w", name, err)
		}
		ns.Handle = h
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		Unavailable(t, "network namespace: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.Handle), &st); err != nil {
		t.Fatalf("stat netns: %v", err)
	}
	ns.Inode = st.Ino
	t.Cleanup(func() {
		ns.Handle.Close()
		_ = netns.DeleteNamed(name)
	})
	return ns
}

// Do runs fn on an OS thread switched into the namespace. Sockets created
// inside fn belong to the namespace and keep working from any goroutine
// afterwards.
func (ns *NS) Do(fn func() error) error {
	return runLocked(func() error {
		if err := netns.Set(ns.Handle); err != nil {
			return fmt.Errorf("enter netns %s: %w", ns.Name, err)
		}
		return fn()
	})
}

// runLocked runs fn on a dedicated, locked OS thread that is never unlocked:
// the Go runtime then terminates the thread when the goroutine ends instead
// of reusing a thread whose namespace was changed.
func runLocked(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- fn()
	}()
	return <-errc
}

// Cgroup is a cgroup v2 directory a test made, for tests that put
// processes into cgroups named like containers' (NewCgroup).
type Cgroup struct {
	// Dir is its directory; Path its path relative to the cgroup v2
	// mount, as /proc/PID/cgroup shows it.
	Dir, Path string
	// ID is its cgroup id (the directory's file handle).
	ID uint64
}

// NewCgroup creates the cgroup at path (relative to the cgroup v2 mount,
// parents included) and removes it, and the parents it created, when the
// test ends, once the processes in it have exited.
func NewCgroup(t testing.TB, path string) *Cgroup {
	t.Helper()
	RequireRoot(t)
	mnt, err := cgroup2.Mount()
	if err != nil {
		Unavailable(t, "cgroup v2: %v", err)
	}
	dir := mnt
	var made []string
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		dir = filepath.Join(dir, part)
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			Unavailable(t, "create cgroup: %v", err)
		}
		made = append(made, dir)
	}
	t.Cleanup(func() {
		for i := len(made) - 1; i >= 0; i-- {
			// A parent another test still uses stays (ENOTEMPTY, EBUSY).
			if err := removeCgroup(made[i]); err != nil && i == len(made)-1 {
				t.Errorf("remove cgroup: %v", err)
			}
		}
	})
	id, err := cgroup2.ID(unix.AT_FDCWD, dir)
	if err != nil {
		t.Fatalf("cgroup id of %s: %v", dir, err)
	}
	return &Cgroup{Dir: dir, Path: "/" + strings.Trim(path, "/"), ID: id}
}

// Remove removes the cgroup now (it must have no process left; a process
// that has just exited may hold it a moment: Remove waits up to 5 s).
func (c *Cgroup) Remove() error { return removeCgroup(c.Dir) }

func removeCgroup(dir string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return fmt.Errorf("rmdir %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Open returns a descriptor of the cgroup's directory, for starting a
// process in it (syscall.SysProcAttr's UseCgroupFD and CgroupFD: clone3
// with CLONE_INTO_CGROUP). It is closed when the test ends.
func (c *Cgroup) Open(t testing.TB) int {
	t.Helper()
	fd, err := unix.Open(c.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) // not O_PATH: clone3 refuses it
	if err != nil {
		t.Fatalf("open cgroup: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// WaitFor polls cond every 20 ms until it holds, and fails the test if it
// does not within d: for what a daemon or an exporter does in its own time.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ListenTCP4 listens on 127.0.0.1, on a port the kernel picks, in the
// calling thread's network namespace (inside NS.Do), as plain TCP: Go's
// listeners are MPTCP by default (Go ≥ 1.24), and an MPTCP listener is two
// sockets, which would change what the tests count and compare.
func ListenTCP4() (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
}

// ServeTCP4 listens with ListenTCP4 inside ns and hands every accepted
// connection to handle, one after the other on the accept loop's
// goroutine, until the listener is closed (at the latest when the test
// ends). A listener that cannot be made is Unavailable.
func ServeTCP4(tb testing.TB, ns *NS, handle func(net.Conn)) net.Listener {
	tb.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = ListenTCP4()
		return err
	}); err != nil {
		Unavailable(tb, "listen in a namespace: %v", err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handle(c)
		}
	}()
	return ln
}

// Drain reads c to EOF and closes it, on a goroutine of its own: a server
// whose peer closes first.
func Drain(c net.Conn) {
	go func() {
		io.Copy(io.Discard, c)
		c.Close()
	}()
}
