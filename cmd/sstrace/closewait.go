package main

import (
	"github.com/spf13/cobra"

	"github.com/sstrace/sstrace/pkg/daemon"
)

func newCloseWaitCmd() *cobra.Command {
	var (
		socket   string
		asJSON   bool
		allNetNS bool
	)
	cmd := &cobra.Command{
		Use:   "closewait [flags] [FILTER]",
		Short: "Every socket in CLOSE-WAIT, with who holds it, since when and how it began",
		Long: `Ask the sstrace daemon for every TCP socket in CLOSE-WAIT: the peer has
closed, the local process has not. For each: the process(es) holding it
(pid, comm, fd), the peer, when the peer's FIN arrived and how long ago,
Recv-Q, and how the connection began (connect or accept, by whom, when).
For a socket already in CLOSE-WAIT when the daemon started, the FIN time is
unknown and the age is a lower bound.

Sockets are grouped by process (and its container) and peer service (the
peer's port for outgoing connections, the local port for accepted ones),
the group with the most sockets first, then the oldest: a leak stands out
at the top. When owners are in containers, the count by container follows.

FILTER is ss's filter language, plus "cgroup PATH" (the owner's cgroup v2,
by its path relative to the cgroup v2 mount) and "container ID" (the owners
in the container whose id begins with ID), as in history. --json prints one object per socket, worst
group first (keys: docs/JSON.md).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return askDaemon(cmd.Context(), socket, daemon.Request{
				Op: daemon.OpCloseWait, Args: args, JSON: asJSON, AllNetNS: allNetNS,
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&socket, "socket", daemon.DefaultSocket, "the daemon's socket")
	fl.BoolVar(&asJSON, "json", false, "one JSON object per socket")
	fl.BoolVar(&allNetNS, "all-netns", false, "every network namespace (root only)")
	cmd.ValidArgsFunction = completeConnFilter
	return cmd
}
