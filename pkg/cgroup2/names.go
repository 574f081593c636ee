package cgroup2

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Name is what a cgroup id stands for: its path relative to the cgroup v2
// mount ("/" for the root, "/system.slice/docker-ID.scope"), as
// /proc/PID/cgroup shows it, and the container that path names ("" for
// none; see ContainerID).
type Name struct {
	Path      string
	Container string
}

// DefaultMaxNames bounds a Names cache: a few thousand cgroups live on a
// busy Kubernetes node, and the cache also keeps those of containers gone
// for as long as the daemon's history may name them (some 250 bytes each,
// 4 MiB at the bound).
const DefaultMaxNames = 16384

// Names remembers the name of every cgroup it is asked about, by id. A
// cgroup id is the directory's kernfs inode number: the kernel reports it
// with every event and never reuses it, but the directory, and with it the
// only way back to the path, disappears when the container exits. So a
// name is resolved once, when the id is first seen (Intern), while the
// cgroup still exists, and kept: history must still name a container
// after it is gone. The cache is bounded (the least recently seen names
// go first).
//
// Resolution opens the cgroup by its file handle (open_by_handle_at, which
// needs CAP_DAC_READ_SEARCH) and reads the path back from /proc/self/fd.
// An id that cannot be resolved is remembered as such, so that it costs
// one attempt, not one per event.
//
// All methods are safe for concurrent use.
type Names struct {
	root       string
	handleType int32
	max        int

	// fdMu keeps rootFD open while a resolution uses it; apart from mu,
	// so that lookups never wait for a resolution's system calls.
	fdMu   sync.RWMutex
	rootFD int

	// last is the id interned last: consecutive events of one cgroup
	// (the common case) cost one atomic load.
	last  atomic.Uint64
	clock atomic.Uint64

	mu   sync.RWMutex
	byID map[uint64]*nameEntry

	// resolveErr is set when file handles cannot be opened (see
	// ResolveErr).
	resolveErr error
}

type nameEntry struct {
	name Name
	// resolved is false for an id whose path could not be found.
	resolved bool
	// used is Names.clock when the id was last seen: the eviction order.
	used atomic.Uint64
}

// NewNames opens the cgroup v2 mount for a cache of at most max names
// (DefaultMaxNames when max <= 0). It fails with ErrNotMounted when there
// is no cgroup v2 hierarchy. Close releases the mount's descriptor.
func NewNames(max int) (*Names, error) {
	root, err := Mount()
	if err != nil {
		return nil, err
	}
	// Not O_PATH: open_by_handle_at refuses such a descriptor (EBADF).
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup v2 mount %s: %w", root, err)
	}
	// Every cgroup's handle has the type of the root's (FILEID_KERNFS):
	// taken from the kernel rather than written down here.
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("file handle of %s: %w", root, err)
	}
	if max <= 0 {
		max = DefaultMaxNames
	}
	n := &Names{root: root, rootFD: fd, handleType: h.Type(), max: max, byID: make(map[uint64]*nameEntry)}
	// The root's own handle tells whether ids can be resolved at all:
	// open_by_handle_at needs CAP_DAC_READ_SEARCH.
	if rfd, err := unix.OpenByHandleAt(fd, h, unix.O_PATH|unix.O_CLOEXEC); err != nil {
		n.resolveErr = fmt.Errorf("open_by_handle_at on %s: %w (naming cgroups by id needs CAP_DAC_READ_SEARCH)", root, err)
	} else {
		unix.Close(rfd)
	}
	return n, nil
}

// ResolveErr tells why ids cannot be resolved to paths here (nil when
// they can): then only names read from /proc (OfProcess) are known.
func (n *Names) ResolveErr() error { return n.resolveErr }

// Root is the cgroup v2 mount point the paths are relative to.
func (n *Names) Root() string { return n.root }

// Close releases the mount's descriptor; Lookup keeps working, Intern
// resolves nothing more.
func (n *Names) Close() error {
	n.fdMu.Lock()
	defer n.fdMu.Unlock()
	if n.rootFD < 0 {
		return nil
	}
	err := unix.Close(n.rootFD)
	n.rootFD = -1
	return err
}

// Intern makes sure the name of cgroup id is known (0 is no cgroup): a
// map lookup when it is, one resolution (two system calls) the first time.
func (n *Names) Intern(id uint64) {
	if id == 0 || n.last.Load() == id {
		return
	}
	n.mu.RLock()
	e := n.byID[id]
	n.mu.RUnlock()
	if e == nil {
		name, ok := n.resolve(id)
		e = n.add(id, name, ok, false)
	}
	e.used.Store(n.clock.Add(1))
	n.last.Store(id)
}

// Lookup returns the name of cgroup id, if it was interned and resolved.
func (n *Names) Lookup(id uint64) (Name, bool) {
	n.mu.RLock()
	e := n.byID[id]
	n.mu.RUnlock()
	if e == nil || !e.resolved {
		return Name{}, false
	}
	return e.name, true
}

// Len is the number of ids the cache holds, resolved or not.
func (n *Names) Len() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.byID)
}

// OfProcess returns the id of the cgroup process pid is in, from
// /proc/PID/cgroup, and remembers its name: for sockets older than the
// daemon, whose owners come from a process scan rather than an event.
func (n *Names) OfProcess(pid int) (uint64, bool) {
	path, err := ProcessPath(pid)
	if err != nil {
		return 0, false
	}
	var id uint64
	if rel := strings.TrimLeft(path, "/"); rel == "" {
		id = 1 // the root cgroup's id on every kernel with cgroup ids
	} else if id, err = n.idOf(rel); err != nil {
		return 0, false
	}
	n.add(id, Name{Path: path, Container: ContainerID(path)}, true, true).used.Store(n.clock.Add(1))
	return id, true
}

// ProcessPath reads the cgroup v2 path of process pid from
// /proc/PID/cgroup (its "0::PATH" line): relative to the reader's cgroup
// namespace root, which is the cgroup v2 mount's root unless the mount was
// made in another cgroup namespace.
func ProcessPath(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok && strings.HasPrefix(p, "/") {
			return p, nil
		}
	}
	return "", fmt.Errorf("/proc/%d/cgroup: no cgroup v2 line", pid)
}

// idOf is the id of the cgroup at rel, relative to the mount.
func (n *Names) idOf(rel string) (uint64, error) {
	n.fdMu.RLock()
	defer n.fdMu.RUnlock()
	if n.rootFD < 0 {
		return 0, errors.New("closed")
	}
	return ID(n.rootFD, rel)
}

// resolve finds the path of cgroup id through its file handle.
func (n *Names) resolve(id uint64) (Name, bool) {
	n.fdMu.RLock()
	defer n.fdMu.RUnlock()
	if n.rootFD < 0 {
		return Name{}, false
	}
	h := unix.NewFileHandle(n.handleType, binary.NativeEndian.AppendUint64(nil, id))
	fd, err := unix.OpenByHandleAt(n.rootFD, h, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return Name{}, false // gone already, or no CAP_DAC_READ_SEARCH
	}
	defer unix.Close(fd)
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return Name{}, false
	}
	rel, ok := strings.CutPrefix(p, strings.TrimSuffix(n.root, "/"))
	if !ok || (rel != "" && rel[0] != '/') {
		return Name{}, false // outside the mount (another cgroup namespace's view)
	}
	if rel == "" {
		rel = "/"
	}
	return Name{Path: rel, Container: ContainerID(rel)}, true
}

// add stores id's name (an unresolved one too, unless a resolved name is
// already there) and returns its entry; replace says a name read from
// /proc is newer than a failed resolution. At the bound, the least
// recently seen eighth of the names goes first.
func (n *Names) add(id uint64, name Name, resolved, replace bool) *nameEntry {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e := n.byID[id]; e != nil && (e.resolved || !replace) {
		return e
	}
	if len(n.byID) >= n.max {
		n.evict()
	}
	e := &nameEntry{name: name, resolved: resolved}
	n.byID[id] = e
	return e
}

// evict drops the least recently seen eighth of the names (at least one).
func (n *Names) evict() {
	used := make([]uint64, 0, len(n.byID))
	for _, e := range n.byID {
		used = append(used, e.used.Load())
	}
	slices.Sort(used)
	cut := used[max(len(used)/8, 1)-1]
	for id, e := range n.byID {
		if e.used.Load() <= cut {
			delete(n.byID, id)
		}
	}
	n.last.Store(0)
}
