package table

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// Synthetic events: no BPF, no root. Event times follow the real
// CLOCK_MONOTONIC (strictly increasing), because the table reads that clock
// itself in BeginSeed, Lost, Reconcile and Expire; the wall clock is the
// monotonic one plus a fixed offset, as the tracer derives it.

const (
	P = event.ContextProcess
	S = event.ContextSoftirq
)

// bystander is whoever runs on the CPU during a softirq: never to be
// blamed.
var bystander = event.Task{PID: 4242, TID: 4243, UID: 7, Comm: "bystander"}

// bystanderCgroup is the bystander's cgroup id, as softirq events carry it.
const bystanderCgroup = 4244

const testNetNS = 4026531840

// sk is a synthetic socket.
type sk struct {
	cookie      uint64
	addr        uint64 // kernel address (Event.Sock)
	netns       uint64
	local, peer netip.AddrPort
	task        event.Task // the process behind its process-context events
	cgroup      uint64     // that process's cgroup id
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// newSk returns a socket with this cookie, local and peer address.
func newSk(cookie uint64, local, peer string, task event.Task) *sk {
	return &sk{cookie: cookie, addr: 0xffff888000000000 + cookie*64, netns: testNetNS,
		local: ap(local), peer: ap(peer), task: task}
}

// step is one transition of a scripted socket.
type step struct {
	old, new sock.State
	ctx      event.Context
	fin      event.Final
}

func st(old, new sock.State, ctx event.Context) step { return step{old: old, new: new, ctx: ctx} }

func stFin(old, new sock.State, ctx event.Context, fin event.Final) step {
	return step{old: old, new: new, ctx: ctx, fin: fin}
}

// The usual scripts (loopback, both ends traced).
var (
	clientOpen      = []step{st(sock.Close, sock.SynSent, P), st(sock.SynSent, sock.Established, S)}
	serverOpen      = []step{st(sock.Listen, sock.SynRecv, S), st(sock.SynRecv, sock.Established, S)}
	closeLocalFirst = []step{st(sock.Established, sock.FinWait1, P), st(sock.FinWait1, sock.FinWait2, S),
		stFin(sock.FinWait2, sock.Close, S, event.Final{PeerFIN: true, BytesAcked: 10, BytesReceived: 20})}
	closePeerFirst = []step{st(sock.Established, sock.CloseWait, S), st(sock.CloseWait, sock.LastAck, P),
		stFin(sock.LastAck, sock.Close, S, event.Final{PeerFIN: true, BytesAcked: 20, BytesReceived: 10})}
)

func cat(ss ...[]step) []step {
	var out []step
	for _, s := range ss {
		out = append(out, s...)
	}
	return out
}

type harness struct {
	tb   testing.TB
	tbl  *Table
	off  int64 // wall - mono
	last int64
}

func newHarness(tb testing.TB, opts Options) *harness {
	h := &harness{tb: tb, tbl: New(opts)}
	h.off = h.tbl.monoToWall // the tracer's offset: the table's from the start
	return h
}

// seeded returns a harness whose table is seeded with rows (and owners).
func seeded(tb testing.TB, opts Options, rows []*sock.Socket, owners map[uint64]event.Owner) *harness {
	h := newHarness(tb, opts)
	h.tbl.BeginSeed()
	h.tbl.Seed(rows, owners)
	h.tbl.EndSeed()
	return h
}

// now is the next event time: the monotonic clock, strictly increasing.
func (h *harness) now() int64 {
	m := monoNow()
	if m <= h.last {
		m = h.last + 1
	}
	h.last = m
	return m
}

func (h *harness) wall(mono int64) time.Time { return time.Unix(0, mono+h.off) }

// evAt builds the event of one step of s at monotonic time m.
func (h *harness) evAt(s *sk, p step, m int64) *event.Event {
	e := &event.Event{
		Time: h.wall(m), Mono: time.Duration(m),
		Cookie: s.cookie, CookieSource: event.CookieHelper, Sock: s.addr,
		NetNS: s.netns, Family: unix.AF_INET, Local: s.local, Peer: s.peer,
		OldState: p.old, NewState: p.new, Context: p.ctx, Task: bystander,
		CgroupID: bystanderCgroup, Hook: event.HookTPBTF,
	}
	if s.cookie == 0 {
		e.CookieSource = event.CookieNone
	}
	if p.ctx == P {
		e.Task, e.CgroupID = s.task, s.cgroup
	}
	if p.new == sock.Close {
		e.Final = p.fin
	}
	return e
}

// run applies steps of s, returning each event's monotonic time.
func (h *harness) run(s *sk, steps ...step) []int64 {
	ms := make([]int64, len(steps))
	for i, p := range steps {
		e := h.evAt(s, p, h.now())
		h.tbl.Apply(e)
		ms[i] = int64(e.Mono)
	}
	return ms
}

// apply applies one step and returns the event as Apply left it.
func (h *harness) apply(s *sk, p step) *event.Event {
	e := h.evAt(s, p, h.now())
	h.tbl.Apply(e)
	return e
}

func row(s *sk, state sock.State, inode uint64) *sock.Socket {
	return &sock.Socket{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: state, NetNS: s.netns,
		Local: s.local, Peer: s.peer, Cookie: s.cookie, Inode: inode, UID: 1000}
}

func (h *harness) conn(cookie uint64) Conn {
	h.tb.Helper()
	c, ok := h.tbl.Lookup(cookie)
	if !ok {
		h.tb.Fatalf("cookie %d: not in the table", cookie)
	}
	return c
}

// rows returns Rows(at) by cookie.
func (h *harness) rows(at time.Time) map[uint64]*sock.Socket {
	h.tb.Helper()
	rs, err := h.tbl.Rows(at)
	if err != nil {
		h.tb.Fatalf("Rows(%v): %v", at, err)
	}
	out := make(map[uint64]*sock.Socket, len(rs))
	for _, r := range rs {
		if out[r.Cookie] != nil {
			h.tb.Fatalf("Rows(%v): cookie %d twice", at, r.Cookie)
		}
		out[r.Cookie] = r
	}
	return out
}

// closedConns returns the closed connections with this cookie.
func (h *harness) closedConns(cookie uint64) []Conn {
	h.tb.Helper()
	cs, err := h.tbl.Conns(Query{Closed: true, Listeners: true})
	if err != nil {
		h.tb.Fatal(err)
	}
	var out []Conn
	for _, c := range cs {
		if c.Cookie == cookie {
			out = append(out, c)
		}
	}
	return out
}

// corrections returns the non-zero correction counters.
func (h *harness) corrections() map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range h.tbl.Stats().Corrections {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func (h *harness) wantCorrections(want map[string]uint64) {
	h.tb.Helper()
	got := h.corrections()
	if len(got) != len(want) {
		h.tb.Errorf("corrections = %v, want %v", got, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			h.tb.Errorf("corrections = %v, want %v", got, want)
			return
		}
	}
}
