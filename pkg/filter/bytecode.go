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
)

// Bytecode compiles Expr to the kernel's INET_DIAG_REQ_BYTECODE program
// (struct inet_diag_bc_op ...), byte for byte what ss's ssfilter_bytecompile
// produces, so a selective dump is filtered in the kernel. ss sends the same
// program for every inet family; family must be AF_INET, AF_INET6 or
// AF_UNSPEC. ok is false when there is no expression, when some term cannot
// be expressed (dev; ss then filters in userspace only, and so should the
// caller), for a UNIX name pattern, and for other families.
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

// compile returns the program, or nil and why there is none.
func compile(n Node) ([]byte, string) {
	prog, err := bytecompile(n)
	if err != "" {
		return nil, err
	}
	if len(prog) > 0xffff-4 {
		return nil, noProgLong
	}
	return prog, ""
}

func op(code uint8, yes uint8, no uint16) []byte {
	b := []byte{code, yes, 0, 0}
	binary.NativeEndian.PutUint16(b[2:], no)
	return b
}

// Every op's "no" jumps to len+4 of its fragment to mean "fail"; AND moves
// those failures past the second fragment (ss's ssfilter_patch).
func patchFails(a []byte, l1, reloc int) bool {
	for off := 0; off < l1; {
		no := int(binary.NativeEndian.Uint16(a[off+2:]))
		remaining := l1 - off
		if no == remaining+4 {
			if no+reloc > 0xffff {
				return false
			}
			binary.NativeEndian.PutUint16(a[off+2:], uint16(no+reloc))
		}
		yes := int(a[off+1])
		if yes == 0 {
			return false
		}
		off += yes
	}
	return true
}

func bytecompile(n Node) ([]byte, string) {
	switch n := n.(type) {
	case AutoBound:
		return op(bcAUTO, 4, 8), ""
	case HostCond:
		return hostBytecode(n)
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
		return append(op(code, 8, 12), op(0, 0, uint16(n.Port))...), ""
	case And:
		a1, e1 := bytecompile(n.L)
		a2, e2 := bytecompile(n.R)
		if e := firstErr(e1, e2); e != "" {
			return nil, e
		}
		out := append(append([]byte(nil), a1...), a2...)
		if !patchFails(out, len(a1), len(a2)) {
			return nil, noProgLong
		}
		return out, ""
	case Or:
		a1, e1 := bytecompile(n.L)
		a2, e2 := bytecompile(n.R)
		if e := firstErr(e1, e2); e != "" {
			return nil, e
		}
		if len(a2)+4 > 0xffff {
			return nil, noProgLong
		}
		out := append(append([]byte(nil), a1...), op(bcJMP, 4, uint16(len(a2)+4))...)
		return append(out, a2...), ""
	case Not:
		a1, e := bytecompile(n.X)
		if e != "" {
			return nil, e
		}
		return append(append([]byte(nil), a1...), op(bcJMP, 4, 8)...), ""
	case DevCond:
		// ss 6.1: "bytecompile for SSF_DEVCOND not supported yet".
		return nil, noProgDev
	case MarkCond:
		b := op(bcMARKCOND, 12, 16)
		b = binary.NativeEndian.AppendUint32(b, n.Mark)
		return binary.NativeEndian.AppendUint32(b, n.Mask), ""
	case CgroupCond:
		b := op(bcCGROUPCOND, 12, 16)
		return binary.NativeEndian.AppendUint64(b, n.ID), ""
	}
	return nil, fmt.Sprintf("unknown node %T", n)
}

// prioritise the reason that changes what Match does.
func firstErr(a, b string) string {
	if a == noProgUnix || b == noProgUnix {
		return noProgUnix
	}
	if a != "" {
		return a
	}
	return b
}

// hostBytecode emits one S_COND/D_COND per address, each followed by a
// jump to the end when it matched. ss 6.1 fills every entry from the
// *first* address (it reads a, not b, in its loop), so a host name that
// resolves to 127.0.0.1 and ::1 asks the kernel for 127.0.0.1 twice; we
// send the same bytes, and Match inherits the consequence.
func hostBytecode(h HostCond) ([]byte, string) {
	if h.Family == unix.AF_UNIX {
		return nil, noProgUnix
	}
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
	total := entries*oplen + (entries-1)*4
	if total > 0xffff-4 {
		return nil, noProgLong
	}
	code := uint8(bcSCOND)
	if h.Side == Dst {
		code = bcDCOND
	}
	out := make([]byte, 0, total)
	for i := 0; i < entries; i++ {
		out = append(out, op(code, uint8(oplen), uint16(oplen+4))...)
		out = append(out, h.Family, uint8(first.Bits), 0, 0)
		out = binary.NativeEndian.AppendUint32(out, uint32(int32(h.Port)))
		out = append(out, first.Addr[:alen]...)
		if i < entries-1 {
			out = append(out, op(bcJMP, 4, uint16(total-len(out)))...)
		}
	}
	return out, ""
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
