package table

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

var (
	curl  = event.Task{PID: 100, TID: 100, UID: 1000, Comm: "curl"}
	nginx = event.Task{PID: 200, TID: 201, UID: 33, Comm: "nginx"}
)

// TestSeedWithoutRace: events that arrive while the first dump runs are
// buffered and applied by EndSeed, each only if it continues from what the
// dump saw.
func TestSeedWithoutRace(t *testing.T) {
	h := newHarness(t, Options{})
	tbl := h.tbl
	tbl.BeginSeed()
	seedStart := h.now()

	// (a) born and closed during the dump, never in the rows: refused,
	// and a full orderly life.
	refused := newSk(1, "10.0.0.1:40001", "10.0.0.2:81", curl)
	h.run(refused, st(sock.Close, sock.SynSent, P),
		stFin(sock.SynSent, sock.Close, S, event.Final{Err: uint16(unix.ECONNREFUSED)}))
	orderly := newSk(2, "10.0.0.1:40002", "10.0.0.2:80", curl)
	h.run(orderly, cat(clientOpen, closePeerFirst)...)
	// (b) in the dump, which already shows the event's new state.
	reflected := newSk(3, "10.0.0.1:40003", "10.0.0.2:80", curl)
	h.run(reflected, st(sock.Established, sock.CloseWait, S))
	// (c) dumped before its event.
	later := newSk(4, "10.0.0.1:40004", "10.0.0.2:80", curl)
	h.run(later, st(sock.Established, sock.FinWait1, P))
	// (c') dumped in the middle of two events.
	middle := newSk(5, "10.0.0.1:40005", "10.0.0.2:80", curl)
	h.run(middle, st(sock.Established, sock.CloseWait, S), st(sock.CloseWait, sock.LastAck, P))
	// (d) in the dump, closed during it (an RST from the peer).
	gone := newSk(6, "10.0.0.1:40006", "10.0.0.2:80", curl)
	h.run(gone, stFin(sock.Established, sock.Close, S, event.Final{Err: uint16(unix.ECONNRESET)}))
	// (e) owners from the process scan; one gets a softirq event during
	// the dump (dumped before it), the other one after the seed.
	owned := newSk(7, "10.0.0.2:80", "10.0.0.9:5000", nginx)
	ownedBusy := newSk(8, "10.0.0.2:80", "10.0.0.9:5001", nginx)
	h.run(ownedBusy, st(sock.Established, sock.CloseWait, S))
	// (f) born during the dump, in it, still alive.
	young := newSk(9, "10.0.0.1:40009", "10.0.0.2:80", curl)
	h.run(young, clientOpen...)
	// (g) born during the dump, not in it (dumped before it was born),
	// alive at the end of the seed.
	unseen := newSk(10, "10.0.0.1:40010", "10.0.0.2:80", curl)
	h.run(unseen, st(sock.Close, sock.SynSent, P))

	// A queries before EndSeed: not seeded yet.
	if _, err := tbl.Rows(time.Time{}); !errors.Is(err, ErrNotSeeded) {
		t.Errorf("Rows before EndSeed: %v, want ErrNotSeeded", err)
	}
	if _, err := tbl.Conns(Query{}); !errors.Is(err, ErrNotSeeded) {
		t.Errorf("Conns before EndSeed: %v, want ErrNotSeeded", err)
	}
	if tbl.Seeded() {
		t.Error("Seeded before EndSeed")
	}

	rows := []*sock.Socket{
		row(reflected, sock.CloseWait, 103),
		row(later, sock.Established, 104),
		row(middle, sock.CloseWait, 105),
		row(gone, sock.Established, 106),
		row(owned, sock.Established, 107),
		row(ownedBusy, sock.Established, 108),
		row(young, sock.Established, 109),
	}
	owners := map[uint64]event.Owner{
		106: {PID: 300, UID: 1000, Comm: "gone"},
		107: {PID: 200, UID: 33, Comm: "nginx"},
		108: {PID: 201, UID: 33, Comm: "nginx2"},
	}
	tbl.Seed(rows, owners)
	tbl.EndSeed()
	if !tbl.Seeded() {
		t.Fatal("not Seeded after EndSeed")
	}
	h.wantCorrections(nil)

	live := h.rows(time.Time{})
	wantLive := map[uint64]sock.State{
		3: sock.CloseWait, 4: sock.FinWait1, 5: sock.LastAck, 7: sock.Established,
		8: sock.CloseWait, 9: sock.Established, 10: sock.SynSent,
	}
	for c, want := range wantLive {
		if r := live[c]; r == nil || r.State != want {
			t.Errorf("cookie %d: row %+v, want state %v", c, r, want)
		}
	}
	for c := range live {
		if _, ok := wantLive[c]; !ok {
			t.Errorf("cookie %d: unexpected row %+v", c, live[c])
		}
	}

	// (a)
	if cs := h.closedConns(1); len(cs) != 1 || cs[0].Outcome != OutcomeRefused || cs[0].By != SidePeer ||
		cs[0].Origin != OriginConnect || cs[0].State != sock.Close || len(cs[0].Transitions) != 2 || cs[0].Owner.Comm != "curl" {
		t.Errorf("refused during the dump: %+v", cs)
	}
	if cs := h.closedConns(2); len(cs) != 1 || cs[0].Outcome != OutcomeClosed || cs[0].By != SidePeer ||
		len(cs[0].Transitions) != 5 || cs[0].Live() {
		t.Errorf("closed during the dump: %+v", cs)
	}
	// (b): not applied twice, and in the history: when the peer's FIN
	// came.
	if c := h.conn(3); len(c.Transitions) != 1 || c.Transitions[0].NewState != sock.CloseWait || c.Gap || c.State != sock.CloseWait {
		t.Errorf("reflected event: %+v", c)
	}
	// (c'): both transitions in the history.
	if c := h.conn(5); len(c.Transitions) != 2 || c.State != sock.LastAck {
		t.Errorf("dumped between two events: %+v", c)
	}
	// (f): the whole life, from the connect, with its owner.
	if c := h.conn(9); c.Origin != OriginConnect || len(c.Transitions) != 2 || c.Owner.PID != curl.PID ||
		!c.Opened.Before(h.wall(h.now())) || c.Opened.Before(h.wall(seedStart)) {
		t.Errorf("born during the dump and in it: %+v", c)
	}
	// (c)
	if c := h.conn(4); len(c.Transitions) != 1 || c.Transitions[0].NewState != sock.FinWait1 || c.Origin != OriginBeforeStart {
		t.Errorf("event after the dump: %+v", c)
	}
	// (d)
	if cs := h.closedConns(6); len(cs) != 1 || cs[0].Outcome != OutcomeReset || cs[0].By != SidePeer || cs[0].Live() {
		t.Errorf("closed during the dump: %+v", cs)
	}
	// (e)
	if r := live[7]; r.Inode != 107 || len(r.Procs) != 1 || r.Procs[0].Comm != "nginx" || r.Procs[0].PID != 200 || r.Procs[0].FD != -1 {
		t.Errorf("seeded owner: row %+v procs %+v", r, r.Procs)
	}
	e := h.apply(owned, st(sock.Established, sock.CloseWait, S))
	if e.Owner.PID != 200 || e.Owner.Comm != "nginx" {
		t.Errorf("softirq event after the seed: owner %+v, want the seeded nginx", e.Owner)
	}
	if c := h.conn(7); c.Owner.PID != 200 || c.State != sock.CloseWait {
		t.Errorf("seeded socket after a softirq event: %+v", c)
	}
	if c := h.conn(8); c.Owner.PID != 201 || c.Owner.Comm != "nginx2" {
		t.Errorf("seeded socket with a softirq event during the dump: owner %+v, want nginx2/201", c.Owner)
	}
	e = h.apply(ownedBusy, st(sock.CloseWait, sock.LastAck, S))
	if e.Owner.PID != 201 {
		t.Errorf("later event of a seeded socket: owner %+v", e.Owner)
	}
	// (g): its owner survives the seed.
	e = h.apply(unseen, st(sock.SynSent, sock.Established, S))
	if e.Owner.PID != curl.PID || e.InState <= 0 {
		t.Errorf("softirq event of a socket born during the dump: owner %+v in-state %v", e.Owner, e.InState)
	}
	if c := h.conn(10); c.Origin != OriginConnect || c.Owner.PID != curl.PID || len(c.Transitions) != 2 {
		t.Errorf("born during the dump: %+v", c)
	}
	// Owners live in the records: nothing live remains of a socket closed
	// during the dump.
	if r, ok := tbl.live[gone.cookie]; ok {
		t.Errorf("the table keeps %+v live for a socket closed during the dump", r.owner)
	}
	if s := tbl.Stats(); s.Reseeds != 0 || !s.Seeded || s.Started.Before(h.wall(seedStart).Add(-time.Second)) {
		t.Errorf("stats: %+v", s)
	}
}

// TestSeedMinisockets: TIME-WAIT rows of the dump (inode 0) are
// minisockets; their expiry is not a loss.
func TestSeedMinisockets(t *testing.T) {
	tw := newSk(1, "10.0.0.1:40001", "10.0.0.2:80", curl)
	fw2 := newSk(2, "10.0.0.1:40002", "10.0.0.2:80", curl)
	est := newSk(3, "10.0.0.1:40003", "10.0.0.2:80", curl)
	h := seeded(t, Options{}, []*sock.Socket{row(tw, sock.TimeWait, 0), row(fw2, sock.FinWait2, 0), row(est, sock.Established, 5)}, nil)
	if c := h.conn(1); !c.Minisocket || c.State != sock.TimeWait {
		t.Errorf("seeded TIME-WAIT: %+v", c)
	}
	mid := h.now()
	start := h.now()
	h.tbl.Reconcile(1<<sock.TimeWait|1<<sock.FinWait2, nil, h.wall(start))
	h.wantCorrections(map[string]uint64{CauseTimeWaitExpired: 2})
	for _, c := range []uint64{1, 2} {
		cs := h.closedConns(c)
		if len(cs) != 1 || cs[0].Gap || cs[0].Live() || cs[0].State != sock.Close {
			t.Errorf("expired seeded minisocket %d: %+v", c, cs)
		}
	}
	// In the past, they were there.
	past := h.rows(h.wall(mid))
	if past[1] == nil || past[1].State != sock.TimeWait || past[2] == nil || past[2].State != sock.FinWait2 || past[3] == nil {
		t.Errorf("Rows before the expiry: %v", past)
	}
}

// TestSeedWithoutBeginSeed: New is in seeding mode; its seed began at New.
func TestSeedWithoutBeginSeed(t *testing.T) {
	before := time.Now()
	time.Sleep(time.Millisecond)
	tbl := New(Options{})
	tbl.Seed(nil, nil)
	tbl.EndSeed()
	if _, err := tbl.Rows(before); !errors.Is(err, ErrBeforeStart) {
		t.Errorf("Rows before New: %v, want ErrBeforeStart", err)
	}
}

// TestReseedWithoutRace: a reseed with the table in step with the kernel
// corrects nothing, even with sockets changing, born and closing during
// the dump.
func TestReseedWithoutRace(t *testing.T) {
	a := newSk(1, "10.0.0.1:40001", "10.0.0.2:80", curl)
	b := newSk(2, "10.0.0.1:40002", "10.0.0.2:80", curl)
	c := newSk(3, "10.0.0.1:40003", "10.0.0.2:80", curl)
	h := seeded(t, Options{}, []*sock.Socket{row(a, sock.Established, 1), row(b, sock.Established, 2), row(c, sock.Established, 3)}, nil)
	h.run(a, st(sock.Established, sock.FinWait1, P)) // before the reseed

	h.tbl.BeginSeed()
	// a closes during the dump, which sees its TIME-WAIT; c is reset
	// during the dump, which misses it.
	h.run(a, st(sock.FinWait1, sock.FinWait2, S), stFin(sock.FinWait2, sock.Close, S, event.Final{PeerFIN: true}))
	h.run(c, stFin(sock.Established, sock.Close, S, event.Final{Err: uint16(unix.ECONNRESET)}))
	// b changes during the dump (the dump shows the new state).
	h.run(b, st(sock.Established, sock.CloseWait, S))
	// d is born during the dump and is in it; e is born after it saw
	// nothing.
	d := newSk(4, "10.0.0.1:40004", "10.0.0.2:80", curl)
	h.run(d, clientOpen...)
	e := newSk(5, "10.0.0.1:40005", "10.0.0.2:80", curl)
	h.run(e, st(sock.Close, sock.SynSent, P))
	h.tbl.Seed([]*sock.Socket{row(b, sock.CloseWait, 2), row(d, sock.Established, 4), row(a, sock.TimeWait, 0)}, nil)
	h.tbl.EndSeed()

	h.wantCorrections(nil)
	if s := h.tbl.Stats(); s.Reseeds != 1 {
		t.Errorf("Reseeds = %d, want 1", s.Reseeds)
	}
	if ca := h.conn(1); ca.State != sock.TimeWait || !ca.Minisocket || ca.Outcome != OutcomeClosed || ca.By != SideLocal || ca.Gap {
		t.Errorf("a closed during the reseed: %+v", ca)
	}
	if cs := h.closedConns(1); len(cs) != 0 {
		t.Errorf("a retired during the reseed: %+v", cs)
	}
	if cb := h.conn(2); cb.State != sock.CloseWait || cb.Gap || len(cb.Transitions) != 1 {
		t.Errorf("b changed during the reseed: %+v", cb)
	}
	if cd := h.conn(4); cd.State != sock.Established || cd.Gap {
		t.Errorf("d born during the reseed: %+v", cd)
	}
	if cs := h.closedConns(3); len(cs) != 1 || cs[0].Outcome != OutcomeReset || cs[0].By != SidePeer || cs[0].Gap {
		t.Errorf("c reset during the reseed: %+v", cs)
	}
	ev := h.apply(e, st(sock.SynSent, sock.Established, S))
	if ev.Owner.PID != curl.PID {
		t.Errorf("e born during the reseed: later softirq event's owner %+v", ev.Owner)
	}
	if ce := h.conn(5); ce.State != sock.Established || ce.Origin != OriginConnect || ce.Owner.PID != curl.PID {
		t.Errorf("e born during the reseed: %+v", ce)
	}
}

// TestReseedAppliesEventsAfterAMissedTransition: a socket the table had
// before the reseed, whose transition the kernel skipped (ESTABLISHED ->
// CLOSE_WAIT, never seen), keeps every event buffered during the reseed:
// they are newer than its record, not older than the dump.
func TestReseedAppliesEventsAfterAMissedTransition(t *testing.T) {
	a := newSk(1, "10.0.0.1:40001", "10.0.0.2:80", curl)
	h := seeded(t, Options{}, []*sock.Socket{row(a, sock.Established, 1)}, nil)
	h.tbl.BeginSeed()
	// The skipped ESTABLISHED -> CLOSE_WAIT, then the close the stream sees.
	h.run(a, st(sock.CloseWait, sock.LastAck, P))
	h.tbl.Seed([]*sock.Socket{row(a, sock.CloseWait, 1)}, nil)
	h.tbl.EndSeed()
	if c := h.conn(1); c.State != sock.LastAck || len(c.Transitions) != 1 || c.Transitions[0].NewState != sock.LastAck {
		t.Errorf("after the reseed: state %s, transitions %+v; want LAST_ACK from the buffered close", c.State, c.Transitions)
	}
}

// TestCancelSeed: a reseed whose dump failed returns the table to live
// mode with the events of the attempt applied, no correction made and no
// reseed counted; before, the table buffered every later event.
func TestCancelSeed(t *testing.T) {
	c := newSk(1, "10.0.0.1:40001", "10.0.0.2:80", curl)
	h := seeded(t, Options{}, []*sock.Socket{row(c, sock.Established, 101)}, nil)
	h.tbl.BeginSeed()
	h.run(c, st(sock.Established, sock.FinWait1, P))
	h.tbl.CancelSeed()
	if got := h.conn(1).State; got != sock.FinWait1 {
		t.Errorf("after the cancelled seed: %v, want the buffered event's FIN-WAIT-1", got)
	}
	h.run(c, st(sock.FinWait1, sock.FinWait2, S))
	if got := h.conn(1).State; got != sock.FinWait2 {
		t.Errorf("after a live event: %v, want FIN-WAIT-2 (the table still buffers)", got)
	}
	if !h.tbl.Seeded() || h.tbl.Stats().Reseeds != 0 {
		t.Errorf("seeded %v reseeds %d, want true and 0", h.tbl.Seeded(), h.tbl.Stats().Reseeds)
	}
	h.wantCorrections(map[string]uint64{})
	h.tbl.CancelSeed() // not seeding: nothing to do
}
