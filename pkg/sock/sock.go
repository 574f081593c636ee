// Package sock defines the socket row shared by every source and every
// consumer in sstrace: a one-shot sock_diag dump (pkg/sockdiag) and, later,
// the event-maintained table produce []Socket; the filter (pkg/filter) and
// the renderers (pkg/ssfmt, JSON) consume it. Keeping a single row type is
// what lets `sstrace ss` and a query against the daemon share one query and
// render path: only the source of the rows differs.
//
// The fields are the kernel's, not ss's: numbers stay numbers (states are the
// kernel's TCP_* values, timers are the raw idiag_timer codes) so that the
// renderer decides presentation and the table can compare rows cheaply.
package sock

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Proto is the transport protocol of a socket, as `ss` groups them (its
// "Netid" column).
type Proto uint8

// Protocols sstrace dumps. The zero value is deliberately invalid.
const (
	ProtoTCP Proto = iota + 1
	ProtoUDP
	ProtoRAW
	ProtoUNIX
	// ProtoMPTCP is Multipath TCP (IPPROTO_MPTCP, 262): the MPTCP socket
	// an application holds; its subflows are TCP sockets of their own.
	ProtoMPTCP
	// ProtoPacket is AF_PACKET (ss -0): raw and datagram packet sockets,
	// told apart by Socket.Packet.Type.
	ProtoPacket
	// ProtoNetlink is AF_NETLINK (ss -A netlink).
	ProtoNetlink
	// ProtoSCTP, ProtoDCCP, ProtoVsock, ProtoTIPC and ProtoXDP are ss's
	// other tables: sstrace asks the kernel for them as ss does, and
	// answers as ss does where the kernel has no sock_diag module for
	// them (pkg/sockdiag does not decode their rows).
	ProtoSCTP
	ProtoDCCP
	ProtoVsock
	ProtoTIPC
	ProtoXDP
)

// String returns the lower-case protocol name ("tcp", "udp", "raw", "unix",
// "mptcp", "packet", "netlink", ...).
func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoRAW:
		return "raw"
	case ProtoUNIX:
		return "unix"
	case ProtoMPTCP:
		return "mptcp"
	case ProtoPacket:
		return "packet"
	case ProtoNetlink:
		return "netlink"
	case ProtoSCTP:
		return "sctp"
	case ProtoDCCP:
		return "dccp"
	case ProtoVsock:
		return "vsock"
	case ProtoTIPC:
		return "tipc"
	case ProtoXDP:
		return "xdp"
	}
	return "unknown"
}

// State is a socket state with the kernel's numbering (include/net/tcp_states.h).
// UDP, RAW and UNIX sockets reuse the same numbers, as the kernel does when it
// reports them through sock_diag (an unconnected UDP socket is Close, a
// connected one Established; a listening UNIX socket is Listen).
type State uint8

// Kernel TCP states. The values are ABI: they come straight from the kernel
// in sock_diag replies and in tracepoint events.
const (
	Established State = 1
	SynSent     State = 2
	SynRecv     State = 3
	FinWait1    State = 4
	FinWait2    State = 5
	TimeWait    State = 6
	Close       State = 7
	CloseWait   State = 8
	LastAck     State = 9
	Listen      State = 10
	Closing     State = 11
	NewSynRecv  State = 12
	// MaxState is the highest state number the kernel defines today.
	MaxState = NewSynRecv
)

var kernelStateNames = [...]string{
	Established: "ESTABLISHED",
	SynSent:     "SYN_SENT",
	SynRecv:     "SYN_RECV",
	FinWait1:    "FIN_WAIT1",
	FinWait2:    "FIN_WAIT2",
	TimeWait:    "TIME_WAIT",
	Close:       "CLOSE",
	CloseWait:   "CLOSE_WAIT",
	LastAck:     "LAST_ACK",
	Listen:      "LISTEN",
	Closing:     "CLOSING",
	NewSynRecv:  "NEW_SYN_RECV",
}

// ssStateLabels are the labels `ss` prints in its State column
// (iproute2 misc/ss.c, sstate_name). ss maps NEW_SYN_RECV, which only request
// sockets have, to SYN-RECV as well.
var ssStateLabels = [...]string{
	Established: "ESTAB",
	SynSent:     "SYN-SENT",
	SynRecv:     "SYN-RECV",
	FinWait1:    "FIN-WAIT-1",
	FinWait2:    "FIN-WAIT-2",
	TimeWait:    "TIME-WAIT",
	Close:       "UNCONN",
	CloseWait:   "CLOSE-WAIT",
	LastAck:     "LAST-ACK",
	Listen:      "LISTEN",
	Closing:     "CLOSING",
	NewSynRecv:  "SYN-RECV",
}

// Valid reports whether s is a state the kernel defines.
func (s State) Valid() bool { return s >= Established && s <= MaxState }

// String returns the kernel's name without the TCP_ prefix ("SYN_SENT"), or
// "UNKNOWN(n)" for a number the kernel does not define.
func (s State) String() string {
	if !s.Valid() {
		return "UNKNOWN(" + strconv.Itoa(int(s)) + ")"
	}
	return kernelStateNames[s]
}

// SSLabel returns the label `ss` prints for s ("ESTAB", "UNCONN", ...).
func (s State) SSLabel() string {
	if !s.Valid() {
		return "UNKNOWN"
	}
	return ssStateLabels[s]
}

// ParseKernelState maps a kernel state name, with or without the "TCP_"
// prefix, case-insensitively, to its State.
func ParseKernelState(name string) (State, bool) {
	n := strings.TrimPrefix(strings.ToUpper(name), "TCP_")
	for s := Established; s <= MaxState; s++ {
		if kernelStateNames[s] == n {
			return s, true
		}
	}
	return 0, false
}

// StateSet is a set of states, one bit per state number (bit n is state n),
// the same encoding sock_diag's idiag_states uses.
type StateSet uint32

// AllStates holds every state the kernel defines.
const AllStates StateSet = (1<<(MaxState+1) - 1) &^ 1

// Has reports whether st is in the set.
func (s StateSet) Has(st State) bool { return s&(1<<st) != 0 }

// With returns the set with st added.
func (s StateSet) With(st State) StateSet { return s | 1<<st }

// Without returns the set with st removed.
func (s StateSet) Without(st State) StateSet { return s &^ (1 << st) }

// Timer is the kernel's socket timer as sock_diag reports it
// (idiag_timer, idiag_expires, idiag_retrans).
type Timer struct {
	// Kind is the raw idiag_timer code: 0 none, 1 retransmit ("on"),
	// 2 keepalive, 3 TIME-WAIT, 4 zero-window probe.
	Kind uint8
	// Expires is the time left until the timer fires (may be negative for
	// a timer that is overdue, as the kernel reports it).
	Expires time.Duration
	// Retrans is the retransmit or probe count.
	Retrans uint8
}

// Process is one process holding a file descriptor on the socket.
type Process struct {
	Comm string
	PID  int
	FD   int
	// TID is the thread holding the descriptor, for ss -T (every thread
	// of a process shares its descriptors, and ss -T lists each); 0 when
	// threads were not asked for.
	TID int
}

// MemInfo is the socket memory accounting (INET_DIAG_SKMEMINFO,
// UNIX_DIAG_MEMINFO), in the kernel's SK_MEMINFO_* order.
type MemInfo struct {
	RmemAlloc  uint32
	RcvBuf     uint32
	WmemAlloc  uint32
	SndBuf     uint32
	FwdAlloc   uint32
	WmemQueued uint32
	OptMem     uint32
	Backlog    uint32
	Drops      uint32
}

// TCPInfo is the kernel's struct tcp_info (INET_DIAG_INFO) plus the
// attributes ss prints next to it under -i. Len is how many bytes of Info the
// kernel filled: older kernels send a shorter struct, and fields past Len
// must not be shown (ss applies the same rule).
type TCPInfo struct {
	Info unix.TCPInfo
	Len  int
	// The bitfields in bytes 6 and 7 of struct tcp_info, which
	// unix.TCPInfo treats as padding.
	SndWscale              uint8
	RcvWscale              uint8
	DeliveryRateAppLimited bool
	FastopenClientFail     uint8
	// Congestion is the congestion-control algorithm (INET_DIAG_CONG).
	Congestion string
	// BBR, DCTCP and Vegas hold the algorithm-specific attributes when the
	// kernel sent them; nil otherwise.
	BBR   *unix.TCPBBRInfo
	DCTCP *unix.TCPDCTCPInfo
	Vegas *unix.TCPVegasInfo
	// ULP is INET_DIAG_ULP_INFO: the upper layer protocol on the
	// connection (kTLS, an MPTCP subflow); nil when there is none.
	ULP *ULPInfo
	// MD5Keys are the socket's TCP-MD5 keys (INET_DIAG_MD5SIG, sent to a
	// caller with CAP_NET_ADMIN); nil when it has none.
	MD5Keys []MD5Key
}

// MD5Key is one TCP-MD5 signature key of a socket (struct
// tcp_diag_md5sig): the peers it applies to and the key.
type MD5Key struct {
	Prefix netip.Prefix
	Key    []byte
}

// ULPInfo is a TCP socket's upper layer protocol (INET_DIAG_ULP_INFO).
type ULPInfo struct {
	// Name is INET_ULP_INFO_NAME ("tls", "mptcp").
	Name string
	// TLS holds kTLS's INET_ULP_INFO_TLS attributes; nil for another ULP.
	TLS *TLSInfo
	// MPTCP holds an MPTCP subflow's INET_ULP_INFO_MPTCP attributes; nil
	// for another ULP.
	MPTCP *MPTCPSubflow
}

// MPTCPInfo is the part of an MPTCP socket's struct mptcp_info
// (include/uapi/linux/mptcp.h) that ss 6.1 prints.
type MPTCPInfo struct {
	Subflows, AddAddrSignal, AddAddrAccepted          uint8
	SubflowsMax, AddAddrSignalMax, AddAddrAcceptedMax uint8
	// Flags are MPTCP_INFO_FLAG_*: 1 fallback, 2 remote key received.
	Flags, Token             uint32
	WriteSeq, SndUna, RcvNxt uint64
}

// The MPTCP_SUBFLOW_ATTR_* numbers (include/uapi/linux/mptcp.h): the
// attributes nested in INET_ULP_INFO_MPTCP, and the bits of
// MPTCPSubflow.Has.
const (
	MPTCPSubflowTokenRem   = 1
	MPTCPSubflowTokenLoc   = 2
	MPTCPSubflowMapSeq     = 4
	MPTCPSubflowMapSfseq   = 5
	MPTCPSubflowSsnOffset  = 6
	MPTCPSubflowMapDatalen = 7
	MPTCPSubflowFlags      = 8
	MPTCPSubflowIDRem      = 9
	MPTCPSubflowIDLoc      = 10
)

// MPTCPSubflow is an MPTCP subflow's state (include/uapi/linux/mptcp.h,
// MPTCP_SUBFLOW_ATTR_*). A field the kernel did not send is 0; Has says
// which were (bit n: attribute n).
type MPTCPSubflow struct {
	// Flags are MPTCP_SUBFLOW_FLAG_*.
	Flags              uint32
	TokenRem, TokenLoc uint32
	IDRem, IDLoc       uint8
	MapSeq             uint64
	MapSfseq           uint32
	SsnOffset          uint32
	MapDatalen         uint32
	Has                uint32
}

// TLSInfo is kTLS's state (include/uapi/linux/tls.h, TLS_INFO_*). A field
// the kernel did not send is 0 (false for ZeroCopyTX); Has says which were.
type TLSInfo struct {
	Version uint16 // TLS_1_2_VERSION 0x0303, TLS_1_3_VERSION 0x0304
	Cipher  uint16 // TLS_CIPHER_* (51 aes-gcm-128, 52 aes-gcm-256, ...)
	// RXConf and TXConf are TLS_CONF_*: 1 base (none), 2 sw, 3 hw,
	// 4 hw-record.
	RXConf, TXConf uint16
	// ZeroCopyTX is TLS_INFO_ZC_RO_TX (TLS_TX_ZEROCOPY_RO set).
	ZeroCopyTX bool
	// Has is a bit per TLS_INFO_* attribute present (bit n: attribute n).
	Has uint32
}

// UnixInfo holds what only UNIX sockets have.
type UnixInfo struct {
	// Type is unix.SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
	Type uint8
	// Path is the bound name; abstract names start with "@" as ss shows them.
	Path string
	// PeerInode is the inode of the connected peer, 0 when unconnected.
	PeerInode uint64
	// Pending is the inodes of not-yet-accepted connections of a listener.
	Pending []uint64
	// VFS is the file a path-bound socket is bound to (UNIX_DIAG_VFS);
	// nil for abstract and unbound sockets.
	VFS *UnixVFS
}

// UnixVFS identifies the file a UNIX socket is bound to.
type UnixVFS struct {
	Inode uint32
	// Dev is the kernel's device number of the file's filesystem, as the
	// kernel sends it (ss splits it with glibc's major()/minor()).
	Dev uint32
}

// PacketInfo holds what only AF_PACKET sockets have (packet_diag). The
// bound interface is Socket.Iface, the receive queue Socket.RecvQ.
type PacketInfo struct {
	// Type is unix.SOCK_RAW or SOCK_DGRAM.
	Type uint8
	// Protocol is the Ethernet protocol the socket receives (ETH_P_*, host
	// order; 3 is ETH_P_ALL), 0 for none.
	Protocol uint16
	// Version, CopyThresh and Flags are packet_diag_info (PACKET_DIAG_INFO);
	// Flags holds the PDI_* bits.
	Version    uint32
	CopyThresh uint32
	Flags      uint32
	// RxRing and TxRing are the PACKET_RX_RING/TX_RING set-up, nil when
	// none was set up.
	RxRing, TxRing *PacketRing
	// Fanout is PACKET_FANOUT's id (low 16 bits) and type (high 16 bits),
	// nil when the socket is in no fanout group.
	Fanout *uint32
}

// PacketRing is one mmap ring of a packet socket (struct packet_diag_ring).
type PacketRing struct {
	BlockSize, BlockNr, FrameSize, FrameNr, RetireTmo, Features uint32
}

// NetlinkInfo holds what only AF_NETLINK sockets have (netlink_diag).
type NetlinkInfo struct {
	// Protocol is the netlink family (unix.NETLINK_ROUTE, ...).
	Protocol uint8
	// PortID is the socket's port id: 0 for the kernel's socket, a PID
	// or a negative number the kernel chose for the others.
	PortID int32
	// Connected reports NETLINK_CONNECTED: DstPortID and DstGroup are the
	// peer it is connected to.
	Connected bool
	DstPortID uint32
	DstGroup  uint32
	// Groups is the first word of the multicast group bitmap (the groups
	// 1-64 the socket listens to).
	Groups uint64
}

// Socket is one socket: a row of the table and of `ss` output.
type Socket struct {
	Proto  Proto
	Family uint8 // unix.AF_INET, AF_INET6, AF_UNIX, AF_PACKET or AF_NETLINK
	State  State
	// NetNS is the inode of the socket's network namespace.
	NetNS uint64

	// Local and Peer are the endpoints of an inet socket; zero for UNIX, packet and netlink sockets.
	Local netip.AddrPort
	Peer  netip.AddrPort
	// Iface is the bound interface index (SO_BINDTODEVICE), 0 when unbound.
	Iface uint32

	RecvQ uint32
	SendQ uint32
	UID   uint32
	// Inode is the socket inode; 0 for TIME-WAIT and request sockets,
	// which are not files.
	Inode uint64
	// Cookie is the kernel's socket cookie (idiag_cookie): the key that
	// joins sock_diag rows and tracer events.
	Cookie uint64
	Timer  Timer

	// Optional attributes, present when requested and sent by the kernel.
	Mark     *uint32 // INET_DIAG_MARK (needs CAP_NET_ADMIN)
	CgroupID *uint64 // INET_DIAG_CGROUP_ID (kernel >= 5.7)
	Shutdown *uint8  // INET_DIAG_SHUTDOWN / UNIX_DIAG_SHUTDOWN
	TOS      *uint8
	TClass   *uint8
	// V6Only reports IPV6_V6ONLY for AF_INET6 sockets when known.
	V6Only *bool
	// ClassID is INET_DIAG_CLASS_ID: the net_cls class id, or the
	// socket's SO_PRIORITY when it has none (sent with TOS, full sockets
	// only).
	ClassID *uint32
	// Sockopt is INET_DIAG_SOCKOPT (kernel >= 5.10), struct
	// inet_diag_sockopt's two bytes of flags as the kernel lays them out
	// (see ssfmt's --inet-sockopt).
	Sockopt *[2]byte
	// RawProtocol is the IP protocol number of a RAW socket.
	RawProtocol uint8

	Mem *MemInfo
	TCP *TCPInfo
	// MPTCPInfo is an MPTCP socket's struct mptcp_info (its
	// INET_DIAG_INFO, under -i); nil for other sockets.
	MPTCPInfo *MPTCPInfo
	Unix      *UnixInfo
	Packet    *PacketInfo
	Netlink   *NetlinkInfo

	// Procs lists the processes holding the socket; filled only when
	// process attribution was asked for (ss -p).
	Procs []Process
}

// FamilyName returns the name ss gives an address family ("inet", "inet6",
// "unix", "link", "netlink", "vsock", "tipc", "xdp"), or "family-N".
func FamilyName(f uint8) string {
	switch f {
	case unix.AF_INET:
		return "inet"
	case unix.AF_INET6:
		return "inet6"
	case unix.AF_UNIX:
		return "unix"
	case unix.AF_PACKET:
		return "link"
	case unix.AF_NETLINK:
		return "netlink"
	case unix.AF_VSOCK:
		return "vsock"
	case unix.AF_TIPC:
		return "tipc"
	case unix.AF_XDP:
		return "xdp"
	}
	return "family-" + strconv.Itoa(int(f))
}
