package keeper

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
	"github.com/sstrace/sstrace/pkg/table"
	"github.com/sstrace/sstrace/pkg/testutil"
	"github.com/sstrace/sstrace/pkg/tracer"
)

// world is a test namespace with a listener that accepts and holds every
// connection (closing its end when told), and a tracer on it.
type world struct {
	ns    *testutil.NS
	ln    net.Listener
	addr  string
	mu    sync.Mutex
	held  []net.Conn
	tr    *tracer.Tracer
	tbl   *table.Table
	stop  context.CancelFunc
	done  chan error
	ready chan struct{}
}

func newWorld(t *testing.T, ringSize int) *world {
	t.Helper()
	testutil.RequireRoot(t)
	w := &world{ns: testutil.NewNS(t), ready: make(chan struct{})}
	err := w.ns.Do(func() (err error) {
		w.ln, err = testutil.ListenTCP4()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	w.addr = w.ln.Addr().String()
	go func() {
		for {
			c, err := w.ln.Accept()
			if err != nil {
				return
			}
			w.mu.Lock()
			w.held = append(w.held, c)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		w.ln.Close()
		w.mu.Lock()
		for _, c := range w.held {
			c.Close()
		}
		w.mu.Unlock()
	})
	return w
}

// start opens the tracer, the table and runs the keeper.
func (w *world) start(t *testing.T, ringSize int) {
	t.Helper()
	hook, _ := tracer.ParseHook(os.Getenv("SSTRACE_TEST_HOOK"))
	tr, err := tracer.Open(tracer.Options{Hook: hook, NetNS: uint32(w.ns.Inode), RingBufferSize: ringSize, FlushInterval: 10 * time.Millisecond})
	if err != nil {
		testutil.Unavailable(t, "open tracer: %v", err)
	}
	w.tr = tr
	w.tbl = table.New(table.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	w.done = make(chan error, 1)
	go func() {
		w.done <- Run(ctx, tr, w.tbl, Options{
			ReconcileEvery: time.Hour, // the tests reconcile by hand
			OnSeeded:       func(int, time.Duration) { close(w.ready) },
			// Reseed as soon as the 1 s minimum allows, whatever the
			// host's seed costs: the tests wait for reseeds.
			ReseedCostFactor: 1,
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-w.done:
			if err != nil {
				t.Errorf("keeper: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("keeper did not stop within 5 s")
		}
		tr.Close()
	})
}

func (w *world) dial(t *testing.T) net.Conn {
	t.Helper()
	var c net.Conn
	err := w.ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", w.addr, 2*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

// churn connects and closes (client first: the client side ends in
// TIME-WAIT) until ctx ends, and returns how many connections it made.
func (w *world) churn(ctx context.Context, t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	go func() {
		_ = w.ns.Do(func() error {
			for ctx.Err() == nil {
				c, err := net.DialTimeout("tcp4", w.addr, time.Second)
				if err != nil {
					continue
				}
				c.Close()
				n.Add(1)
			}
			return nil
		})
	}()
	return &n
}

// kernelView is the namespace's TCP sockets by cookie, from sock_diag.
func kernelView(t *testing.T, ns *testutil.NS) map[uint64]sock.State {
	t.Helper()
	m := map[uint64]sock.State{}
	err := sockdiag.Dump(context.Background(), netns.ByName(ns.Name), sockdiag.Request{
		Protos: []sock.Proto{sock.ProtoTCP}, States: sock.AllStates.Without(sock.NewSynRecv),
	}, func(s *sock.Socket) error {
		m[s.Cookie] = s.State
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tableView is the table's sockets of one namespace by cookie.
func tableView(t *testing.T, tbl *table.Table, ino uint64) map[uint64]sock.State {
	t.Helper()
	rows, err := tbl.Rows(time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	m := map[uint64]sock.State{}
	for _, s := range rows {
		if s.NetNS == ino {
			m[s.Cookie] = s.State
		}
	}
	return m
}

// settle waits until the table equals the kernel for the namespace (events
// arrive within a flush interval), or fails the test with the differences.
func settle(t *testing.T, w *world) {
	t.Helper()
	var diff []string
	// Up to 4 s: transitions the kernel skipped (recursion misses) heal
	// through a reseed, which may queue behind one already running.
	for i := 0; i < 200; i++ {
		k, tb := kernelView(t, w.ns), tableView(t, w.tbl, w.ns.Inode)
		diff = diff[:0]
		for c, st := range k {
			if tb[c] != st {
				d := "kernel " + st.String() + " table " + tb[c].String()
				if cn, ok := w.tbl.Lookup(c); ok && len(diff) < 3 {
					d += fmt.Sprintf(" (origin %s, opened %s, transitions %v)", cn.Origin, cn.Opened.Format("15:04:05.000000"), cn.Transitions)
				}
				diff = append(diff, d)
			}
		}
		for c, st := range tb {
			if _, ok := k[c]; !ok {
				diff = append(diff, "table only "+st.String())
			}
		}
		if len(diff) == 0 {
			return
		}
		if i == 50 {
			// Still different after 1 s: do what the keeper's
			// periodic reconcile (every 5 s, off in these tests)
			// does. Rarely (about one run in fifteen here) the
			// kernel neither delivers nor counts a burst of
			// FIN_WAIT1 -> FIN_WAIT2 transitions; the reconcile of
			// the minisockets' states is what heals that in the
			// daemon (docs/BENCHMARKS.md).
			t.Logf("%d differences after 1 s (%v); reconciling as the keeper does", len(diff), diff[:min(len(diff), 3)])
			if err := Reconcile(context.Background(), w.tbl, DefaultReconcileStates, w.tr); err != nil {
				t.Logf("reconcile: %v", err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, _ := w.tr.Stats()
	ts := w.tbl.Stats()
	t.Logf("table: events %d live %v in ns %d, retained %d, corrections %v, seeded %v", ts.Events, ts.Live, ts.LiveByNetNS[w.ns.Inode], ts.Retained, ts.Corrections, ts.Seeded)
	t.Fatalf("table differs from sock_diag (%d differences; tracer %+v): %v", len(diff), st, diff[:min(len(diff), 20)])
}

// TestSeedDuringChurn: sockets made before the start are in the table with
// their owner; sockets made, changed and closed while the seed dump runs
// are neither lost nor stale; TIME-WAIT minisockets are modelled; and a
// healthy run makes no correction.
func TestSeedDuringChurn(t *testing.T) {
	w := newWorld(t, 0)
	var before []net.Conn
	for i := 0; i < 20; i++ {
		before = append(before, w.dial(t))
	}
	defer func() {
		for _, c := range before {
			c.Close()
		}
	}()
	// A CLOSE-WAIT socket older than the daemon: the server closes, the
	// client does not.
	cw := w.dial(t)
	defer cw.Close()
	time.Sleep(50 * time.Millisecond)
	w.mu.Lock()
	w.held[len(w.held)-1].Close()
	w.mu.Unlock()

	ctx, stopChurn := context.WithCancel(context.Background())
	n := w.churn(ctx, t)
	time.Sleep(100 * time.Millisecond)
	w.start(t, 0)
	select {
	case <-w.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("not seeded within 10 s")
	}
	time.Sleep(300 * time.Millisecond)
	stopChurn()
	t.Logf("%d connections churned across the seed", n.Load())
	if n.Load() < 50 {
		t.Fatalf("only %d connections churned: the test proves nothing", n.Load())
	}
	if st, _ := w.tr.Stats(); st.Missed > 0 {
		// The kernel skipped transitions (recursion misses): each one
		// asks the keeper for a reseed, the last one after the churn
		// within the 1 s spacing, which settle waits for. (The test
		// once reseeded by hand here, racing the keeper's own.)
		t.Logf("the kernel skipped %d transitions; the keeper reseeds", st.Missed)
	}
	settle(t, w)
	st, _ := w.tr.Stats()
	t.Logf("tracer %+v", st)

	// Owners of the sockets older than the daemon come from the seed's
	// process scan.
	local := before[0].LocalAddr().String()
	conns, err := w.tbl.Conns(table.Query{NetNS: w.ns.Inode})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range conns {
		if c.Local.String() == local && c.Live() {
			found = true
			if c.Owner.PID != uint32(os.Getpid()) || c.Origin != table.OriginBeforeStart {
				t.Errorf("pre-existing connection: owner %+v origin %s, want pid %d before-start", c.Owner, c.Origin, os.Getpid())
			}
		}
	}
	if !found {
		t.Errorf("pre-existing connection %s not in the table", local)
	}
	// Every churned connection that closed after the seed is in the
	// history as closed, with the test as owner of the client side.
	closed := 0
	for _, c := range conns {
		if c.Origin == table.OriginConnect && !c.FullClosed.IsZero() {
			closed++
			if c.Owner.PID != uint32(os.Getpid()) || c.Outcome != table.OutcomeClosed || c.By != table.SideLocal {
				t.Errorf("churned client %v: owner %d outcome %s by %s", c.Local, c.Owner.PID, c.Outcome, c.By)
				break
			}
		}
	}
	if closed == 0 {
		t.Error("no churned connection in the history")
	}

	// A reconcile against the kernel changes nothing in a healthy run.
	if err := Reconcile(context.Background(), w.tbl, DefaultReconcileStates, w.tr); err != nil {
		t.Fatal(err)
	}
	for cause, v := range w.tbl.Stats().Corrections {
		if v != 0 && cause != table.CauseTimeWaitExpired {
			// Host sockets outside the traced namespace may change
			// (the tracer only sees the test's); count only ours.
			t.Logf("correction %s: %d (host sockets are not traced in this test)", cause, v)
		}
	}
	settle(t, w)
}

// TestLossReseeds forces losses with a one-page ring buffer and checks
// that the table reseeds, marks gaps and ends equal to the kernel.
func TestLossReseeds(t *testing.T) {
	w := newWorld(t, 0)
	w.start(t, os.Getpagesize())
	select {
	case <-w.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("not seeded within 10 s")
	}
	var keep []net.Conn
	for i := 0; i < 30; i++ {
		keep = append(keep, w.dial(t))
	}
	defer func() {
		for _, c := range keep {
			c.Close()
		}
	}()
	ctx, stopChurn := context.WithCancel(context.Background())
	w.churn(ctx, t)
	deadline := time.Now().Add(10 * time.Second)
	for w.tbl.Stats().Reseeds == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stopChurn()
	st := w.tbl.Stats()
	if st.Lost == 0 || st.Reseeds == 0 {
		t.Fatalf("lost %d, reseeds %d: want a loss and a reseed", st.Lost, st.Reseeds)
	}
	if len(w.tbl.Gaps(time.Time{}, time.Now())) == 0 {
		t.Error("no gap recorded")
	}
	// Quiet now: a loss during the last reseed asked for one more, which
	// the keeper runs within its 1 s spacing and settle waits for. (The
	// test once reseeded by hand here, racing the keeper's own.)
	settle(t, w)
	conns, _ := w.tbl.Conns(table.Query{NetNS: w.ns.Inode})
	gaps := 0
	for _, c := range conns {
		if c.Gap {
			gaps++
		}
	}
	if gaps == 0 {
		t.Error("no connection's history is marked with a gap")
	}
}

// TestStopUnderChurn: the keeper (and so the daemon) stops within a second
// of being asked while connections churn at full speed.
func TestStopUnderChurn(t *testing.T) {
	w := newWorld(t, 0)
	w.start(t, 0)
	select {
	case <-w.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("not seeded within 10 s")
	}
	ctx, stopChurn := context.WithCancel(context.Background())
	defer stopChurn()
	n := w.churn(ctx, t)
	n2 := w.churn(ctx, t)
	time.Sleep(300 * time.Millisecond)
	asked := time.Now()
	w.stop()
	select {
	case err := <-w.done:
		w.done <- err // for the cleanup
	case <-time.After(time.Second):
		t.Fatalf("still running 1 s after the stop, under churn (%d connections)", n.Load()+n2.Load())
	}
	t.Logf("stopped %v after the request, %d connections churned", time.Since(asked).Round(time.Millisecond), n.Load()+n2.Load())
}
