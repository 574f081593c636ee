// Package ssquery answers one `ss` query over any source of socket rows:
// it turns ss's options into a selection of tables, families and states,
// parses the state words and filter expression, asks a Source for the rows,
// matches the filter on each, attributes owners for -p and renders the result
// exactly as iproute2's ss prints it (pkg/ssfmt), or as JSON lines.
//
// A one-shot `sstrace ss` and a query to the daemon differ only in their
// Source and, for -p, their Owners:
//
//	var o ssquery.Options
//	o.Selection.Table(ssquery.TCP) // -t, in command-line order
//	o.Selection.All()              // -a
//	o.Numeric = true               // -n
//	err := ssquery.Run(ctx, os.Stdout, os.Stderr, o, []string{"dport", "=", ":22"},
//		ssquery.LiveSource{})
//
// Why one function, Run, and not a Query type with Parse and Run: ss parses
// its filter only after it has printed the -s summary, and it reads the
// filter's names (interfaces, the port range) in the namespace it lists;
// splitting parse from run would either change that order or make the
// caller carry the namespace environment between the two. Options is a
// plain value (Run copies it and never changes the caller's), so a daemon
// can build one per request.
//
// What Run reads besides the rows (the local port range, interface names,
// /proc/net/sockstat for -s, /etc/netns/NAME for names) it reads from the
// namespace Options.NetNS names, on first use only: `ss -tan` reads none of
// it.
package ssquery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/filter"
	"github.com/sstrace/sstrace/pkg/procs"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
	"github.com/sstrace/sstrace/pkg/ssfmt"
)

// Options are the switches and inputs of one ss query, named after ss's
// options.
type Options struct {
	// Selection is what -t, -u, -w, -x, -4, -6, -f, -A, -a and -l chose,
	// applied in command-line order. The zero value is ss's default.
	Selection Selection

	Numeric   bool // -n: no service names
	Resolve   bool // -r: host names (from /etc/hosts only)
	Processes bool // -p: owning processes, from Owners
	Timers    bool // -o: timer information
	Extended  bool // -e: detailed socket information
	Memory    bool // -m: socket memory
	Info      bool // -i: TCP information
	Summary   bool // -s: the sockstat summary first
	NoHeader  bool // -H: no header line
	OneLine   bool // -O: one line per socket
	JSON      bool // --json: one JSON object per socket per line
	Kill      bool // -K: close the matching TCP, UDP and RAW sockets (SOCK_DESTROY); print those closed

	TOS         bool // --tos: tos, tclass and class_id of inet sockets
	Cgroup      bool // --cgroup: the cgroup path of inet sockets
	InetSockopt bool // --inet-sockopt: the inet socket options the kernel reports
	BPF         bool // -b: BPF filters (of packet sockets); implies -o, as in ss
	Threads     bool // -T: -p's owners, one entry per thread holding the socket
	// Context is -Z (1) or -z (2): SELinux contexts. Where SELinux is
	// absent, Run fails as ss does ("SELinux is not enabled."); where it
	// is present, sstrace does not print contexts and says so.
	Context int
	// Events is -E: print sockets as they are destroyed, until ctx ends.
	Events bool
	// Transitions (sstrace's --transitions, with -E) prints every TCP
	// socket as it changes state instead, from TransitionSource.
	Transitions bool
	// TransitionSource is what -E --transitions reads: the caller's
	// tracer, set by the caller (nil: --transitions is refused).
	TransitionSource TransitionFollower
	// Version is -V: the caller prints its version line instead of a query.
	Version bool
	// Diag is -D FILE: write the raw sock_diag replies of the TCP dump to
	// FILE ("-" or any name starting with "-": stdout) instead of rows.
	Diag string

	// NetNS is -N NAME: the `ip netns` name of the namespace listed,
	// whose environment (port range, interfaces, sockstat, /etc/netns/NAME)
	// Run reads; "" is the caller's own. The Source must serve the same
	// namespace's rows.
	NetNS string
	// FilterFile is -F FILE: filter words read after the arguments'. A
	// name starting with "-" reads Stdin, as ss does.
	FilterFile string
	// Stdin is what -F - reads; nil means os.Stdin.
	Stdin io.Reader
	// Owners answers -p; nil means ProcScan{}.
	Owners Owners
	// Width is the terminal width to lay the columns out for; 0 means
	// stdout's own when it is a terminal (else ss's compact layout). The
	// daemon sets its client's.
	Width int
}

// Run is one ss query: it prints the -s summary if asked (and stops there
// when nothing else was), parses the state words and filter in args, asks
// src for the selected tables in ss's order, keeps the rows the filter
// matches, adds owners under -p and renders them to stdout. Notes ss prints
// instead of an empty table ("no socket tables to show with such filter.")
// go to stderr. Errors are one line starting with "ss: ".
func Run(ctx context.Context, stdout, stderr io.Writer, opts Options, args []string, src Source) error {
	sel := opts.Selection // a copy: finish must not change the caller's
	// ss checks -Z while it reads its options, before it enters -N's
	// namespace.
	if err := checkSELinux(opts.Context); err != nil {
		return err
	}
	if opts.Transitions && !opts.Events {
		return &UsageError{Err: errors.New("ss: --transitions goes with -E (sstrace ss -E --transitions ...)")}
	}
	if opts.NetNS != "" {
		if err := CheckNetNS(opts.NetNS); err != nil {
			return err
		}
	}
	env := newNetnsEnv(opts.NetNS)

	// ss prints the summary before it even parses the filter, and stops
	// there when nothing else was asked for.
	if opts.Summary {
		st, err := env.sockstat()
		if err != nil {
			return fmt.Errorf("ss: %w", err)
		}
		summary := ssfmt.Summary
		if opts.JSON {
			summary = ssfmt.SummaryJSON
		}
		if err := summary(stdout, st); err != nil {
			return err
		}
		if !sel.chosen && len(args) == 0 {
			return nil
		}
	}

	sel.finish()
	if opts.Diag != "" {
		// ss dumps for -D before it parses the filter (the state words
		// still count), and prints nothing else.
		q, err := parseStates(args, &sel)
		if err != nil {
			return &UsageError{Err: fmt.Errorf("ss: %w", err)}
		}
		if ok := noteEmpty(stderr, &sel, q); !ok {
			return nil
		}
		sel.states = q
		return diagDump(ctx, stdout, stderr, &opts, &sel, src)
	}
	q, err := parseQuery(args, opts.FilterFile, opts.Stdin, &sel, env)
	if err != nil {
		// A value ss cannot read (a host, port, device, mark or cgroup)
		// ends it with status 1; a filter that does not parse, an unknown
		// state or a -F file that does not open with its usage (255).
		var fe *filter.Error
		if errors.As(err, &fe) && strings.HasPrefix(fe.What, "bad ") {
			return fmt.Errorf("ss: %w", err)
		}
		return &UsageError{Err: fmt.Errorf("ss: %w", err)}
	}
	states := q.States
	if !noteEmpty(stderr, &sel, states) {
		return nil
	}

	var attr *attribution
	if opts.Processes || opts.Threads {
		owners := opts.Owners
		if owners == nil {
			owners = ProcScan{Options: procs.Options{Threads: opts.Threads}}
		}
		scanCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		attr = startAttribution(scanCtx, owners)
	}

	var sink rowSink
	names := env.names(opts.Extended || opts.JSON || opts.Cgroup, opts.Resolve)
	var ports ssfmt.PortRange
	if !opts.Numeric {
		ports = env.portRange() // only service names depend on it
	}
	width := opts.Width
	if width == 0 {
		width = TerminalWidth(stdout)
	}
	var table *ssfmt.Table
	if opts.JSON {
		sink = jsonSink{ssfmt.NewJSONWriter(stdout, names)}
	} else {
		table = ssfmt.NewTable(stdout, ssfmt.Options{
			ShowNetid:   sel.showNetid(),
			ShowState:   showState(states),
			NoHeader:    opts.NoHeader,
			Numeric:     opts.Numeric,
			Resolve:     opts.Resolve,
			Processes:   opts.Processes || opts.Threads,
			Timers:      opts.Timers || opts.Extended || opts.BPF,
			Extended:    opts.Extended,
			Memory:      opts.Memory,
			Info:        opts.Info,
			OneLine:     opts.OneLine,
			TOS:         opts.TOS,
			Cgroup:      opts.Cgroup,
			InetSockopt: opts.InetSockopt,
			Threads:     opts.Threads,
			Width:       width,
			Ephemeral:   ports,
			Names:       names,
		})
		sink = table
	}
	if opts.Events {
		if table == nil {
			return errors.New("ss: -E prints ss's rows: --json does not apply")
		}
		if opts.Transitions {
			return followTransitions(ctx, opts.TransitionSource, &sel, q, opts.Processes, table)
		}
		// ss matches a destroyed socket against the expression only, not
		// the state set: every one is in CLOSE by then.
		anyState := *q
		anyState.States = ^sock.StateSet(0)
		return followDestroyed(ctx, src, &sel, anyState.Match, table)
	}
	return runDump(ctx, src, stderr, &sel, states, q, &opts, sink, attr)
}

// noteEmpty prints ss's note when the selection leaves nothing to show and
// reports whether anything is left.
func noteEmpty(stderr io.Writer, sel *Selection, states sock.StateSet) bool {
	switch {
	case sel.tables == 0:
		fmt.Fprintln(stderr, "ss: no socket tables to show with such filter.")
	case sel.families == 0:
		fmt.Fprintln(stderr, "ss: no families to show with such filter.")
	case states == 0:
		fmt.Fprintln(stderr, "ss: no socket states to show with such filter.")
	default:
		return true
	}
	return false
}

// runDump is the dump proper: rows from src, matched, killed under -K,
// attributed under -p, into sink.
func runDump(ctx context.Context, src Source, stderr io.Writer, sel *Selection, states sock.StateSet, q *filter.Query,
	opts *Options, sink rowSink, attr *attribution) error {
	kill, closeKill, err := killer(ctx, src, opts.Kill)
	if err != nil {
		return fmt.Errorf("ss: %w", err)
	}
	defer closeKill()
	emit := func(s *sock.Socket) error {
		if !q.Match(s) {
			return nil
		}
		if kill != nil {
			if closed, err := kill(s); err != nil || !closed {
				return err
			}
		}
		if attr != nil {
			return attr.add(s, sink)
		}
		sink.Add(s)
		return nil
	}
	dumpErr := dump(ctx, src, stderr, sel, states, q, opts, emit)
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

// dump asks src for the tables in ss's order: netlink, packet, unix, raw,
// udp, tcp (each inet one IPv4 first, unless -6 was preferred), then the
// tables sstrace does not decode (dump.go), then mptcp, and passes the rows
// of the selected UNIX types and families to emit.
func dump(ctx context.Context, src Source, stderr io.Writer, sel *Selection, states sock.StateSet,
	q *filter.Query, o *Options, emit func(*sock.Socket) error) error {
	kernelStates := kernelStates(states)
	if err := dumpLinkTables(ctx, src, sel, states, o, emit); err != nil {
		return err
	}
	if sel.tables&unixTables != 0 && sel.hasFamily(afUnix) {
		err := src.Dump(ctx, Request{
			Protos: []sock.Proto{sock.ProtoUNIX},
			States: kernelStates,
			Mem:    o.Memory,
		}, func(s *sock.Socket) error {
			if !sel.unixTypeSelected(s) {
				return nil
			}
			return emit(s)
		})
		if err != nil {
			return err
		}
	}
	for _, p := range [...]struct {
		table Table
		proto sock.Proto
	}{{RAW, sock.ProtoRAW}, {UDP, sock.ProtoUDP}, {TCP, sock.ProtoTCP}, {MPTCP, sock.ProtoMPTCP}} {
		if p.table == MPTCP {
			// ss asks for the tables it has no rows of here, after
			// tcp and before mptcp.
			if err := dumpUndecoded(ctx, src, stderr, sel, kernelStates, q); err != nil {
				return err
			}
		}
		if !sel.hasTable(p.table) {
			continue
		}
		fams := sel.inetFamilies()
		if len(fams) == 0 {
			continue
		}
		err := src.Dump(ctx, Request{
			Protos:   []sock.Proto{p.proto},
			Families: fams,
			States:   kernelStates,
			Bytecode: q.Bytecode,
			Info:     o.Info && (p.proto == sock.ProtoTCP || p.proto == sock.ProtoMPTCP),
			Mem:      o.Memory,
			TOS:      o.TOS,
		}, func(s *sock.Socket) error {
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

// kernelStates is the state set to ask the kernel for ss's states: without
// ss's UNKNOWN bit, and with NEW_SYN_RECV when SYN-RECV is asked for
// (request sockets are NEW_SYN_RECV in the kernel; ss gets them when it
// asks for SYN-RECV).
func kernelStates(states sock.StateSet) sock.StateSet {
	k := states &^ 1
	if k.Has(sock.SynRecv) {
		k = k.With(sock.NewSynRecv)
	}
	return k
}

// jsonSink drops JSONWriter.Add's error: a write error comes back from
// Close, which flushes.
type jsonSink struct{ *ssfmt.JSONWriter }

func (j jsonSink) Add(s *sock.Socket) { _ = j.JSONWriter.Add(s) }

// TerminalWidth is the width ss would use for w: the terminal's when w is
// one, else 0 (ss's compact layout). The daemon's clients send it.
func TerminalWidth(w io.Writer) int {
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

// unwrapPathErr drops the path from an *os.PathError: the message names the
// namespace the user's way instead.
func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Killer is a Source whose sockets -K can close: a live one.
type Killer interface {
	// Destroyer returns what closes the Source's sockets.
	Destroyer() (*sockdiag.Destroyer, error)
}

// Destroyer closes sockets of the listed namespace.
func (l LiveSource) Destroyer() (*sockdiag.Destroyer, error) { return sockdiag.NewDestroyer(l.NS) }

// killer returns -K's step for each matching row, as ss takes it: a TCP,
// UDP or RAW socket is printed once the kernel has closed it; one it cannot
// close (UNIX, MPTCP, a kernel without the destroy handler), or that is
// gone already, is skipped. Without -K it returns nil.
func killer(ctx context.Context, src Source, on bool) (func(*sock.Socket) (bool, error), func(), error) {
	if !on {
		return nil, func() {}, nil
	}
	k, ok := src.(Killer)
	if !ok {
		return nil, nil, errors.New("-K closes live sockets: it does not apply here (a table snapshot, --at, or the daemon)")
	}
	d, err := k.Destroyer()
	if err != nil {
		return nil, nil, err
	}
	return func(s *sock.Socket) (bool, error) {
		switch err := d.Destroy(ctx, s); {
		case err == nil:
			return true, nil
		case errors.Is(err, sockdiag.ErrCannotDestroy):
			return false, nil
		case errors.Is(err, unix.EPERM):
			return false, errors.New("-K: SOCK_DESTROY: operation not permitted (closing sockets needs CAP_NET_ADMIN)")
		default:
			return false, fmt.Errorf("-K: %w", err)
		}
	}, d.Close, nil
}
