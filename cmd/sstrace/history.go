package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sstrace/sstrace/pkg/daemon"
	"github.com/sstrace/sstrace/pkg/ssquery"
)

type historyFlags struct {
	socket   string
	json     bool
	since    string
	closed   bool
	follow   bool
	verbose  bool
	noHeader bool
	allNetNS bool
}

func newHistoryCmd() *cobra.Command {
	var f historyFlags
	cmd := &cobra.Command{
		Use:   "history [flags] [state STATE | exclude STATE]... [FILTER]",
		Short: "Connections with their histories, short-lived ones included, from the daemon",
		Long: `Ask the sstrace daemon for the connections it has seen: open ones and
closed ones it still retains (see the daemon's --retain), including those
that lived a few milliseconds and that no poll of ss would catch.

One line per connection, as tcplife prints them: the owner (pid, comm),
addresses, kilobytes sent and received, the lifetime in milliseconds, the
state (CLOSED once gone) and how it ended: refused, timeout, reset or closed
(with the side: "closed(peer)" means the peer closed first), aborted (closed
with unread data). A "!" marks a history with a gap (events were lost).
-v adds each connection's timeline: every transition with its time, context
and, in process context, the task; and the owner's cgroup and container.

FILTER is ss's filter language (dport = :443, src 10.0.0.0/8, ...). State
words select the current state, "closed" the ones gone; without them every
state matches. Two words select by the owner: "cgroup PATH", its cgroup v2
by the path history shows (relative to the cgroup v2 mount; a cgroup gone
since still matches), and "container ID", the owners in the container whose
id begins with ID (as docker ps or crictl ps show it). --json prints one
object per connection (keys: docs/JSON.md). --follow keeps going and prints
each connection as it closes.

A caller sees its own network namespace (--all-netns: every one, for root)
and, unless root, only its own processes.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := daemon.Request{
				Op: daemon.OpHistory, Args: args, JSON: f.json, Closed: f.closed,
				Follow: f.follow, Verbose: f.verbose, NoHeader: f.noHeader, AllNetNS: f.allNetNS,
			}
			if f.since != "" {
				t, err := daemon.ParseTime(f.since, time.Now())
				if err != nil {
					return exitError{code: 2, msg: "--since: " + err.Error()}
				}
				req.Since = t
			}
			return askDaemon(cmd.Context(), f.socket, req)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.socket, "socket", daemon.DefaultSocket, "the daemon's socket")
	fl.BoolVar(&f.json, "json", false, "one JSON object per connection")
	fl.StringVar(&f.since, "since", "", "connections alive at or after this moment: a duration back from now (5m) or RFC 3339")
	fl.BoolVar(&f.closed, "closed", false, "closed connections only")
	fl.BoolVarP(&f.follow, "follow", "f", false, "then print each connection as it closes, until interrupted")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "each connection's timeline")
	fl.BoolVarP(&f.noHeader, "no-header", "H", false, "no header line")
	fl.BoolVar(&f.allNetNS, "all-netns", false, "every network namespace (root only)")
	cmd.ValidArgsFunction = completeConnFilter
	return cmd
}

// askDaemon sends req to the daemon at path, copies its output to ours
// and turns its exit status into ours. Streaming requests run until
// Ctrl-C or SIGTERM, which end them cleanly (exit 0).
func askDaemon(ctx context.Context, path string, req daemon.Request) error {
	if ctx == nil {
		ctx = context.Background()
	}
	req.Width = ssquery.TerminalWidth(os.Stdout)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := daemon.Do(ctx, path, req, os.Stdout, os.Stderr)
	if err != nil {
		var nd *daemon.NoDaemonError
		if errors.As(err, &nd) {
			return exitError{code: 1, msg: nd.Error()}
		}
		if ctx.Err() != nil {
			return nil // interrupted: the end of a stream
		}
		return err
	}
	if res.Exit != 0 || res.Error != "" {
		code := res.Exit
		if code == 0 {
			code = 1
		}
		return exitError{code: code, msg: res.Error}
	}
	return nil
}
