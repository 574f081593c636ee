package procs

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/testutil"
	"golang.org/x/sys/unix"
)

// envInt reads a positive integer knob from the environment.
func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		tb.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// BenchmarkScan times a full Scan on each path with a few thousand extra
// sockets open, and logs the bpf/proc time ratio. Knobs:
// SSTRACE_PROCS_BENCH_SOCKETS (sockets held by this process, default 4000)
// and SSTRACE_PROCS_BENCH_HELPERS (extra processes holding as many each,
// default 0), e.g. 8 helpers of 18000 for a host-sized load.
//
//	go test ./pkg/procs -run '^$' -bench Scan
func BenchmarkScan(b *testing.B) {
	testutil.RequireRoot(b)
	n := envInt(b, "SSTRACE_PROCS_BENCH_SOCKETS", 4000)
	fds, err := makePairs(n)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for range envInt(b, "SSTRACE_PROCS_BENCH_HELPERS", 0) {
		startPairs(b, n)
	}

	perOp := map[string]time.Duration{}
	for _, path := range []struct {
		name, want string
		scan       func() (*Index, error)
	}{
		// One-shot, as `sstrace ss -p` runs it: includes loading the program.
		{SourceBPF, SourceBPF, func() (*Index, error) { return Scan(context.Background(), Options{}) }},
		{SourceProc, SourceProc, func() (*Index, error) { return Scan(context.Background(), Options{ForceProc: true}) }},
		// A daemon's repeated scans with the program loaded once.
		{"bpf-iter-reused", SourceBPF, nil},
	} {
		b.Run(path.name, func(b *testing.B) {
			scan := path.scan
			if scan == nil {
				s := NewScanner(Options{})
				defer s.Close()
				scan = func() (*Index, error) { return s.Scan(context.Background()) }
			}
			var ix *Index
			for b.Loop() {
				var err error
				if ix, err = scan(); err != nil {
					b.Fatal(err)
				}
			}
			if ix.Source() != path.want {
				testutil.Unavailable(b, "Scan used %q (%s), want %q", ix.Source(), ix.Reason(), path.want)
			}
			if ix.Len() < len(fds) {
				b.Fatalf("index has %d entries, fewer than the %d sockets this process holds", ix.Len(), len(fds))
			}
			b.ReportMetric(float64(ix.Len()), "entries")
			perOp[path.name] = b.Elapsed() / time.Duration(b.N)
		})
	}
	proc := perOp[SourceProc]
	for _, name := range []string{SourceBPF, "bpf-iter-reused"} {
		if bpf := perOp[name]; bpf > 0 && proc > 0 {
			b.Logf("%s %v/op vs proc %v/op: bpf/proc = %.3f (%.1fx faster)", name, bpf, proc,
				float64(bpf)/float64(proc), float64(proc)/float64(bpf))
		}
	}
}
