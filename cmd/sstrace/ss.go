package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/filter"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
	"github.com/sstrace/sstrace/pkg/ssfmt"
)

// ssOptions are the display switches and inputs of `sstrace ss`.
type ssOptions struct {
	sel *selection

	numeric, resolve, processes, timers, extended bool
	memory, info, summary, noHeader, oneLine      bool
	json                                          bool
	netns, filterFile                             string
}

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

func newSSCmd() *cobra.Command {
	o := &ssOptions{sel: newSelection()}
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
			return runSS(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, args)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return fmt.Errorf("ss: %w (see 'sstrace ss --help')", err)
	})
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.BoolVarP(&o.numeric, "numeric", "n", false, "don't resolve service names")
	fl.BoolVarP(&o.resolve, "resolve", "r", false, "resolve host names (from /etc/hosts only)")
	ordered := func(name, short, usage string, apply func() error) {
		f := fl.VarPF(&orderedFlag{apply: apply}, name, short, usage)
		f.NoOptDefVal = "true"
	}
	sel := o.sel
	ordered("all", "a", "display all sockets", func() error { sel.stateFilter = ssAllStates; return nil })
	ordered("listening", "l", "display listening sockets", func() error {
		sel.stateFilter = 1<<sock.Listen | 1<<sock.Close
		return nil
	})
	fl.BoolVarP(&o.timers, "options", "o", false, "show timer information")
	fl.BoolVarP(&o.extended, "extended", "e", false, "show detailed socket information")
	fl.BoolVarP(&o.memory, "memory", "m", false, "show socket memory usage")
	fl.BoolVarP(&o.processes, "processes", "p", false, "show process using socket")
	fl.BoolVarP(&o.info, "info", "i", false, "show internal TCP information")
	fl.BoolVarP(&o.summary, "summary", "s", false, "show socket usage summary")
	fl.StringVarP(&o.netns, "net", "N", "", "switch to the specified network namespace name")
	ordered("ipv4", "4", "display only IP version 4 sockets", func() error { sel.setAF(afInet); return nil })
	ordered("ipv6", "6", "display only IP version 6 sockets", func() error { sel.setAF(afInet6); return nil })
	ordered("tcp", "t", "display only TCP sockets", func() error { sel.setDB(dbTCP); return nil })
	ordered("udp", "u", "display only UDP sockets", func() error { sel.setDB(dbUDP); return nil })
	ordered("raw", "w", "display only RAW sockets", func() error { sel.setDB(dbRAW); return nil })
	ordered("unix", "x", "display only Unix domain sockets", func() error { sel.setAF(afUnix); return nil })
	unsupported := func(name, short, table string, apply func()) {
		ordered(name, short, "display only "+table+" sockets (not supported by sstrace)", func() error {
			apply()
			sel.ask(table)
			return nil
		})
	}
	unsupported("packet", "0", "packet", func() { sel.setAF(afPacket) })
	unsupported("mptcp", "M", "mptcp", func() { sel.setDB(dbMPTCP) })
	unsupported("sctp", "S", "sctp", func() { sel.setDB(dbSCTP) })
	unsupported("dccp", "d", "dccp", func() { sel.setDB(dbDCCP) })
	unsupported("vsock", "", "vsock", func() { sel.setAF(afVsock) })
	unsupported("tipc", "", "tipc", func() { sel.setAF(afTIPC) })
	unsupported("xdp", "", "xdp", func() { sel.setAF(afXDP) })
	fl.VarP(&orderedValue{apply: sel.setFamily}, "family", "f", "display sockets of type FAMILY: inet|inet6|unix")
	fl.VarP(&orderedValue{apply: sel.setQuery}, "query", "A", "QUERY := {all|inet|tcp|udp|raw|unix|unix_dgram|unix_stream|unix_seqpacket}[,QUERY]")
	fl.Var(&orderedValue{apply: sel.setQuery}, "socket", "same as --query")
	fl.StringVarP(&o.filterFile, "filter", "F", "", "read filter information from FILE")
	fl.BoolVarP(&o.noHeader, "no-header", "H", false, "suppress header line")
	fl.BoolVarP(&o.oneLine, "oneline", "O", false, "socket's data printed on a single line")
	fl.BoolVar(&o.json, "json", false, "one JSON object per socket per line (keys: see pkg/ssfmt)")
	return cmd
}

// runSS is `sstrace ss`: compute what ss would query, dump it from the
// kernel with the state set and filter pushed down, match in userspace too,
// and render.
func runSS(ctx context.Context, stdout, stderr io.Writer, o *ssOptions, args []string) error {
	sel := o.sel
	var ns netns.Namespace
	if o.netns != "" {
		ns = netns.ByName(o.netns)
		if _, err := os.Stat(ns.Path); err != nil {
			return fmt.Errorf("ss: cannot open network namespace %q: %w", o.netns, unwrapPathErr(err))
		}
	}
	if len(sel.unsupported) > 0 {
		return fmt.Errorf("ss: sstrace does not dump %s sockets (it dumps tcp, udp, raw and unix)", sel.unsupported[0])
	}
	env := newNetnsEnv(o.netns)

	// ss prints the summary before it even parses the filter, and stops
	// there when nothing else was asked for.
	if o.summary {
		st, err := env.sockstat()
		if err != nil {
			return fmt.Errorf("ss: %w", err)
		}
		if err := ssfmt.Summary(stdout, st); err != nil {
			return err
		}
		if sel.doDefault && len(args) == 0 {
			return nil
		}
	}

	sel.finish()
	q, err := parseQuery(args, o.filterFile, sel, env)
	if err != nil {
		return fmt.Errorf("ss: %w", err)
	}
	states := q.States
	if sel.dbs == 0 {
		fmt.Fprintln(stderr, "ss: no socket tables to show with such filter.")
		return nil
	}
	if sel.families == 0 {
		fmt.Fprintln(stderr, "ss: no families to show with such filter.")
		return nil
	}
	if states == 0 {
		fmt.Fprintln(stderr, "ss: no socket states to show with such filter.")
		return nil
	}

	var attr *procAttribution
	if o.processes {
		scanCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		attr = startProcAttribution(scanCtx)
	}

	var sink rowSink
	names := env.names(o.extended || o.json)
	var ports ssfmt.PortRange
	if !o.numeric {
		ports = env.portRange() // only service names depend on it
	}
	if o.json {
		sink = jsonSink{ssfmt.NewJSONWriter(stdout, names)}
	} else {
		sink = ssfmt.NewTable(stdout, ssfmt.Options{
			ShowNetid: sel.showNetid(),
			ShowState: showState(states),
			NoHeader:  o.noHeader,
			Numeric:   o.numeric,
			Resolve:   o.resolve,
			Processes: o.processes,
			Timers:    o.timers || o.extended,
			Extended:  o.extended,
			Memory:    o.memory,
			Info:      o.info,
			OneLine:   o.oneLine,
			Width:     terminalWidth(stdout),
			Ephemeral: ports,
			Names:     names,
		})
	}

	emit := func(s *sock.Socket) error {
		if !q.Match(s) {
			return nil
		}
		if attr != nil {
			return attr.add(s, sink)
		}
		sink.Add(s)
		return nil
	}
	dumpErr := dumpAll(ctx, ns, sel, states, q, o, emit)
	if attr != nil {
		// A failed scan (which also stops the dump) prints nothing, not
		// even the header, as when ss -p scans first.
		if err := attr.finish(sink); err != nil {
			return fmt.Errorf("ss: %w", err)
		}
	}
	closeErr := sink.Close()
	if dumpErr != nil {
		return fmt.Errorf("ss: %w", dumpErr)
	}
	return closeErr
}

// dumpAll queries the tables in ss's order: unix, raw, udp, tcp, each inet
// one IPv4 first.
func dumpAll(ctx context.Context, ns netns.Namespace, sel *selection, states sock.StateSet,
	q *filter.Query, o *ssOptions, emit func(*sock.Socket) error) error {
	kernelStates := states &^ 1
	if kernelStates.Has(sock.SynRecv) {
		// Request sockets are NEW_SYN_RECV in the kernel; ss gets them
		// when it asks for SYN-RECV.
		kernelStates = kernelStates.With(sock.NewSynRecv)
	}
	if sel.dbs&unixDBs != 0 && sel.hasFamily(afUnix) {
		err := sockdiag.Dump(ctx, ns, sockdiag.Request{
			Protos: []sock.Proto{sock.ProtoUNIX},
			States: kernelStates,
			Mem:    o.memory,
		}, func(s *sock.Socket) error {
			if !unixTypeSelected(sel, s) {
				return nil
			}
			return emit(s)
		})
		if err != nil {
			return err
		}
	}
	for _, p := range []struct {
		db    int
		proto sock.Proto
	}{{dbRAW, sock.ProtoRAW}, {dbUDP, sock.ProtoUDP}, {dbTCP, sock.ProtoTCP}} {
		if sel.dbs&(1<<p.db) == 0 {
			continue
		}
		fams := sel.inetFamilies()
		if len(fams) == 0 {
			continue
		}
		err := dumpInet(ctx, ns, sockdiag.Request{
			Protos:   []sock.Proto{p.proto},
			States:   kernelStates,
			Bytecode: q.Bytecode,
			Info:     o.info && p.proto == sock.ProtoTCP,
			Mem:      o.memory,
		}, fams, func(s *sock.Socket) error {
			if !sel.hasFamily(int(s.Family)) {
				return nil
			}
			return emit(s)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// dumpInet dumps one inet protocol for fams, in that order. The kernel
// walks all of the protocol's sockets (every namespace's: the hash tables
// are shared) once per family asked, so for two families the second walk
// runs at the same time as the first, on a netlink socket of its own: its
// rows are kept, copied (the dump reuses its row), and emitted once the
// first family is done. The output is the same as dumping one family after
// the other; with two CPUs the walks overlap.
func dumpInet(ctx context.Context, ns netns.Namespace, req sockdiag.Request, fams []uint8,
	emit func(*sock.Socket) error) error {
	if len(fams) < 2 {
		req.Families = fams
		return sockdiag.Dump(ctx, ns, req, emit)
	}
	laterCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		rows []*sock.Socket
		err  error
	}
	later := make(chan result, 1)
	go func() {
		r := req
		r.Families = fams[1:]
		var res result
		res.err = sockdiag.Dump(laterCtx, ns, r, func(s *sock.Socket) error {
			res.rows = append(res.rows, sockdiag.Clone(s))
			return nil
		})
		later <- res
	}()
	req.Families = fams[:1]
	if err := sockdiag.Dump(ctx, ns, req, emit); err != nil {
		cancel()
		<-later
		return err
	}
	res := <-later
	if res.err != nil {
		return res.err
	}
	for _, s := range res.rows {
		if err := emit(s); err != nil {
			return err
		}
	}
	return nil
}

// unixTypeSelected is ss's unix_type_skip, inverted.
func unixTypeSelected(sel *selection, s *sock.Socket) bool {
	typ := uint8(unix.SOCK_DGRAM)
	if s.Unix != nil {
		typ = s.Unix.Type
	}
	switch typ {
	case unix.SOCK_STREAM:
		return sel.dbs&(1<<dbUnixStream) != 0
	case unix.SOCK_DGRAM:
		return sel.dbs&(1<<dbUnixDgram) != 0
	case unix.SOCK_SEQPACKET:
		return sel.dbs&(1<<dbUnixSeq) != 0
	}
	return true
}

type jsonSink struct{ *ssfmt.JSONWriter }

func (j jsonSink) Add(s *sock.Socket) { _ = j.JSONWriter.Add(s) }

// terminalWidth is the width ss would use: the terminal's when stdout is
// one, else 0 (ss's compact layout).
func terminalWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 {
		return 0
	}
	return int(ws.Col)
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
