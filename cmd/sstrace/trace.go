package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/sstrace/sstrace/pkg/daemon"
	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/eventfmt"
	"github.com/sstrace/sstrace/pkg/filter"
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
	extended bool
	pid      int
	cgroup   string
	// filter is the command tail: ss's state words and expression.
	filter []string
	// keep is filter and --pid as check built them (nil: every
	// transition); ports, the filter's ports for the kernel (nil: none).
	keep    func(*event.Event) bool
	ports   []uint16
	cpuProf string
	socket  string
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

--json prints one object per line (keys: docs/JSON.md). Counters
(events, lost) go to stderr on exit, and losses are reported as they happen.

FILTER is ss's language, on the socket's addresses and ports ('dport = :5432
or sport = :5432', 'src 10.0.0.0/8'), and its state words keep the
transitions into or out of the named states ('state close-wait'). --pid keeps
the sockets a process owns, --cgroup PATH those whose owner is in that cgroup
(a service's or a container's: the filter's 'cgroup PATH'). The namespace
(--netns) is filtered in the kernel, and so are the filter's ports when
every transition it keeps has one of them (up to 16: 'dport = :5432 or
sport = :5432' is; 'dport != :22' is not); the whole filter, --pid and
--cgroup run on each event in sstrace.

With --socket PATH, the running daemon's stream is shown instead (no
programs are loaded; events a slow client misses are counted on stderr).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.netnsSet = cmd.Flags().Changed("netns")
			f.filter = args
			var err error
			if f.keep, f.ports, err = f.check(); err != nil {
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
	fl.IntVar(&f.pid, "pid", 0, "keep the sockets this process owns (the owner, as pid shows it)")
	fl.StringVar(&f.cgroup, "cgroup", "", "keep the sockets whose owner is in this cgroup v2 (a path under the mount, e.g. /system.slice/nginx.service; the filter's `cgroup PATH`)")
	fl.BoolVarP(&f.extended, "extended", "e", false, "add each socket's cookie and network namespace inode (human form; JSON always has them)")
	fl.StringVar(&f.cpuProf, "cpuprofile", "", "write a Go CPU profile of the tracer to this file (for benchmarking)")
	_ = fl.MarkHidden("cpuprofile")
	fl.StringVar(&f.socket, "socket", "", "stream from the daemon listening on this socket ("+daemon.DefaultSocket+" by default)")
	cmd.ValidArgsFunction = completeFilter
	_ = cmd.RegisterFlagCompletionFunc("hook", completeHooks)
	_ = cmd.RegisterFlagCompletionFunc("netns", completeNetnsNames)
	return cmd
}

// check rejects out-of-range values before anything is loaded, with the
// range in the message, and returns the selection of FILTER, --cgroup and
// --pid, and the filter's ports for the kernel.
func (f traceFlags) check() (func(*event.Event) bool, []uint16, error) {
	if err := checkRingSize(f.ringSize); err != nil {
		return nil, nil, err
	}
	if f.duration < 0 {
		return nil, nil, fmt.Errorf("--duration %v: must be positive, or 0 to run until interrupted", f.duration)
	}
	if f.pid < 0 {
		return nil, nil, fmt.Errorf("--pid %d: not a process id", f.pid)
	}
	return filter.TraceSelection(filter.WithCgroup(f.filter, f.cgroup), f.pid, tracer.MaxPorts)
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
	// Ctrl-C, SIGTERM and SIGHUP (the terminal went away) end the stream
	// cleanly: the summary still prints and the programs are detached.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
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
	// The filter's ports are filtered in the kernel too, when every
	// transition it keeps has one of a few ports: the others never cross
	// the ring buffer.
	t, err := tracer.Open(tracer.Options{Hook: hook, RingBufferSize: f.ringSize, NetNS: ino, Ports: f.ports})
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

	// Lines are appended straight into the output buffer, which a
	// goroutine of its own writes (outputPipe): a stdout nobody reads
	// cannot hold the trace past its end.
	out := newOutputPipe(os.Stdout)
	var buf []byte
	var render func(*event.Event)
	if f.json {
		var j eventfmt.JSON
		render = func(e *event.Event) { buf = j.Append(buf, e) }
	} else {
		text := &eventfmt.Text{Extended: f.extended}
		if !f.noHeader {
			buf = append(buf, text.Header()...)
		}
		render = func(e *event.Event) { buf = text.Append(buf, e) }
	}
	buf = append(out.take(), buf...)

	// Losses are reported live, from a ticker, not only at exit.
	var wg sync.WaitGroup
	lossCtx, stopLoss := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		reportLosses(lossCtx, t)
	}()

	owners := owner.New()
	keep := f.keep
	var unrendered uint64 // events dropped after the stop, stdout blocked
	err = t.Run(ctx, tracer.HandlerFuncs{
		OnEvent: func(e *event.Event) error {
			// Every event goes through the owner tracker, kept or not:
			// a socket's owner comes from its earlier transitions.
			owners.Observe(e)
			if keep != nil && !keep(e) {
				return nil
			}
			if len(buf) >= outputBufferSize {
				var err error
				if buf, err = out.swap(ctx, buf); err != nil {
					return err
				}
				if len(buf) >= outputStopLimit {
					unrendered++
					return nil
				}
			}
			render(e)
			return nil
		},
		OnIdle: func() error {
			var err error
			buf, err = out.trySwap(buf)
			return err
		},
	})
	stopLoss()
	wg.Wait()
	unwritten, werr := out.finish(buf, outputStall)
	st, serr := t.Stats()
	if serr == nil {
		caught := ""
		if st.Caught > 0 {
			// Not lost: the catcher program took them (bpf/tracer.bpf.c).
			caught = fmt.Sprintf("; %d transitions the kernel skipped for the main program (a softirq interrupted it) were taken by its catcher", st.Caught)
		}
		fmt.Fprintf(os.Stderr, "sstrace: hook %s: %d events received, %d submitted, %d lost%s\n", st.Hook, st.Received, st.Submitted, st.Lost+st.Missed, caught)
		if st.Missed > 0 {
			fmt.Fprintf(os.Stderr, "sstrace: %d of the lost transitions were skipped by the kernel: it does not re-enter a tracing program a softirq interrupted on the same CPU\n", st.Missed)
		}
	}
	if err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	if unwritten > 0 || unrendered > 0 {
		msg := fmt.Sprintf("stdout was not read for %v after the trace ended: %d bytes of output not written", outputStall, unwritten)
		if unrendered > 0 {
			msg += fmt.Sprintf(", %d more events not rendered", unrendered)
		}
		return exitError{code: 3, msg: msg}
	}
	if serr == nil && st.Lost > 0 {
		return exitError{code: 3, msg: fmt.Sprintf("%d events were lost (ring buffer full): raise --ring-size", st.Lost)}
	}
	if serr == nil && st.Missed > 0 {
		return exitError{code: 3, msg: fmt.Sprintf("%d transitions were missed by the kernel (program recursion)", st.Missed)}
	}
	return nil
}

const (
	// outputBufferSize is how much rendered output is handed to the
	// writer at once (about 1700 text lines).
	outputBufferSize = 256 << 10
	// outputBuffers is how many such buffers exist: one filled by the
	// trace, the others written or waiting.
	outputBuffers = 3
	// outputChunk is the largest single write, so that the writer's
	// progress through a slow pipe can be seen.
	outputChunk = 32 << 10
	// outputStopLimit caps the buffer once the trace is stopping and the
	// writer has no buffer free: the events of the final drain beyond it
	// are counted, not kept.
	outputStopLimit = 4 << 20
	// outputStall is how long the end of a trace waits for a writer that
	// makes no progress (a pipe nobody reads, a terminal on XOFF) before
	// giving up on the output left.
	outputStall = time.Second
)

// outputPipe writes the trace's output from a goroutine of its own, so
// that a blocked stdout blocks only that goroutine: the trace loop keeps
// watching its context (--duration, signals), and the end of the trace
// waits for the writer only as long as it makes progress. Buffers go round
// between the trace loop (take, swap, trySwap, finish) and the writer; the
// loop renders into them in place, so nothing is copied.
type outputPipe struct {
	w    io.Writer
	full chan []byte   // to the writer; room for every buffer, never blocks
	free chan []byte   // written, back to the loop
	done chan struct{} // closed when the writer returns; err is set then
	err  error

	handed  int64        // bytes handed to the writer (the loop's)
	written atomic.Int64 // bytes written (the writer's)
}

// newOutputPipe starts the writer of w.
func newOutputPipe(w io.Writer) *outputPipe {
	p := &outputPipe{
		w:    w,
		full: make(chan []byte, outputBuffers),
		free: make(chan []byte, outputBuffers),
		done: make(chan struct{}),
	}
	for range outputBuffers {
		p.free <- make([]byte, 0, outputBufferSize+outputBufferSize/16)
	}
	go p.write()
	return p
}

// write is the writer goroutine: it writes the buffers in order and
// returns them, until full is closed or a write fails.
func (p *outputPipe) write() {
	defer close(p.done)
	for b := range p.full {
		for rest := b; len(rest) > 0; {
			n, err := p.w.Write(rest[:min(len(rest), outputChunk)])
			p.written.Add(int64(n))
			if err != nil {
				p.err = fmt.Errorf("write output: %w", err)
				return
			}
			rest = rest[n:]
		}
		p.free <- b[:0]
	}
}

// take returns the first buffer to fill.
func (p *outputPipe) take() []byte { return <-p.free }

// hand gives b to the writer.
func (p *outputPipe) hand(b []byte) {
	p.handed += int64(len(b))
	p.full <- b
}

// swap hands buf to the writer and returns an empty buffer, waiting for
// one while the writer is behind. Once ctx has ended it waits no more and
// returns buf itself, to go on filling (the caller bounds it).
func (p *outputPipe) swap(ctx context.Context, buf []byte) ([]byte, error) {
	select {
	case b := <-p.free:
		p.hand(buf)
		return b, nil
	case <-p.done:
		return buf, p.err
	case <-ctx.Done():
		return buf, nil
	}
}

// trySwap is swap without waiting: with no buffer free, buf stays with the
// caller (the writer is busy anyway).
func (p *outputPipe) trySwap(buf []byte) ([]byte, error) {
	if len(buf) == 0 {
		return buf, nil
	}
	select {
	case b := <-p.free:
		p.hand(buf)
		return b, nil
	case <-p.done:
		return buf, p.err
	default:
		return buf, nil
	}
}

// finish hands buf to the writer and waits until everything is written,
// or until the writer has made no progress for stall. It returns how many
// bytes were left unwritten then.
func (p *outputPipe) finish(buf []byte, stall time.Duration) (unwritten int64, err error) {
	select {
	case <-p.done:
		return p.handed + int64(len(buf)) - p.written.Load(), p.err
	default:
	}
	if len(buf) > 0 {
		p.hand(buf)
	}
	close(p.full)
	tick := time.NewTicker(stall)
	defer tick.Stop()
	last := p.written.Load()
	for {
		select {
		case <-p.done:
			return p.handed - p.written.Load(), p.err
		case <-tick.C:
			now := p.written.Load()
			if now == last {
				return p.handed - now, nil
			}
			last = now
		}
	}
}

// traceFromDaemon streams the daemon's events. Like a local trace it shows
// every namespace to root (one with --netns), and a user its own.
func traceFromDaemon(ctx context.Context, f traceFlags) error {
	ctx, cancel, ino, err := traceScope(ctx, f)
	if err != nil {
		return err
	}
	defer cancel()
	req := daemon.Request{Op: daemon.OpTrace, JSON: f.json, NoHeader: f.noHeader, Extended: f.extended, NetNS: uint64(ino),
		Args: filter.WithCgroup(f.filter, f.cgroup), PID: f.pid}
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
