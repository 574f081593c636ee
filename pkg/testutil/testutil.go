// Package testutil holds what the privileged end-to-end tests share: stating
// their requirements up front and running code inside a fresh network
// namespace.
//
// The rule for requirements: outside CI a test that lacks root or a kernel
// feature skips with the reason; under CI=true it fails, because a CI run
// whose privileged tests silently skipped proves nothing.
package testutil

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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
