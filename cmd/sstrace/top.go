package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/spf13/cobra"

	"github.com/sstrace/sstrace/pkg/daemon"
	"github.com/sstrace/sstrace/pkg/keeper"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/table"
	"github.com/sstrace/sstrace/pkg/topui"
	"github.com/sstrace/sstrace/pkg/topview"
	"github.com/sstrace/sstrace/pkg/tracer"
)

type topFlags struct {
	socket     string
	allNetNS   bool
	standalone bool
	hook       string
}

func newTopCmd() *cobra.Command {
	var f topFlags
	cmd := &cobra.Command{
		Use:   "top [flags] [state STATE | exclude STATE]... [FILTER]",
		Short: "A live full-screen view of the host's TCP connections",
		Long: `top shows, refreshed every second: the sockets by state with their trend,
new connections and closes per second, the owners and peers opening the most
connections (and whose connections fail), the CLOSE-WAIT sockets by owner
with the age of the oldest, and the latest short-lived connections with their
outcome and lifetime.

The figures come from the sstrace daemon (--socket); without one, top runs
the tracer itself (root) and seeds its own table. FILTER is ss's language;
it applies to every panel.

Keys: s cycles the sort of the owners and peers (new, failed, new/s, name),
p pauses, / sets the filter (Enter applies, Esc cancels), q or Ctrl-C quits.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runTop(cmd.Context(), f, args) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.socket, "socket", daemon.DefaultSocket, "the daemon's socket")
	fl.BoolVar(&f.allNetNS, "all-netns", false, "every network namespace (root only); default: top's own")
	fl.BoolVar(&f.standalone, "standalone", false, "run the tracer here instead of asking the daemon")
	fl.StringVar(&f.hook, "hook", "auto", "kernel hook without a daemon: auto, tp_btf, tracepoint, fentry or kprobe")
	_ = cmd.RegisterFlagCompletionFunc("hook", completeHooks)
	cmd.ValidArgsFunction = completeFilter
	return cmd
}

// topSource produces snapshots for a filter until ctx ends (nil) or it
// fails. A *rejectedError says the filter was refused, not the source.
type topSource struct {
	label string
	run   func(ctx context.Context, words []string, emit func(*topview.Snapshot)) error
	close func()
}

// rejectedError is a filter the daemon refused: shown, not fatal.
type rejectedError struct{ msg string }

func (e *rejectedError) Error() string { return e.msg }

func runTop(ctx context.Context, f topFlags, args []string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if _, err := daemon.TopFilter(args); err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	hook, err := tracer.ParseHook(f.hook)
	if err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	scope := "all namespaces"
	var ns uint64
	if !f.allNetNS {
		if ns, err = (netns.Namespace{}).Inode(); err != nil {
			return fmt.Errorf("own network namespace: %w", err)
		}
		scope = fmt.Sprintf("netns %d", ns)
	}
	var src *topSource
	if !f.standalone {
		src, err = daemonTopSource(f.socket, f.allNetNS)
		var nd *daemon.NoDaemonError
		if errors.As(err, &nd) && !errors.Is(err, os.ErrPermission) {
			src, err = nil, nil // no daemon: trace here
		}
		if err != nil {
			return exitError{code: 1, msg: err.Error()}
		}
	}
	if src == nil {
		if src, err = ownTopSource(ctx, hook, ns); err != nil {
			return err
		}
		if !f.standalone {
			src.label += " (no daemon at " + f.socket + ")"
		}
	}
	defer src.close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fd := &topFeeds{ctx: ctx, src: src}
	m := topui.New(topui.Config{
		Source: src.label, Scope: scope, Filter: strings.Join(args, " "),
		SetFilter: func(words []string, gen int) error {
			if _, err := daemon.TopFilter(words); err != nil {
				return err
			}
			fd.start(words, gen)
			return nil
		},
	})
	_, err = showTop(m, func(p *tea.Program) {
		fd.p = p
		fd.start(args, 0)
	})
	cancel()
	fd.wg.Wait()
	return topExit(m, err, fd.panicked())
}

// showTop runs the full-screen program on the terminal until it quits.
// bubbletea restores the terminal on every way out: q and Ctrl-C (keys in
// raw mode), SIGINT and SIGTERM (its signal handler quits the program),
// a panic in the model (recovered, terminal restored, then reported), and
// a source that ends (the model quits on SourceErrorMsg).
func showTop(m tea.Model, started func(*tea.Program)) (tea.Model, error) {
	p := tea.NewProgram(m, tea.WithAltScreen())
	started(p)
	return p.Run()
}

// topExit turns the end of the view into top's exit: 0 after q or a
// signal, 1 with the reason when the figures stopped, 2 after a panic
// (whose stack is on stderr, the terminal already restored).
func topExit(m *topui.Model, err error, goPanic []byte) error {
	switch {
	case goPanic != nil:
		os.Stderr.Write(goPanic)
		return exitError{code: 2, msg: "top: internal error (the stack is above); the terminal was restored"}
	case errors.Is(err, tea.ErrProgramPanic):
		return exitError{code: 2, msg: "top: internal error (the stack is above); the terminal was restored"}
	case errors.Is(err, tea.ErrInterrupted):
		return nil
	case err != nil:
		return fmt.Errorf("top: %w", err)
	case m.Err() != nil:
		return exitError{code: 1, msg: m.Err().Error()}
	}
	return nil
}

// topFeeds runs one source per filter: a new filter cancels the running
// one (whose late messages the model drops by generation) and starts the
// next. Nothing here waits on the program, which calls start from Update.
type topFeeds struct {
	ctx context.Context
	src *topSource
	p   *tea.Program
	wg  sync.WaitGroup

	mu     sync.Mutex
	cancel context.CancelFunc
	stack  []byte
}

func (fd *topFeeds) start(words []string, gen int) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if fd.cancel != nil {
		fd.cancel()
	}
	ctx, cancel := context.WithCancel(fd.ctx)
	fd.cancel = cancel
	fd.wg.Add(1)
	go func() {
		defer fd.wg.Done()
		defer func() {
			// A panic here would leave the terminal raw: end the view
			// instead, and report it once the terminal is back.
			if r := recover(); r != nil {
				fd.mu.Lock()
				fd.stack = fmt.Appendf(nil, "panic: %v\n\n%s", r, debug.Stack())
				fd.mu.Unlock()
				fd.p.Send(topui.SourceErrorMsg{Err: errors.New("internal error"), Gen: gen})
			}
		}()
		err := fd.src.run(ctx, words, func(s *topview.Snapshot) {
			fd.p.Send(topui.SnapshotMsg{Snap: s, Gen: gen})
		})
		if ctx.Err() != nil {
			return
		}
		var rej *rejectedError
		if errors.As(err, &rej) {
			fd.p.Send(topui.FilterErrorMsg{Err: err, Gen: gen})
			return
		}
		fd.p.Send(topui.SourceErrorMsg{Err: err, Gen: gen})
	}()
}

func (fd *topFeeds) panicked() []byte {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	return fd.stack
}

// daemonTopSource asks the daemon at path, if one answers there.
func daemonTopSource(path string, allNetNS bool) (*topSource, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A status request finds out whether a daemon answers, and whether
	// its table is ready, before the screen is taken.
	res, err := daemon.Do(ctx, path, daemon.Request{Op: daemon.OpStatus}, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		return nil, err
	}
	if res.Exit != 0 {
		return nil, fmt.Errorf("the sstrace daemon at %s is not ready: %s", path, cmpOr(res.Error, "its table is still being seeded"))
	}
	return &topSource{
		label: "daemon " + path,
		close: func() {},
		run: func(ctx context.Context, words []string, emit func(*topview.Snapshot)) error {
			lines := &snapshotLines{emit: emit}
			var errb bytes.Buffer
			res, err := daemon.Do(ctx, path, daemon.Request{Op: daemon.OpTop, Args: words, AllNetNS: allNetNS}, lines, &errb)
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, daemon.ErrClosed):
				// Mid-stream: the daemon went away without the
				// exit frame it sends when it ends on its own.
				return errEndedStream
			case err != nil:
				return err
			case lines.err != nil:
				return lines.err
			case res.Exit == 2:
				return &rejectedError{msg: res.Error}
			case res.Exit != 0:
				return fmt.Errorf("the sstrace daemon: %s", cmpOr(res.Error, strings.TrimSpace(errb.String())))
			}
			return errEndedStream
		},
	}, nil
}

// errEndedStream ends top when the daemon's stream ends, however it ends.
var errEndedStream = errors.New("the sstrace daemon ended the stream (did it stop?)")

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// snapshotLines decodes the daemon's JSON lines as they arrive (a frame
// may end in the middle of one).
type snapshotLines struct {
	buf  []byte
	emit func(*topview.Snapshot)
	err  error
}

func (s *snapshotLines) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		snap, err := topview.DecodeSnapshot(s.buf[:i])
		if err != nil {
			s.err = err
			return 0, err
		}
		s.emit(snap)
		s.buf = s.buf[:copy(s.buf, s.buf[i+1:])]
	}
}

// ownTopSource attaches the tracer and keeps a table here, as the daemon
// does (tracedTable, keeper.Run), retaining closed connections for the
// view's window only.
func ownTopSource(ctx context.Context, hook tracer.Hook, ns uint64) (*topSource, error) {
	tr, tbl, err := tracedTable(hook, 8<<20, table.Options{Retain: 2 * topview.DefaultWindow, RetainMax: 200_000})
	if err != nil {
		return nil, err
	}
	kctx, stop := context.WithCancel(ctx)
	seeded := make(chan struct{})
	stopped := make(chan struct{})
	var kerr error
	go func() {
		defer close(stopped)
		kerr = keeper.Run(kctx, tr, tbl, keeper.Options{
			Log:      slog.New(slog.DiscardHandler), // the screen is ours
			OnSeeded: func(int, time.Duration) { close(seeded) },
		})
	}()
	keeperErr := func() error {
		<-stopped
		if kerr == nil {
			return errors.New("the tracer stopped")
		}
		return fmt.Errorf("tracer: %w", kerr)
	}
	return &topSource{
		label: "own tracer, hook " + string(tr.Hook()),
		close: func() {
			stop()
			<-stopped
			tr.Close()
		},
		run: func(ctx context.Context, words []string, emit func(*topview.Snapshot)) error {
			select {
			case <-seeded:
			case <-ctx.Done():
				return nil
			case <-stopped:
				return keeperErr()
			}
			match, err := daemon.TopFilter(words)
			if err != nil {
				return &rejectedError{msg: err.Error()}
			}
			// The view ends when the tracer does.
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				select {
				case <-stopped:
					cancel()
				case <-rctx.Done():
				}
			}()
			err = topview.Run(rctx, tbl, topview.Options{NetNS: ns, Match: match}, func(s *topview.Snapshot) error {
				emit(s)
				return nil
			})
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				return err
			}
			return keeperErr()
		},
	}, nil
}
