// Package netns finds, names and enters network namespaces: the one place
// in sstrace that knows about /run/netns, /proc/PID/ns/net and setns(2).
//
// A Namespace is a path to an nsfs file; the zero value is the caller's own
// namespace. ByName and ByPID build one, Resolve turns what a user typed
// (an inode number, a path or an `ip netns` name) into one after checking
// it, All lists every namespace on the host, and Do runs a function inside
// one (sockets created and /proc/thread-self/net files read there belong to
// it).
//
//	ns, err := netns.Resolve("blue") // /run/netns/blue
//	if err != nil {
//		return fmt.Errorf("--netns %w", err)
//	}
//	err = ns.Do(func() error { ... })
//
// github.com/vishvananda/netns opens the namespace files (GetFromPath,
// NsHandle) and switches the thread (Set). What stays our own, because that
// package does not do it:
//   - Do enters the namespace on the calling goroutine's own thread and
//     comes back, instead of starting a thread and throwing it away: a new
//     thread costs more than a whole small query (measured on
//     `sstrace ss -s`). It also skips setns when the thread is already there.
//   - Every file is checked to be nsfs (fstatfs) and a network namespace
//     (ioctl NS_GET_NSTYPE) before use, so a stray path fails with a message
//     that names the problem instead of setns' EINVAL.
//   - A missing namespace is reported the way the user named it ("no network
//     namespace named x", "no process 42").
//   - All deduplicates namespaces by device and inode across /run/netns and
//     every process; Resolve accepts an inode number.
package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"strconv"
	"strings"

	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunDir is where `ip netns add` bind-mounts named namespaces.
const RunDir = "/run/netns"

// selfPath is the calling thread's namespace. thread-self, not self: a
// locked goroutine may sit in another namespace than the process.
const selfPath = "/proc/thread-self/ns/net"

// Namespace names a network namespace by a file that refers to it (an nsfs
// file such as /run/netns/NAME or /proc/PID/ns/net). The zero value is the
// caller's own namespace.
type Namespace struct{ Path string }

// ByName returns the namespace `ip netns` and `ss -N` know as name
// (/run/netns/NAME). A name that does not exist is reported when the
// namespace is used.
func ByName(name string) Namespace {
	return Namespace{Path: RunDir + "/" + name}
}

// ByPID returns the network namespace of process pid (/proc/PID/ns/net).
func ByPID(pid int) Namespace {
	return Namespace{Path: "/proc/" + strconv.Itoa(pid) + "/ns/net"}
}

// String returns the path, or "self" for the caller's own namespace.
func (ns Namespace) String() string {
	if ns.Path == "" {
		return "self"
	}
	return ns.Path
}

// Inode returns the namespace's inode number, the value tracer events and
// Socket.NetNS carry.
func (ns Namespace) Inode() (uint64, error) {
	if ns.Path == "" {
		// What counts is the thread that would dial, so stat it
		// while locked to it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		return statIno(selfPath)
	}
	h, err := ns.open()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	return fstatIno(h, ns.Path)
}

// open opens the namespace file and checks that it is a network namespace:
// a stray path then fails with a clear message instead of setns' EINVAL.
func (ns Namespace) open() (vns.NsHandle, error) {
	h, err := vns.GetFromPath(ns.Path)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, ns.missing()
		}
		return -1, fmt.Errorf("open %s: %w", ns.Path, err)
	}
	if err := checkNet(h, ns.Path); err != nil {
		h.Close()
		return -1, err
	}
	return h, nil
}

// checkNet reports whether h is an nsfs file of a network namespace.
func checkNet(h vns.NsHandle, path string) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(h), &sfs); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("%s: not a namespace file", path)
	}
	typ, err := unix.IoctlRetInt(int(h), unix.NS_GET_NSTYPE)
	if err != nil {
		// Kernels before 4.11 cannot tell; setns will.
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return nil
		}
		return fmt.Errorf("%s: namespace type: %w", path, err)
	}
	if typ != unix.CLONE_NEWNET {
		return fmt.Errorf("%s: %s, not a network namespace", path, kindName(typ))
	}
	return nil
}

// kindName names a namespace type as the messages of checkNet use it.
func kindName(typ int) string {
	switch typ {
	case unix.CLONE_NEWNS:
		return "a mount namespace"
	case unix.CLONE_NEWUTS:
		return "a UTS namespace"
	case unix.CLONE_NEWIPC:
		return "an IPC namespace"
	case unix.CLONE_NEWUSER:
		return "a user namespace"
	case unix.CLONE_NEWPID:
		return "a PID namespace"
	case unix.CLONE_NEWCGROUP:
		return "a cgroup namespace"
	case unix.CLONE_NEWTIME:
		return "a time namespace"
	}
	return fmt.Sprintf("a namespace of type %#x", typ)
}

// missing builds the "does not exist" error, naming the namespace the way
// the user gave it.
func (ns Namespace) missing() error {
	if name, ok := strings.CutPrefix(ns.Path, RunDir+"/"); ok {
		return fmt.Errorf("no network namespace named %q (%s): %w", name, ns.Path, fs.ErrNotExist)
	}
	if rest, ok := strings.CutPrefix(ns.Path, "/proc/"); ok {
		if pid, ok := strings.CutSuffix(rest, "/ns/net"); ok {
			return fmt.Errorf("no process %s (%s): %w", pid, ns.Path, fs.ErrNotExist)
		}
	}
	return fmt.Errorf("namespace file %s: %w", ns.Path, fs.ErrNotExist)
}

// Do runs fn on an OS thread that is inside ns. Sockets created and
// /proc/thread-self/net files read inside fn belong to ns, wherever they are
// used afterwards.
func (ns Namespace) Do(fn func() error) error {
	_, err := ns.DoWithInode(fn)
	return err
}

// DoWithInode is Do that also returns the namespace's inode, read from the
// file Do opens anyway (sockdiag stamps it on every row).
//
// The calling goroutine's thread enters the namespace and comes back before
// it is unlocked: starting a dedicated thread costs more than a whole small
// query (measured on `sstrace ss -s`). Should the way home fail (not
// expected: we hold the namespace open), the thread stays locked to the
// goroutine, so the runtime ends it with the goroutine instead of reusing a
// thread left in a foreign namespace.
func (ns Namespace) DoWithInode(fn func() error) (inode uint64, err error) {
	runtime.LockOSThread()
	if ns.Path == "" {
		defer runtime.UnlockOSThread()
		ino, err := statIno(selfPath)
		if err != nil {
			return 0, err
		}
		return ino, fn()
	}
	target, err := ns.open()
	if err != nil {
		runtime.UnlockOSThread()
		return 0, err
	}
	defer target.Close()
	ino, err := fstatIno(target, ns.Path)
	if err != nil {
		runtime.UnlockOSThread()
		return 0, err
	}
	restored, err := runOnThread(target, ino, ns, fn)
	if restored {
		runtime.UnlockOSThread()
	} else if err == nil {
		err = fmt.Errorf("return from %s to the own network namespace failed", ns.Path)
	}
	return ino, err
}

// runOnThread runs on a locked thread: it switches to target (unless the
// thread is already there), runs fn and switches back. restored reports
// whether the thread is back in its original namespace.
func runOnThread(target vns.NsHandle, targetIno uint64, ns Namespace, fn func() error) (restored bool, err error) {
	home, err := vns.GetFromPath(selfPath)
	if err != nil {
		return true, fmt.Errorf("open own netns: %w", err)
	}
	defer home.Close()
	homeIno, err := fstatIno(home, "own netns")
	if err != nil {
		return true, err
	}
	if homeIno == targetIno {
		return true, fn()
	}
	if err := vns.Set(target); err != nil {
		switch {
		case errors.Is(err, unix.EPERM):
			return true, fmt.Errorf("enter %s: %w (needs CAP_SYS_ADMIN)", ns.Path, err)
		case errors.Is(err, unix.EINVAL):
			return true, fmt.Errorf("enter %s: not a network namespace: %w", ns.Path, err)
		}
		return true, fmt.Errorf("enter %s: %w", ns.Path, err)
	}
	fnErr := fn()
	restored = vns.Set(home) == nil
	return restored, fnErr
}

func statIno(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}

func fstatIno(h vns.NsHandle, what string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", what, err)
	}
	return st.Ino, nil
}
