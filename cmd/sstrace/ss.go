package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sstrace/sstrace/pkg/daemon"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/ssflags"
	"github.com/sstrace/sstrace/pkg/ssquery"
	"github.com/sstrace/sstrace/pkg/version"
)

// newSSCmd builds `sstrace ss`. Its options are ss's (pkg/ssflags, shared
// with the daemon, which parses the same options when a query is
// forwarded); those that select tables, families and states apply in
// command-line order as in ss.
func newSSCmd() *cobra.Command {
	var daemonSocket, at string
	var allNetNS bool
	set := ssflags.New(&daemonSocket)
	cmd := &cobra.Command{
		Use:   "ss [options] [state STATE | exclude STATE]... [FILTER]",
		Short: "socket statistics, as iproute2 ss prints them, answered from sock_diag",
		Long: `ss lists sockets exactly as iproute2's ss does (same options, filter
language, columns and formats), answering from sock_diag with the state set
and the filter pushed down to the kernel. --json prints one JSON object per
socket per line instead.

sstrace dumps TCP, UDP, RAW and UNIX sockets; asking for another table
(-0, -M, -S, -d, --vsock, --tipc, --xdp, -A packet, ...) is an error.
-E prints sockets as they are destroyed (until interrupted); -D FILE writes
the kernel's raw TCP replies to FILE. Neither goes through the daemon.

--socket PATH (a path: it contains a "/"; without one, --socket is ss's
alias of -A) asks the sstrace daemon listening there, which answers in the
caller's network namespace with the same engine: the same output as ss.
--at TIME (RFC 3339, or relative: -30s) answers from the daemon's table as
it stood then (TCP only; queues, timers and TCP internals are not kept and
print as zero; -p shows the recorded owner with fd=-1); it implies the
default socket ` + daemon.DefaultSocket + `.`,
		Args:                  cobra.ArbitraryArgs,
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o := set.Options
			if o.Version {
				// ss -V prints its line and exits, whatever else was asked.
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "ss utility, %s, speaking the language of ss utility, iproute2-%s\n",
					version.Read(nil).Short(), ssquery.SSVersion)
				return err
			}
			if err := set.CheckEmptyNetNS(); err != nil {
				return err
			}
			if at != "" || allNetNS {
				if daemonSocket == "" {
					daemonSocket = daemon.DefaultSocket
				}
			}
			if daemonSocket != "" {
				return ssFromDaemon(cmd, daemonSocket, at, allNetNS, set, args)
			}
			// A one-shot dump allocates a little per row and frees it
			// all at exit: collecting garbage on the way costs a large
			// share of the CPU (7 cycles for 100 000 rows). Collect
			// rarely, with a memory limit as the guard.
			debug.SetGCPercent(800)
			debug.SetMemoryLimit(1 << 30)
			var src ssquery.LiveSource
			if o.NetNS != "" {
				src.NS = netns.ByName(o.NetNS)
			}
			if o.Transitions {
				o.TransitionSource = tracerTransitions{ns: src.NS, notify: cmd.ErrOrStderr()}
			}
			ctx := cmd.Context()
			if o.Events {
				// -E runs until interrupted: end it cleanly (the
				// tracer detached, the last row written), status 0.
				var stop context.CancelFunc
				ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
				defer stop()
			}
			return ssExit(ssquery.Run(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o, args, src))
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		// ss answers an option it rejects with its usage and status 255;
		// a bad value in ss's own words (`"foo" is illegal socket table
		// id`), not pflag's.
		var bad *pflag.InvalidValueError
		if errors.As(err, &bad) && bad.Unwrap() != nil {
			err = bad.Unwrap()
		}
		return exitError{code: ssquery.UsageExitStatus, msg: fmt.Sprintf("ss: %v (see 'sstrace ss --help')", err)}
	})
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.AddFlagSet(set.Flags)
	fl.StringVar(&at, "at", "", "answer as the daemon's table stood at TIME (RFC 3339 or relative: -30s)")
	fl.BoolVar(&allNetNS, "all-netns", false, "with --at: every network namespace (root only)")
	cmd.ValidArgsFunction = completeFilter
	_ = cmd.RegisterFlagCompletionFunc("net", completeNetnsNames)
	return cmd
}

// ssExit gives input ss rejects ss's exit status.
func ssExit(err error) error {
	var ue *ssquery.UsageError
	if errors.As(err, &ue) {
		return exitError{code: ssquery.UsageExitStatus, msg: ue.Error()}
	}
	return err
}

// ssFromDaemon forwards the query: the options as parsed, in order, then
// the filter words after "--" (so that none is taken for an option).
func ssFromDaemon(cmd *cobra.Command, path, at string, allNetNS bool, set *ssflags.Set, args []string) error {
	// askDaemon sends the client's terminal width: ss lays its columns out
	// for the terminal it prints to, and the daemon renders for it.
	// -E --transitions is a stream: the daemon holds it open.
	req := daemon.Request{Op: daemon.OpSS, AllNetNS: allNetNS, Follow: set.Options.Events && set.Options.Transitions}
	req.Args = append(set.Args(), "--")
	req.Args = append(req.Args, args...)
	if at != "" {
		t, err := daemon.ParseTime(at, time.Now())
		if err != nil {
			return exitError{code: 1, msg: "ss: --at: " + err.Error()}
		}
		req.At = t
	}
	if file := set.Options.FilterFile; file != "" {
		// The daemon opens no file for a client: send the text.
		var r io.Reader = os.Stdin
		if !strings.HasPrefix(file, "-") {
			f, err := os.Open(file)
			if err != nil {
				return fmt.Errorf("ss: open filter file: %w", err)
			}
			defer f.Close()
			r = f
		}
		b, err := io.ReadAll(io.LimitReader(r, daemon.MaxRequestBytes))
		if err != nil {
			return fmt.Errorf("ss: read filter file: %w", err)
		}
		req.Filter = string(b)
	}
	return askDaemon(cmd.Context(), path, req)
}
