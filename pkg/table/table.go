// Package table is sstrace's always-current table of the host's TCP sockets,
// with the history of every connection: seeded from a sock_diag dump of
// every network namespace, then kept exact by the tracer's events, keyed by
// the socket cookie (the number sock_diag reports as idiag_cookie).
//
// Seeding without a race: the caller attaches the tracer first and feeds
// every event to Apply from the start; while the table is seeding it only
// buffers them. The caller then dumps every namespace and hands the rows to
// Seed, and EndSeed applies the buffered events by cookie, in order, each
// only if it continues from the state the dump saw (an event the dump already
// reflects is skipped). So a socket born, changed or gone during the dump
// ends up right. Reseeds after lost events work the same way.
//
// What the stream does not show is modelled (shared/SS-REFERENCE.md): a
// FIN_WAIT2 or CLOSING -> CLOSE with the peer's FIN in leaves a TIME-WAIT
// minisocket with the same cookie, and a FIN_WAIT2 -> CLOSE without it an
// orphaned FIN-WAIT-2 one; no event announces their expiry, so Reconcile
// compares them with a state-filtered dump, and counts every correction by
// cause. Request sockets (SYN-RECV in ss) are not tracked: no event shows
// them; queries that need them ask sock_diag.
//
// Memory: a live socket costs one record; a closed connection is kept, for
// `history` and for queries of the past, until Options.Retain or
// Options.RetainMax drops it. Records store transitions compactly (16 bytes
// each, monotonic nanoseconds) and are expanded into Conn copies on query.
//
// All methods are safe for concurrent use: Apply runs in the event loop,
// queries in the daemon's request handlers.
package table

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/cgroup2"
	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/owner"
	"github.com/sstrace/sstrace/pkg/sock"
)

// Options configure a Table. The zero value is usable.
type Options struct {
	// Retain is how long closed connections are kept (default 15m).
	Retain time.Duration
	// RetainMax is how many closed connections are kept at most
	// (default 1 000 000); the oldest go first.
	RetainMax int
	// Resolve finds the cookie of a socket whose event carries none
	// (kernels without the cookie helper, for sockets nobody asked a
	// cookie for), by namespace and addresses through sock_diag. nil:
	// such sockets are keyed by their kernel address.
	Resolve func(e *event.Event) (uint64, bool)
	// Cgroups names the owners' cgroups (their paths, and the containers
	// they are): each cgroup id is interned when an owner is first
	// recorded with it, while the cgroup still exists, and connections
	// show the name (Conn.Cgroup, Conn.Container) even after it is gone.
	// nil: owners carry only the cgroup id.
	Cgroups *cgroup2.Names
}

// Default retention.
const (
	DefaultRetain    = 15 * time.Minute
	DefaultRetainMax = 1_000_000
)

// Correction causes (Stats.Corrections keys).
const (
	// CauseTimeWaitExpired: a minisocket the kernel dropped (expected:
	// no event announces it).
	CauseTimeWaitExpired = "timewait_expired"
	// CauseTimeWaitMissing: the table expected a minisocket the kernel
	// never made (tw bucket overflow, or a FIN-WAIT-2 timeout).
	CauseTimeWaitMissing = "timewait_missing"
	// CauseMissingInTable: the kernel has a socket the table lacked.
	CauseMissingInTable = "missing_in_table"
	// CauseGoneFromKernel: the table had a socket the kernel no longer has.
	CauseGoneFromKernel = "gone_from_kernel"
	// CauseStateMismatch: the kernel shows another state than the table.
	CauseStateMismatch = "state_mismatch"
	// CauseSeedMismatch: an event did not continue from any state the
	// seed saw for its socket.
	CauseSeedMismatch = "seed_mismatch"
	// CauseSkippedTransition: an event did not continue from the state
	// the table had for its socket: a transition between them never
	// arrived (the kernel skips a tracing program that a softirq
	// interrupts on the same CPU; it counts it in recursion_misses).
	CauseSkippedTransition = "skipped_transition"
)

// Table is the socket table. Create it with New.
type Table struct {
	mu   sync.RWMutex
	opts Options
	// listeners are the owners of listening sockets, for their children
	// (pkg/owner's rule runs on the records themselves).
	listeners owner.Listeners

	// live holds every socket the kernel has (full sockets and
	// minisockets), by key: the cookie, or the kernel address for a
	// socket without one (kernel addresses never collide with cookies,
	// which count up from 1).
	live map[uint64]*record
	// closed holds gone connections, oldest first, from closedHead on.
	closed     []*record
	closedHead int
	// closedByCookie indexes the newest closed record of each cookie:
	// reconciles and reseeds look up every socket of a dump, and a walk
	// of a million retained records each time is what starved the event
	// loop into ring-buffer losses.
	closedByCookie map[uint64]*record
	// closedBytes is the size of the closed records (they never change
	// once retired): Stats adds it instead of walking a million records
	// under the lock at every status call and scrape.
	closedBytes int64
	// forgotten is the latest gone time of a connection retention
	// dropped: the history is complete only from then on.
	forgotten int64

	seeding bool
	buffer  []event.Event
	// seedStart is the monotonic time the current seed began.
	seedStart int64
	// started is the monotonic time of the first seed: the table knows
	// nothing before it.
	started int64
	seeded  bool

	// monoToWall converts monotonic nanoseconds to Unix nanoseconds.
	monoToWall int64

	stats counters
	// appliedMono is the newest event time applied (CaughtUp).
	appliedMono int64
	// losses are the windows in which events were lost, oldest first.
	// A connection alive in one has a gap (livedThrough): computed when
	// asked, because marking every live record at each loss cost a walk
	// of the table per loss report, a third of the daemon's time under
	// churn with the kernel skipping transitions.
	losses []lossWindow
	subs   map[*Subscription]struct{}
}

// Gap is a window in which events were lost.
type Gap struct {
	From, To time.Time
	Lost     uint64
}

type counters struct {
	events      uint64
	lost        uint64
	reseeds     uint64
	corrections map[string]uint64
	transitions [sock.MaxState + 1][sock.MaxState + 1]uint64
	outcomes    map[Outcome]uint64
	dropped     uint64 // closed connections dropped by retention
	lifetimes   Histogram
	inState     [sock.MaxState + 1]Histogram
}

// New returns an empty table, in seeding mode: Apply buffers events until
// EndSeed.
func New(opts Options) *Table {
	if opts.Retain <= 0 {
		opts.Retain = DefaultRetain
	}
	if opts.RetainMax <= 0 {
		opts.RetainMax = DefaultRetainMax
	}
	t := &Table{
		opts:    opts,
		live:    make(map[uint64]*record),
		seeding: true,

		closedByCookie: make(map[uint64]*record),
		subs:           make(map[*Subscription]struct{}),
	}
	t.stats.corrections = make(map[string]uint64)
	t.stats.outcomes = make(map[Outcome]uint64)
	t.stats.lifetimes = newHistogram()
	for i := range t.stats.inState {
		t.stats.inState[i] = newHistogram()
	}
	t.monoToWall = time.Now().UnixNano() - monoNow()
	// Fix (tests): New starts seeding, so its seed begins now (without
	// BeginSeed, started was 0 and no moment was ErrBeforeStart).
	t.seedStart = monoNow()
	return t
}

// monoNow reads CLOCK_MONOTONIC, the clock of the kernel's event times.
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func (t *Table) wall(mono int64) time.Time {
	if mono == 0 {
		return time.Time{}
	}
	return time.Unix(0, mono+t.monoToWall)
}

func (t *Table) mono(w time.Time) int64 { return w.UnixNano() - t.monoToWall }

// key is the table key of an event's socket.
func key(e *event.Event) uint64 {
	if e.Cookie != 0 {
		return e.Cookie
	}
	return e.Sock
}

// BeginSeed starts a (re)seed: from now on Apply buffers events until
// EndSeed. Call it before dumping.
func (t *Table) BeginSeed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seeding = true
	t.seedStart = monoNow()
}

// Seed adds the rows of a dump begun after BeginSeed (TCP sockets of every
// namespace, all states), with the owners of their inodes when known (from
// a process scan). On a reseed, sockets the table has that the dump lacks,
// and that had no event since BeginSeed, are closed as gone (a correction),
// and sockets the dump shows in another state are corrected.
func (t *Table) Seed(rows []*sock.Socket, owners map[uint64]event.Owner) {
	if t.opts.Cgroups != nil {
		for _, o := range owners { // resolving is not for under the lock
			t.opts.Cgroups.Intern(o.CgroupID)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	first := !t.seeded
	if first {
		t.started = t.seedStart
	}
	// inDump (reseeds only) finds the records the dump no longer has.
	var inDump map[uint64]bool
	if !first {
		inDump = make(map[uint64]bool, len(rows))
	}
	// Fix (tests): the events of the dump's time are still buffered, so
	// changedSince cannot see them; a socket with buffered events is one
	// that changed since BeginSeed (EndSeed's events say what happened to
	// it), not a correction.
	pending := make(map[uint64]bool)
	if !first {
		for i := range t.buffer {
			pending[key(&t.buffer[i])] = true
		}
	}
	for _, s := range rows {
		if s.Proto != sock.ProtoTCP || s.State == sock.NewSynRecv || s.Cookie == 0 {
			continue // request sockets are not tracked (see the package doc)
		}
		if inDump != nil {
			inDump[s.Cookie] = true
		}
		r := t.live[s.Cookie]
		if r != nil {
			// A socket the table already had: its buffered events are
			// all newer than its record, so EndSeed applies them all
			// (no seedState). Without any, the dump is the newest word.
			if r.state != s.State && !pending[s.Cookie] {
				t.stats.corrections[CauseStateMismatch]++
				r.gap = true
				r.state = s.State
				r.dumped = t.seedStart
			}
			if r.inode == 0 {
				r.inode = s.Inode
			}
			continue
		}
		r = &record{
			cookie: s.Cookie, netns: s.NetNS, family: s.Family,
			local: s.Local, peer: s.Peer,
			opened: t.seedStart, dumped: t.seedStart, uid: s.UID, inode: s.Inode,
			origin: OriginBeforeStart,
		}
		r.state = s.State
		r.seedState = s.State
		// Fix (tests): TIME-WAIT and orphaned FIN-WAIT-2 rows without an
		// inode are minisockets (an orderly close), like those events
		// leave: their expiry is not a socket gone from the kernel.
		if s.Inode == 0 && (s.State == sock.TimeWait || s.State == sock.FinWait2) {
			r.minisock = true
			r.outcome = OutcomeClosed
		}
		if !first {
			r.origin = OriginUnknown
			if !pending[s.Cookie] { // born during the dump: not a correction
				r.gap = true
				t.stats.corrections[CauseMissingInTable]++
			}
		}
		if o, ok := owners[s.Inode]; ok && s.Inode != 0 {
			r.owner = o
			if s.State == sock.Listen {
				t.listeners.Add(s.NetNS, s.Local, o)
			}
		}
		t.live[s.Cookie] = r
	}
	if !first {
		for k, r := range t.live {
			// Records change only through events, which are buffered
			// while seeding: pending says whether this one changed.
			if k != r.cookie || inDump[k] || pending[k] {
				continue
			}
			t.stats.corrections[CauseGoneFromKernel]++
			r.gap = true
			t.retire(k, r, t.seedStart, OutcomeUnknown)
		}
	}
}

// EndSeed applies the events buffered since BeginSeed and returns to live
// mode. The table is seeded from then on.
func (t *Table) EndSeed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.buffer {
		t.apply(&t.buffer[i], true)
	}
	t.buffer = nil
	for _, r := range t.live {
		r.seedState = 0
	}
	t.seeding = false
	if !t.seeded {
		t.seeded = true
	} else {
		t.stats.reseeds++
	}
}

// CancelSeed ends a seed that has no dump (it failed): the events buffered
// since BeginSeed are applied and the table returns to live mode as it
// was, its gaps still marked, to be healed by the next seed. Without it a
// failed reseed left the table buffering every event until the next one.
func (t *Table) CancelSeed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.seeding {
		return
	}
	for i := range t.buffer {
		t.apply(&t.buffer[i], false) // as if they had come live
	}
	t.buffer = nil
	t.seeding = false
}

// Cgroups returns Options.Cgroups: the names of the owners' cgroups, for
// the seed to record those of the processes its scan found.
func (t *Table) Cgroups() *cgroup2.Names { return t.opts.Cgroups }

// Seeded reports whether the first seed has completed.
func (t *Table) Seeded() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.seeded
}

// Apply takes one event from the tracer (it is copied when kept). Once it
// is applied (at once, or at EndSeed while seeding) its Owner and InState
// are filled from the socket's record, and subscribers get it so.
func (t *Table) Apply(e *event.Event) {
	// A resolve is a sock_diag round trip: not under the lock, which every
	// query needs. opts never change and Apply has one caller at a time
	// (the event loop), so Resolve needs no lock of its own.
	if e.Cookie == 0 && t.opts.Resolve != nil {
		if c, ok := t.opts.Resolve(e); ok {
			e.Cookie, e.CookieSource = c, event.CookieResolved
		}
	}
	// A process-context transition names the owner with the task's
	// cgroup (owner.Next): its name is found now, while the cgroup
	// exists, and outside the lock (the first time is a system call; the
	// next ones an atomic load or a map lookup).
	if t.opts.Cgroups != nil && e.Context == event.ContextProcess {
		t.opts.Cgroups.Intern(e.CgroupID)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.events++
	t.appliedMono = max(t.appliedMono, int64(e.Mono))
	t.monoToWall = e.Time.UnixNano() - int64(e.Mono)
	if t.seeding {
		t.buffer = append(t.buffer, *e)
		return
	}
	t.apply(e, false)
}

// apply applies one event; fromSeed says it was buffered during a seed.
func (t *Table) apply(e *event.Event, fromSeed bool) {
	k := key(e)
	r := t.live[k]
	if r == nil && e.Cookie != 0 {
		// A cookie-less socket whose cookie came later.
		if r = t.live[e.Sock]; r != nil && r.cookie == 0 {
			delete(t.live, e.Sock)
			r.cookie = e.Cookie
			t.live[k] = r
		} else {
			r = nil
		}
	}
	if r != nil && !fromSeed && e.OldState != r.state && int64(e.Mono) < r.dumped {
		// Older than the dump that set the record's state, which
		// reflects it already: a child's first event the tracer held
		// until its next one (lost), or a ring that lagged behind the
		// dump. History, not a skipped transition.
		t.backfill(r, e)
		return
	}
	inSeed := r != nil && r.seedState != 0
	if inSeed {
		// The socket was in the dump: apply only what continues from
		// the state the dump saw.
		switch {
		case e.OldState == r.state:
			r.seedState = 0
		case e.NewState == r.state:
			r.seedState = 0
			t.backfill(r, e) // the dump already reflects it
			return
		case fromSeed:
			t.backfill(r, e) // older than the dump
			return
		default:
			t.stats.corrections[CauseSeedMismatch]++
			r.gap = true
			r.seedState = 0
		}
	}
	if r != nil && r.minisock {
		// The kernel address of a closed socket was reused: the new
		// socket is another connection (cookie-less case only).
		if e.Cookie == 0 {
			t.retire(k, r, int64(e.Mono), r.outcome)
			r = nil
		}
	}
	// The owner and the time in the old state come from the record: the
	// owner known so far (the seed's, for a socket older than the table)
	// and its last transition.
	var prev event.Owner
	e.InState = 0
	if r != nil && !inSeed && e.OldState != r.state && !r.minisock {
		// A transition in between never arrived: the history has a
		// hole, and the event, newer, says where the socket is now.
		t.stats.corrections[CauseSkippedTransition]++
		r.gap = true
	}
	if r != nil {
		prev = r.owner
		if n := len(r.trans); n > 0 && int64(e.Mono) >= r.trans[n-1].mono {
			e.InState = time.Duration(int64(e.Mono) - r.trans[n-1].mono)
		}
	}
	e.Owner = owner.Next(prev, e, &t.listeners)
	t.listeners.Observe(e)
	t.stats.transitions[e.OldState%(sock.MaxState+1)][e.NewState%(sock.MaxState+1)]++
	if e.InState > 0 {
		t.stats.inState[e.OldState%(sock.MaxState+1)].observe(e.InState.Seconds())
	}
	if r == nil {
		r = &record{
			cookie: e.Cookie, netns: e.NetNS, family: e.Family,
			opened: int64(e.Mono), origin: originOf(e), uid: e.Owner.UID,
		}
		if r.origin == OriginUnknown {
			r.gap = t.inGap(int64(e.Mono))
		}
		t.live[k] = r
	}
	r.local, r.peer = e.Local, e.Peer
	r.owner = e.Owner
	if r.uid == 0 {
		r.uid = e.Owner.UID
	}
	r.addTransition(e)
	r.state = e.NewState
	t.publish(e, nil)
	if e.NewState != sock.Close {
		return
	}
	r.final = e.Final
	r.fullClosed = int64(e.Mono)
	outcome, by := classify(r, e)
	r.by = codeOf(by)
	if r.origin == OriginListen {
		outcome = OutcomeClosed
	}
	if ms, ok := e.Minisocket(); ok && r.origin != OriginListen {
		// The connection lives on in the kernel as a minisocket.
		r.minisock = true
		r.outcome = outcome
		r.state = ms
		t.stats.outcomes[outcome]++
		return
	}
	t.stats.outcomes[outcome]++
	t.retire(k, r, int64(e.Mono), outcome)
}

// backfill records in the history of a socket the dump showed an event
// the dump already reflects or that came before the state it saw: the
// socket was born or changed while the dump ran. The state stays the
// dump's; a birth sets how and when the connection began, and a process
// context names the owner unless the process scan did.
func (t *Table) backfill(r *record, e *event.Event) {
	if o := originOf(e); o != OriginUnknown && len(r.trans) == 0 {
		r.origin = o
		r.opened = int64(e.Mono)
	}
	if r.owner.PID == 0 {
		r.owner = owner.Next(r.owner, e, &t.listeners)
	}
	r.addTransition(e)
}

// originOf says how a socket first seen at e began.
func originOf(e *event.Event) Origin {
	switch {
	case e.OldState == sock.Close && e.NewState == sock.SynSent:
		return OriginConnect
	case e.OldState == sock.Listen && e.NewState == sock.SynRecv:
		return OriginAccept
	case e.OldState == sock.Close && e.NewState == sock.Listen:
		return OriginListen
	}
	return OriginUnknown
}

// classify names how a connection ended, from the transition to CLOSE.
func classify(r *record, e *event.Event) (Outcome, Side) {
	switch e.Final.Err {
	case uint16(unix.ECONNREFUSED):
		return OutcomeRefused, SidePeer
	case uint16(unix.ETIMEDOUT):
		return OutcomeTimeout, SideNone
	case uint16(unix.EHOSTUNREACH), uint16(unix.ENETUNREACH):
		return OutcomeUnreachable, SideNone
	case uint16(unix.ECONNRESET), uint16(unix.EPIPE):
		return OutcomeReset, SidePeer
	}
	first := r.closedFirst()
	switch e.OldState {
	case sock.LastAck, sock.FinWait2, sock.Closing, sock.TimeWait:
		return OutcomeClosed, first
	case sock.SynSent:
		// The local side gave up before the handshake ended.
		return OutcomeAborted, SideLocal
	}
	if e.Context == event.ContextProcess {
		// close() straight to CLOSE: the kernel sent an RST, because
		// of unread data (aborted) or SO_LINGER 0 (reset).
		if e.Final.Unread > 0 {
			return OutcomeAborted, SideLocal
		}
		return OutcomeReset, SideLocal
	}
	if e.OldState == sock.FinWait1 {
		return OutcomeClosed, first
	}
	return OutcomeUnknown, SideNone
}

// retire moves a record from the live map to the closed list.
func (t *Table) retire(k uint64, r *record, at int64, outcome Outcome) {
	delete(t.live, k)
	if r.state == sock.Listen {
		// Gone without its LISTEN -> CLOSE (a reseed or reconcile).
		t.listeners.Remove(r.netns, r.local)
	}
	if r.fullClosed == 0 {
		r.fullClosed = at
	}
	r.gone = at
	r.outcome = outcome
	r.minisock = r.minisock && r.state != sock.Close
	r.compact()
	t.closedBytes += r.size()
	if r.origin == OriginConnect || r.origin == OriginAccept {
		t.stats.lifetimes.observe(float64(r.fullClosed-r.opened) / 1e9)
	}
	t.closed = append(t.closed, r)
	if r.cookie != 0 {
		t.closedByCookie[r.cookie] = r
	}
	if r.origin != OriginListen {
		t.publish(nil, r)
	}
	t.trim(at)
}

// trim drops closed connections past the retention limits.
func (t *Table) trim(now int64) {
	horizon := now - int64(t.opts.Retain)
	for t.closedHead < len(t.closed) {
		r := t.closed[t.closedHead]
		if len(t.closed)-t.closedHead <= t.opts.RetainMax && r.gone >= horizon {
			break
		}
		t.closed[t.closedHead] = nil
		t.closedHead++
		t.closedBytes -= r.size()
		if t.closedByCookie[r.cookie] == r {
			delete(t.closedByCookie, r.cookie)
		}
		t.stats.dropped++
		t.forgotten = max(t.forgotten, r.gone)
	}
	// Compact the queue once half of it is dead.
	if t.closedHead > 1024 && t.closedHead*2 > len(t.closed) {
		n := copy(t.closed, t.closed[t.closedHead:])
		clear(t.closed[n:])
		t.closed = t.closed[:n]
		t.closedHead = 0
	}
}

// Expire applies the retention window now (the event loop also trims as
// connections close; this covers a quiet host).
func (t *Table) Expire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.trim(monoNow())
}

// Lost records that the tracer lost events (lost since the previous
// call) in the window from since to now: every connection alive in it
// shows a gap (Conn.Gap). The caller then reseeds.
func (t *Table) Lost(lost uint64, since time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.lost += lost
	w := lossWindow{from: t.mono(since), to: monoNow(), lost: lost}
	if n := len(t.losses); n > 0 && w.from <= t.losses[n-1].to {
		// Reports come back to back under churn: one window.
		t.losses[n-1].to = w.to
		t.losses[n-1].lost += lost
		return
	}
	if len(t.losses) >= maxLossWindows {
		// Merge the two oldest rather than forget one: a connection
		// inside the merged window is marked, never one that lived
		// through a forgotten loss left unmarked.
		m := t.losses[0]
		m.to, m.lost = t.losses[1].to, m.lost+t.losses[1].lost
		t.losses = append([]lossWindow{m}, t.losses[2:]...)
	}
	t.losses = append(t.losses, w)
}

// maxLossWindows bounds the loss windows kept.
const maxLossWindows = 1000

// lossWindow is a time (monotonic ns) in which events were lost.
type lossWindow struct {
	from, to int64
	lost     uint64
}

// livedThrough reports whether r was alive during one of the windows
// (sorted, as Table.losses): its history may miss transitions.
func livedThrough(r *record, wins []lossWindow) bool {
	i := sort.Search(len(wins), func(i int) bool { return wins[i].to >= r.opened })
	return i < len(wins) && (r.gone == 0 || wins[i].from <= r.gone)
}

// inGap reports whether mono falls within 1 s after a recorded loss.
func (t *Table) inGap(mono int64) bool {
	if len(t.losses) == 0 {
		return false
	}
	return mono <= t.losses[len(t.losses)-1].to+int64(time.Second)
}

// CaughtUp waits until the table has applied (or, while seeding,
// buffered) the events up to at: one newer has been applied, or the event
// source found its ring empty after at (drained, when not nil: the
// tracer's DrainedAt), or no event has come for quiet, longer than the
// tracer's flush interval. It reports whether that happened within
// timeout. A reconcile or a seed compares a dump that ended at at with the
// table: before the table has caught up, a socket the dump saw after a
// transition whose event is still in the ring would look like a mismatch,
// and after a seed the late event would not continue from the dumped state.
func (t *Table) CaughtUp(ctx context.Context, at time.Time, quiet, timeout time.Duration, drained func() time.Time) bool {
	deadline := time.Now().Add(timeout)
	t.mu.RLock()
	target := t.mono(at)
	t.mu.RUnlock()
	var lastEvents uint64
	lastChange := time.Now()
	for {
		t.mu.RLock()
		applied, events := t.appliedMono, t.stats.events
		t.mu.RUnlock()
		now := time.Now()
		switch {
		case applied >= target:
			return true
		case drained != nil && drained().After(at):
			return true
		case events != lastEvents:
			lastEvents, lastChange = events, now
		case now.Sub(lastChange) >= quiet:
			return true
		}
		if now.After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Gaps returns the loss windows that overlap [from, to].
func (t *Table) Gaps(from, to time.Time) []Gap {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []Gap
	for _, w := range t.losses {
		g := Gap{From: t.wall(w.from), To: t.wall(w.to), Lost: w.lost}
		if !g.To.Before(from) && !g.From.After(to) {
			out = append(out, g)
		}
	}
	return out
}

// Reconcile compares the table's sockets in states with a dump of those
// states (every namespace) begun at dumpStart, and corrects the table:
// minisockets the kernel dropped are retired (CauseTimeWaitExpired),
// anything else that differs is a correction by cause. Sockets that changed
// after dumpStart are left alone: the dump may predate their event.
func (t *Table) Reconcile(states sock.StateSet, rows []*sock.Socket, dumpStart time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	start := t.mono(dumpStart)
	now := monoNow()
	inDump := make(map[uint64]*sock.Socket, len(rows))
	for _, s := range rows {
		if s.Proto == sock.ProtoTCP && s.Cookie != 0 && states.Has(s.State) {
			inDump[s.Cookie] = s
		}
	}
	for k, r := range t.live {
		if !states.Has(r.state) || r.changedSince(start) {
			continue
		}
		if r.cookie == 0 && !r.minisock {
			// Fix (tests): a dump names sockets by cookie; one whose
			// events carry none cannot be looked up, and is not gone.
			// (A cookie-less minisocket still expires here, as before:
			// nothing else would ever retire it.)
			continue
		}
		s, ok := inDump[r.cookie]
		if ok {
			if s.State != r.state {
				t.stats.corrections[CauseStateMismatch]++
				r.state = s.State
				r.dumped = start
			}
			if s.Inode == 0 && r.state == sock.FinWait2 && !r.minisock && r.fullClosed != 0 {
				r.minisock = true
			}
			continue
		}
		if r.minisock {
			t.stats.corrections[CauseTimeWaitExpired]++
			t.retire(k, r, now, r.outcome)
			continue
		}
		t.stats.corrections[CauseGoneFromKernel]++
		r.gap = true
		t.retire(k, r, now, OutcomeUnknown)
	}
	for c, s := range inDump {
		if r := t.live[c]; r != nil {
			// A record in a state outside the set, which the loop
			// above left alone, that the kernel shows in one of
			// them: the transitions into it never arrived. Seen for
			// a client's FIN_WAIT1 -> FIN_WAIT2 -> CLOSE into a
			// minisocket that no probe of the tracepoint ran for
			// (docs/BENCHMARKS.md): without this the record stayed
			// in FIN_WAIT1 for good.
			if !states.Has(r.state) && !r.changedSince(start) {
				t.stats.corrections[CauseStateMismatch]++
				r.gap = true
				r.state = s.State
				r.dumped = start
				r.minisock = s.Inode == 0
			}
			continue
		}
		closed := t.closedByCookie[c]
		if closed != nil && closed.gone >= start {
			continue // closed after the dump began: it may show it alive
		}
		// Found among the closed: a connection whose minisocket the
		// table did not expect.
		if closed != nil && s.Inode == 0 {
			t.stats.corrections[CauseTimeWaitMissing]++
			continue
		}
		t.stats.corrections[CauseMissingInTable]++
		r := &record{cookie: c, netns: s.NetNS, family: s.Family, local: s.Local, peer: s.Peer,
			opened: now, dumped: start, origin: OriginUnknown, gap: true, uid: s.UID, inode: s.Inode}
		r.state = s.State
		r.minisock = s.Inode == 0 && (s.State == sock.TimeWait || s.State == sock.FinWait2)
		t.live[c] = r
	}
}

// ErrBeforeStart is returned for a moment before the table knew anything.
var ErrBeforeStart = errors.New("before the table was seeded")

// ErrNotSeeded is returned by queries before the first seed completed.
var ErrNotSeeded = errors.New("the table is still being seeded")

// Rows returns the TCP sockets the kernel had at time at (the zero time:
// now), as rows for an ss query: state, addresses, namespace, cookie, uid,
// inode where known and the owner as the only process (fd unknown: -1).
// Queues, timers and TCP internals are not kept: they are zero. Request
// sockets (SYN-RECV) are not included.
func (t *Table) Rows(at time.Time) ([]*sock.Socket, error) { return t.RowsIn(at, 0) }

// RowsIn is Rows for one network namespace (0: all): the daemon answers
// a caller in its own, and rows of the others are not built at all.
func (t *Table) RowsIn(at time.Time, netns uint64) ([]*sock.Socket, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if !t.seeded {
		return nil, ErrNotSeeded
	}
	var out []*sock.Socket
	row := func(r *record, st sock.State) {
		if netns != 0 && r.netns != netns {
			return
		}
		s := &sock.Socket{
			Proto: sock.ProtoTCP, Family: r.family, State: st, NetNS: r.netns,
			Local: r.local, Peer: r.peer, UID: r.uid, Cookie: r.cookie, Inode: r.inode,
		}
		if r.minisock && (st == sock.TimeWait || st == sock.FinWait2) {
			s.Inode = 0
		}
		if r.owner.Known() && s.Inode != 0 {
			s.Procs = []sock.Process{{Comm: r.owner.Comm, PID: int(r.owner.PID), FD: -1}}
		}
		out = append(out, s)
	}
	if at.IsZero() {
		out = make([]*sock.Socket, 0, len(t.live))
		for _, r := range t.live {
			if r.cookie != 0 {
				row(r, r.state)
			}
		}
		sortRows(out)
		return out, nil
	}
	m := t.mono(at)
	if m < t.started {
		return nil, fmt.Errorf("%s is %w (%s)", at.Format(time.RFC3339Nano), ErrBeforeStart, t.wall(t.started).Format(time.RFC3339Nano))
	}
	// Fix (tests): the horizon was the oldest retained connection's, and
	// only while closedHead > 0: after the queue's compaction (or with
	// nothing retained) a moment whose connections were dropped gave
	// incomplete rows without an error.
	if m < t.forgotten {
		return nil, fmt.Errorf("%s is older than the retained history (from %s; see --retain)", at.Format(time.RFC3339Nano), t.wall(t.forgotten).Format(time.RFC3339Nano))
	}
	for _, r := range t.live {
		if st, ok := r.stateAt(m); ok && r.cookie != 0 {
			row(r, st)
		}
	}
	for _, r := range t.closed[t.closedHead:] {
		if r.gone <= m {
			continue
		}
		if st, ok := r.stateAt(m); ok && r.cookie != 0 {
			row(r, st)
		}
	}
	sortRows(out)
	return out, nil
}

// sortRows orders rows by cookie: a stable order, as close as any to the
// kernel's (which follows its hash tables).
func sortRows(rows []*sock.Socket) {
	sort.Slice(rows, func(i, j int) bool { return rows[i].Cookie < rows[j].Cookie })
}

// Query selects connections for Conns.
type Query struct {
	// Since keeps connections alive at or after this time (zero: all).
	Since time.Time
	// Closed keeps only closed connections.
	Closed bool
	// Live keeps only the connections the kernel still has: the closed
	// ones are not even walked (a live view asking for its CLOSE-WAIT
	// sockets every second must not walk a million retained records).
	Live bool
	// Listeners includes listening sockets (left out by default).
	Listeners bool
	// NetNS keeps one namespace (0: all).
	NetNS uint64
	// States keeps live connections in these states (0: any).
	States sock.StateSet
	// Match, when set, keeps the connections it accepts. It may be shown a
	// connection without its Transitions (they are copied only for the
	// connections it keeps): it must judge by identity and state.
	Match func(*Conn) bool
	// Limit caps the number returned, newest kept (0: no cap).
	Limit int
}

// Conns returns copies of the connections q selects, oldest first: closed
// ones in the order they closed, then live ones by opening time.
func (t *Table) Conns(q Query) ([]Conn, error) {
	var out []Conn
	err := t.EachConn(q, func(c *Conn) error {
		out = append(out, *c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out, nil
}

// EachConn calls fn with a copy of each connection q selects, in Conns'
// order, ignoring q.Limit; it stops at fn's first error and returns it.
// The table's lock is held only while the connections are collected: a
// closed connection's record never changes again, so its copy is made
// after, and fn may take its time (a client reading a million lines)
// without holding up the events. The Conn passed to fn is reused.
func (t *Table) EachConn(q Query, fn func(*Conn) error) error {
	t.mu.RLock()
	if !t.seeded {
		t.mu.RUnlock()
		return ErrNotSeeded
	}
	since := int64(0)
	if !q.Since.IsZero() {
		since = t.mono(q.Since)
	}
	off := t.monoToWall
	losses := slices.Clone(t.losses)
	names := t.opts.Cgroups
	// The state first: a query for one state (a live view's CLOSE-WAIT
	// panel every second) then skips most records without listener()'s
	// look at their history.
	wanted := func(r *record) bool {
		return (q.States == 0 || q.States.Has(r.state)) &&
			(q.NetNS == 0 || r.netns == q.NetNS) &&
			(!r.listener() || q.Listeners)
	}
	var closed []*record
	if !q.Live {
		for _, r := range t.closed[t.closedHead:] {
			if r.gone >= since && wanted(r) {
				closed = append(closed, r)
			}
		}
	}
	var live []Conn
	if !q.Closed {
		recs := make([]*record, 0, len(t.live))
		for _, r := range t.live {
			if wanted(r) {
				recs = append(recs, r)
			}
		}
		sort.Slice(recs, func(i, j int) bool {
			if recs[i].opened != recs[j].opened {
				return recs[i].opened < recs[j].opened
			}
			return recs[i].cookie < recs[j].cookie
		})
		live = make([]Conn, len(recs))
		for i, r := range recs {
			live[i] = viewAt(r, off, losses, names, true)
		}
	}
	t.mu.RUnlock()

	var c Conn
	for _, r := range closed {
		// Match reads the identity and state: the transitions are copied
		// only for the connections it keeps (a selective query over a
		// million retained ones: 1.5 s -> 0.37 s).
		c = viewAt(r, off, losses, names, false)
		if q.Match != nil && !q.Match(&c) {
			continue
		}
		c.Transitions = viewTransitions(r, off)
		if err := fn(&c); err != nil {
			return err
		}
	}
	for i := range live {
		c = live[i]
		if q.Match != nil && !q.Match(&c) {
			continue
		}
		if err := fn(&c); err != nil {
			return err
		}
	}
	return nil
}

// Lookup returns the connection with this cookie (live first, then the
// newest closed one).
func (t *Table) Lookup(cookie uint64) (Conn, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if r := t.live[cookie]; r != nil {
		return t.view(r), true
	}
	if r := t.closedByCookie[cookie]; r != nil {
		return t.view(r), true
	}
	return Conn{}, false
}

// Stats are the table's figures for status and metrics.
type Stats struct {
	Seeded bool
	// Started is when the first seed began.
	Started time.Time
	// Live counts the kernel's sockets by state (minisockets included).
	Live map[sock.State]int
	// LiveByNetNS counts live sockets by namespace inode.
	LiveByNetNS map[uint64]int
	// CloseWaitByNetNS counts live CLOSE-WAIT sockets by namespace inode
	// (namespaces without any are absent).
	CloseWaitByNetNS map[uint64]int
	// Retained is the number of closed connections kept.
	Retained int
	// Events is the number of events applied (or buffered).
	Events uint64
	// Lost is the number of events the tracer reported lost.
	Lost    uint64
	Reseeds uint64
	// Corrections counts corrections by cause (Cause* constants).
	Corrections map[string]uint64
	// Transitions counts transitions by old and new state.
	Transitions map[[2]sock.State]uint64
	// Outcomes counts connections by how they ended.
	Outcomes map[Outcome]uint64
	// Dropped counts closed connections dropped by retention.
	Dropped uint64
	// MemoryBytes estimates the table's memory (records and transitions).
	MemoryBytes int64
	// Lifetimes is the distribution of closed connections' lifetimes
	// (seconds; connections whose start was seen).
	Lifetimes Histogram
	// InState is, per state, the distribution of the time sockets spent
	// in it before leaving it (seconds).
	InState map[sock.State]Histogram
}

// Stats returns a copy of the table's figures.
func (t *Table) Stats() Stats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s := Stats{
		Seeded: t.seeded, Started: t.wall(t.started),
		Live: map[sock.State]int{}, LiveByNetNS: map[uint64]int{}, CloseWaitByNetNS: map[uint64]int{},
		Retained: len(t.closed) - t.closedHead,
		Events:   t.stats.events, Lost: t.stats.lost, Reseeds: t.stats.reseeds,
		Corrections: map[string]uint64{}, Transitions: map[[2]sock.State]uint64{},
		Outcomes: map[Outcome]uint64{}, Dropped: t.stats.dropped,
		Lifetimes: t.stats.lifetimes.clone(), InState: map[sock.State]Histogram{},
	}
	for st, h := range t.stats.inState {
		if h.Count > 0 {
			s.InState[sock.State(st)] = h.clone()
		}
	}
	for _, r := range t.live {
		s.Live[r.state]++
		s.LiveByNetNS[r.netns]++
		if r.state == sock.CloseWait {
			s.CloseWaitByNetNS[r.netns]++
		}
		s.MemoryBytes += r.size()
	}
	s.MemoryBytes += t.closedBytes
	for k, v := range t.stats.corrections {
		s.Corrections[k] = v
	}
	for k, v := range t.stats.outcomes {
		s.Outcomes[k] = v
	}
	for o := range t.stats.transitions {
		for n, v := range t.stats.transitions[o] {
			if v != 0 {
				s.Transitions[[2]sock.State{sock.State(o), sock.State(n)}] = v
			}
		}
	}
	return s
}

// view expands a record into a Conn.
func (t *Table) view(r *record) Conn {
	return viewAt(r, t.monoToWall, t.losses, t.opts.Cgroups, true)
}

// viewAt is view with the monotonic-to-wall offset, the loss windows and
// the cgroup names given: EachConn reads them under the lock and makes
// closed connections' views after.
func viewAt(r *record, off int64, losses []lossWindow, names *cgroup2.Names, transitions bool) Conn {
	wall := func(mono int64) time.Time {
		if mono == 0 {
			return time.Time{}
		}
		return time.Unix(0, mono+off)
	}
	c := Conn{
		Cookie: r.cookie, NetNS: r.netns, Family: r.family, Local: r.local, Peer: r.peer,
		State: r.state, Minisocket: r.minisock, Owner: r.owner, Origin: r.origin,
		Opened: wall(r.opened), FullClosed: wall(r.fullClosed), Gone: wall(r.gone),
		Outcome: r.outcome, By: r.by.side(), Final: r.final, Gap: r.gap || livedThrough(r, losses), UID: r.uid, Inode: r.inode,
	}
	if names != nil && r.owner.CgroupID != 0 {
		if n, ok := names.Lookup(r.owner.CgroupID); ok {
			c.Cgroup, c.Container = n.Path, n.Container
		}
	}
	if r.gone != 0 {
		// Fix (tests): an expired minisocket is closed too (Conn.State).
		c.State = sock.Close
		c.Minisocket = false
	}
	if transitions {
		c.Transitions = viewTransitions(r, off)
	}
	return c
}

// viewTransitions expands a record's history (nil for none).
func viewTransitions(r *record, off int64) []Transition {
	if len(r.trans) == 0 {
		return nil
	}
	out := make([]Transition, len(r.trans))
	for i, tr := range r.trans {
		out[i] = Transition{
			Time: time.Unix(0, tr.mono+off), OldState: tr.old, NewState: tr.new, Context: tr.ctx,
		}
		if tr.task > 0 && int(tr.task) <= len(r.tasks) {
			task := r.tasks[tr.task-1]
			out[i].Task = &task
		}
	}
	return out
}
