package table

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/cgroup2"
	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// pairEvent fills e with transition j (0..9, pairSteps) of the loopback
// connection i at monotonic time m, without allocating.
func pairEvent(e *event.Event, i, j int, m, off int64) {
	p := pairSteps[j]
	cport := uint16(20000 + i%40000)
	lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	*e = event.Event{
		Time: time.Unix(0, m+off), Mono: time.Duration(m),
		CookieSource: event.CookieHelper, NetNS: testNetNS, Family: unix.AF_INET,
		OldState: p.step.old, NewState: p.step.new, Context: p.step.ctx, Task: bystander,
		Hook: event.HookTPBTF,
	}
	task := curl
	if p.server {
		e.Cookie = uint64(1001 + 2*i)
		e.Local, e.Peer = netip.AddrPortFrom(lo, 8080), netip.AddrPortFrom(lo, cport)
		task = nginx
	} else {
		e.Cookie = uint64(1000 + 2*i)
		e.Local, e.Peer = netip.AddrPortFrom(lo, cport), netip.AddrPortFrom(lo, 8080)
	}
	e.Sock = 0xffff888000000000 + e.Cookie*64
	if p.step.ctx == P {
		e.Task = task
	}
	if p.step.new == sock.Close {
		e.Final = p.step.fin
		e.Final.SRTT = 50 * time.Microsecond
	}
}

// benchTable returns a seeded table with a listener on 127.0.0.1:8080
// whose owner the process scan found.
func benchTable(opts Options) (*Table, int64) {
	tbl := New(opts)
	tbl.BeginSeed()
	lst := newSk(1, "127.0.0.1:8080", "0.0.0.0:0", nginx)
	tbl.Seed([]*sock.Socket{row(lst, sock.Listen, 10)}, map[uint64]event.Owner{10: {PID: nginx.PID, UID: nginx.UID, Comm: nginx.Comm}})
	tbl.EndSeed()
	return tbl, tbl.monoToWall
}

// BenchmarkRetainedConn measures the heap a connection costs the table:
// "closed" applies N complete loopback connections (10 transitions: each
// side is one connection with 5), with a reconcile every 1000 retiring the
// clients' TIME-WAITs as the keeper does, so every side ends retained as a
// closed connection; "live" stops both sides at ESTABLISHED (2 transitions
// each). B/conn is per connection (one side), B/10trans per loopback
// connection (both sides, 10 transitions); est-B/conn is Stats.MemoryBytes'
// estimate.
func BenchmarkRetainedConn(b *testing.B) {
	const pairs = 20000
	for _, tc := range []struct {
		name  string
		steps int
	}{{"closed", 10}, {"live", 4}} {
		b.Run(tc.name, func(b *testing.B) {
			var perConn, perPair, est float64
			for it := 0; it < b.N; it++ {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				tbl, off := benchTable(Options{})
				m := monoNow()
				var e event.Event
				for i := 0; i < pairs; i++ {
					for j := 0; j < tc.steps; j++ {
						m += 1000
						pairEvent(&e, i, j, m, off)
						tbl.Apply(&e)
					}
					if tc.steps == 10 && i%1000 == 999 {
						tbl.Reconcile(1<<sock.TimeWait, nil, time.Unix(0, m+1+off))
					}
				}
				if tc.steps == 10 {
					tbl.Reconcile(1<<sock.TimeWait, nil, time.Unix(0, m+1+off))
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				s := tbl.Stats()
				if tc.steps == 10 && (s.Retained != 2*pairs || len(s.Live) != 1) ||
					tc.steps == 4 && s.Live[sock.Established] != 2*pairs {
					b.Fatalf("retained %d live %v", s.Retained, s.Live)
				}
				bytes := float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
				perConn += bytes / (2 * pairs)
				perPair += bytes / pairs
				est += float64(s.MemoryBytes) / (2 * pairs)
				runtime.KeepAlive(tbl)
			}
			b.ReportMetric(perConn/float64(b.N), "B/conn")
			b.ReportMetric(perPair/float64(b.N), "B/10trans")
			b.ReportMetric(est/float64(b.N), "est-B/conn")
		})
	}
}

// BenchmarkApply measures Apply's throughput on loopback connections
// (ns/op is ns per event), with the keeper's reconcile of TIME-WAITs every
// 1000 connections and retention trimming at 100 000 closed connections.
func BenchmarkApply(b *testing.B) {
	tbl, off := benchTable(Options{RetainMax: 100_000})
	applyPairs(b, tbl, off, nil)
}

// applyPairs applies b.N events of loopback connections to tbl, timed,
// with a reconcile of TIME-WAITs every 1000 connections; set, when not
// nil, changes each event before it is applied.
func applyPairs(b *testing.B, tbl *Table, off int64, set func(*event.Event)) {
	m := monoNow()
	var e event.Event
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		i, j := n/10, n%10
		m += 1000
		pairEvent(&e, i, j, m, off)
		if set != nil {
			set(&e)
		}
		tbl.Apply(&e)
		if j == 9 && i%1000 == 999 {
			tbl.Reconcile(1<<sock.TimeWait, nil, time.Unix(0, m+1+off))
		}
	}
	b.StopTimer()
}

// BenchmarkApplyCgroups is BenchmarkApply with the owners' cgroups named
// (Options.Cgroups), the client and the server in cgroups of their own, so
// that consecutive process-context events mostly change cgroup (the slow
// path of the cache). Needs root, to make the client's cgroup.
func BenchmarkApplyCgroups(b *testing.B) {
	cg := testutil.NewCgroup(b, fmt.Sprintf("/sstrace-test-%d.slice/docker-%s.scope", os.Getpid(), strings.Repeat("be", 32)))
	names, err := cgroup2.NewNames(0)
	if err != nil {
		testutil.Unavailable(b, "cgroup names: %v", err)
	}
	defer names.Close()
	tbl, off := benchTable(Options{RetainMax: 100_000, Cgroups: names})
	applyPairs(b, tbl, off, func(e *event.Event) {
		e.CgroupID = cg.ID
		if e.Task == nginx {
			e.CgroupID = 1 // the root cgroup
		}
	})
	if c, _ := tbl.Conns(Query{Limit: 1}); len(c) == 1 && c[0].Container == "" {
		b.Errorf("no container named: %+v", c[0])
	}
}
