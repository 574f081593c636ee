package topui

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/keeper"
	"github.com/sstrace/sstrace/pkg/table"
	"github.com/sstrace/sstrace/pkg/testutil"
	"github.com/sstrace/sstrace/pkg/topview"
	"github.com/sstrace/sstrace/pkg/tracer"
)

// BenchmarkFrameUnderChurn times one refresh of `sstrace top` end to end
// while loopback connections churn as fast as this machine makes them (the
// load of cmd/churn, in a namespace of its own): the daemon side's
// snapshot (state counts over the whole table, CLOSE-WAIT, the window's
// tops) plus its JSON line, the client's decoding and the drawing of a
// 120x40 frame. One op is one frame; frames come every 100 ms. Reported:
// the mean (ns/op), the worst frame, the churn reached, the table's live
// sockets (TIME-WAIT piles up) and the updates the view dropped.
//
//	sudo go test ./pkg/topui -run '^$' -bench FrameUnderChurn -benchtime 50x
func BenchmarkFrameUnderChurn(b *testing.B) {
	ns := testutil.NewNS(b)
	tr, err := tracer.Open(tracer.Options{})
	if err != nil {
		testutil.Unavailable(b, "tracer: %v", err)
	}
	defer tr.Close()
	tbl := table.New(table.Options{Retain: 2 * time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seeded := make(chan struct{})
	kdone := make(chan error, 1)
	go func() {
		kdone <- keeper.Run(ctx, tr, tbl, keeper.Options{OnSeeded: func(int, time.Duration) { close(seeded) }})
	}()
	select {
	case <-seeded:
	case err := <-kdone:
		b.Fatalf("keeper: %v", err)
	}

	// The churn: a server that reads to EOF and closes, clients that
	// connect, write 16 bytes and close, on threads in the namespace.
	ln := testutil.ServeTCP4(b, ns, testutil.Drain)
	var conns atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ns.Do(func() error {
				payload := make([]byte, 16)
				for ctx.Err() == nil {
					c, err := net.Dial("tcp4", ln.Addr().String())
					if err != nil {
						continue // ephemeral ports run out now and then
					}
					c.Write(payload)
					c.Close()
					conns.Add(1)
				}
				return nil
			})
		}()
	}
	defer wg.Wait()
	defer cancel()
	time.Sleep(2 * time.Second) // let the churn reach its pace

	var frames []time.Duration
	var last *topview.Snapshot
	n0, t0 := conns.Load(), time.Now()
	b.ResetTimer()
	err = topview.Run(ctx, tbl, topview.Options{Interval: 100 * time.Millisecond}, func(s *topview.Snapshot) error {
		// s.Time is when the snapshot began.
		line, err := s.AppendJSON(nil)
		if err != nil {
			return err
		}
		got, err := topview.DecodeSnapshot(line)
		if err != nil {
			return err
		}
		trend := topview.NewTrend(60)
		trend.Add(got)
		out := Render(&Frame{Snap: got, Trend: trend, Source: "bench", Scope: "all", Footer: helpLine, Width: 120, Height: 40})
		if len(out) == 0 {
			b.Fatal("empty frame")
		}
		frames = append(frames, time.Since(s.Time))
		last = got
		if len(frames) == b.N {
			return io.EOF
		}
		return nil
	})
	b.StopTimer()
	if err != io.EOF {
		b.Fatalf("topview.Run: %v", err)
	}
	rate := float64(conns.Load()-n0) / time.Since(t0).Seconds()
	var sum time.Duration
	for _, f := range frames {
		sum += f
	}
	b.ReportMetric(float64(sum.Nanoseconds())/float64(len(frames)), "ns/frame")
	b.ReportMetric(float64(slices.Max(frames).Microseconds())/1000, "max-ms/frame")
	b.ReportMetric(rate, "conns/s")
	b.ReportMetric(float64(last.Live), "live-sockets")
	b.ReportMetric(float64(last.Dropped), "dropped")
	b.ReportMetric(last.NewPerSec, "view-new/s")
}
