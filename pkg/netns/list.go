package netns

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

	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// All lists every distinct network namespace on the host: the caller's own
// first (as the zero Namespace), then the named ones under /run/netns, then
// those only a process holds (/proc/PID/ns/net), each once (deduplicated by
// device and inode). Namespaces a process holds are named by that process
// and vanish with it; a later use then reports it missing. Processes that
// exit or deny access while listing are skipped.
func All() ([]Namespace, error) {
	list, err := all()
	if err != nil {
		return nil, err
	}
	out := make([]Namespace, len(list))
	for i, e := range list {
		out[i] = e.ns
	}
	return out, nil
}

// listed is a namespace of all() with the inode it had when listed.
type listed struct {
	ns  Namespace
	ino uint64
}

func all() ([]listed, error) {
	type key struct{ dev, ino uint64 }
	seen := make(map[key]bool)
	var out []listed
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
		out = append(out, listed{ns, st.Ino})
		return true
	}
	// The caller's own namespace is its thread's, read while locked to
	// it: /proc/self/ns/net is the main thread's, and the main thread
	// runs goroutines too, so it may be inside another namespace for a
	// moment (Namespace.Do elsewhere in the process). Listed from there,
	// that namespace was taken for the caller's own and never dumped.
	runtime.LockOSThread()
	ok := add(Namespace{}, selfPath)
	runtime.UnlockOSThread()
	if !ok {
		return nil, errors.New("stat " + selfPath + ": is /proc mounted?")
	}

	names, err := os.ReadDir(RunDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", RunDir, err)
	}
	for _, e := range names {
		ns := ByName(e.Name())
		add(ns, ns.Path)
	}

	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	pids := make([]int, 0, len(procs))
	self := os.Getpid()
	for _, e := range procs {
		// Not this process: /proc/SELF/ns/net is its main thread's
		// namespace, which need not be the caller's (see above).
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != self {
			pids = append(pids, pid)
		}
	}
	// Lowest PIDs first: long-lived holders (init, daemons) name a
	// namespace more stably than a short-lived child would.
	sort.Ints(pids)
	for _, pid := range pids {
		ns := ByPID(pid)
		add(ns, filepath.Clean(ns.Path))
	}
	return out, nil
}

// Resolve turns a user's namespace argument into a Namespace, checking now
// that it names a network namespace, so that a typo fails before anything
// starts. arg is one of:
//
//   - a path containing "/" (/proc/PID/ns/net, /run/netns/NAME, a bind
//     mount elsewhere): that file;
//   - a bare NAME: /run/netns/NAME, as `ip netns` resolves it (never a file
//     in the current directory; write ./NAME for that);
//   - a number: the namespace with that inode (as Socket.NetNS and tracer
//     events show it), found among All; the caller's own resolves to the zero
//     Namespace. A number that is also the name of an entry of /run/netns is
//     that name, as for `ip netns`.
//
// Errors begin with arg, so a caller prefixes its flag:
// fmt.Errorf("--netns %w", err) gives "--netns /etc/passwd: not a namespace
// file" or "--netns /proc/self/ns/mnt: a mount namespace, not a network
// namespace".
func Resolve(arg string) (Namespace, error) {
	switch {
	case arg == "":
		return Namespace{}, errors.New(`"": empty namespace name`)
	case strings.Contains(arg, "/"):
		return checkPath(arg, Namespace{Path: arg})
	}
	byName := ByName(arg)
	if ino, err := strconv.ParseUint(arg, 10, 64); err == nil {
		if _, err := os.Lstat(byName.Path); err != nil {
			return byInode(arg, ino)
		}
	}
	return checkPath(arg, byName)
}

// checkPath opens ns and checks it, with errors that begin with arg.
func checkPath(arg string, ns Namespace) (Namespace, error) {
	h, err := vns.GetFromPath(ns.Path)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			if ns.Path != arg {
				return Namespace{}, fmt.Errorf("%s: no network namespace of that name (%s): %w", arg, ns.Path, fs.ErrNotExist)
			}
			return Namespace{}, fmt.Errorf("%s: %w", arg, fs.ErrNotExist)
		}
		return Namespace{}, fmt.Errorf("%s: %w", arg, err)
	}
	defer h.Close()
	if err := checkNet(h, arg); err != nil {
		if ns.Path != arg {
			err = fmt.Errorf("%w (%s)", err, ns.Path)
		}
		return Namespace{}, err
	}
	return ns, nil
}

// ByInode finds the network namespace with inode ino among All (as an
// event's NetNS names it), without going through Resolve's reading of a
// number as an argument (which looks for a /run/netns file of that name
// first).
func ByInode(ino uint64) (Namespace, error) {
	return byInode(strconv.FormatUint(ino, 10), ino)
}

// byInode finds the namespace with inode ino among All; arg is what the
// caller gave, for the error.
func byInode(arg string, ino uint64) (Namespace, error) {
	list, err := all()
	if err != nil {
		return Namespace{}, fmt.Errorf("%s: %w", arg, err)
	}
	for _, e := range list {
		if e.ino == ino {
			return e.ns, nil
		}
	}
	return Namespace{}, &InodeNotFoundError{Arg: arg, Inode: ino}
}

// InodeNotFoundError is Resolve's error for a number that is the inode of
// no namespace in RunDir or held by a process. It matches fs.ErrNotExist.
// The namespace may still exist, kept alive only by an open descriptor or a
// bind mount elsewhere, which All cannot see: a caller that only compares
// inodes (a tracer's filter) may warn and go on.
type InodeNotFoundError struct {
	Arg   string // the argument as given
	Inode uint64
}

// Error begins with the argument, as Resolve's errors do.
func (e *InodeNotFoundError) Error() string {
	return fmt.Sprintf("%s: no network namespace with that inode (none in %s or held by a process)", e.Arg, RunDir)
}

// Is reports whether target is fs.ErrNotExist.
func (e *InodeNotFoundError) Is(target error) bool { return target == fs.ErrNotExist }
