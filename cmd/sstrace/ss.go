package main

import (
	"fmt"
	"runtime/debug"
	"strconv"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/ssquery"
)

// orderedFlag is a boolean-looking flag whose effect depends on where it
// sits on the command line (ss applies -t, -a, -4, ... in order).
type orderedFlag struct {
	apply func() error
}

func (f *orderedFlag) String() string   { return "false" }
func (f *orderedFlag) Type() string     { return "bool" }
func (f *orderedFlag) IsBoolFlag() bool { return true }
func (f *orderedFlag) Set(v string) error {
	if b, err := strconv.ParseBool(v); err != nil || !b {
		return fmt.Errorf("takes no value")
	}
	return f.apply()
}

// orderedValue is an option with an argument applied in command-line order
// (-A, -f).
type orderedValue struct {
	apply func(string) error
}

func (f *orderedValue) String() string     { return "" }
func (f *orderedValue) Type() string       { return "string" }
func (f *orderedValue) Set(v string) error { return f.apply(v) }

// newSSCmd builds `sstrace ss`. Flags that select tables, families and
// states call the Selection as cobra parses them, so they apply in
// command-line order as in ss.
func newSSCmd() *cobra.Command {
	o := &ssquery.Options{}
	cmd := &cobra.Command{
		Use:   "ss [options] [state STATE | exclude STATE]... [FILTER]",
		Short: "socket statistics, as iproute2 ss prints them, answered from sock_diag",
		Long: `ss lists sockets exactly as iproute2's ss does (same options, filter
language, columns and formats), answering from sock_diag with the state set
and the filter pushed down to the kernel. --json prints one JSON object per
socket per line instead.

sstrace dumps TCP, UDP, RAW and UNIX sockets; asking for another table
(-0, -M, -S, -d, --vsock, --tipc, --xdp, -A packet, ...) is an error.`,
		Args:                  cobra.ArbitraryArgs,
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
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
			return ssquery.Run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), *o, args, src)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return fmt.Errorf("ss: %w (see 'sstrace ss --help')", err)
	})
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.BoolVarP(&o.Numeric, "numeric", "n", false, "don't resolve service names")
	fl.BoolVarP(&o.Resolve, "resolve", "r", false, "resolve host names (from /etc/hosts only)")
	ordered := func(name, short, usage string, apply func() error) {
		f := fl.VarPF(&orderedFlag{apply: apply}, name, short, usage)
		f.NoOptDefVal = "true"
	}
	sel := &o.Selection
	ordered("all", "a", "display all sockets", func() error { sel.All(); return nil })
	ordered("listening", "l", "display listening sockets", func() error { sel.Listening(); return nil })
	fl.BoolVarP(&o.Timers, "options", "o", false, "show timer information")
	fl.BoolVarP(&o.Extended, "extended", "e", false, "show detailed socket information")
	fl.BoolVarP(&o.Memory, "memory", "m", false, "show socket memory usage")
	fl.BoolVarP(&o.Processes, "processes", "p", false, "show process using socket")
	fl.BoolVarP(&o.Info, "info", "i", false, "show internal TCP information")
	fl.BoolVarP(&o.Summary, "summary", "s", false, "show socket usage summary")
	fl.StringVarP(&o.NetNS, "net", "N", "", "switch to the specified network namespace name")
	ordered("ipv4", "4", "display only IP version 4 sockets", func() error { sel.Family(unix.AF_INET); return nil })
	ordered("ipv6", "6", "display only IP version 6 sockets", func() error { sel.Family(unix.AF_INET6); return nil })
	ordered("tcp", "t", "display only TCP sockets", func() error { sel.Table(ssquery.TCP); return nil })
	ordered("udp", "u", "display only UDP sockets", func() error { sel.Table(ssquery.UDP); return nil })
	ordered("raw", "w", "display only RAW sockets", func() error { sel.Table(ssquery.RAW); return nil })
	ordered("unix", "x", "display only Unix domain sockets", func() error { sel.Family(unix.AF_UNIX); return nil })
	// Tables sstrace cannot dump: the flags exist so that asking for one
	// says so (the Selection records it) instead of being an unknown flag.
	unsupported := "sockets (not supported by sstrace)"
	ordered("packet", "0", "display only packet "+unsupported, func() error { sel.Family(unix.AF_PACKET); return nil })
	ordered("mptcp", "M", "display only mptcp "+unsupported, func() error { sel.Table(ssquery.MPTCP); return nil })
	ordered("sctp", "S", "display only sctp "+unsupported, func() error { sel.Table(ssquery.SCTP); return nil })
	ordered("dccp", "d", "display only dccp "+unsupported, func() error { sel.Table(ssquery.DCCP); return nil })
	ordered("vsock", "", "display only vsock "+unsupported, func() error { sel.Family(unix.AF_VSOCK); return nil })
	ordered("tipc", "", "display only tipc "+unsupported, func() error { sel.Family(unix.AF_TIPC); return nil })
	ordered("xdp", "", "display only xdp "+unsupported, func() error { sel.Family(unix.AF_XDP); return nil })
	fl.VarP(&orderedValue{apply: sel.FamilyName}, "family", "f", "display sockets of type FAMILY: inet|inet6|unix")
	fl.VarP(&orderedValue{apply: sel.Query}, "query", "A", "QUERY := {all|inet|tcp|udp|raw|unix|unix_dgram|unix_stream|unix_seqpacket}[,QUERY]")
	fl.Var(&orderedValue{apply: sel.Query}, "socket", "same as --query")
	fl.StringVarP(&o.FilterFile, "filter", "F", "", "read filter information from FILE")
	fl.BoolVarP(&o.NoHeader, "no-header", "H", false, "suppress header line")
	fl.BoolVarP(&o.OneLine, "oneline", "O", false, "socket's data printed on a single line")
	fl.BoolVar(&o.JSON, "json", false, "one JSON object per socket per line (keys: see pkg/ssfmt)")
	return cmd
}
