// Package keeper keeps a table.Table true to the kernel: it feeds the
// tracer's events to the table, seeds it from a sock_diag dump of every
// network namespace (attach first, dump second, so nothing slips between),
// reconciles the minisockets no event announces the expiry of, and reseeds
// after the ring buffer lost events. It is the daemon's event loop, apart
// from the daemon's server so that it can be tested on its own.
package keeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/procs"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
	"github.com/sstrace/sstrace/pkg/table"
	"github.com/sstrace/sstrace/pkg/tracer"
)

// Options configure Run.
type Options struct {
	// ReconcileEvery is the period of the minisocket reconcile (default
	// 5 s): a TIME-WAIT socket that expired stays in the table at most
	// that long.
	ReconcileEvery time.Duration
	// ReconcileStates are the states the periodic reconcile dumps
	// (default TIME-WAIT and FIN-WAIT-2: the minisockets' states).
	ReconcileStates sock.StateSet
	// Log receives the keeper's log lines (default: discarded).
	Log *slog.Logger
	// OnSeeded, when set, is called once the first seed is done.
	OnSeeded func(rows int, took time.Duration)
	// MinReseedInterval spaces reseeds (default 1 s): under churn the
	// kernel may skip a transition every few milliseconds, and a reseed
	// (a dump of every namespace and a process scan) answers all the
	// losses since the previous one, so back-to-back reseeds would only
	// repeat the dump. The spacing also grows with what a reseed costs
	// (ReseedCostFactor times the last one's duration), so that reseeds
	// take at most about 1/ReseedCostFactor of the daemon's time however
	// large the host: measured with 130 000 sockets under full churn, a
	// reseed a second took half a core and starved the event loop.
	MinReseedInterval time.Duration
	// ReseedCostFactor (default DefaultReseedCostFactor) bounds the share
	// of time spent reseeding; see MinReseedInterval.
	ReseedCostFactor int
}

// DefaultReseedCostFactor keeps reseeds near 5% of the daemon's time.
const DefaultReseedCostFactor = 20

// Source is where events come from: *tracer.Tracer, or a fake in tests.
type Source interface {
	Run(ctx context.Context, h tracer.Handler) error
}

// DefaultReconcileStates are the minisockets' states.
const DefaultReconcileStates = sock.StateSet(1<<sock.TimeWait | 1<<sock.FinWait2)

// Run keeps tbl until ctx ends: it starts reading events from src (tbl
// must be new, in its seeding mode), seeds, then reconciles every
// ReconcileEvery and reseeds after losses. It returns nil when ctx ends,
// or the error that stopped the event stream.
func Run(ctx context.Context, src Source, tbl *table.Table, opts Options) error {
	if opts.ReconcileEvery <= 0 {
		opts.ReconcileEvery = 5 * time.Second
	}
	if opts.ReconcileStates == 0 {
		opts.ReconcileStates = DefaultReconcileStates
	}
	if opts.MinReseedInterval <= 0 {
		opts.MinReseedInterval = time.Second
	}
	if opts.ReseedCostFactor <= 0 {
		opts.ReseedCostFactor = DefaultReseedCostFactor
	}
	costFactor := time.Duration(opts.ReseedCostFactor)
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	tbl.BeginSeed()
	reseed := make(chan struct{}, 1)
	// OnIdle and OnLost run on src.Run's goroutine, one after the other:
	// idleAt needs no lock.
	idleAt := time.Now()
	h := tracer.HandlerFuncs{
		OnEvent: func(e *event.Event) error { tbl.Apply(e); return nil },
		OnIdle:  func() error { idleAt = time.Now(); return nil },
		OnLost: func(lost, total uint64) error {
			log.Warn("events lost; reseeding", "lost", lost, "total", total)
			tbl.Lost(lost, idleAt)
			select {
			case reseed <- struct{}{}:
			default:
			}
			return nil
		},
	}
	streamErr := make(chan error, 1)
	go func() { streamErr <- src.Run(ctx, h) }()

	// One process scanner for every seed: the BPF iterator is loaded once.
	scanner := procs.NewScanner(procs.Options{})
	defer scanner.Close()
	start := time.Now()
	n, err := Seed(ctx, tbl, scanner, src)
	if err != nil {
		cancel()
		<-streamErr
		return fmt.Errorf("seed: %w", err)
	}
	log.Info("table seeded", "sockets", n, "took", time.Since(start).Round(time.Millisecond))
	if opts.OnSeeded != nil {
		opts.OnSeeded(n, time.Since(start))
	}

	tick := time.NewTicker(opts.ReconcileEvery)
	defer tick.Stop()
	lastReseed := time.Now()
	reseedSpacing := max(opts.MinReseedInterval, costFactor*time.Since(start))
	var reseedLater <-chan time.Time // armed while a reseed waits for its turn
	for {
		doReseed := false
		select {
		case <-ctx.Done():
			return waitStream(streamErr)
		case err := <-streamErr:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("event stream ended")
			}
			return err
		case <-reseed:
			if wait := reseedSpacing - time.Since(lastReseed); wait > 0 {
				if reseedLater == nil {
					reseedLater = time.After(wait)
				}
				continue
			}
			doReseed = true
		case <-reseedLater:
			reseedLater, doReseed = nil, true
		case <-tick.C:
			if err := Reconcile(ctx, tbl, opts.ReconcileStates, src); err != nil && ctx.Err() == nil {
				log.Warn("reconcile failed", "err", err)
			}
			tbl.Expire()
		}
		if !doReseed {
			continue
		}
		lastReseed = time.Now()
		tbl.BeginSeed()
		n, err := Seed(ctx, tbl, scanner, src)
		took := time.Since(lastReseed)
		reseedSpacing = max(opts.MinReseedInterval, costFactor*took)
		if err != nil {
			if ctx.Err() != nil {
				return waitStream(streamErr)
			}
			log.Error("reseed failed", "err", err)
		} else {
			log.Info("table reseeded after lost events", "sockets", n, "took", took.Round(time.Millisecond),
				"next_after", reseedSpacing.Round(time.Millisecond))
		}
	}
}

func waitStream(ch chan error) error {
	if err := <-ch; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Seed dumps every namespace's TCP sockets (all states) and the processes
// holding them (with scanner; nil loads a scanner for this seed), with
// their cgroups when the table names them (tbl.Cgroups), hands them to
// tbl.Seed and ends the seed (tbl.BeginSeed must have been called,
// before the dump; a failed dump cancels the seed, the table going on
// live). Before handing the rows over it waits until the table has the
// events up to the dump's end (from src, which may be nil): those still in
// the ring at EndSeed would otherwise come after it, and a socket's events
// from the dump's time would not continue from the state the dump saw (a
// skipped transition, or a state left behind). It returns the number of
// rows.
func Seed(ctx context.Context, tbl *table.Table, scanner *procs.Scanner, src Source) (int, error) {
	if scanner == nil {
		scanner = procs.NewScanner(procs.Options{})
		defer scanner.Close()
	}
	// The process scan and the dump are independent: run them together.
	type scan struct {
		ix  *procs.Index
		err error
	}
	scanned := make(chan scan, 1)
	go func() {
		ix, err := scanner.Scan(ctx)
		scanned <- scan{ix, err}
	}()
	rows, err := DumpAll(ctx, sock.AllStates)
	dumpEnd := time.Now()
	sc := <-scanned
	if err != nil {
		tbl.CancelSeed()
		return 0, err
	}
	// Behind by more than the timeout, the seed goes on: late events
	// then count as corrections where they do not fit.
	tbl.CaughtUp(ctx, dumpEnd, caughtUpQuiet, caughtUpTimeout, drainedAt(src))
	owners := map[uint64]event.Owner{}
	if sc.err == nil {
		// The owners' cgroups: no event names them for sockets older
		// than the seed, so /proc/PID/cgroup does, once per process.
		cgroups := map[int]uint64{}
		names := tbl.Cgroups()
		for _, s := range rows {
			if s.Inode == 0 {
				continue
			}
			if ps := sc.ix.Lookup(s.Inode); len(ps) > 0 {
				// Holders come newest-discovered first (ss's order);
				// the owner is the lowest pid, the likeliest creator: a
				// process forked since holds the same descriptors
				// (until its exec, or for good as a worker) under a
				// higher pid.
				p := ps[len(ps)-1]
				cg, seen := cgroups[p.PID]
				if !seen && names != nil {
					cg, _ = names.OfProcess(p.PID)
					cgroups[p.PID] = cg
				}
				owners[s.Inode] = event.Owner{PID: uint32(p.PID), UID: s.UID, Comm: p.Comm, CgroupID: cg}
			}
		}
	}
	tbl.Seed(rows, owners)
	tbl.EndSeed()
	return len(rows), nil
}

// Reconcile dumps the sockets in states from every namespace and lets the
// table correct itself against them, once it has the events of src (which
// may be nil) up to the dump's end.
func Reconcile(ctx context.Context, tbl *table.Table, states sock.StateSet, src Source) error {
	start := time.Now()
	rows, err := DumpAll(ctx, states)
	if err != nil {
		return err
	}
	// Judge the dump only once the table has the events up to its end:
	// measured under full churn, reconciling at once counted a thousand
	// "mismatches" a minute that were only events still in the ring.
	if !tbl.CaughtUp(ctx, time.Now(), caughtUpQuiet, caughtUpTimeout, drainedAt(src)) {
		return errBehind
	}
	tbl.Reconcile(states, rows, start)
	return nil
}

// drainedAt is src's DrainedAt (*tracer.Tracer has it), or nil.
func drainedAt(src Source) func() time.Time {
	if d, ok := src.(interface{ DrainedAt() time.Time }); ok {
		return d.DrainedAt
	}
	return nil
}

// caughtUpQuiet is how long without an event means the ring is empty, for
// a source that cannot say (no DrainedAt): more than the tracer's flush
// interval (50 ms by default). caughtUpTimeout is
// how far behind the table may be before a reconcile is skipped.
const (
	caughtUpQuiet   = 250 * time.Millisecond
	caughtUpTimeout = 3 * time.Second
)

// errBehind skips a reconcile: the table is more than caughtUpTimeout
// behind the kernel.
var errBehind = errors.New("the table is behind the event stream; reconcile skipped")

// DumpAll dumps the TCP sockets in states of every network namespace on
// the host, each namespace once. A namespace that vanishes while listing
// (its last process exited) is skipped: its sockets went with it.
//
// The rows carry what the table reads (identity, state, uid, inode): the
// optional attributes are dropped rather than copied, and the rows share
// one backing array, so a dump of every socket costs no allocation per row.
func DumpAll(ctx context.Context, states sock.StateSet) ([]*sock.Socket, error) {
	nss, err := netns.All()
	if err != nil {
		return nil, err
	}
	var vals []sock.Socket
	err = sockdiag.DumpEach(ctx, nss, sockdiag.Request{
		Protos: []sock.Proto{sock.ProtoTCP},
		States: states,
	}, func(s *sock.Socket) error {
		vals = append(vals, sock.Socket{
			Proto: s.Proto, Family: s.Family, State: s.State, NetNS: s.NetNS,
			Local: s.Local, Peer: s.Peer, Iface: s.Iface, RecvQ: s.RecvQ, SendQ: s.SendQ,
			UID: s.UID, Inode: s.Inode, Cookie: s.Cookie, Timer: s.Timer,
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	rows := make([]*sock.Socket, len(vals))
	for i := range vals {
		rows[i] = &vals[i]
	}
	return rows, nil
}

// Resolver returns a table.Options.Resolve function: it finds the cookie of
// a cookie-less event's socket with a sock_diag lookup by namespace and
// addresses, in the namespace with the event's inode.
func Resolver() func(e *event.Event) (uint64, bool) {
	// Called from table.Apply, under the table's lock: one at a time.
	cache := map[uint64]netns.Namespace{}
	return func(e *event.Event) (uint64, bool) {
		if e.NewState == sock.Close || e.Local.Port() == 0 {
			return 0, false
		}
		ns, ok := cache[e.NetNS]
		if !ok {
			found, err := netns.ByInode(e.NetNS)
			if err != nil {
				return 0, false
			}
			ns = found
			cache[e.NetNS] = ns
		}
		peer := e.Peer
		if e.NewState == sock.Listen {
			peer = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		s, err := sockdiag.Lookup(ctx, ns, sock.ProtoTCP, e.Local, peer)
		if err != nil || s == nil || s.Cookie == 0 {
			return 0, false
		}
		return s.Cookie, true
	}
}
