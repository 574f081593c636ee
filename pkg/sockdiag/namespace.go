package sockdiag

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsRunDir is where `ip netns add` bind-mounts named namespaces.
const netnsRunDir = "/run/netns"

// Namespace names a network namespace by a file that refers to it (an nsfs
// file such as /run/netns/NAME or /proc/PID/ns/net). The zero value is the
// caller's own namespace.
type Namespace struct{ Path string }

// NamespaceByName returns the namespace `ip netns` and `ss -N` know as name
// (/run/netns/NAME). A name that does not exist is reported when the
// namespace is used.
func NamespaceByName(name string) Namespace {
	return Namespace{Path: netnsRunDir + "/" + name}
}

// NamespaceByPID returns the network namespace of process pid
// (/proc/PID/ns/net).
func NamespaceByPID(pid int) Namespace {
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
		var st unix.Stat_t
		// thread-self: a locked goroutine may sit in another namespace
		// than the process; what counts is the thread that would dial.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return 0, fmt.Errorf("stat own netns: %w", err)
		}
		return st.Ino, nil
	}
	fd, err := ns.open()
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", ns.Path, err)
	}
	return st.Ino, nil
}

// open opens the namespace file and checks that it is a namespace (nsfs):
// a stray path then fails with a clear message instead of setns' EINVAL.
func (ns Namespace) open() (int, error) {
	fd, err := unix.Open(ns.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, ns.missing()
		}
		return -1, fmt.Errorf("open %s: %w", ns.Path, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("statfs %s: %w", ns.Path, err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		unix.Close(fd)
		return -1, fmt.Errorf("%s is not a namespace file", ns.Path)
	}
	return fd, nil
}

// missing builds the "does not exist" error, naming the namespace the way
// the user gave it.
func (ns Namespace) missing() error {
	if name, ok := strings.CutPrefix(ns.Path, netnsRunDir+"/"); ok {
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
	_, err := runIn(ns, fn)
	return err
}

// runIn is Do that also returns the namespace's inode. The calling
// goroutine's thread enters the namespace and comes back before it is
// unlocked: starting a dedicated thread costs more than a whole small query
// (measured on `sstrace ss -s`). Should the way home fail (not expected:
// we hold the namespace open), the thread stays locked to the goroutine, so
// the runtime ends it with the goroutine instead of reusing a thread left in
// a foreign namespace.
func runIn(ns Namespace, fn func() error) (netnsIno uint64, err error) {
	runtime.LockOSThread()
	if ns.Path == "" {
		defer runtime.UnlockOSThread()
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return 0, fmt.Errorf("stat own netns: %w", err)
		}
		return st.Ino, fn()
	}
	target, err := ns.open()
	if err != nil {
		runtime.UnlockOSThread()
		return 0, err
	}
	defer unix.Close(target)
	var st unix.Stat_t
	if err := unix.Fstat(target, &st); err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("stat %s: %w", ns.Path, err)
	}
	restored, err := runOnThread(target, st.Ino, ns, fn)
	if restored {
		runtime.UnlockOSThread()
	} else if err == nil {
		err = fmt.Errorf("return from %s to the own network namespace failed", ns.Path)
	}
	return st.Ino, err
}

// runOnThread runs on a locked thread: it switches to target (unless the
// thread is already there), runs fn and switches back. restored reports
// whether the thread is back in its original namespace.
func runOnThread(target int, targetIno uint64, ns Namespace, fn func() error) (restored bool, err error) {
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("open own netns: %w", err)
	}
	defer unix.Close(home)
	var hst unix.Stat_t
	if err := unix.Fstat(home, &hst); err != nil {
		return true, fmt.Errorf("stat own netns: %w", err)
	}
	if hst.Ino == targetIno {
		return true, fn()
	}
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		switch {
		case errors.Is(err, unix.EPERM):
			return true, fmt.Errorf("enter %s: %w (needs CAP_SYS_ADMIN)", ns.Path, err)
		case errors.Is(err, unix.EINVAL):
			return true, fmt.Errorf("enter %s: not a network namespace: %w", ns.Path, err)
		}
		return true, fmt.Errorf("enter %s: %w", ns.Path, err)
	}
	fnErr := fn()
	restored = unix.Setns(home, unix.CLONE_NEWNET) == nil
	return restored, fnErr
}

// AllNamespaces lists every distinct network namespace on the host: the
// caller's own first (as the zero Namespace), then the named ones under
// /run/netns, then those only a process holds (/proc/PID/ns/net), each once
// (deduplicated by device and inode). Namespaces a process holds are named by
// that process and vanish with it; a later Dump then reports it missing.
// Processes that exit or deny access while listing are skipped.
func AllNamespaces() ([]Namespace, error) {
	type key struct{ dev, ino uint64 }
	seen := make(map[key]bool)
	var out []Namespace
	add := func(ns Namespace, path string) bool {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return false
		}
		k := key{st.Dev, st.Ino}
		if seen[k] {
			return true
		}
		seen[k] = true
		out = append(out, ns)
		return true
	}
	if !add(Namespace{}, "/proc/self/ns/net") {
		return nil, errors.New("stat /proc/self/ns/net: is /proc mounted?")
	}

	names, err := os.ReadDir(netnsRunDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", netnsRunDir, err)
	}
	for _, e := range names {
		ns := NamespaceByName(e.Name())
		add(ns, ns.Path)
	}

	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	pids := make([]int, 0, len(procs))
	for _, e := range procs {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	// Lowest PIDs first: long-lived holders (init, daemons) name a
	// namespace more stably than a short-lived child would.
	sort.Ints(pids)
	for _, pid := range pids {
		ns := NamespaceByPID(pid)
		add(ns, filepath.Clean(ns.Path))
	}
	return out, nil
}
