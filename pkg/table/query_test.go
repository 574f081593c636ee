package table

import (
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// TestRowsAt: the sockets the kernel had at a past moment.
func TestRowsAt(t *testing.T) {
	h := newHarness(t, Options{})
	if _, err := h.tbl.Rows(time.Time{}); !errors.Is(err, ErrNotSeeded) {
		t.Errorf("Rows before the seed: %v", err)
	}
	before := h.now()
	h.tbl.BeginSeed()
	h.tbl.Seed(nil, nil)
	h.tbl.EndSeed()
	if _, err := h.tbl.Rows(h.wall(before)); !errors.Is(err, ErrBeforeStart) {
		t.Errorf("Rows before the seed began: %v, want ErrBeforeStart", err)
	}

	c, s := loopbackPair(0)
	steps := cat(clientOpen, closeLocalFirst)
	ms := h.run(c, steps...)
	ss := h.run(s, cat(serverOpen, closePeerFirst)...)
	mid := h.now()
	h.tbl.Reconcile(1<<sock.TimeWait, nil, h.wall(h.now()))
	after := h.now()

	if rows := h.rows(h.wall(ms[0] - 1)); len(rows) != 0 {
		t.Errorf("before the connect: %v", rows)
	}
	for i, m := range ms {
		want := steps[i].new
		if want == sock.Close {
			want = sock.TimeWait
		}
		for _, at := range []int64{m, m + 1} {
			r := h.rows(h.wall(at))[c.cookie]
			if r == nil || r.State != want {
				t.Errorf("client at transition %d (+%d): %+v, want %v", i, at-m, r, want)
			}
		}
	}
	if r := h.rows(h.wall(mid))[c.cookie]; r == nil || r.State != sock.TimeWait || r.Inode != 0 {
		t.Errorf("client's TIME-WAIT: %+v", r)
	}
	if r := h.rows(h.wall(ss[2]))[s.cookie]; r == nil || r.State != sock.CloseWait {
		t.Errorf("server in CLOSE_WAIT: %+v", r)
	}
	if r := h.rows(h.wall(ss[len(ss)-1]))[s.cookie]; r != nil {
		t.Errorf("server after its CLOSE: %+v", r)
	}
	if rows := h.rows(h.wall(after)); len(rows) != 0 {
		t.Errorf("after the TIME-WAIT expired: %v", rows)
	}
	if rows := h.rows(time.Time{}); len(rows) != 0 {
		t.Errorf("now: %v", rows)
	}
}

// TestRetention: closed connections go by count and by age.
func TestRetention(t *testing.T) {
	t.Run("max", func(t *testing.T) {
		h := seeded(t, Options{RetainMax: 3}, nil, nil)
		for i := 1; i <= 5; i++ {
			h.run(newSk(uint64(i), "10.0.0.1:40000", "10.0.0.2:80", curl), cat(clientOpen, []step{st(sock.Established, sock.Close, P)})...)
		}
		cs, _ := h.tbl.Conns(Query{Closed: true})
		if len(cs) != 3 || cs[0].Cookie != 3 || cs[2].Cookie != 5 {
			t.Errorf("kept %+v, want 3, 4, 5", cs)
		}
		if s := h.tbl.Stats(); s.Retained != 3 || s.Dropped != 2 {
			t.Errorf("retained %d dropped %d", s.Retained, s.Dropped)
		}
		if _, ok := h.tbl.Lookup(1); ok {
			t.Error("dropped connection found")
		}
	})
	t.Run("age", func(t *testing.T) {
		h := seeded(t, Options{Retain: time.Minute}, nil, nil)
		a := newSk(1, "10.0.0.1:40001", "10.0.0.2:80", curl)
		b := newSk(2, "10.0.0.1:40002", "10.0.0.2:80", curl)
		h.run(a, cat(clientOpen, []step{st(sock.Established, sock.Close, P)})...)
		h.run(b, clientOpen...)
		// b closes two minutes later (on the event clock).
		h.last += int64(2 * time.Minute)
		h.tbl.Apply(h.evAt(b, st(sock.Established, sock.Close, P), h.last))
		cs, _ := h.tbl.Conns(Query{Closed: true})
		if len(cs) != 1 || cs[0].Cookie != 2 {
			t.Errorf("kept %+v, want only 2", cs)
		}
		if s := h.tbl.Stats(); s.Dropped != 1 {
			t.Errorf("dropped %d", s.Dropped)
		}
	})
	t.Run("expire", func(t *testing.T) {
		h := seeded(t, Options{Retain: time.Millisecond}, nil, nil)
		h.run(newSk(1, "10.0.0.1:40001", "10.0.0.2:80", curl), cat(clientOpen, []step{st(sock.Established, sock.Close, P)})...)
		live := newSk(2, "10.0.0.1:40002", "10.0.0.2:80", curl)
		h.run(live, clientOpen...)
		time.Sleep(5 * time.Millisecond)
		h.tbl.Expire()
		if s := h.tbl.Stats(); s.Retained != 0 || s.Dropped != 1 || s.Live[sock.Established] != 1 {
			t.Errorf("after Expire: retained %d dropped %d live %v", s.Retained, s.Dropped, s.Live)
		}
	})
	t.Run("history horizon", func(t *testing.T) {
		// Many more than the queue compacts at (1024 dead entries).
		h := seeded(t, Options{RetainMax: 10}, nil, nil)
		var first int64
		// Until the queue was just compacted.
		for i := 1; i < 1100 || h.tbl.closedHead != 0; i++ {
			ms := h.run(newSk(uint64(i), "10.0.0.1:40000", "10.0.0.2:80", curl), cat(clientOpen, []step{st(sock.Established, sock.Close, P)})...)
			if i == 1 {
				first = ms[1]
			}
		}
		if s := h.tbl.Stats(); s.Retained != 10 || s.Dropped < 1000 {
			t.Errorf("retained %d dropped %d", s.Retained, s.Dropped)
		}
		if rows, err := h.tbl.Rows(h.wall(first)); err == nil {
			t.Errorf("Rows at a moment whose connections were dropped: %d rows, no error", len(rows))
		}
		if _, err := h.tbl.Rows(h.wall(h.now())); err != nil {
			t.Errorf("Rows now: %v", err)
		}
	})
}

// TestLostAndReseed: a loss marks the live connections and is recorded; a
// reseed then corrects the table against the kernel.
func TestLostAndReseed(t *testing.T) {
	p := newSk(1, "10.0.0.1:40001", "10.0.0.2:80", curl)
	q := newSk(2, "10.0.0.1:40002", "10.0.0.2:80", curl)
	r := newSk(3, "10.0.0.1:40003", "10.0.0.2:80", curl)
	n := newSk(4, "10.0.0.1:40004", "10.0.0.2:80", curl)
	h := seeded(t, Options{}, []*sock.Socket{row(p, sock.Established, 1), row(q, sock.Established, 2), row(r, sock.Established, 3)}, nil)
	closedBefore := newSk(5, "10.0.0.1:40005", "10.0.0.2:80", curl)
	h.run(closedBefore, cat(clientOpen, []step{st(sock.Established, sock.Close, P)})...)
	beforeLoss := h.now()

	since := h.wall(h.now())
	h.tbl.Lost(7, since)
	lostAt := h.now()
	for _, c := range []uint64{1, 2, 3} {
		if !h.conn(c).Gap {
			t.Errorf("live %d: no gap mark", c)
		}
	}
	if h.conn(5).Gap {
		t.Error("a connection closed before the loss has a gap mark")
	}
	gs := h.tbl.Gaps(since.Add(-time.Second), h.wall(h.now()))
	if len(gs) != 1 || gs[0].Lost != 7 || !gs[0].From.Equal(since) || gs[0].To.Before(since) {
		t.Errorf("gaps: %+v", gs)
	}
	if gs := h.tbl.Gaps(since.Add(-time.Hour), since.Add(-time.Minute)); len(gs) != 0 {
		t.Errorf("gaps before the loss: %+v", gs)
	}
	if gs := h.tbl.Gaps(h.wall(lostAt).Add(time.Minute), h.wall(lostAt).Add(time.Hour)); len(gs) != 0 {
		t.Errorf("gaps after the loss: %+v", gs)
	}
	// A socket first seen right after the loss may miss its beginning.
	mid := newSk(6, "10.0.0.1:40006", "10.0.0.2:80", curl)
	h.run(mid, st(sock.Established, sock.FinWait1, P))
	if c := h.conn(6); c.Origin != OriginUnknown || !c.Gap {
		t.Errorf("first seen after a loss: %+v", c)
	}

	// The kernel: p gone, q in CLOSE_WAIT, r unchanged, n unknown to the
	// table, mid as the table has it.
	h.tbl.BeginSeed()
	h.tbl.Seed([]*sock.Socket{row(q, sock.CloseWait, 2), row(r, sock.Established, 3), row(n, sock.Established, 4), row(mid, sock.FinWait1, 6)}, nil)
	h.tbl.EndSeed()
	h.wantCorrections(map[string]uint64{CauseGoneFromKernel: 1, CauseStateMismatch: 1, CauseMissingInTable: 1})
	s := h.tbl.Stats()
	if s.Reseeds != 1 || s.Lost != 7 {
		t.Errorf("reseeds %d lost %d", s.Reseeds, s.Lost)
	}
	if c := h.conn(1); c.Live() || c.Outcome != OutcomeUnknown || !c.Gap {
		t.Errorf("gone from the kernel: %+v", c)
	}
	if c := h.conn(2); c.State != sock.CloseWait {
		t.Errorf("state corrected: %+v", c)
	}
	if c := h.conn(4); !c.Live() || c.Origin != OriginUnknown || !c.Gap || c.State != sock.Established {
		t.Errorf("missing in the table: %+v", c)
	}
	rows := h.rows(time.Time{})
	if len(rows) != 4 || rows[1] != nil {
		t.Errorf("rows after the reseed: %v", rows)
	}
	// Before the loss, p was there.
	if r := h.rows(h.wall(beforeLoss))[1]; r == nil || r.State != sock.Established {
		t.Errorf("p before it went: %+v", r)
	}
}

// TestSubscriptions: events and closed connections are delivered; a slow
// subscriber loses updates instead of blocking the table.
func TestSubscriptions(t *testing.T) {
	h := seeded(t, Options{}, nil, nil)
	both := h.tbl.Subscribe(true, true, 100)
	events := h.tbl.Subscribe(true, false, 100)
	conns := h.tbl.Subscribe(false, true, 100)
	slow := h.tbl.Subscribe(true, true, 1)
	c := newSk(1, "10.0.0.1:40001", "10.0.0.2:80", curl)
	steps := cat(clientOpen, []step{stFin(sock.Established, sock.Close, S, event.Final{Err: uint16(unix.ECONNRESET)})})
	h.run(c, steps...)

	drain := func(s *Subscription) (evs []*event.Event, cs []*Conn) {
		for {
			select {
			case u := <-s.C:
				if u.Event != nil {
					evs = append(evs, u.Event)
				}
				if u.Conn != nil {
					cs = append(cs, u.Conn)
				}
			default:
				return
			}
		}
	}
	evs, cs := drain(both)
	if len(evs) != 3 || len(cs) != 1 || cs[0].Outcome != OutcomeReset || cs[0].Cookie != 1 {
		t.Errorf("both: %d events, conns %+v", len(evs), cs)
	}
	for _, e := range evs {
		if e.Owner.PID != curl.PID {
			t.Errorf("event without its owner: %+v", e)
		}
	}
	if evs, cs := drain(events); len(evs) != 3 || len(cs) != 0 {
		t.Errorf("events only: %d events %d conns", len(evs), len(cs))
	}
	if evs, cs := drain(conns); len(evs) != 0 || len(cs) != 1 {
		t.Errorf("conns only: %d events %d conns", len(evs), len(cs))
	}
	if evs, cs := drain(slow); len(evs)+len(cs) != 1 || slow.Dropped() != 3 {
		t.Errorf("slow: %d updates, %d dropped, want 1 and 3", len(evs)+len(cs), slow.Dropped())
	}
	if both.Dropped() != 0 {
		t.Errorf("both dropped %d", both.Dropped())
	}
	// A listener's close is not a connection's.
	l := newSk(9, "0.0.0.0:80", "0.0.0.0:0", nginx)
	h.run(l, st(sock.Close, sock.Listen, P), st(sock.Listen, sock.Close, P))
	if _, cs := drain(conns); len(cs) != 0 {
		t.Errorf("listener published as a closed connection: %+v", cs)
	}
	slow.Close()
	slow.Close()
	timeout := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-slow.C:
		case <-timeout:
			t.Fatal("C open after Close")
		}
	}
	h.run(newSk(2, "10.0.0.1:40002", "10.0.0.2:80", curl), clientOpen...) // no send on the closed channel
}

// TestConcurrent: Apply in the event loop, queries in other goroutines
// (run with -race).
func TestConcurrent(t *testing.T) {
	lst := newSk(1, "127.0.0.1:8080", "0.0.0.0:0", nginx)
	h := seeded(t, Options{RetainMax: 200}, []*sock.Socket{row(lst, sock.Listen, 10)}, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	sub := h.tbl.Subscribe(true, true, 16)
	query := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					f()
				}
			}
		}()
	}
	query(func() {
		if _, err := h.tbl.Rows(time.Time{}); err != nil {
			t.Error(err)
		}
		if _, err := h.tbl.Rows(time.Now().Add(-time.Millisecond)); err != nil && !errors.Is(err, ErrBeforeStart) {
			_ = err // older than the retained history: fine
		}
	})
	query(func() {
		cs, err := h.tbl.Conns(Query{Limit: 50})
		if err != nil {
			t.Error(err)
		}
		for i := range cs {
			cs[i].Transitions = nil // copies: safe to change
		}
		h.tbl.Lookup(1001)
	})
	query(func() {
		h.tbl.Stats()
		h.tbl.Gaps(time.Time{}, time.Now())
		select {
		case <-sub.C:
		default:
		}
		s := h.tbl.Subscribe(true, false, 1)
		s.Close()
	})
	for i := 0; i < 400; i++ {
		c, s := loopbackPair(i)
		h.runPair(c, s, true)
		switch {
		case i%50 == 25:
			h.tbl.Reconcile(1<<sock.TimeWait, nil, h.wall(h.now()))
		case i%100 == 99:
			h.tbl.Lost(1, time.Now())
			h.tbl.BeginSeed()
			h.tbl.Seed(nil, nil)
			h.tbl.EndSeed()
		}
	}
	h.tbl.Expire()
	close(stop)
	wg.Wait()
	sub.Close()
}

// TestGapWindows: a loss marks exactly the connections alive in its window
// (open ones, and closed ones that were still alive then), not those closed
// before it or born after it; back-to-back reports make one window, and
// past the cap the oldest windows merge instead of being forgotten.
func TestGapWindows(t *testing.T) {
	h := seeded(t, Options{}, nil, nil)
	before := newSk(1, "10.0.0.1:40001", "10.0.0.2:80", curl)
	h.run(before, clientOpen...)
	h.run(before, st(sock.Established, sock.Close, S))
	during := newSk(2, "10.0.0.1:40002", "10.0.0.2:80", curl)
	h.run(during, clientOpen...)
	from := h.wall(h.now())
	h.tbl.Lost(3, from)
	h.tbl.Lost(2, from) // the same window, reported again
	h.run(during, st(sock.Established, sock.Close, S))
	time.Sleep(time.Millisecond)
	after := newSk(3, "10.0.0.1:40003", "10.0.0.2:80", curl)
	h.run(after, clientOpen...)
	if c := h.conn(1); c.Gap {
		t.Error("closed before the loss, marked")
	}
	if c := h.conn(2); !c.Gap {
		t.Error("alive during the loss, not marked")
	}
	if c := h.conn(3); c.Gap {
		t.Error("born after the loss, marked")
	}
	if gs := h.tbl.Gaps(time.Time{}, time.Now()); len(gs) != 1 || gs[0].Lost != 5 {
		t.Errorf("gaps: %+v", gs)
	}
	for i := 0; i < maxLossWindows+5; i++ {
		time.Sleep(time.Microsecond)
		h.tbl.Lost(1, h.wall(h.now()))
	}
	gs := h.tbl.Gaps(time.Time{}, time.Now())
	if len(gs) != maxLossWindows || gs[0].Lost < 5 || !gs[0].From.Equal(from) {
		t.Errorf("after the cap: %d windows, oldest %+v", len(gs), gs[0])
	}
	if c := h.conn(2); !c.Gap {
		t.Error("the oldest loss was forgotten")
	}
}
