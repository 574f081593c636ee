package table

import (
	"encoding/json"
	"net/netip"
	"time"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// Outcome is how a connection ended.
type Outcome string

// Outcomes. No peer tool classifies them; the rules (see classify) use the
// transition that closed the socket, its context and the socket's pending
// error and unread bytes at that moment.
const (
	// OutcomeOpen: still open.
	OutcomeOpen Outcome = ""
	// OutcomeRefused: an RST answered the SYN (ECONNREFUSED).
	OutcomeRefused Outcome = "refused"
	// OutcomeTimeout: the SYN was never answered, or retransmissions or
	// keepalives gave up (ETIMEDOUT).
	OutcomeTimeout Outcome = "timeout"
	// OutcomeUnreachable: an ICMP error ended the connect
	// (EHOSTUNREACH, ENETUNREACH).
	OutcomeUnreachable Outcome = "unreachable"
	// OutcomeReset: an RST ended an established connection; By says
	// which side sent it.
	OutcomeReset Outcome = "reset"
	// OutcomeClosed: an orderly close (FIN both ways); By says which
	// side closed first.
	OutcomeClosed Outcome = "closed"
	// OutcomeAborted: the local side closed with unread data, so the
	// kernel sent an RST instead of a FIN.
	OutcomeAborted Outcome = "aborted"
	// OutcomeUnknown: the end was not seen (lost events, or the socket
	// vanished between two dumps).
	OutcomeUnknown Outcome = "unknown"
)

// Side names an end of a connection.
type Side string

// Sides.
const (
	SideNone  Side = ""
	SideLocal Side = "local"
	SidePeer  Side = "peer"
)

// Origin is how a connection began.
type Origin string

// Origins.
const (
	// OriginConnect: an active open (connect()).
	OriginConnect Origin = "connect"
	// OriginAccept: a passive open, a child of a listener.
	OriginAccept Origin = "accept"
	// OriginListen: a listening socket.
	OriginListen Origin = "listen"
	// OriginBeforeStart: the socket existed when the table was seeded;
	// how it began is unknown.
	OriginBeforeStart Origin = "before-start"
	// OriginUnknown: first seen in the middle of its life (after lost
	// events).
	OriginUnknown Origin = "unknown"
)

// Transition is one state change in a connection's history.
type Transition struct {
	// Time is when it ran (wall clock, from the kernel's monotonic clock).
	Time     time.Time
	OldState sock.State
	NewState sock.State
	Context  event.Context
	// Task is the task that ran it, in process context only.
	Task *event.Task
}

// Conn is a connection (or listener) as the table knows it: a copy, safe to
// keep and to change.
type Conn struct {
	Cookie uint64
	NetNS  uint64
	Family uint8
	Local  netip.AddrPort
	Peer   netip.AddrPort
	// State is the current state; sock.Close once closed. A connection
	// that lives on as a TIME-WAIT (or orphaned FIN-WAIT-2) minisocket
	// shows that state, with Minisocket set, until the kernel drops it.
	State      sock.State
	Minisocket bool
	// Owner is the owning process (pkg/owner), zero when unknown.
	Owner event.Owner
	// Cgroup is the path of the owner's cgroup v2 (Owner.CgroupID),
	// relative to the cgroup v2 mount, and Container the container id
	// that path names; "" when unknown or none.
	Cgroup    string
	Container string
	Origin    Origin
	// Opened is when the connection began; for OriginBeforeStart, when
	// the table was seeded.
	Opened time.Time
	// FullClosed is when the full socket went to CLOSE; zero while open.
	FullClosed time.Time
	// Gone is when the connection left the kernel entirely: FullClosed,
	// or when its minisocket expired; zero while the kernel still has it.
	Gone    time.Time
	Outcome Outcome
	// By is the side that closed first (closed) or sent the RST (reset).
	By Side
	// Final holds the socket's counters at CLOSE.
	Final event.Final
	// Gap reports that events may be missing from this history (the ring
	// buffer lost events while the connection lived).
	Gap         bool
	Transitions []Transition
	// UID and Inode come from sock_diag for seeded sockets, UID from the
	// owner otherwise; Inode is 0 when unknown.
	UID   uint32
	Inode uint64
}

// Live reports whether the kernel still has the connection (full socket or
// minisocket).
func (c *Conn) Live() bool { return c.Gone.IsZero() }

// Lifetime is how long the connection lived, up to now for an open one.
func (c *Conn) Lifetime(now time.Time) time.Duration {
	end := c.FullClosed
	if end.IsZero() {
		end = now
	}
	return end.Sub(c.Opened)
}

// jsonTransition is a Transition's JSON form (docs/JSON.md).
type jsonTransition struct {
	Time     time.Time `json:"time"`
	OldState string    `json:"oldstate"`
	NewState string    `json:"newstate"`
	Context  string    `json:"context"`
	PID      uint32    `json:"pid,omitempty"`
	Comm     string    `json:"comm,omitempty"`
}

// MarshalJSON renders a transition with the shared vocabulary.
func (t Transition) MarshalJSON() ([]byte, error) {
	j := jsonTransition{Time: t.Time.UTC(), OldState: t.OldState.String(), NewState: t.NewState.String(), Context: t.Context.String()}
	if t.Task != nil {
		j.PID, j.Comm = t.Task.PID, t.Task.Comm
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (t *Transition) UnmarshalJSON(b []byte) error {
	var j jsonTransition
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	old, _ := sock.ParseKernelState(j.OldState)
	nw, _ := sock.ParseKernelState(j.NewState)
	*t = Transition{Time: j.Time, OldState: old, NewState: nw, Context: event.ParseContext(j.Context)}
	if j.PID != 0 || j.Comm != "" {
		t.Task = &event.Task{PID: j.PID, Comm: j.Comm}
	}
	return nil
}

// SocketJSON names a socket in JSON with the shared vocabulary
// (docs/JSON.md): every JSON form of a connection embeds it, so that the
// keys cannot drift apart.
type SocketJSON struct {
	Cookie uint64 `json:"cookie"`
	NetNS  uint64 `json:"netns"`
	Family string `json:"family"`
	Saddr  string `json:"saddr"`
	Sport  uint16 `json:"sport"`
	Daddr  string `json:"daddr"`
	Dport  uint16 `json:"dport"`
}

// SocketJSON returns the keys that name c.
func (c *Conn) SocketJSON() SocketJSON {
	return SocketJSON{
		Cookie: c.Cookie, NetNS: c.NetNS, Family: sock.FamilyName(c.Family),
		Saddr: c.Local.Addr().String(), Sport: c.Local.Port(),
		Daddr: c.Peer.Addr().String(), Dport: c.Peer.Port(),
	}
}

// ConnJSON is a connection's JSON form, the keys of `sstrace history
// --json` (docs/JSON.md).
type ConnJSON struct {
	SocketJSON
	State         string       `json:"state"`
	Minisocket    bool         `json:"minisocket,omitempty"`
	PID           uint32       `json:"pid"`
	Comm          string       `json:"comm"`
	UID           uint32       `json:"uid"`
	CgroupID      uint64       `json:"cgroup_id,omitempty"`
	Cgroup        string       `json:"cgroup,omitempty"`
	Container     string       `json:"container,omitempty"`
	Origin        string       `json:"origin"`
	Opened        time.Time    `json:"opened"`
	Closed        *time.Time   `json:"closed"`
	LifetimeMs    float64      `json:"lifetime_ms"`
	Outcome       string       `json:"outcome"`
	By            string       `json:"by,omitempty"`
	BytesSent     uint64       `json:"bytes_sent"`
	BytesReceived uint64       `json:"bytes_received"`
	Retrans       uint32       `json:"retrans"`
	RTTus         int64        `json:"rtt_us"`
	Gap           bool         `json:"gap"`
	Transitions   []Transition `json:"transitions"`
}

// JSON returns c's JSON form; now is used for an open connection's
// lifetime.
func (c *Conn) JSON(now time.Time) ConnJSON {
	j := ConnJSON{
		SocketJSON: c.SocketJSON(),
		State:      c.State.String(), Minisocket: c.Minisocket,
		PID: c.Owner.PID, Comm: c.Owner.Comm, UID: c.UID,
		CgroupID: c.Owner.CgroupID, Cgroup: c.Cgroup, Container: c.Container,
		Origin: string(c.Origin), Opened: c.Opened.UTC(),
		LifetimeMs: float64(c.Lifetime(now)) / float64(time.Millisecond),
		Outcome:    string(c.Outcome), By: string(c.By),
		BytesSent: c.Final.BytesAcked, BytesReceived: c.Final.BytesReceived,
		Retrans: c.Final.Retrans, RTTus: c.Final.SRTT.Microseconds(),
		Gap: c.Gap, Transitions: c.Transitions,
	}
	if c.State == sock.Close {
		j.State = "CLOSED"
	}
	if !c.FullClosed.IsZero() {
		t := c.FullClosed.UTC()
		j.Closed = &t
	}
	if j.Outcome == "" {
		j.Outcome = "open"
	}
	if j.Transitions == nil {
		j.Transitions = []Transition{}
	}
	return j
}
