package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
)

// soPeerPidfd is SO_PEERPIDFD (Linux 6.5; the same number on every
// architecture sstrace builds for), which x/sys/unix does not name yet.
const soPeerPidfd = 77

// Peer is who is asking: the credentials the kernel recorded when the
// client connected (SO_PEERCRED) and the client's network namespace.
//
// What a caller may see follows ss. ss lists the sockets of the namespace
// it runs in, so the daemon answers in the caller's namespace by default,
// and only root may ask for all of them. ss -p shows a process only if the
// user can read its /proc/PID/fd, which for an ordinary user means its own
// processes, so the daemon shows the pid, comm and fd of a process only if
// it runs as the caller's uid (root sees every process).
type Peer struct {
	PID int
	UID uint32
	GID uint32
	// NetNS is the inode of the caller's network namespace.
	NetNS uint64
	// NS enters the caller's namespace: a path to a descriptor the
	// daemon holds open, so that it stays the namespace the caller had
	// when it connected even if the process exits and its pid is reused.
	NS netns.Namespace

	nsFile *os.File
	// uids caches the uid of processes looked up for this request.
	uidsMu sync.Mutex
	uids   map[int]uint32
}

// Root reports whether the caller is root.
func (p *Peer) Root() bool { return p.UID == 0 }

// close releases the namespace descriptor.
func (p *Peer) close() {
	if p.nsFile != nil {
		p.nsFile.Close()
		p.nsFile = nil
	}
}

// peerOf reads the credentials of a connected client and opens its network
// namespace.
//
// The namespace is read through /proc/PID, and a pid can be reused once its
// process exits; where the kernel gives a pidfd for the peer (SO_PEERPIDFD),
// the daemon checks after opening the namespace that the very process that
// connected is still alive, so the namespace cannot be another process's.
func peerOf(c *net.UnixConn) (*Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	pidfd := -1
	var credErr error
	err = raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil {
			if v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, soPeerPidfd); err == nil {
				pidfd = v
			}
		}
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	if pidfd >= 0 {
		defer unix.Close(pidfd)
	}
	p := &Peer{PID: int(cred.Pid), UID: cred.Uid, GID: cred.Gid}
	if p.PID <= 0 {
		return nil, errors.New("peer credentials: no pid (a client in another pid namespace?)")
	}
	f, err := os.OpenFile("/proc/"+strconv.Itoa(p.PID)+"/ns/net", os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("the caller's network namespace: %w", err)
	}
	if pidfd >= 0 {
		if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("the caller exited while connecting: %w", err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("the caller's network namespace: %w", err)
	}
	p.NetNS = st.Ino
	p.nsFile = f
	p.NS = netns.Namespace{Path: "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))}
	return p, nil
}

// errAllNetNS is the answer to all_netns from a caller who is not root.
var errAllNetNS = errors.New("only root may ask for every network namespace (all_netns): ss, too, lists only the caller's own")

// scope returns the namespace a request covers (0: all), after checking
// that the caller may ask for it.
func (p *Peer) scope(r *Request) (uint64, error) {
	if r.AllNetNS {
		if !p.Root() {
			return 0, errAllNetNS
		}
		if r.NetNS != 0 {
			return r.NetNS, nil
		}
		return 0, nil
	}
	if r.NetNS != 0 && r.NetNS != p.NetNS {
		if !p.Root() {
			return 0, fmt.Errorf("network namespace %d is not yours: a caller who is not root sees only its own (%d)", r.NetNS, p.NetNS)
		}
		return r.NetNS, nil
	}
	return p.NetNS, nil
}

// SeesUID reports whether the caller may see the details of a process
// running as uid.
func (p *Peer) SeesUID(uid uint32) bool { return p.Root() || uid == p.UID }

// SeesPID reports whether the caller may see the details of process pid:
// root sees all, others their own (by the owner of /proc/PID, which is the
// process's effective uid as ptrace checks see it). A process that is gone
// is not shown.
func (p *Peer) SeesPID(pid int) bool {
	if p.Root() {
		return true
	}
	p.uidsMu.Lock()
	defer p.uidsMu.Unlock()
	if uid, ok := p.uids[pid]; ok {
		return uid == p.UID
	}
	var st unix.Stat_t
	uid := ^uint32(0)
	if err := unix.Stat("/proc/"+strconv.Itoa(pid), &st); err == nil {
		uid = st.Uid
	}
	if p.uids == nil {
		p.uids = make(map[int]uint32)
	}
	p.uids[pid] = uid
	return uid == p.UID
}

// Processes returns the processes of procs the caller may see (a new
// slice; nil when none).
func (p *Peer) Processes(procs []sock.Process) []sock.Process {
	if p.Root() || len(procs) == 0 {
		return procs
	}
	var out []sock.Process
	for _, pr := range procs {
		if p.SeesPID(pr.PID) {
			out = append(out, pr)
		}
	}
	return out
}

// Owner returns o, or the zero Owner if the caller may not see it.
func (p *Peer) Owner(o event.Owner) event.Owner {
	if !o.Known() || p.SeesUID(o.UID) {
		return o
	}
	return event.Owner{}
}

// Task returns t, or nil if the caller may not see it.
func (p *Peer) Task(t *event.Task) *event.Task {
	if t == nil || p.SeesUID(t.UID) {
		return t
	}
	return nil
}

// Event blanks in e what the caller may not see: the owner and the task.
func (p *Peer) Event(e *event.Event) {
	if p.Root() {
		return
	}
	e.Owner = p.Owner(e.Owner)
	if !p.SeesUID(e.Task.UID) {
		e.Task = event.Task{}
		e.CgroupID = 0 // the context stays: it says where, not who
	}
}
