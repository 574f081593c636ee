package tracer

import (
	"net/netip"
	"time"
	"unsafe"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

// Context tells where a transition ran, and so whether Event.PID and
// Event.Comm name the process responsible for it.
type Context uint8

// Contexts, with the values of enum event_context in headers/tracer.h.
const (
	// ContextProcess: a task held the socket lock (a system call on the
	// socket, or its owner processing the socket's backlog). PID/Comm are
	// that task.
	ContextProcess Context = 1
	// ContextSoftirq: packet or timer processing. The current task is
	// whoever happened to run on the CPU (on loopback, often the other
	// end's process); PID/Comm must not be blamed for the transition.
	ContextSoftirq Context = 2
)

// String returns "process" or "softirq".
func (c Context) String() string {
	switch c {
	case ContextProcess:
		return "process"
	case ContextSoftirq:
		return "softirq"
	}
	return "unknown"
}

// CookieSource tells how an event's cookie was obtained.
type CookieSource uint8

// Cookie sources, with the values of enum cookie_source in headers/tracer.h.
const (
	// CookieNone: the kernel had made no cookie for the socket yet and none
	// could be made in time; Cookie is 0.
	CookieNone CookieSource = 0
	// CookieHelper: bpf_get_socket_cookie, which makes it if needed.
	CookieHelper CookieSource = 1
	// CookieField: read from the socket, made earlier (by sock_diag, a
	// cgroup cookie maker, SO_COOKIE, ...).
	CookieField CookieSource = 2
	// CookieDeferred: a new child's first event, held in the kernel until
	// the child's next event, whose cookie (and addresses) it carries.
	CookieDeferred CookieSource = 3
)

// String names the source ("none", "helper", "field", "deferred").
func (c CookieSource) String() string {
	switch c {
	case CookieNone:
		return "none"
	case CookieHelper:
		return "helper"
	case CookieField:
		return "field"
	case CookieDeferred:
		return "deferred"
	}
	return "unknown"
}

// Event is one TCP state transition of one socket.
//
// The socket is identified by Cookie (the number sock_diag reports as
// idiag_cookie, the key that joins events with dumps) and, while it lives,
// by Sock, its kernel address.
type Event struct {
	// Time is the wall-clock time of the transition; Mono is the kernel's
	// CLOCK_MONOTONIC timestamp it was derived from (use Mono for
	// durations: it never steps).
	Time time.Time
	Mono time.Duration

	Cookie       uint64
	CookieSource CookieSource
	// Sock is the kernel address of the socket: unique among live sockets,
	// reused after a socket is freed.
	Sock uint64
	// NetNS is the inode of the socket's network namespace.
	NetNS uint32
	// Family is unix.AF_INET or unix.AF_INET6.
	Family uint8
	// Local and Peer are the socket's addresses as the socket sees them.
	Local netip.AddrPort
	Peer  netip.AddrPort

	OldState sock.State
	NewState sock.State

	// The task that was current when the transition ran. Check Context
	// before blaming it: in softirq context it is unrelated to the socket.
	PID      uint32 // thread-group id: the process id
	TID      uint32
	UID      uint32
	CgroupID uint64
	Comm     string
	Context  Context

	Hook Hook
	CPU  uint8
}

// eventSize is the size of the kernel's struct event; shorter records are
// rejected rather than read past their end.
const eventSize = int(unsafe.Sizeof(TracerEvent{}))

// decoder turns raw ring-buffer records into Events. It keeps the clock
// offset and a small comm cache, so that decoding allocates nothing for the
// common case of a process emitting many events in a row.
type decoder struct {
	// monoToWall is added to a CLOCK_MONOTONIC timestamp to get Unix ns.
	monoToWall int64
	lastComm   [16]int8
	lastString string
}

func newDecoder() *decoder {
	d := &decoder{}
	d.syncClock()
	return d
}

// syncClock measures the offset between CLOCK_MONOTONIC (what
// bpf_ktime_get_ns returns) and the wall clock. Called at start and
// periodically, so that a stepped wall clock is followed.
func (d *decoder) syncClock() {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	d.monoToWall = time.Now().UnixNano() - ts.Nano()
}

// decode fills e from raw. It returns false for a record too short to be an
// event (a kernel/userspace mismatch, never expected).
func (d *decoder) decode(raw []byte, e *Event) bool {
	if len(raw) < eventSize {
		return false
	}
	// The record is a struct event written by the kernel in host byte
	// order; TracerEvent is its bpf2go twin, so the layouts agree.
	k := (*TracerEvent)(unsafe.Pointer(&raw[0]))
	e.Mono = time.Duration(k.TsNs)
	e.Time = time.Unix(0, int64(k.TsNs)+d.monoToWall)
	e.Cookie = k.Cookie
	e.CookieSource = CookieSource(k.CookieSrc)
	e.Sock = k.Skaddr
	e.NetNS = k.Netns
	e.Family = uint8(k.Family)
	if k.Family == unix.AF_INET {
		e.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(k.Saddr[:4])), k.Sport)
		e.Peer = netip.AddrPortFrom(netip.AddrFrom4([4]byte(k.Daddr[:4])), k.Dport)
	} else {
		e.Local = netip.AddrPortFrom(netip.AddrFrom16(k.Saddr), k.Sport)
		e.Peer = netip.AddrPortFrom(netip.AddrFrom16(k.Daddr), k.Dport)
	}
	e.OldState = sock.State(k.Oldstate)
	e.NewState = sock.State(k.Newstate)
	e.PID = k.Pid
	e.TID = k.Tid
	e.UID = k.Uid
	e.CgroupID = k.CgroupId
	e.Context = Context(k.Context)
	e.Hook = hookByID(k.Hook)
	e.CPU = k.Cpu
	if k.Comm != d.lastComm || d.lastString == "" {
		d.lastComm = k.Comm
		d.lastString = commString(k.Comm)
	}
	e.Comm = d.lastString
	return true
}

func commString(c [16]int8) string {
	b := make([]byte, 0, len(c))
	for _, ch := range c {
		if ch == 0 {
			break
		}
		b = append(b, byte(ch))
	}
	return string(b)
}
