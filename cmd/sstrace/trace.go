package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/sstrace/sstrace/pkg/daemon"
	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/eventfmt"
	"github.com/sstrace/sstrace/pkg/owner"
	"github.com/sstrace/sstrace/pkg/tracer"
	"golang.org/x/sys/unix"
)

type traceFlags struct {
	json     bool
	hook     string
	ringSize int
	netns    string
	duration time.Duration
	noHeader bool
	cpuProf  string
	socket   string
}

func newTraceCmd() *cobra.Command {
	var f traceFlags
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "Stream every TCP state transition on the host",
		Long: `Stream every TCP state transition on the host, as it happens.

Human form: time, pid and comm of the socket's owner, local and peer address,
old -> new state, and milliseconds spent in the old state. The owner is the
process that connected, listened or last used the socket in a system call; a
transition that ran in softirq context (a packet or a timer) is never put on
the task that happened to run, and shows "-" when the owner is unknown (a
socket older than the trace).

--json prints one object per line; see README for the keys. Counters
(events, lost) go to stderr on exit, and losses are reported as they happen.

With --socket PATH, the running daemon's stream is shown instead (no
programs are loaded; events a slow client misses are counted on stderr).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.socket != "" {
				return traceFromDaemon(cmd.Context(), f)
			}
			return runTrace(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.json, "json", false, "one JSON object per transition")
	fl.StringVar(&f.hook, "hook", "auto", "kernel hook: auto, tp_btf, tracepoint, fentry or kprobe")
	fl.IntVar(&f.ringSize, "ring-size", 8<<20, "ring buffer size in bytes (a power of two)")
	fl.StringVar(&f.netns, "netns", "", "keep one network namespace: its inode number or a path (/run/netns/NAME, /proc/PID/ns/net)")
	fl.DurationVar(&f.duration, "duration", 0, "stop after this long (e.g. 10s); 0 runs until interrupted")
	fl.BoolVarP(&f.noHeader, "no-header", "H", false, "no header line (human form)")
	fl.StringVar(&f.cpuProf, "cpuprofile", "", "write a Go CPU profile of the tracer to this file (for benchmarking)")
	_ = fl.MarkHidden("cpuprofile")
	fl.StringVar(&f.socket, "socket", "", "stream from the daemon listening on this socket ("+daemon.DefaultSocket+" by default)")
	return cmd
}

// parseNetns accepts an inode number or a path to a namespace file.
func parseNetns(s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	path := s
	if _, err := os.Stat(path); err != nil {
		if alt := "/run/netns/" + s; fileExists(alt) {
			path = alt
		} else {
			return 0, fmt.Errorf("--netns %q: not an inode number, and %v", s, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("--netns %q: %w", s, err)
	}
	return uint32(st.Ino), nil
}

// traceScope reads what both kinds of trace share: --netns, and --duration
// as a deadline on ctx (cancel releases it).
func traceScope(ctx context.Context, f traceFlags) (context.Context, context.CancelFunc, uint32, error) {
	netns, err := parseNetns(f.netns)
	if err != nil {
		return ctx, func() {}, 0, err
	}
	if f.duration > 0 {
		ctx, cancel := context.WithTimeout(ctx, f.duration)
		return ctx, cancel, netns, nil
	}
	return ctx, func() {}, netns, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func runTrace(ctx context.Context, f traceFlags) error {
	// Ctrl-C and SIGTERM end the stream cleanly: the summary still prints
	// and the programs are detached.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	hook, err := tracer.ParseHook(f.hook)
	if err != nil {
		return err
	}
	ctx, cancel, netns, err := traceScope(ctx, f)
	if err != nil {
		return err
	}
	defer cancel()
	if f.cpuProf != "" {
		pf, err := os.Create(f.cpuProf)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	t, err := tracer.Open(tracer.Options{Hook: hook, RingBufferSize: f.ringSize, NetNS: netns})
	if err != nil {
		return err
	}
	defer t.Close()
	// One line once attached: from here on no transition is missed
	// (scripts wait for it).
	m, note := t.CookieMethod()
	fmt.Fprintf(os.Stderr, "sstrace: tracing with hook %s, cookies via %s\n", t.Hook(), m)
	if note != "" {
		fmt.Fprintf(os.Stderr, "sstrace: cookies via %s only (%s): events of sockets nobody asked a cookie for carry cookie 0\n", m, note)
	}

	out := bufio.NewWriterSize(os.Stdout, 256<<10)
	defer out.Flush()
	// Each line is appended straight into bufio's free space
	// (AvailableBuffer), so the Write that follows copies nothing.
	var buf []byte
	var render func(*event.Event)
	if f.json {
		var j eventfmt.JSON
		render = func(e *event.Event) { buf = j.Append(out.AvailableBuffer(), e) }
	} else {
		text := eventfmt.NewText()
		if !f.noHeader {
			out.WriteString(eventfmt.TextHeader)
		}
		render = func(e *event.Event) { buf = text.Append(out.AvailableBuffer(), e) }
	}

	// Losses are reported live, from a ticker, not only at exit.
	var wg sync.WaitGroup
	lossCtx, stopLoss := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		reportLosses(lossCtx, t)
	}()

	owners := owner.New()
	err = t.Run(ctx, tracer.HandlerFuncs{
		OnEvent: func(e *event.Event) error {
			owners.Observe(e)
			render(e)
			_, err := out.Write(buf)
			return err
		},
		OnIdle: out.Flush,
	})
	stopLoss()
	wg.Wait()
	out.Flush()
	st, serr := t.Stats()
	if serr == nil {
		fmt.Fprintf(os.Stderr, "sstrace: hook %s: %d events received, %d submitted, %d lost\n", st.Hook, st.Received, st.Submitted, st.Lost+st.Missed)
		if st.Missed > 0 {
			fmt.Fprintf(os.Stderr, "sstrace: %d of the lost transitions were skipped by the kernel: it does not re-enter a tracing program a softirq interrupted on the same CPU\n", st.Missed)
		}
	}
	if err != nil {
		return err
	}
	if serr == nil && st.Lost > 0 {
		return exitError{code: 3, msg: fmt.Sprintf("%d events were lost (ring buffer full): raise --ring-size", st.Lost)}
	}
	if serr == nil && st.Missed > 0 {
		return exitError{code: 3, msg: fmt.Sprintf("%d transitions were missed by the kernel (program recursion)", st.Missed)}
	}
	return nil
}

// traceFromDaemon streams the daemon's events. Like a local trace it shows
// every namespace to root (one with --netns), and a user its own.
func traceFromDaemon(ctx context.Context, f traceFlags) error {
	ctx, cancel, netns, err := traceScope(ctx, f)
	if err != nil {
		return err
	}
	defer cancel()
	req := daemon.Request{Op: daemon.OpTrace, JSON: f.json, NoHeader: f.noHeader, NetNS: uint64(netns)}
	req.AllNetNS = os.Geteuid() == 0 && netns == 0
	return askDaemon(ctx, f.socket, req)
}

func reportLosses(ctx context.Context, t *tracer.Tracer) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st, err := t.Stats()
		if err != nil {
			continue
		}
		if lost := st.Lost + st.Missed; lost > last {
			fmt.Fprintf(os.Stderr, "sstrace: lost %d events (%d in all: %d ring buffer full, raise --ring-size; %d skipped by the kernel)\n", lost-last, lost, st.Lost, st.Missed)
			last = lost
		}
	}
}
