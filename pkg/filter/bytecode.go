package filter

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Kernel bytecode opcodes (linux/inet_diag.h, enum INET_DIAG_BC_*).
const (
	bcNOP        = 0
	bcJMP        = 1
	bcSGE        = 2
	bcSLE        = 3
	bcDGE        = 4
	bcDLE        = 5
	bcAUTO       = 6
	bcSCOND      = 7
	bcDCOND      = 8
	bcDEVCOND    = 9
	bcMARKCOND   = 10
	bcCGROUPCOND = 13
)

// Reasons compile gives for having no program.
const (
	noProgDev  = "dev conditions have no bytecode in ss"
	noProgUnix = "a UNIX name pattern cannot run in the inet kernel filter"
	noProgLong = "program too long for the kernel's 16-bit jump offsets"
	// noProgOwner: the owner's cgroup and container are sstrace's own
	// facts about a connection; no kernel filter sees them.
	noProgOwner = "the owner's cgroup and container are not in the kernel's filter"
)

// Bytecode compiles Expr to the kernel's INET_DIAG_REQ_BYTECODE program
// (struct inet_diag_bc_op ...), byte for byte what ss's ssfilter_bytecompile
// produces, so a selective dump is filtered in the kernel. ss sends the same
// program for every inet family; family must be AF_INET, AF_INET6 or
// AF_UNSPEC. ok is false when there is no expression, when some term cannot
// be expressed (dev; ss then filters in userspace only, and so should the
// caller), for a UNIX name pattern, when the program would not fit the
// kernel's 16-bit lengths (ss sends it truncated; we send none, and Match
// does all the filtering), and for other families.
//
// Mind that the kernel and ss's userspace evaluation differ in places (see
// Match), so rows the kernel returns must still go through Match.
func (q *Query) Bytecode(family uint8) (prog []byte, ok bool) {
	switch family {
	case unix.AF_INET, unix.AF_INET6, unix.AF_UNSPEC:
	default:
		return nil, false
	}
	if q.prog == nil {
		return nil, false
	}
	return append([]byte(nil), q.prog...), true
}

// maxProg is the longest program compile emits, as before: the kernel
// takes the program in a netlink attribute whose 16-bit length counts its
// 4-byte header, and an op's 16-bit "no" must still reach one op past the
// end (len+4, the reject exit). ss sends a longer program with its lengths
// truncated; we send none and leave the filtering to Match.
const maxProg = 0xffff - 4

// compile returns the program, or nil and why there is none.
//
// It does what ss's ssfilter_bytecompile does (each `and`/`or`/`!` a copy
// of its operands' programs plus a patch) in one pass over one buffer,
// because ss's way copies the whole program again at every level of a
// left-leaning chain, which is quadratic: a 40 000-term `or` allocated
// gigabytes before the length was checked. Here time is linear in the
// tree and memory is bounded by maxProg whatever the tree's size; the
// bytes are the same (compileRef in the tests is ss's algorithm).
//
// The reasons for having no program keep their old meaning, with one
// fixed order: a UNIX name pattern anywhere wins (Match depends on it),
// then a dev condition, then the length.
func compile(n Node) ([]byte, string) {
	why, costly := scan(n)
	if why != "" {
		return nil, why
	}
	// Every node but an `and` adds at least one 4-byte op, so a tree this
	// big cannot fit, and compiling it would only cost time and frames.
	if costly > maxProg/4 {
		return nil, noProgLong
	}
	var c compiler
	if !c.run(n) {
		return nil, noProgLong
	}
	return c.prog, ""
}

// scan finds the reason a tree has no program, if any, and counts the
// nodes that emit at least one op (all but And). It walks the tree
// without recursion, right operands first, so the pending stack holds
// only the left operands of right-leaning nodes: a parsed `a or b or ...`
// leans left and needs none.
func scan(root Node) (why string, costly int) {
	pending := []Node{root}
	for len(pending) > 0 {
		n := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		for descend := true; descend; {
			descend = false
			costly++
			switch x := n.(type) {
			case And:
				costly-- // and emits nothing of its own
				pending = append(pending, x.L)
				n, descend = x.R, true
			case Or:
				pending = append(pending, x.L)
				n, descend = x.R, true
			case Not:
				n, descend = x.X, true
			case HostCond:
				if x.Family == unix.AF_UNIX {
					return noProgUnix, 0
				}
			case CgroupCond:
				if x.Path != "" {
					why = noProgOwner
				}
			case ContainerCond:
				why = noProgOwner
			case AutoBound, PortRange, MarkCond:
			case DevCond:
				// ss 6.1: "bytecompile for SSF_DEVCOND not supported yet".
				why = noProgDev // right to left: the leftmost reason stays
			default:
				why = fmt.Sprintf("unknown node %T", n)
			}
		}
	}
	return why, costly
}

// compiler emits a tree's program into one buffer. Every fragment (the
// program of a subtree) passes by falling off its end and fails by
// jumping one op past it; fails holds the offsets of the ops whose "no"
// is such a fail exit and whose target is not known yet. A fragment's
// fail exits are always the tail of fails from where it started, since
// fragments are emitted in order.
type compiler struct {
	prog  []byte
	fails []int
}

// frame is a node of the tree being compiled and how far it has got.
type frame struct {
	n     Node
	step  uint8
	fails int // len(fails) when the node started
	jmp   int // an Or's JMP, patched once its right operand is emitted
}

// run emits the program of root, and reports false as soon as it grows
// past maxProg. It uses an explicit stack rather than recursion; compile
// has bounded the tree's size already.
func (c *compiler) run(root Node) bool {
	stack := []frame{{n: root}}
	for len(stack) > 0 {
		f := &stack[len(stack)-1]
		var child Node
		switch n := f.n.(type) {
		case And:
			// The left operand's fail exits become the and's: they jump
			// past the right operand too (ss's ssfilter_patch).
			switch f.step {
			case 0:
				child = n.L
			case 1:
				child = n.R
			}
		case Or:
			switch f.step {
			case 0:
				f.fails = len(c.fails)
				child = n.L
			case 1:
				// Left failed: try the right operand, just past the
				// JMP that skips it when the left one passed.
				c.resolve(f.fails, len(c.prog)+4)
				f.jmp = len(c.prog)
				c.prog = append(c.prog, bcJMP, 4, 0, 0)
				child = n.R
			case 2:
				binary.NativeEndian.PutUint16(c.prog[f.jmp+2:], uint16(len(c.prog)-f.jmp))
			}
		case Not:
			switch f.step {
			case 0:
				f.fails = len(c.fails)
				child = n.X
			case 1:
				// X failed: pass, past the JMP that fails when X passed.
				c.resolve(f.fails, len(c.prog)+4)
				c.fails = append(c.fails, len(c.prog))
				c.prog = append(c.prog, op(bcJMP, 4, 8)...)
			}
		default:
			if !c.leaf(n) {
				return false
			}
		}
		if len(c.prog) > maxProg {
			return false
		}
		if child == nil {
			stack = stack[:len(stack)-1]
			continue
		}
		f.step++
		stack = append(stack, frame{n: child})
	}
	c.resolve(0, len(c.prog)+4)
	return true
}

// resolve points the fail exits pending since from at target, an offset
// in the program. compile keeps the program within maxProg, so every
// distance fits the 16-bit field.
func (c *compiler) resolve(from, target int) {
	for _, off := range c.fails[from:] {
		binary.NativeEndian.PutUint16(c.prog[off+2:], uint16(target-off))
	}
	c.fails = c.fails[:from]
}

// leaf emits a condition and records its fail exits: walking its ops as
// ssfilter_patch does (by their "yes" lengths), those whose "no" reaches
// one op past the fragment. It reports false when the condition alone
// would take the program past maxProg.
func (c *compiler) leaf(n Node) bool {
	start := len(c.prog)
	switch n := n.(type) {
	case AutoBound:
		c.prog = append(c.prog, op(bcAUTO, 4, 8)...)
	case HostCond:
		var ok bool
		if c.prog, ok = appendHost(c.prog, n); !ok {
			return false
		}
	case PortRange:
		code := uint8(bcSLE)
		switch {
		case n.Side == Src && n.GE:
			code = bcSGE
		case n.Side == Dst && n.GE:
			code = bcDGE
		case n.Side == Dst:
			code = bcDLE
		}
		// The port rides in the "no" field of a second op: 16 bits, so
		// ss's int port is truncated here (`sport > *` has port -1, 65535).
		c.prog = append(c.prog, op(code, 8, 12)...)
		c.prog = append(c.prog, op(0, 0, uint16(n.Port))...)
	case MarkCond:
		c.prog = append(c.prog, op(bcMARKCOND, 12, 16)...)
		c.prog = binary.NativeEndian.AppendUint32(c.prog, n.Mark)
		c.prog = binary.NativeEndian.AppendUint32(c.prog, n.Mask)
	case CgroupCond:
		c.prog = append(c.prog, op(bcCGROUPCOND, 12, 16)...)
		c.prog = binary.NativeEndian.AppendUint64(c.prog, n.ID)
	default:
		return false // scan has refused every other node
	}
	end := len(c.prog)
	for off := start; off < end; {
		if int(binary.NativeEndian.Uint16(c.prog[off+2:])) == end-off+4 {
			c.fails = append(c.fails, off)
		}
		off += int(c.prog[off+1])
	}
	return true
}

func op(code uint8, yes uint8, no uint16) []byte {
	b := []byte{code, yes, 0, 0}
	binary.NativeEndian.PutUint16(b[2:], no)
	return b
}

// appendHost emits one S_COND/D_COND per address, each followed by a
// jump to the end when it matched. ss 6.1 fills every entry from the
// *first* address (it reads a, not b, in its loop), so a host name that
// resolves to 127.0.0.1 and ::1 asks the kernel for 127.0.0.1 twice; we
// send the same bytes, and Match inherits the consequence. It reports
// false, having appended nothing, when the result would pass maxProg.
func appendHost(out []byte, h HostCond) ([]byte, bool) {
	alen := 4
	if h.Family == unix.AF_INET6 {
		alen = 16
	}
	entries := len(h.Addrs)
	if entries == 0 {
		entries = 1
	}
	var first Prefix
	if len(h.Addrs) > 0 {
		first = h.Addrs[0]
	}
	oplen := 4 + 8 + alen
	if entries > maxProg/(oplen+4)+1 || len(out)+entries*oplen+(entries-1)*4 > maxProg {
		return out, false
	}
	total := entries*oplen + (entries-1)*4
	code := uint8(bcSCOND)
	if h.Side == Dst {
		code = bcDCOND
	}
	start := len(out)
	for i := 0; i < entries; i++ {
		out = append(out, op(code, uint8(oplen), uint16(oplen+4))...)
		out = append(out, h.Family, uint8(first.Bits), 0, 0)
		out = binary.NativeEndian.AppendUint32(out, uint32(int32(h.Port)))
		out = append(out, first.Addr[:alen]...)
		if i < entries-1 {
			out = append(out, op(bcJMP, 4, uint16(total-(len(out)-start)))...)
		}
	}
	return out, true
}

// kentry is what the kernel's inet_diag_bc_run sees of a socket
// (struct inet_diag_entry).
type kentry struct {
	family       uint8
	saddr, daddr [16]byte
	sport, dport uint16
	ifindex      uint32
	autoBound    bool // !(userlocks & SOCK_BINDPORT_LOCK)
	mark         uint32
	cgroupID     uint64
}

// runBytecode interprets a program as the kernel's inet_diag_bc_run does.
// It never panics on a malformed program: it reports no match.
func runBytecode(bc []byte, e *kentry) bool {
	off, left := 0, len(bc)
	for left > 0 {
		if off < 0 || off+4 > len(bc) {
			return false
		}
		code, yesOff := bc[off], int(bc[off+1])
		noOff := int(binary.NativeEndian.Uint16(bc[off+2:]))
		yes := true
		switch code {
		case bcNOP:
		case bcJMP:
			yes = false
		case bcSGE, bcSLE, bcDGE, bcDLE:
			if off+8 > len(bc) {
				return false
			}
			port := binary.NativeEndian.Uint16(bc[off+6:])
			switch code {
			case bcSGE:
				yes = e.sport >= port
			case bcSLE:
				yes = e.sport <= port
			case bcDGE:
				yes = e.dport >= port
			case bcDLE:
				yes = e.dport <= port
			}
		case bcAUTO:
			yes = e.autoBound
		case bcSCOND, bcDCOND:
			if off+12 > len(bc) {
				return false
			}
			fam, plen := bc[off+4], int(bc[off+5])
			port := int32(binary.NativeEndian.Uint32(bc[off+8:]))
			var caddr [16]byte
			copy(caddr[:], bc[off+12:min(off+28, len(bc))])
			eport, addr := e.sport, e.saddr
			if code == bcDCOND {
				eport, addr = e.dport, e.daddr
			}
			if port != -1 && port != int32(eport) {
				yes = false
				break
			}
			if fam != unix.AF_UNSPEC && fam != e.family {
				yes = false
				if e.family == unix.AF_INET6 && fam == unix.AF_INET && isV4Mapped(addr) {
					var m [16]byte
					copy(m[:], addr[12:])
					yes = bitsMatch(m, caddr, plen)
				}
				break
			}
			if plen != 0 {
				yes = bitsMatch(addr, caddr, plen)
			}
		case bcDEVCOND:
			if off+8 > len(bc) {
				return false
			}
			yes = binary.NativeEndian.Uint32(bc[off+4:]) == e.ifindex
		case bcMARKCOND:
			if off+12 > len(bc) {
				return false
			}
			mark, mask := binary.NativeEndian.Uint32(bc[off+4:]), binary.NativeEndian.Uint32(bc[off+8:])
			yes = e.mark&mask == mark
		case bcCGROUPCOND:
			if off+12 > len(bc) {
				return false
			}
			yes = binary.NativeEndian.Uint64(bc[off+4:]) == e.cgroupID
		default:
			return false
		}
		step := noOff
		if yes {
			step = yesOff
		}
		if step == 0 {
			return false // the kernel's audit refuses such a program
		}
		off += step
		left -= step
	}
	return left == 0
}

func isV4Mapped(a [16]byte) bool {
	for _, b := range a[:10] {
		if b != 0 {
			return false
		}
	}
	return a[10] == 0xff && a[11] == 0xff
}

// bitsMatch compares the first bits bits of two addresses (the kernel's
// bitstring_match and iproute2's inet_addr_match agree on this).
func bitsMatch(a, b [16]byte, bits int) bool {
	if bits > 128 {
		bits = 128
	}
	full := bits / 8
	for i := 0; i < full; i++ {
		if a[i] != b[i] {
			return false
		}
	}
	if rem := bits % 8; rem != 0 {
		mask := byte(0xff << (8 - rem))
		if (a[full]^b[full])&mask != 0 {
			return false
		}
	}
	return true
}
