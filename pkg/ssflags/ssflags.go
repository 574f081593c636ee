// Package ssflags is the command line of `ss`: its options, defined once
// for two parsers. `sstrace ss` adds them to its cobra command; the daemon
// parses the same options from the arguments a client forwards (an
// `sstrace ss --socket PATH ...` query), so that both read an option the
// same way and a new option cannot reach one and not the other.
//
// Options that select tables, families and states apply in command-line
// order, as in ss (`-t -a` and `-a -t` differ for some combinations), so
// they call the ssquery.Selection as they are parsed. Every option set is
// also recorded, in order and in `--name=value` form: Args returns that
// record, the form a client forwards to the daemon.
//
//	s := ssflags.New(nil)
//	if err := s.Flags.Parse([]string{"-tan", "dport", "=", ":22"}); err != nil { ... }
//	opts := s.Options // -t -a -n
//	words := s.Flags.Args()
package ssflags

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/ssquery"
)

// Set is the ss options of one command line: the flag set that parses
// them and the Options they build. It must not be copied once made: the
// flags point into it.
type Set struct {
	// Options is what the parsed flags chose.
	Options ssquery.Options
	// Flags parses the options; add it to a cobra command with
	// AddFlagSet, or call Parse.
	Flags *pflag.FlagSet
	// args records every option set, in order (see Args).
	args []string
}

// New defines ss's options on a new flag set. daemonSocket, when not nil,
// receives the value of a --socket option that names a path (it contains a
// "/"): `sstrace ss --socket /run/sstrace/sstrace.sock` asks the daemon,
// while `--socket tcp` keeps ss's meaning (an alias of -A). Socket query
// names never contain a slash, so the two cannot be confused. With nil,
// --socket is only ss's.
func New(daemonSocket *string) *Set {
	s := &Set{Flags: pflag.NewFlagSet("ss", pflag.ContinueOnError)}
	s.Flags.SetOutput(io.Discard)
	s.define(daemonSocket)
	return s
}

// Args returns the options parsed so far, in command-line order, in
// `--name=value` form, without the daemon socket: parsing them again with
// New gives the same Options.
func (s *Set) Args() []string { return append([]string(nil), s.args...) }

// Parse parses a whole forwarded ss command line (options, then the state
// words and filter) and returns the Options and the remaining words. It is
// the daemon's side of Args.
func Parse(args []string) (ssquery.Options, []string, error) {
	s := New(nil)
	if err := s.Flags.Parse(args); err != nil {
		return ssquery.Options{}, nil, fmt.Errorf("ss: %w", err)
	}
	if err := s.CheckEmptyNetNS(); err != nil {
		return ssquery.Options{}, nil, err
	}
	return s.Options, s.Flags.Args(), nil
}

// CheckEmptyNetNS fails for an empty -N (`-N ""`), as ss does (it opens /run/netns/ and
// fails): Options cannot tell an empty name from no -N, which means the
// caller's own namespace, so the flag set checks it once parsed.
func (s *Set) CheckEmptyNetNS() error {
	if s.Options.NetNS == "" && s.Flags.Changed("net") {
		return ssquery.CheckNetNS("")
	}
	return nil
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

// recorded wraps a flag's value so that setting it is recorded in args.
type recorded struct {
	pflag.Value
	name string
	args *[]string
	// skip says not to record a value (the daemon socket).
	skip func(string) bool
}

func (r *recorded) Set(v string) error {
	if err := r.Value.Set(v); err != nil {
		return err
	}
	if r.skip == nil || !r.skip(v) {
		*r.args = append(*r.args, "--"+r.name+"="+v)
	}
	return nil
}

// IsBoolFlag keeps a wrapped boolean flag boolean for parsers that ask.
func (r *recorded) IsBoolFlag() bool { return r.Value.Type() == "bool" }

// define adds ss's options, in ss's --help order.
func (s *Set) define(daemonSocket *string) {
	o := &s.Options
	fl := s.Flags
	fl.SortFlags = false
	ordered := func(name, short, usage string, apply func() error) {
		f := fl.VarPF(&orderedFlag{apply: apply}, name, short, usage)
		f.NoOptDefVal = "true"
	}
	fl.BoolVarP(&o.Version, "version", "V", false, "output version information")
	// ss takes -v too, undocumented.
	fl.BoolVarP(&o.Version, "version-v", "v", false, "output version information")
	_ = fl.MarkHidden("version-v")
	fl.BoolVarP(&o.Numeric, "numeric", "n", false, "don't resolve service names")
	fl.BoolVarP(&o.Resolve, "resolve", "r", false, "resolve host names (hosts file, then the system resolver)")
	sel := &o.Selection
	ordered("all", "a", "display all sockets", func() error { sel.All(); return nil })
	ordered("listening", "l", "display listening sockets", func() error { sel.Listening(); return nil })
	fl.BoolVarP(&o.Timers, "options", "o", false, "show timer information")
	fl.BoolVarP(&o.Extended, "extended", "e", false, "show detailed socket information")
	fl.BoolVarP(&o.Memory, "memory", "m", false, "show socket memory usage")
	fl.BoolVarP(&o.Processes, "processes", "p", false, "show process using socket")
	fl.BoolVarP(&o.Threads, "threads", "T", false, "show thread using socket")
	fl.BoolVarP(&o.Info, "info", "i", false, "show internal TCP information")
	fl.BoolVarP(&o.Summary, "summary", "s", false, "show socket usage summary")
	fl.BoolVar(&o.TOS, "tos", false, "show tos and priority information")
	fl.BoolVar(&o.Cgroup, "cgroup", false, "show cgroup information")
	fl.BoolVarP(&o.BPF, "bpf", "b", false, "show bpf filter socket information (packet sockets; else as -o)")
	fl.BoolVarP(&o.Events, "events", "E", false, "continually display sockets as they are destroyed")
	fl.BoolVar(&o.Transitions, "transitions", false, "with -E: display every TCP socket as it changes state, from sstrace's tracer, matched against states and filter (sstrace; needs BPF)")
	ordered("context", "Z", "display task SELinux security contexts", func() error { o.Context = max(o.Context, 1); return nil })
	ordered("contexts", "z", "display task and socket SELinux security contexts", func() error { o.Context = 2; return nil })
	fl.StringVarP(&o.NetNS, "net", "N", "", "switch to the specified network namespace name")
	ordered("ipv4", "4", "display only IP version 4 sockets", func() error { sel.Family(unix.AF_INET); return nil })
	ordered("ipv6", "6", "display only IP version 6 sockets", func() error { sel.Family(unix.AF_INET6); return nil })
	ordered("tcp", "t", "display only TCP sockets", func() error { sel.Table(ssquery.TCP); return nil })
	ordered("udp", "u", "display only UDP sockets", func() error { sel.Table(ssquery.UDP); return nil })
	ordered("raw", "w", "display only RAW sockets", func() error { sel.Table(ssquery.RAW); return nil })
	ordered("unix", "x", "display only Unix domain sockets", func() error { sel.Family(unix.AF_UNIX); return nil })
	ordered("packet", "0", "display PACKET sockets", func() error { sel.Family(unix.AF_PACKET); return nil })
	ordered("mptcp", "M", "display only mptcp sockets", func() error { sel.Table(ssquery.MPTCP); return nil })
	// The tables below have no sock_diag module on many kernels; where
	// one is missing the answer is ss's, an empty table (docs/SS.md).
	noModule := " (rows not decoded: an empty table where the kernel has no sock_diag module, as ss)"
	ordered("sctp", "S", "display only SCTP sockets"+noModule, func() error { sel.Table(ssquery.SCTP); return nil })
	ordered("dccp", "d", "display only DCCP sockets"+noModule, func() error { sel.Table(ssquery.DCCP); return nil })
	ordered("vsock", "", "display only vsock sockets"+noModule, func() error { sel.Family(unix.AF_VSOCK); return nil })
	ordered("tipc", "", "display only TIPC sockets"+noModule, func() error { sel.Family(unix.AF_TIPC); return nil })
	ordered("xdp", "", "display only XDP sockets"+noModule, func() error { sel.Family(unix.AF_XDP); return nil })
	// ss 6.1 has no --netlink: it is sstrace's name for -f netlink.
	ordered("netlink", "", "display only netlink sockets (sstrace's; ss: -f netlink)", func() error { sel.Family(unix.AF_NETLINK); return nil })
	fl.VarP(&orderedValue{apply: sel.FamilyName}, "family", "f", "display sockets of type FAMILY: inet|inet6|link|unix|netlink|vsock|tipc|xdp")
	fl.VarP(&orderedValue{apply: sel.Query}, "query", "A", "QUERY := {all|inet|tcp|mptcp|udp|raw|unix|unix_dgram|unix_stream|unix_seqpacket|packet|packet_raw|packet_dgram|netlink|dccp|sctp|vsock_stream|vsock_dgram|tipc|xdp}[,QUERY]")
	isPath := func(v string) bool { return daemonSocket != nil && strings.Contains(v, "/") }
	socketUsage := "same as --query"
	if daemonSocket != nil {
		socketUsage = "same as --query; a PATH (with a /) instead asks the sstrace daemon listening there"
	}
	fl.Var(&orderedValue{apply: func(v string) error {
		if isPath(v) {
			*daemonSocket = v
			return nil
		}
		return sel.Query(v)
	}}, "socket", socketUsage)
	fl.StringVarP(&o.FilterFile, "filter", "F", "", "read filter information from FILE")
	fl.BoolVarP(&o.NoHeader, "no-header", "H", false, "suppress header line")
	fl.BoolVarP(&o.OneLine, "oneline", "O", false, "socket's data printed on a single line")
	fl.BoolVar(&o.InetSockopt, "inet-sockopt", false, "show various inet socket options")
	fl.StringVarP(&o.Diag, "diag", "D", "", "dump raw information about TCP sockets to FILE")
	fl.BoolVar(&o.JSON, "json", false, "one JSON object per socket per line (keys: see docs/JSON.md)")
	fl.BoolVarP(&o.Kill, "kill", "K", false, "forcibly close sockets, display what was closed (TCP, UDP, RAW; needs CAP_NET_ADMIN)")

	fl.VisitAll(func(f *pflag.Flag) {
		r := &recorded{Value: f.Value, name: f.Name, args: &s.args}
		if f.Name == "socket" {
			r.skip = isPath
		}
		f.Value = r
	})
}
