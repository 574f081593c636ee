// Package filter is the `ss` filter language: the state selection
// (`state S`, `exclude S`) and the filter expression (`src`, `dst`, `sport`,
// `dport`, `dev`, `fwmark`, `cgroup`, `autobound`, `!`, `and`, `or`, `( )`)
// of iproute2 6.1's ss, parsed into a tree, evaluated against sock.Socket
// rows, and compiled into the kernel's INET_DIAG_REQ_BYTECODE program so a
// sock_diag dump can be filtered in the kernel. The daemon's connections
// (ParseOptions.Connections, MatchConn) add what ss cannot see: the owner's
// cgroup by path and its container (`container ID`).
//
// Behaviour follows ss 6.1 (misc/ssfilter.y, misc/ss.c), quirks included,
// because a user's filter must select the same sockets in `sstrace ss` as in
// `ss`: `and` and `or` have equal precedence and group left to right; ss
// filters inet sockets twice, once in the kernel with its bytecode and once
// in userspace, and the two disagree in places (`src 0.0.0.0/0` keeps IPv6
// sockets in userspace but the kernel drops them), so Match applies both;
// an `inet:`/`inet6:`/`unix:` word restricts the whole listing to that
// family. Errors name the offending word and its 1-based position.
//
//	q, err := filter.Parse([]string{"state", "established", "dport", ">", ":1024"}, filter.ParseOptions{})
//	if err != nil { ... }         // filter: unexpected "foo" at word 3: expected ...
//	for _, s := range rows { if q.Match(&s) { ... } }
package filter

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/sstrace/sstrace/pkg/sock"
)

// Query is a parsed `[state S | exclude S]... [FILTER]` command tail.
type Query struct {
	// States is the state set to ask the kernel for (after defaults/-a/-l
	// are applied). SYN-RECV always comes with NEW_SYN_RECV, as the kernel
	// dumps request sockets for it.
	States sock.StateSet
	// Expr is the filter expression, nil when there is none.
	Expr Node
	// Family, when not 0, is the only address family ss lists: the last
	// `inet:`, `inet6:` or `unix:` word (or any host word while
	// ParseOptions.Family was set) restricts the whole listing to it.
	Family uint8

	// prog is the bytecode ss would send; progErr says why there is none.
	prog    []byte
	progErr string
}

// ParseOptions carries what the command line around the filter decides
// and the resolvers the filter needs. The zero value means: ss's default
// states, no family preference, and the real system's resolvers.
type ParseOptions struct {
	// DefaultStates is used when no state/exclude word is given, or when
	// the words select nothing (ss then falls back to its defaults). The
	// caller computes it from -a/-l: ss's default is ConnStates, -a is
	// sock.AllStates, -l is ListenStates. 0 means ConnStates.
	DefaultStates sock.StateSet
	// Family is ss's preferred family from the options before the filter:
	// the last of -4 (AF_INET), -6 (AF_INET6), -x (AF_UNIX), -f FAMILY.
	// ss parses every host word in that family (with -x, `src` takes a
	// socket name pattern) and restricts the listing to it. 0 for none.
	Family uint8
	// Connections parses a filter on the daemon's connections (history,
	// closewait; see MatchConn) rather than on ss's rows: `cgroup PATH`
	// is the owner's cgroup, named by its path relative to the cgroup v2
	// mount, which need not exist any more, and `container ID` (ss has
	// no such word) keeps the owners in the container whose id begins
	// with ID.
	Connections bool

	// Resolver hooks so tests are hermetic; nil = real system
	// (net.LookupHost, /etc/services, net.InterfaceByName — note dev names
	// must be resolved in the target netns, so the caller passes a resolver).
	LookupHost   func(name string) ([]netip.Addr, error)
	LookupPort   func(service string) (int, error)
	LookupIface  func(name string) (uint32, error)
	LookupCgroup func(path string) (uint64, error) // cgroup v2 path -> cgroup id (inode of the dir)
	// LocalPortRange returns the ephemeral port range `autobound` tests
	// (net.ipv4.ip_local_port_range of the target netns); nil reads it
	// from /proc for the current netns. On error ss's fallback, 1024-4999,
	// applies.
	LocalPortRange func() (lo, hi int, err error)
}

// Error is a malformed state selection or filter. Its text names the
// offending word and its 1-based position among the words of the command
// tail (arguments are split on spaces and tabs, as ss does).
type Error struct {
	// Word is the offending word; empty when the filter ended too soon.
	Word string
	// Pos is the word's position, or one past the last word with AtEnd.
	Pos int
	// Line is the line in a filter file, 0 for command-line words.
	Line int
	// AtEnd is set when the filter ended where more was expected.
	AtEnd bool
	// What classifies a bad value ("bad host", "bad port", ...); empty
	// for a word that does not belong where it stands.
	What string
	// Detail says what was expected or why the value is wrong.
	Detail string
}

// Error names the offending word, its position and what was expected.
func (e *Error) Error() string {
	where := fmt.Sprintf("word %d", e.Pos)
	if e.Line > 0 {
		where += fmt.Sprintf(" (line %d)", e.Line)
	}
	if e.AtEnd {
		return fmt.Sprintf("filter: unexpected end of filter at %s: %s", where, e.Detail)
	}
	what := e.What
	if what == "" {
		what = "unexpected"
	}
	return fmt.Sprintf("filter: %s %q at %s: %s", what, e.Word, where, e.Detail)
}

// Parse parses a command tail: `state`/`exclude` words (each a whole
// argument, as in ss), then the filter expression. Arguments are split on
// spaces and tabs, so the filter may come as one quoted argument.
//
// Time and memory are linear in the filter's length. Like ss, Parse
// refuses an expression nested deeper than ss's parser stack holds (some
// 10 000 open "(" and "!"; see yyMaxDepth), while a flat `a or b or ...`
// may be as long as one likes.
func Parse(args []string, opts ParseOptions) (*Query, error) {
	return ParseReader(args, nil, opts)
}

// ParseFile parses a filter file as `ss -F FILE` does: the file holds only
// the expression, `#` starts a comment line. A path starting with "-"
// reads standard input, as ss does.
func ParseFile(path string, opts ParseOptions) (*Query, error) {
	if strings.HasPrefix(path, "-") {
		return ParseReader(nil, os.Stdin, opts)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("filter: open filter file: %w", err)
	}
	defer f.Close()
	return ParseReader(nil, f, opts)
}

// ParseReader parses a command tail followed by a filter file, as
// `ss -F FILE [state ...] [FILTER]` does: the expression is the remaining
// arguments' words followed by the file's. r may be nil.
func ParseReader(args []string, r io.Reader, opts ParseOptions) (*Query, error) {
	opts.setDefaults()
	q := &Query{}
	pos := 1
	states, sawStates := sock.StateSet(0), false
	for len(args) > 0 && (args[0] == "state" || args[0] == "exclude" || args[0] == "excl") {
		if len(args) < 2 {
			return nil, &Error{Pos: pos + 1, AtEnd: true, Detail: "expected a state name after " + args[0]}
		}
		set, ok := ParseState(args[1])
		if !ok {
			return nil, &Error{Word: args[1], Pos: pos + 1, What: "unknown state",
				Detail: "expected a state (established, syn-sent, syn-recv, fin-wait-1, fin-wait-2, time-wait, closed, close-wait, last-ack, listening, closing) or a group (all, connected, synchronized, bucket, big)"}
		}
		if args[0] == "state" {
			states |= set
		} else {
			if !sawStates {
				states = ssAll
			}
			states &^= set
		}
		sawStates = true
		args = args[2:]
		pos += 2
	}
	q.States = states
	if q.States == 0 {
		q.States = opts.DefaultStates
	}

	lex := &lexer{args: args, pos: pos}
	if r != nil {
		// Any line ss accepts fits in one read (see readLine).
		lex.file = bufio.NewReaderSize(r, 4*maxFilterLine)
	}
	p := &parser{lex: lex, opts: &opts, family: opts.Family}
	expr, err := p.parse()
	if err != nil {
		return nil, err
	}
	q.Expr = expr
	if expr != nil {
		q.Family = p.pinned
		q.prog, q.progErr = compile(expr)
	}
	return q, nil
}

// String prints the query back as a command tail ss accepts.
func (q *Query) String() string {
	var parts []string
	if q.States != 0 {
		for _, name := range []string{"established", "syn-sent", "syn-recv", "fin-wait-1", "fin-wait-2", "time-wait", "closed", "close-wait", "last-ack", "listening", "closing"} {
			if set := stateNames[name]; q.States&set == set {
				parts = append(parts, "state", name)
			}
		}
	}
	if q.Expr != nil {
		parts = append(parts, q.Expr.String())
	}
	return strings.Join(parts, " ")
}
