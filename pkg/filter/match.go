package filter

import (
	"net/netip"
	"strings"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

// Match reports whether ss would list s: its state is in States, its
// family is not excluded by Family, and the expression holds.
//
// For inet rows ss evaluates the expression twice, in the kernel (the
// bytecode of its sock_diag request) and in userspace (run_ssfilter), and
// lists what passes both; Match does the same, because the two disagree:
// `src 0.0.0.0/0` passes IPv6 sockets in userspace but not in the kernel,
// `sport > *` is true in userspace and false in the kernel, and a host
// name resolving to several addresses only asks the kernel for the first.
// Packet and netlink rows are filtered in userspace only, as ss's
// sockstat of them has it: the local port is a packet socket's interface
// index, a netlink socket's port id (its peer's is -1), and the first
// bytes of the local address hold the protocol number.
// UNIX rows are filtered in userspace only, where ss compares `sport`/
// `dport` with the socket's inode and its peer's, and an address condition
// with the socket's name pointer (an unnamed socket has a NULL one, so
// `src 0.0.0.0` matches it; a named one matches no address).
//
// What Match cannot know: the kernel's `autobound` tests whether the port
// was bound explicitly (SOCK_BINDPORT_LOCK), which sock.Socket does not
// carry; Match guesses it from the state (see bindPortLocked), so a client
// that bound its own port before connecting is judged as ss would judge an
// autobound one.
func (q *Query) Match(s *sock.Socket) bool { return q.match(s, nil) }

// Owner is what the daemon knows of a connection's owner beyond ss's row:
// its cgroup (id and path relative to the cgroup v2 mount) and the
// container that path names ("" when unknown or none).
type Owner struct {
	CgroupID  uint64
	Cgroup    string
	Container string
}

// MatchConn is Match for one of the daemon's connections, s its row and o
// its owner, for a query parsed with ParseOptions.Connections: `cgroup`
// and `container` conditions look at the owner. They are sstrace's own, so
// a query with one is judged in userspace only (ss's kernel half has no
// such condition); every other query is judged as Match judges it.
func (q *Query) MatchConn(s *sock.Socket, o Owner) bool { return q.match(s, &o) }

func (q *Query) match(s *sock.Socket, o *Owner) bool {
	if !q.States.Has(s.State) && !(s.State == sock.NewSynRecv && q.States.Has(sock.SynRecv)) {
		return false
	}
	if q.Family != 0 && s.Family != q.Family {
		return false
	}
	if q.Expr == nil {
		return true
	}
	v := newView(s)
	if o != nil {
		v.cgroup, v.cgroupPath, v.container = o.CgroupID, o.Cgroup, o.Container
	}
	if !q.matchUser(v) {
		return false
	}
	if v.inet {
		return q.matchKernel(s)
	}
	return true
}

// matchKernel is the kernel's verdict on an inet row: the bytecode run as
// inet_diag_bc_run runs it.
func (q *Query) matchKernel(s *sock.Socket) bool {
	switch {
	case q.prog != nil:
		return runBytecode(q.prog, q.kernelEntry(s))
	case q.progErr == noProgUnix:
		// The kernel refuses the request (EINVAL) and ss lists no inet
		// socket (in a mixed filter it even crashes on its fallback).
		return false
	}
	return true // no bytecode: the kernel returns every socket
}

func (q *Query) kernelEntry(s *sock.Socket) *kentry {
	e := &kentry{
		family:  s.Family,
		saddr:   familyBytes(s.Local.Addr(), s.Family),
		daddr:   familyBytes(s.Peer.Addr(), s.Family),
		sport:   s.Local.Port(),
		dport:   s.Peer.Port(),
		ifindex: s.Iface,
	}
	if s.Mark != nil {
		e.mark = *s.Mark
	}
	if s.CgroupID != nil {
		e.cgroupID = *s.CgroupID
	}
	e.autoBound = !bindPortLocked(s)
	return e
}

// bindPortLocked guesses SOCK_BINDPORT_LOCK, which bind() with a non-zero
// port sets and which sock.Socket does not carry: listeners and bound,
// unconnected datagram sockets have it; connecting clients and accepted
// children do not (checked on the kernel); TIME-WAIT and request sockets
// (Inode 0) report no locks at all. A client that bound its port
// explicitly before connecting is the case this gets wrong.
func bindPortLocked(s *sock.Socket) bool {
	if s.Inode == 0 {
		return false
	}
	return s.State == sock.Listen || (s.Proto != sock.ProtoTCP && s.State == sock.Close)
}

// familyBytes lays out an address as sock_diag reports it for a socket of
// that family: 4 bytes for AF_INET, 16 (v4-mapped if need be) for AF_INET6.
func familyBytes(a netip.Addr, family uint8) (b [16]byte) {
	if !a.IsValid() {
		return b
	}
	if family == unix.AF_INET6 {
		return a.As16()
	}
	if a.Is4In6() {
		a = a.Unmap()
	}
	if a.Is4() {
		v := a.As4()
		copy(b[:], v[:])
		return b
	}
	return a.As16()
}

// view is ss's struct sockstat as run_ssfilter sees it.
type view struct {
	inet         bool
	family       uint8
	local, peer  [16]byte
	lport, rport int
	iface        uint32
	mark         uint32
	cgroup       uint64
	// cgroupPath and container: the owner's, for MatchConn.
	cgroupPath, container string
	// UNIX rows: the name, and whether there is one (ss's name pointer).
	name  string
	named bool
}

func newView(s *sock.Socket) *view {
	v := &view{family: s.Family, iface: s.Iface}
	if s.Mark != nil {
		v.mark = *s.Mark
	}
	if s.CgroupID != nil {
		v.cgroup = *s.CgroupID
	}
	if s.Family == unix.AF_UNIX || s.Proto == sock.ProtoUNIX {
		v.family = unix.AF_UNIX
		// ss puts the inode in lport and the peer's inode in rport, both
		// C ints taken from 32-bit kernel values.
		v.lport = int(int32(uint32(s.Inode)))
		if s.Unix != nil {
			v.rport = int(int32(uint32(s.Unix.PeerInode)))
			v.name = s.Unix.Path
			v.named = s.Unix.Path != ""
		}
		return v
	}
	switch {
	case s.Packet != nil:
		// ss's packet row: the interface as the local port, the
		// Ethernet protocol in the first word of the local address.
		v.lport = int(s.Iface)
		v.local[0], v.local[1] = byte(s.Packet.Protocol), byte(s.Packet.Protocol>>8)
		return v
	case s.Netlink != nil:
		// ss's netlink row: the port id as the local port, -1 as the
		// peer's, the protocol in the first word of the local address.
		v.lport, v.rport = int(s.Netlink.PortID), -1
		v.local[0] = s.Netlink.Protocol
		return v
	}
	v.inet = true
	v.local = familyBytes(s.Local.Addr(), s.Family)
	v.peer = familyBytes(s.Peer.Addr(), s.Family)
	v.lport = int(s.Local.Port())
	v.rport = int(s.Peer.Port())
	return v
}

func (q *Query) matchUser(v *view) bool { return evalUser(q.Expr, v) }

// evalUser is ss's run_ssfilter. ss recurses into both operands; a parsed
// `a or b or ...` leans left as deep as it is long, so evalUser loops down
// left operands and `!` chains instead, deciding on the right operand
// first (the conditions have no side effects, so the order cannot change
// the result) and recursing only into right operands, which the parser
// keeps as shallow as ss's parser stack allows.
func evalUser(n Node, v *view) bool {
	neg := false // an odd number of `!` above n
	for {
		switch x := n.(type) {
		case And:
			if !evalUser(x.R, v) {
				return neg
			}
			n = x.L
		case Or:
			if evalUser(x.R, v) {
				return !neg
			}
			n = x.L
		case Not:
			neg = !neg
			n = x.X
		default:
			return evalCond(n, v) != neg
		}
	}
}

// evalCond is run_ssfilter on one condition.
func evalCond(n Node, v *view) bool {
	switch n := n.(type) {
	case HostCond:
		return hostUser(n, v)
	case PortRange:
		port := v.lport
		if n.Side == Dst {
			port = v.rport
		}
		if n.GE {
			return port >= n.Port
		}
		return port <= n.Port
	case AutoBound:
		switch v.family {
		case unix.AF_UNIX:
			return !v.named || isAutobindName(v.name)
		case unix.AF_PACKET:
			return v.lport == 0 && v.local[0] == 0 && v.local[1] == 0
		case unix.AF_NETLINK:
			return v.lport < 0
		}
		return v.lport >= n.Lo && v.lport <= n.Hi
	case DevCond:
		return v.iface == n.Index
	case MarkCond:
		return v.mark&n.Mask == n.Mark
	case CgroupCond:
		if n.Path != "" { // the owner's: by path, by id while it exists
			return v.cgroupPath == n.Path || (n.ID != 0 && v.cgroup == n.ID)
		}
		return v.cgroup == n.ID
	case ContainerCond:
		return v.container != "" && strings.HasPrefix(v.container, n.ID)
	}
	return false
}

// isAutobindName recognises the abstract names the kernel gives on
// autobind: "@" and five lowercase hex digits.
func isAutobindName(name string) bool {
	if len(name) != 6 || name[0] != '@' {
		return false
	}
	return strings.Trim(name[1:], "0123456789abcdef") == ""
}

func hostUser(h HostCond, v *view) bool {
	if h.Family == unix.AF_UNIX {
		if v.family != unix.AF_UNIX {
			return false // ss would read an address as a name pointer
		}
		name := ""
		if h.Side == Src {
			name = v.name
		}
		// ss's netlink path never sets the peer's name, so `dst` patterns
		// see an empty one.
		return fnmatchFold(h.Pattern, name)
	}
	port, addr := v.lport, v.local
	if h.Side == Dst {
		port, addr = v.rport, v.peer
	}
	if h.Port != -1 && h.Port != port {
		return false
	}
	if len(h.Addrs) == 0 {
		return true
	}
	if v.family == unix.AF_UNIX && h.Side == Src && v.named {
		// A name pointer's bytes never equal a prefix we could predict.
		return false
	}
	for _, p := range h.Addrs {
		if addrMatchUser(addr, v.family, p) {
			return true
		}
	}
	return false
}

// addrMatchUser is ss's inet2_addr_match: a raw byte compare whatever the
// families, plus the v4-mapped rule (an IPv4 condition also matches a
// v4-mapped IPv6 address).
func addrMatchUser(a [16]byte, family uint8, p Prefix) bool {
	if bitsMatch(a, p.Addr, p.Bits) {
		return true
	}
	if p.Family == unix.AF_INET && family == unix.AF_INET6 && isV4Mapped(a) {
		var m [16]byte
		copy(m[:], a[12:])
		return bitsMatch(m, p.Addr, p.Bits)
	}
	return false
}
