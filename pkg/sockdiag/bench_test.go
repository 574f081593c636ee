package sockdiag

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// Benchmark population: established pairs hold two fds each, TIME-WAIT
// sockets none, so ~20 000 sockets fit under the 20 000 open-file cap.
// SOCKDIAG_BENCH_TIMEWAIT overrides the TIME-WAIT count, to measure at the
// scale of a busy host (e.g. 130000 for ~144 000 sockets; slow to build).
const (
	benchPairs    = 7000 // 14 000 established sockets, 14 000 fds
	benchTimeWait = 6000
	// benchListeners spreads connections over several ports: a
	// TIME-WAIT socket blocks its 4-tuple, so more destinations allow
	// more TIME-WAIT sockets than there are ephemeral ports.
	benchListeners = 8
)

// buildTCPLoad fills ns with benchPairs established pairs and benchTimeWait
// TIME-WAIT sockets, all on IPv4 loopback, and returns how many TCP sockets
// it created.
func buildTCPLoad(b *testing.B, ns *testutil.NS) int {
	b.Helper()
	var conns []net.Conn
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	timeWait := benchTimeWait
	if v := os.Getenv("SOCKDIAG_BENCH_TIMEWAIT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			b.Fatalf("SOCKDIAG_BENCH_TIMEWAIT=%q: want a count", v)
		}
		timeWait = n
	}
	err := ns.Do(func() error {
		// Keep every TIME-WAIT socket: by default (tcp_tw_reuse=2)
		// loopback connects recycle their ports. /proc/sys/net is the
		// namespace of the thread that opens it.
		if err := os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse", []byte("0"), 0); err != nil {
			return err
		}
		var lns []*net.TCPListener
		for range benchListeners {
			ln, err := listenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return err
			}
			b.Cleanup(func() { ln.Close() })
			lns = append(lns, ln)
		}
		pair := func(i int) (net.Conn, net.Conn, error) {
			ln := lns[i%len(lns)]
			c, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
			if err != nil {
				return nil, nil, err
			}
			s, err := ln.Accept()
			if err != nil {
				c.Close()
				return nil, nil, err
			}
			return c, s, nil
		}
		for i := range benchPairs {
			c, s, err := pair(i)
			if err != nil {
				return fmt.Errorf("pair %d: %w", i, err)
			}
			conns = append(conns, c, s)
		}
		for i := range timeWait {
			c, s, err := pair(i)
			if err != nil {
				return fmt.Errorf("time-wait pair %d: %w", i, err)
			}
			c.Close() // the client closes first and keeps the TIME-WAIT
			s.Close()
		}
		return nil
	})
	if err != nil {
		b.Fatalf("build TCP load in %s: %v", ns.Name, err)
	}
	time.Sleep(100 * time.Millisecond) // let the last FINs land
	return benchListeners + 2*benchPairs + timeWait
}

// BenchmarkDumpTCP dumps ~20 000 TCP sockets of a namespace (what
// `ss -tan` shows) and reports, next to ns/op, the time the real
// `ss -N NS -tan` takes on the same population in the same run
// (ss-ns/op, median of 5 runs, output to /dev/null).
func BenchmarkDumpTCP(b *testing.B) {
	testutil.RequireRoot(b)
	ns := testutil.NewNS(b)
	want := buildTCPLoad(b, ns)
	nsRef := netns.ByName(ns.Name)
	req := Request{Protos: []sock.Proto{sock.ProtoTCP}, States: sock.AllStates}

	count := func() int {
		n := 0
		if err := Dump(b.Context(), nsRef, req, func(*sock.Socket) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		return n
	}
	ssPath, err := exec.LookPath("ss")
	if err != nil {
		testutil.Unavailable(b, "ss binary: %v", err)
	}
	// ss is the truth for the count.
	out, err := exec.Command(ssPath, "-N", ns.Name, "-tanH").Output()
	if err != nil {
		b.Fatalf("ss -N %s -tanH: %v", ns.Name, err)
	}
	ssCount := bytes.Count(out, []byte("\n"))
	got := count()
	// A large override takes more than the 60 s TIME-WAIT lifetime to
	// build, so sockets expire between the two reads: compare loosely.
	if os.Getenv("SOCKDIAG_BENCH_TIMEWAIT") != "" {
		if got < ssCount*95/100 || got > ssCount*105/100 {
			b.Fatalf("dump found %d TCP sockets, ss %d", got, ssCount)
		}
	} else if got != ssCount || got < want*99/100 {
		b.Fatalf("dump found %d TCP sockets, ss %d, built %d", got, ssCount, want)
	}
	var ssRuns []time.Duration
	for range 5 {
		start := time.Now()
		if err := exec.Command(ssPath, "-N", ns.Name, "-tan").Run(); err != nil {
			b.Fatalf("ss -N %s -tan: %v", ns.Name, err)
		}
		ssRuns = append(ssRuns, time.Since(start))
	}
	sort.Slice(ssRuns, func(i, j int) bool { return ssRuns[i] < ssRuns[j] })

	b.ReportAllocs()
	b.ResetTimer()
	rows := 0
	for b.Loop() {
		rows = count()
	}
	b.StopTimer()
	b.ReportMetric(float64(rows), "sockets")
	b.ReportMetric(float64(ssRuns[len(ssRuns)/2].Nanoseconds()), "ss-ns/op")
	b.Logf("%d TCP sockets: ss -tan median %v (min %v)", rows, ssRuns[len(ssRuns)/2], ssRuns[0])
}
