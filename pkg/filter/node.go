package filter

import "strings"

// Node is one node of a parsed filter expression. The tree has the shape
// ss's parser builds (misc/ssfilter.y): `sport > X` is Not{PortRange LE},
// `dport != X` is Not{HostCond}, and so on, so that evaluation and the
// kernel bytecode follow ss term by term. String prints a node back in the
// filter language; parsing that text with the same options yields the same
// tree.
type Node interface {
	String() string
	node()
}

// And is true when both sides are (`&`, `&&`, `and`, or two expressions
// side by side).
type And struct{ L, R Node }

// Or is true when either side is (`|`, `||`, `or`).
type Or struct{ L, R Node }

// Not negates X (`!`, `not`).
type Not struct{ X Node }

// Side says which end of a connection a condition looks at.
type Side uint8

// The two ends: Src is the local address/port, Dst the peer's.
const (
	Src Side = iota
	Dst
)

func (s Side) addrWord() string {
	if s == Src {
		return "src"
	}
	return "dst"
}

func (s Side) portWord() string {
	if s == Src {
		return "sport"
	}
	return "dport"
}

// Prefix is one address condition: the first Bits bits of Addr must match.
// Addr holds the address bytes the way ss's inet_prefix does (4 bytes for
// IPv4 followed by zeros, 16 for IPv6), because ss compares those bytes
// without looking at the socket's family (see matchPrefix).
type Prefix struct {
	Family uint8 // unix.AF_INET, unix.AF_INET6, or 0 for `any`/`default`
	Bits   int
	Addr   [16]byte
}

// HostCond is `src HOST`, `dst HOST`, and also `sport = PORT` / `dport =
// PORT`, which ss parses into the same condition with only a port.
type HostCond struct {
	Side Side
	// Word is the HOST word as written; String prints it back.
	Word string
	// PortOnly is set for the sport/dport spelling.
	PortOnly bool
	// Family is the family of the first address (ss's a->addr.family):
	// AF_INET, AF_INET6, AF_UNIX for a UNIX name pattern, or 0.
	Family uint8
	// Port is the port to match, -1 for any. ss keeps it as a C int, so
	// out-of-range values (`:99999`, `:-1`) are kept as written.
	Port int
	// Addrs are the address conditions; any one matching suffices. Empty
	// means any address. A host name gives one entry per resolved address.
	Addrs []Prefix
	// Pattern is the fnmatch pattern for UNIX socket names (Family AF_UNIX).
	Pattern string
}

// PortRange is `sport >= P` / `sport <= P` (and dport); ss expresses `>`
// and `<` as the negation of `<=` and `>=`.
type PortRange struct {
	Side Side
	GE   bool // true for >=, false for <=
	Word string
	Port int
}

// AutoBound is `autobound`: the local port was picked by the kernel.
type AutoBound struct {
	// Lo and Hi are the ephemeral port range ss compares against
	// (net.ipv4.ip_local_port_range), read when the filter is parsed.
	Lo, Hi int
}

// DevCond is `dev NAME|INDEX`: the socket is bound to that interface.
type DevCond struct {
	Word  string
	Index uint32
}

// MarkCond is `fwmark MARK[/MASK]`: (socket mark & Mask) == Mark.
type MarkCond struct {
	Word       string
	Mark, Mask uint32
}

// CgroupCond is `cgroup PATH`: the socket belongs to that cgroup v2.
// Parsed with ParseOptions.Connections it is the owner's cgroup, named by
// Path (relative to the cgroup v2 mount) and, while the cgroup exists, by
// ID too (0 once it is gone).
type CgroupCond struct {
	Word string
	ID   uint64
	Path string
}

// ContainerCond is `container ID`: the connection's owner is in the
// container whose id begins with ID (ParseOptions.Connections only: ss has
// no such word).
type ContainerCond struct {
	// Word is the id as written; ID the same in lowercase.
	Word, ID string
}

func (And) node()           {}
func (Or) node()            {}
func (Not) node()           {}
func (HostCond) node()      {}
func (PortRange) node()     {}
func (AutoBound) node()     {}
func (DevCond) node()       {}
func (MarkCond) node()      {}
func (CgroupCond) node()    {}
func (ContainerCond) node() {}

// The String methods print a node in the filter language, parenthesised
// where needed, so that the text parses back to the same tree. The parser
// is strictly left-associative with no precedence between `and` and `or`
// (ss's grammar), so only a binary node on the right of another, or under
// a `!`, needs parentheses to keep its grouping.

// String prints the conjunction.
func (n And) String() string { return nodeString(n) }

// String prints the disjunction.
func (n Or) String() string { return nodeString(n) }

// String prints the negation.
func (n Not) String() string { return nodeString(n) }

// nodeString prints into one builder: concatenating each operand's
// String would copy a long `a or b or ...` once per term.
func nodeString(n Node) string {
	var b strings.Builder
	writeNode(&b, n)
	return b.String()
}

// binaryParts splits an and/or node, pointer or not.
func binaryParts(n Node) (l, r Node, op string, ok bool) {
	switch x := n.(type) {
	case And:
		return x.L, x.R, " and ", true
	case *And:
		return x.L, x.R, " and ", true
	case Or:
		return x.L, x.R, " or ", true
	case *Or:
		return x.L, x.R, " or ", true
	}
	return nil, nil, "", false
}

// writeNode walks down the left operands of a chain without recursing (a
// parsed chain leans left as deep as it is long), then prints it from its
// first operand on. It recurses only into right operands and under `!`,
// which the parser keeps as shallow as ss's parser stack allows.
func writeNode(b *strings.Builder, n Node) {
	// The chain's binary nodes, top first; counted first so the slice is
	// allocated once.
	depth := 0
	for x := n; ; depth++ {
		l, _, _, ok := binaryParts(x)
		if !ok {
			break
		}
		x = l
	}
	chain := make([]Node, 0, depth)
	for {
		l, _, _, ok := binaryParts(n)
		if !ok {
			break
		}
		chain = append(chain, n)
		n = l
	}
	writeOperand(b, n)
	for i := len(chain) - 1; i >= 0; i-- {
		_, r, op, _ := binaryParts(chain[i])
		b.WriteString(op)
		writeOperand(b, r)
	}
}

// writeOperand prints an operand of and/or/!: a binary node in
// parentheses, `!` chains in a loop.
func writeOperand(b *strings.Builder, n Node) {
	for {
		if _, _, _, ok := binaryParts(n); ok {
			b.WriteString("( ")
			writeNode(b, n)
			b.WriteString(" )")
			return
		}
		switch x := n.(type) {
		case Not:
			b.WriteString("! ")
			n = x.X
		case *Not:
			b.WriteString("! ")
			n = x.X
		default:
			b.WriteString(n.String())
			return
		}
	}
}

// String prints the src/dst or sport/dport = condition.
func (n HostCond) String() string {
	if n.PortOnly {
		return n.Side.portWord() + " = " + escapeWord(n.Word)
	}
	return n.Side.addrWord() + " " + escapeWord(n.Word)
}

// String prints the port comparison.
func (n PortRange) String() string {
	op := "<="
	if n.GE {
		op = ">="
	}
	return n.Side.portWord() + " " + op + " " + escapeWord(n.Word)
}

// String prints "autobound".
func (AutoBound) String() string { return "autobound" }

// String prints the dev condition.
func (n DevCond) String() string { return "dev = " + escapeWord(n.Word) }

// String prints the fwmark condition.
func (n MarkCond) String() string { return "fwmark = " + escapeWord(n.Word) }

// String prints the cgroup condition.
func (n CgroupCond) String() string { return "cgroup = " + escapeWord(n.Word) }

// String prints the container condition.
func (n ContainerCond) String() string { return "container = " + escapeWord(n.Word) }

// escapeWord backslash-escapes what the word splitter would otherwise cut
// or eat: spaces, tabs and backslashes.
func escapeWord(w string) string {
	if !strings.ContainsAny(w, " \t\\") {
		return w
	}
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		if c := w[i]; c == ' ' || c == '\t' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(w[i])
	}
	return b.String()
}
