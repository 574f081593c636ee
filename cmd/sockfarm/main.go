// Command sockfarm builds a large, realistic TCP socket population inside a
// network namespace and holds it until told to stop, for benchmarking
// `sstrace ss` against `ss` (see .ci/bench-ss.sh and docs/BENCHMARKS.md).
//
//	ip netns add bench
//	sockfarm --netns bench --total 100000
//	ready netns=bench workers=4 pids=7374,7375,7380,7381 total=100000 listen=1000 estab=60000 close-wait=9000 time-wait=30000 other=0 dport=1024 build=2.6s
//
// The population is a server-like mix, by percentage of --total: listeners
// (half on 0.0.0.0, half on 127.0.0.1), established connections with both
// ends held, CLOSE-WAIT sockets (the client closed, the server kept its
// end) and TIME-WAIT entries (closed connections, half closed first by the
// server, half by the client). Clients bind explicit 127.16.0.0/12
// addresses, so the ephemeral port range is never the limit.
//
// A process may hold at most 20000 files here and TIME-WAIT entries hold
// none, so the sockets are spread over worker processes (this binary
// re-executed) that each stay under --max-fds. The kernel expires TIME-WAIT
// entries after a fixed 60 s; the farm counts them every second through
// sock_diag and replaces the expired ones, so the table holds steady while a
// benchmark runs.
//
// The ready line gives the counts the kernel actually holds (sock_diag, the
// source ss reads) and dport, a listener port for selective queries.
// sockfarm stops, closing every socket, on SIGINT, SIGTERM or SIGHUP, or
// when its stdin is a pipe and the writer closes it.
//
// Inside the namespace it sets lo up, net.ipv4.ip_local_port_range to
// 1024-65535, raises net.ipv4.tcp_max_tw_buckets if needed and sets
// net.ipv4.tcp_fin_timeout (--fin-timeout); all are per-namespace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sstrace/sstrace/pkg/sock"
)

func main() {
	if plan, ok := os.LookupEnv(workerEnv); ok {
		if err := runWorker(plan, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "sockfarm:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "sockfarm:", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line into options.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := defaultOptions()
	fs := flag.NewFlagSet("sockfarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Netns, "netns", o.Netns, "existing network namespace `NAME` (ip netns add NAME)")
	fs.IntVar(&o.Total, "total", o.Total, "TCP sockets to build, as ss -tan counts them")
	fs.Float64Var(&o.ListenPct, "listen", o.ListenPct, "percent of --total that are listeners")
	fs.Float64Var(&o.EstabPct, "estab", o.EstabPct, "percent that are ESTAB (both ends of a connection)")
	fs.Float64Var(&o.CloseWaitPct, "close-wait", o.CloseWaitPct, "percent that are CLOSE-WAIT")
	fs.Float64Var(&o.TimeWaitPct, "time-wait", o.TimeWaitPct, "percent that are TIME-WAIT (hold no file)")
	fs.IntVar(&o.MaxFDs, "max-fds", o.MaxFDs, "sockets one worker process may hold (the per-process file limit is 20000)")
	fs.IntVar(&o.Batch, "batch", o.Batch, "connections opened before they are accepted")
	fs.IntVar(&o.FinTimeout, "fin-timeout", o.FinTimeout, "net.ipv4.tcp_fin_timeout in the netns, in `seconds`")
	fs.BoolVar(&o.KeepTimeWait, "keep-time-wait", o.KeepTimeWait, "replace TIME-WAIT entries as the kernel expires them")
	verbose := fs.Bool("verbose", false, "log TIME-WAIT top-ups on stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (all settings are flags; see -help)", fs.Arg(0))
	}
	o.Verbose = *verbose
	return o, nil
}

// run builds the farm, prints the ready line and holds the population until
// ctx ends or stdin (when it is a pipe) closes.
func run(ctx context.Context, args []string, stdin *os.File, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary to start workers: %w", err)
	}
	f, err := startFarm(o, exe, stderr)
	if err != nil {
		return err
	}
	defer f.stop()
	c, err := f.settle(ctx, time.Duration(o.FinTimeout)*time.Second+5*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, readyLine(o.Netns, f, c))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if isPipe(stdin) {
		go func() {
			io.Copy(io.Discard, stdin)
			cancel()
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return f.stop()
		case <-tick.C:
			if !o.KeepTimeWait {
				continue
			}
			n, err := f.topUpTimeWait()
			if err != nil {
				return fmt.Errorf("replacing expired TIME-WAIT entries: %w", err)
			}
			if o.Verbose && n > 0 {
				fmt.Fprintf(stderr, "sockfarm: %s replaced %d expired TIME-WAIT entries\n", time.Now().Format(time.TimeOnly), n)
			}
		}
	}
}

// readyLine reports the population as the kernel holds it, in key=value
// form for scripts.
func readyLine(netns string, f *farm, c stateCounts) string {
	pids := make([]string, 0, len(f.workers))
	for _, p := range f.pids() {
		pids = append(pids, strconv.Itoa(p))
	}
	other := c.Total() - c[sock.Listen] - c[sock.Established] - c[sock.CloseWait] - c[sock.TimeWait]
	return fmt.Sprintf("ready netns=%s workers=%d pids=%s total=%d listen=%d estab=%d close-wait=%d time-wait=%d other=%d dport=%d build=%.1fs",
		netns, len(f.workers), strings.Join(pids, ","), c.Total(), c[sock.Listen], c[sock.Established],
		c[sock.CloseWait], c[sock.TimeWait], other, firstListenPort, f.Built.Seconds())
}

// isPipe reports whether f is a pipe or FIFO: only then does its end mean
// "stop". A terminal or /dev/null on stdin (a background job) must not.
func isPipe(f *os.File) bool {
	if f == nil {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeNamedPipe != 0
}
