package topview

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/filter"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
)

// Synthetic events through a real table: no BPF, no root. Event times are
// the monotonic clock (the table reads it itself) mapped to a wall clock
// that starts just after a whole second, so that everything a test does
// falls in one counting slot of a second and the next Snapshot's rates
// are exact.

const testNS = 4026531840

type script struct {
	t    *testing.T
	tbl  *table.Table
	sub  *table.Subscription
	m0   int64     // monotonic ns at the start
	w0   time.Time // the wall time of m0
	last int64
}

func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// newScript returns a seeded table with a listener on 10.0.0.1:80 owned
// by nginx (pid 20), and a subscription as Run makes it.
func newScript(t *testing.T) *script {
	s := &script{t: t, tbl: table.New(table.Options{}), m0: monoNow()}
	s.w0 = time.Now().Truncate(time.Second).Add(time.Second + time.Millisecond)
	s.tbl.BeginSeed()
	s.tbl.Seed(nil, nil)
	s.tbl.EndSeed()
	s.sub = s.tbl.Subscribe(true, true, 1<<12)
	t.Cleanup(s.sub.Close)
	s.apply(1, nginx, "10.0.0.1:80", "0.0.0.0:0", sock.Close, sock.Listen, event.ContextProcess, 0)
	return s
}

var (
	curl  = event.Task{PID: 10, TID: 10, UID: 1000, Comm: "curl"}
	nginx = event.Task{PID: 20, TID: 20, UID: 33, Comm: "nginx"}
	other = event.Task{PID: 99, TID: 99, Comm: "bystander"}
)

// apply applies one transition of socket cookie.
func (s *script) apply(cookie uint64, task event.Task, local, peer string, old, new sock.State, ctx event.Context, errno uint16) {
	m := max(monoNow(), s.last+1)
	s.last = m
	e := &event.Event{
		Time: s.w0.Add(time.Duration(m - s.m0)), Mono: time.Duration(m),
		Cookie: cookie, CookieSource: event.CookieHelper, Sock: cookie * 64, NetNS: testNS,
		Family: unix.AF_INET, Local: netip.MustParseAddrPort(local), Peer: netip.MustParseAddrPort(peer),
		OldState: old, NewState: new, Context: ctx, Task: other, Hook: event.HookTPBTF,
	}
	if ctx == event.ContextProcess {
		e.Task = task
	}
	if new == sock.Close {
		e.Final.Err = errno
		// An orderly close after the peer's FIN: the kernel keeps a
		// TIME-WAIT minisocket.
		e.Final.PeerFIN = old == sock.FinWait2
	}
	s.tbl.Apply(e)
}

// drain observes every update queued so far.
func (s *script) drain(a *Aggregator) {
	for {
		select {
		case u := <-s.sub.C:
			a.Observe(u)
		default:
			return
		}
	}
}

// load makes, from curl: three connections to nginx (one left in
// CLOSE-WAIT on nginx's side, one reset by curl), one refused connect to
// 10.0.0.9:5432; and from nginx none of its own.
func (s *script) load() {
	P, S := event.ContextProcess, event.ContextSoftirq
	for i := uint64(0); i < 3; i++ {
		cli, srv := 100+2*i, 101+2*i
		cport := fmt.Sprintf("10.0.0.2:%d", 40000+i)
		s.apply(cli, curl, cport, "10.0.0.1:80", sock.Close, sock.SynSent, P, 0)
		s.apply(srv, nginx, "10.0.0.1:80", cport, sock.Listen, sock.SynRecv, S, 0)
		s.apply(srv, nginx, "10.0.0.1:80", cport, sock.SynRecv, sock.Established, S, 0)
		s.apply(cli, curl, cport, "10.0.0.1:80", sock.SynSent, sock.Established, S, 0)
		switch i {
		case 0: // curl closes, nginx never does: CLOSE-WAIT
			s.apply(cli, curl, cport, "10.0.0.1:80", sock.Established, sock.FinWait1, P, 0)
			s.apply(srv, nginx, "10.0.0.1:80", cport, sock.Established, sock.CloseWait, S, 0)
			s.apply(cli, curl, cport, "10.0.0.1:80", sock.FinWait1, sock.FinWait2, S, 0)
		case 1: // curl aborts: an RST
			s.apply(cli, curl, cport, "10.0.0.1:80", sock.Established, sock.Close, P, 0)
			s.apply(srv, nginx, "10.0.0.1:80", cport, sock.Established, sock.Close, S, uint16(unix.ECONNRESET))
		}
	}
	s.apply(200, curl, "10.0.0.2:41000", "10.0.0.9:5432", sock.Close, sock.SynSent, P, 0)
	s.apply(200, curl, "10.0.0.2:41000", "10.0.0.9:5432", sock.SynSent, sock.Close, P, uint16(unix.ECONNREFUSED))
}

func findCount(rows []Count, name string) *Count {
	for i := range rows {
		if rows[i].Name == name {
			return &rows[i]
		}
	}
	return nil
}

// The figures of a scripted minute: states, rates, owners and peers with
// their failures, CLOSE-WAIT by owner with its age, and the short-lived
// connections with outcome and lifetime, newest first.
func TestSnapshot(t *testing.T) {
	s := newScript(t)
	a := New(Options{})
	s.load()
	s.drain(a)
	now := s.w0.Add(time.Second) // the next slot: the script's is complete
	snap, err := a.Snapshot(s.tbl, now, s.sub.Dropped())
	if err != nil {
		t.Fatal(err)
	}
	wantStates := map[string]int{"LISTEN": 1, "ESTAB": 2, "CLOSE-WAIT": 1, "FIN-WAIT-2": 1}
	if fmt.Sprint(snap.States) != fmt.Sprint(wantStates) || snap.Live != 5 {
		t.Errorf("states %v (live %d), want %v", snap.States, snap.Live, wantStates)
	}
	// Opened: 3 connects + 3 accepts + 1 refused connect; closed: the
	// reset pair and the refused connect.
	if snap.NewPerSec != 7 || snap.ClosedPerSec != 3 {
		t.Errorf("new %.0f/s closed %.0f/s, want 7 and 3", snap.NewPerSec, snap.ClosedPerSec)
	}
	if c := findCount(snap.Owners, "curl"); c == nil || c.New != 4 || c.PID != 10 || c.Failed != 2 || c.NewPerSec != 4 {
		t.Errorf("owner curl: %+v, want 4 new (4/s), 2 failed (refused, aborted)", c)
	}
	if c := findCount(snap.Owners, "nginx"); c == nil || c.New != 3 || c.Failed != 1 {
		t.Errorf("owner nginx: %+v, want 3 new (accepted), 1 failed (reset)", c)
	}
	if snap.Owners[0].Name != "curl" {
		t.Errorf("owners by new: %v, want curl first", snap.Owners)
	}
	// Peers: services by address and port, clients by address.
	if c := findCount(snap.Peers, "10.0.0.1:80"); c == nil || c.New != 3 || c.Failed != 1 {
		t.Errorf("peer 10.0.0.1:80: %+v", c)
	}
	if c := findCount(snap.Peers, "10.0.0.2"); c == nil || c.New != 3 || c.Failed != 1 {
		t.Errorf("peer 10.0.0.2 (the client, accepted): %+v", c)
	}
	if c := findCount(snap.Peers, "10.0.0.9:5432"); c == nil || c.New != 1 || c.Failed != 1 {
		t.Errorf("peer 10.0.0.9:5432 (refused): %+v", c)
	}
	if len(snap.CloseWait) != 1 {
		t.Fatalf("close-wait groups: %+v", snap.CloseWait)
	}
	cw := snap.CloseWait[0]
	if cw.Comm != "nginx" || cw.PID != 20 || cw.Sockets != 1 || cw.OldestMs < 900 || cw.OldestMs > 1100 || fmt.Sprint(cw.Ports) != "[80]" {
		t.Errorf("close-wait: %+v, want nginx's one socket on port 80, about 1000 ms old", cw)
	}
	var outcomes []string
	for _, r := range snap.Recent {
		outcomes = append(outcomes, r.Comm+" "+r.OutcomeText())
		if r.LifetimeMs <= 0 || r.LifetimeMs > 1000 {
			t.Errorf("recent %+v: lifetime", r)
		}
	}
	// Newest first: the refused connect closed last; curl's close
	// straight from ESTABLISHED (SO_LINGER 0) is a reset it sent, which
	// reset nginx's side.
	if want := "curl refused(peer),nginx reset(peer),curl reset(local)"; strings.Join(outcomes, ",") != want {
		t.Errorf("recent: %v, want %s", outcomes, want)
	}
	if snap.Dropped != 0 {
		t.Errorf("dropped %d", snap.Dropped)
	}

	// A snapshot two intervals later: no rate, the window still counts.
	later, _ := a.Snapshot(s.tbl, now.Add(2*time.Second), 0)
	if later.NewPerSec != 0 || findCount(later.Owners, "curl").New != 4 || findCount(later.Owners, "curl").NewPerSec != 0 {
		t.Errorf("two intervals later: new %.0f/s, curl %+v", later.NewPerSec, findCount(later.Owners, "curl"))
	}
	// Past the window: nothing.
	gone, _ := a.Snapshot(s.tbl, now.Add(DefaultWindow+2*time.Second), 0)
	if len(gone.Owners) != 0 || len(gone.Peers) != 0 {
		t.Errorf("after the window: owners %v peers %v", gone.Owners, gone.Peers)
	}
}

// A filter and a namespace narrow every figure; the JSON line round-trips.
func TestSnapshotFilter(t *testing.T) {
	s := newScript(t)
	q, err := filter.Parse([]string{"dport = :5432"}, filter.ParseOptions{DefaultStates: sock.AllStates})
	if err != nil {
		t.Fatal(err)
	}
	a := New(Options{Match: q.Match})
	elsewhere := New(Options{NetNS: testNS + 1})
	s.load()
	for {
		select {
		case u := <-s.sub.C:
			a.Observe(u)
			elsewhere.Observe(u)
			continue
		default:
		}
		break
	}
	snap, err := a.Snapshot(s.tbl, s.w0.Add(time.Second), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Owners) != 1 || snap.Owners[0].Name != "curl" || snap.Owners[0].New != 1 || len(snap.Peers) != 1 ||
		snap.Peers[0].Name != "10.0.0.9:5432" || len(snap.CloseWait) != 0 || snap.Live != 0 || len(snap.Recent) != 1 {
		t.Errorf("dport = :5432: %+v", snap)
	}
	none, _ := elsewhere.Snapshot(s.tbl, s.w0.Add(time.Second), 0)
	if none.Live != 0 || len(none.Owners) != 0 || len(none.Recent) != 0 || none.NewPerSec != 0 {
		t.Errorf("another namespace: %+v", none)
	}

	b, err := snap.AppendJSON(nil)
	if err != nil || b[len(b)-1] != '\n' {
		t.Fatalf("AppendJSON: %q, %v", b, err)
	}
	got, err := DecodeSnapshot(b)
	if err != nil || got.Owners[0].Name != "curl" || got.Recent[0].Outcome != "refused" || !got.Time.Equal(snap.Time) {
		t.Errorf("round trip: %+v, %v", got, err)
	}
}

// A view started after the fact (or a new filter) counts the window's
// connections from the table as the live view counted them.
func TestBackfill(t *testing.T) {
	s := newScript(t)
	live := New(Options{})
	s.load()
	// One more that ends in TIME-WAIT: closed, but the table keeps it
	// (and the stream brings it only when the minisocket expires).
	P, S := event.ContextProcess, event.ContextSoftirq
	for _, st := range [][2]sock.State{{sock.Close, sock.SynSent}, {sock.SynSent, sock.Established},
		{sock.Established, sock.FinWait1}, {sock.FinWait1, sock.FinWait2}, {sock.FinWait2, sock.Close}} {
		ctx := S
		if st[0] == sock.Close || st[0] == sock.Established {
			ctx = P
		}
		s.apply(300, curl, "10.0.0.2:42000", "10.0.0.7:443", st[0], st[1], ctx, 0)
	}
	s.drain(live)
	now := s.w0.Add(time.Second)
	want, _ := live.Snapshot(s.tbl, now, 0)

	late := New(Options{})
	if err := late.Backfill(s.tbl, now); err != nil {
		t.Fatal(err)
	}
	got, _ := late.Snapshot(s.tbl, now, 0)
	if got.ClosedPerSec != 4 || got.States["TIME-WAIT"] != 1 || len(got.Recent) != 3 {
		t.Errorf("backfilled: closed %.0f/s (want 4, the TIME-WAIT one too), states %v, %d recent (want 3: the TIME-WAIT one comes when it expires)",
			got.ClosedPerSec, got.States, len(got.Recent))
	}
	if fmt.Sprint(got.Owners) != fmt.Sprint(want.Owners) || fmt.Sprint(got.Peers) != fmt.Sprint(want.Peers) ||
		len(got.Recent) != len(want.Recent) || got.NewPerSec != want.NewPerSec || got.ClosedPerSec != want.ClosedPerSec {
		t.Errorf("backfilled:\n%+v\nlive:\n%+v", got, want)
	}
}

// The tops keep the first rows by each key, and a slot's distinct owners
// and peers are bounded.
func TestTopAndBounds(t *testing.T) {
	rows := []Count{{Name: "a", New: 10}, {Name: "b", New: 5, Failed: 1}, {Name: "c", New: 1, Failed: 9}, {Name: "d", New: 2}}
	got := top(rows, 1)
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "c" {
		t.Errorf("top 1 by each key: %v, want a (new) and c (failed)", got)
	}
	SortCounts(got, SortName)
	if got[0].Name != "a" {
		t.Errorf("by name: %v", got)
	}
	for k := SortNew; ; {
		k = k.Next()
		if k == SortNew {
			break
		}
		if k.String() == "" {
			t.Errorf("sort key %d has no name", k)
		}
	}

	a := New(Options{})
	at := time.Now()
	for i := 0; i < maxKeys+10; i++ {
		a.countOpen(at, event.Owner{PID: uint32(i + 1), Comm: "p"}, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 80), true)
	}
	s := a.slotFor(at)
	if len(s.owners) != maxKeys+1 || s.owners[ownerKey{comm: OtherName}].opened != 10 || len(s.peers) != maxKeys+1 {
		t.Errorf("bounded slot: %d owners (other %v), %d peers", len(s.owners), s.owners[ownerKey{comm: OtherName}], len(s.peers))
	}
	if a.slotFor(at.Add(-DefaultWindow-DefaultInterval)) != nil {
		t.Error("a time before the window got a slot")
	}
}

// Run answers at once, then every interval; before the seed it fails.
func TestRun(t *testing.T) {
	if err := Run(context.Background(), table.New(table.Options{}), Options{}, func(*Snapshot) error { return nil }); !errors.Is(err, table.ErrNotSeeded) {
		t.Errorf("Run on an unseeded table: %v", err)
	}
	s := newScript(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var snaps []*Snapshot
	start := time.Now()
	stop := errors.New("enough")
	err := Run(ctx, s.tbl, Options{Interval: 50 * time.Millisecond}, func(sn *Snapshot) error {
		snaps = append(snaps, sn)
		if len(snaps) == 1 {
			s.load()
		}
		if len(snaps) == 4 {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("4 snapshots at 50 ms took %v", d)
	}
	if snaps[0].Live != 1 || snaps[3].Live != 5 || len(snaps[3].CloseWait) != 1 {
		t.Errorf("first snapshot live %d, fourth %d (close-wait %v)", snaps[0].Live, snaps[3].Live, snaps[3].CloseWait)
	}
}

// The trend keeps n refreshes per state, with the delta of the last.
func TestTrend(t *testing.T) {
	tr := NewTrend(3)
	for _, n := range []int{1, 5, 2, 7} {
		tr.Add(&Snapshot{States: map[string]int{"ESTAB": n}})
	}
	if fmt.Sprint(tr.Series("ESTAB")) != "[5 2 7]" || tr.Delta("ESTAB") != 5 || fmt.Sprint(tr.Series("LISTEN")) != "[0 0 0]" {
		t.Errorf("series %v delta %d listen %v", tr.Series("ESTAB"), tr.Delta("ESTAB"), tr.Series("LISTEN"))
	}
	tr.Reset()
	if tr.Series("ESTAB") != nil || tr.Delta("ESTAB") != 0 {
		t.Error("Reset kept the history")
	}
}

// BenchmarkObserveOpen is the aggregator's cost per opening event, the
// per-event path under churn (connects and accepts alternate).
func BenchmarkObserveOpen(b *testing.B) {
	a := New(Options{})
	now := time.Now()
	e := event.Event{Time: now, NetNS: testNS, Family: unix.AF_INET,
		Local: netip.MustParseAddrPort("10.0.0.1:40000"), Peer: netip.MustParseAddrPort("10.0.0.2:443"),
		Owner: event.Owner{PID: 42, Comm: "curl"}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i++; i%2 == 0 {
			e.OldState, e.NewState = sock.Close, sock.SynSent
		} else {
			e.OldState, e.NewState = sock.Listen, sock.SynRecv
		}
		a.Observe(table.Update{Event: &e})
	}
}
