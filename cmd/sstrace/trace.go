package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/sstrace/sstrace/pkg/daemon"
	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/eventfmt"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/owner"
	"github.com/sstrace/sstrace/pkg/tracer"
)

type traceFlags struct {
	json     bool
	hook     string
	ringSize int
	netns    string
	netnsSet bool // --netns given, even as ""
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
			f.netnsSet = cmd.Flags().Changed("netns")
			if err := f.check(); err != nil {
				return err
			}
			if f.socket != "" {
				return traceFromDaemon(cmd.Context(), f)
			}
			return runTrace(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.json, "json", false, "one JSON object per transition")
	fl.StringVar(&f.hook, "hook", "auto", "kernel hook: auto, tp_btf, tracepoint, fentry or kprobe")
	fl.IntVar(&f.ringSize, "ring-size", 8<<20, "ring buffer size in bytes: a power of two from the page size to 1 GiB")
	fl.StringVar(&f.netns, "netns", "", "keep one network namespace: an `ip netns` NAME (/run/netns/NAME), a path (/proc/PID/ns/net) or an inode number")
	fl.DurationVar(&f.duration, "duration", 0, "stop after this long (e.g. 10s); 0 runs until interrupted")
	fl.BoolVarP(&f.noHeader, "no-header", "H", false, "no header line (human form)")
	fl.StringVar(&f.cpuProf, "cpuprofile", "", "write a Go CPU profile of the tracer to this file (for benchmarking)")
	_ = fl.MarkHidden("cpuprofile")
	fl.StringVar(&f.socket, "socket", "", "stream from the daemon listening on this socket ("+daemon.DefaultSocket+" by default)")
	return cmd
}

// check rejects out-of-range values before anything is loaded, with the
// range in the message.
func (f traceFlags) check() error {
	if err := checkRingSize(f.ringSize); err != nil {
		return err
	}
	if f.duration < 0 {
		return fmt.Errorf("--duration %v: must be positive, or 0 to run until interrupted", f.duration)
	}
	return nil
}

// checkRingSize validates --ring-size, of trace and of the daemon alike. 0
// is an error: tracer.Options takes it for the default, a user who typed
// it meant something else.
func checkRingSize(n int) error {
	if err := tracer.CheckRingBufferSize(n); err != nil {
		return fmt.Errorf("--ring-size %w", err)
	}
	return nil
}

// traceNetns turns --netns into the inode the tracer keeps (0: all, when
// the flag was not given). The argument is resolved as pkg/netns resolves
// it (a path, an `ip netns` name under /run/netns, an inode number) and must
// be a network namespace. A number that is the inode of no namespace seen
// today is kept with a warning on warn: a namespace held only by a
// descriptor or a bind mount elsewhere is invisible to netns.All, and the
// kernel filter needs only the number.
func traceNetns(arg string, set bool, warn io.Writer) (uint32, error) {
	if !set {
		return 0, nil
	}
	ns, err := netns.Resolve(arg)
	var unknown *netns.InodeNotFoundError
	switch {
	case errors.As(err, &unknown):
		if unknown.Inode == 0 || unknown.Inode > math.MaxUint32 {
			return 0, fmt.Errorf("--netns %s: not a namespace inode (1 to %d)", arg, uint32(math.MaxUint32))
		}
		fmt.Fprintf(warn, "sstrace: warning: --netns %v; tracing inode %d all the same\n", err, unknown.Inode)
		return uint32(unknown.Inode), nil
	case err != nil:
		return 0, fmt.Errorf("--netns %w", err)
	}
	ino, err := ns.Inode()
	if err != nil {
		return 0, fmt.Errorf("--netns %s: %w", arg, err)
	}
	return uint32(ino), nil
}

// traceScope reads what both kinds of trace share: --netns, and --duration
// as a deadline on ctx (cancel releases it).
func traceScope(ctx context.Context, f traceFlags) (context.Context, context.CancelFunc, uint32, error) {
	ino, err := traceNetns(f.netns, f.netnsSet, os.Stderr)
	if err != nil {
		return ctx, func() {}, 0, err
	}
	if f.duration > 0 {
		ctx, cancel := context.WithTimeout(ctx, f.duration)
		return ctx, cancel, ino, nil
	}
	return ctx, func() {}, ino, nil
}

func runTrace(ctx context.Context, f traceFlags) error {
	// Ctrl-C and SIGTERM end the stream cleanly: the summary still prints
	// and the programs are detached.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	hook, err := tracer.ParseHook(f.hook)
	if err != nil {
		return err
	}
	ctx, cancel, ino, err := traceScope(ctx, f)
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
	t, err := tracer.Open(tracer.Options{Hook: hook, RingBufferSize: f.ringSize, NetNS: ino})
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
	ctx, cancel, ino, err := traceScope(ctx, f)
	if err != nil {
		return err
	}
	defer cancel()
	req := daemon.Request{Op: daemon.OpTrace, JSON: f.json, NoHeader: f.noHeader, NetNS: uint64(ino)}
	req.AllNetNS = os.Geteuid() == 0 && ino == 0
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
