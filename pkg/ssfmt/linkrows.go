package ssfmt

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// Rows of packet and netlink sockets, as ss's packet_show_sock and
// netlink_show_one print them.

// ProcessNames is what a Names may also implement to name netlink port
// ids: ss prints a netlink socket's port id as "comm/pid" when a process
// of that pid exists (it reads /proc/PID/stat). Without it, the port id is
// printed as a number, as ss does for a pid with no process.
type ProcessNames interface {
	// ProcessName is the comm of process pid, as /proc/PID/stat gives it
	// up to the first ')'.
	ProcessName(pid int32) (string, bool)
}

// packetRow prints the address columns and extension field of a packet
// socket: the Ethernet protocol ("*" for ETH_P_ALL) and the bound
// interface ("*" for none), "*" as the peer, then users, -e's details and
// -m's memory.
func (t *Table) packetRow(s *sock.Socket) {
	p := s.Packet
	if p == nil {
		p = &sock.PacketInfo{}
	}
	if p.Protocol == unix.ETH_P_ALL {
		t.out("*:")
	} else {
		t.out(llProtoName(p.Protocol, t.opts.Numeric) + ":")
	}
	t.fieldNext()
	if s.Iface == 0 {
		t.out("*")
	} else {
		mark := len(t.buf)
		t.buf = t.appendIface(t.buf, s.Iface)
		t.commit(mark)
	}
	t.fieldNext()
	t.noPeer()
	t.users(s)
	o := &t.opts
	if o.Extended {
		var b strings.Builder
		if s.UID != 0 {
			b.WriteString(" uid:" + utoa(uint64(s.UID)))
		}
		b.WriteString(" ino:" + utoa(uint64(uint32(s.Inode))))
		b.WriteString(" sk:" + strconv.FormatUint(s.Cookie, 16))
		sep := "\n\t"
		if o.OneLine {
			sep = " "
		}
		b.WriteString(sep + "ver:" + itoa(int64(int32(p.Version))) + " cpy_thresh:" + itoa(int64(int32(p.CopyThresh))))
		b.WriteString(" flags( " + packetFlags(p.Flags) + " )")
		for _, r := range [...]struct {
			name string
			ring *sock.PacketRing
		}{{"ring_rx(", p.RxRing}, {"ring_tx(", p.TxRing}} {
			if r.ring != nil {
				b.WriteString(sep + r.name + packetRing(r.ring) + ")")
			}
		}
		if p.Fanout != nil {
			b.WriteString(sep + "fanout(id:" + itoa(int64(*p.Fanout&0xffff)) + ",type:" + fanoutType(*p.Fanout>>16) + ")")
		}
		t.out(b.String())
	}
	if o.Memory && s.Mem != nil {
		t.out(SkmemString(s.Mem))
	}
}

// noPeer prints the peer columns of a socket that has no peer: "*" and an
// empty port.
func (t *Table) noPeer() {
	t.out("*")
	t.fieldNext()
	t.fieldNext()
}

// packetFlags is ss's "flags( ... )" content: the PDI_* names, "0" when
// none is set (ss puts no space before the first one only when it is
// "running").
func packetFlags(flags uint32) string {
	if flags == 0 {
		return "0"
	}
	var b strings.Builder
	if flags&1 != 0 {
		b.WriteString("running")
	}
	for i, name := range [...]string{" auxdata", " origdev", " vnethdr", " loss"} {
		if flags&(2<<i) != 0 {
			b.WriteString(name)
		}
	}
	return b.String()
}

func packetRing(r *sock.PacketRing) string {
	i := func(v uint32) string { return itoa(int64(int32(v))) }
	return "blk_size:" + i(r.BlockSize) + ",blk_nr:" + i(r.BlockNr) + ",frm_size:" + i(r.FrameSize) +
		",frm_nr:" + i(r.FrameNr) + ",tmo:" + i(r.RetireTmo) + ",features:0x" + strconv.FormatUint(uint64(r.Features), 16)
}

var fanoutTypes = [...]string{"hash", "lb", "cpu", "roll", "random", "qm"}

func fanoutType(typ uint32) string {
	if int(typ) < len(fanoutTypes) {
		return fanoutTypes[typ]
	}
	return "0x" + strconv.FormatUint(uint64(typ), 16)
}

// netlinkRow prints the address columns and extension field of a netlink
// socket: protocol and port id (named after its process unless numeric),
// the connected peer's group and port id or "*", then -e's details and
// -m's memory. ss prints no users for netlink sockets, even under -p.
func (t *Table) netlinkRow(s *sock.Socket) {
	n := s.Netlink
	if n == nil {
		n = &sock.NetlinkInfo{}
	}
	t.out(netlinkProtoName(n.Protocol, t.opts.Numeric) + ":")
	t.fieldNext()
	t.out(t.portIDName(n.PortID))
	t.fieldNext()
	if n.Connected {
		t.out(utoa(uint64(n.DstGroup)) + ":")
		t.fieldNext()
		t.out(itoa(int64(int32(n.DstPortID))))
		t.fieldNext()
	} else {
		t.noPeer()
	}
	if t.opts.Extended {
		// ss passes zero for the addresses it only had from /proc.
		t.out(" sk=0 cb=0 groups=0x" + hex8(uint32(n.Groups)))
	}
	if t.opts.Memory && s.Mem != nil {
		t.out("\t" + SkmemString(s.Mem))
	}
}

// portIDName is ss's name for a netlink port id: "*" for -1, "kernel" for
// 0, "comm/pid" for a process's, the number otherwise or under -n.
func (t *Table) portIDName(pid int32) string {
	switch {
	case pid == -1:
		return "*"
	case t.opts.Numeric:
	case pid == 0:
		return "kernel"
	case pid > 0:
		if pn, ok := t.opts.Names.(ProcessNames); ok {
			if comm, ok := pn.ProcessName(pid); ok {
				return comm + "/" + itoa(int64(pid))
			}
		}
	}
	return itoa(int64(pid))
}

func hex8(v uint32) string {
	h := strconv.FormatUint(uint64(v), 16)
	return strings.Repeat("0", 8-len(h)) + h
}

// netlinkProtoNames are iproute2's netlink protocol names (its nl_protos).
var netlinkProtoNames = [...]string{
	unix.NETLINK_ROUTE: "rtnl", unix.NETLINK_UNUSED: "unused", unix.NETLINK_USERSOCK: "usersock",
	unix.NETLINK_FIREWALL: "fw", unix.NETLINK_SOCK_DIAG: "tcpdiag", unix.NETLINK_NFLOG: "nflog",
	unix.NETLINK_XFRM: "xfrm", unix.NETLINK_SELINUX: "selinux", unix.NETLINK_ISCSI: "iscsi",
	unix.NETLINK_AUDIT: "audit", unix.NETLINK_FIB_LOOKUP: "fiblookup", unix.NETLINK_CONNECTOR: "connector",
	unix.NETLINK_NETFILTER: "nft", unix.NETLINK_IP6_FW: "ip6fw", unix.NETLINK_DNRTMSG: "dec-rt",
	unix.NETLINK_KOBJECT_UEVENT: "uevent", unix.NETLINK_GENERIC: "genl", unix.NETLINK_SCSITRANSPORT: "scsi-trans",
	unix.NETLINK_ECRYPTFS: "ecryptfs", unix.NETLINK_RDMA: "rdma", unix.NETLINK_CRYPTO: "crypto",
}

func netlinkProtoName(p uint8, numeric bool) string {
	if !numeric && int(p) < len(netlinkProtoNames) && netlinkProtoNames[p] != "" {
		return netlinkProtoNames[p]
	}
	return utoa(uint64(p))
}

// llProtoNames are iproute2's Ethernet protocol names (its ll_proto
// table, whose first entry for a number wins: 0x0800 is "ip").
var llProtoNames = map[uint16]string{
	0x0060: "loop", 0x0200: "pup", 0x0201: "pupat", 0x0800: "ip", 0x0805: "x25", 0x0806: "arp",
	0x08ff: "bpq", 0x0a00: "ieeepup", 0x0a01: "ieeepupat", 0x6000: "dec", 0x6001: "dna_dl",
	0x6002: "dna_rc", 0x6003: "dna_rt", 0x6004: "lat", 0x6005: "diag", 0x6006: "cust", 0x6007: "sca",
	0x8035: "rarp", 0x809b: "atalk", 0x80f3: "aarp", 0x8137: "ipx", 0x86dd: "ipv6",
	0x8863: "ppp_disc", 0x8864: "ppp_ses", 0x884c: "atmmpoa", 0x8884: "atmfate", 0x0001: "802_3",
	0x0002: "ax25", 0x0003: "all", 0x0004: "802_2", 0x0005: "snap", 0x0006: "ddcmp",
	0x0007: "wan_ppp", 0x0008: "ppp_mp", 0x0009: "localtalk", 0x000c: "can", 0x0010: "ppptalk",
	0x0011: "tr_802_2", 0x0015: "mobitex", 0x0016: "control", 0x0017: "irda", 0x0018: "econet",
	0x88ca: "tipc", 0x8892: "profinet", 0x88a2: "aoe", 0x88a4: "ethercat", 0x8100: "802.1Q",
	0x88a8: "802.1ad", 0x8847: "mpls_uc", 0x8848: "mpls_mc", 0x6558: "teb", 0x88cc: "LLDP",
}

// llProtoName is iproute2's ll_proto_n2a: the name, or "[N]" for a number
// it has none for and for every number under -n.
func llProtoName(p uint16, numeric bool) string {
	if !numeric {
		if n, ok := llProtoNames[p]; ok {
			return n
		}
	}
	return "[" + utoa(uint64(p)) + "]"
}

// linkKeys sets the JSON keys of a packet or netlink socket: a packet
// socket's Ethernet protocol and interface, a netlink socket's protocol,
// port id, connected peer and groups.
func (j *JSONWriter) linkKeys(r *JSONRow, s *sock.Socket) {
	if p := s.Packet; p != nil {
		proto := p.Protocol
		r.Protocol = &proto
		r.Iface = j.ifaceName(s.Iface)
	}
	if n := s.Netlink; n != nil {
		proto, pid, groups := uint16(n.Protocol), n.PortID, n.Groups
		r.Protocol, r.PortID, r.Groups = &proto, &pid, &groups
		if n.Connected {
			dp, dg := n.DstPortID, n.DstGroup
			r.DstPortID, r.DstGroup = &dp, &dg
		}
	}
}
