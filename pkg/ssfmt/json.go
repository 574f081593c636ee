package ssfmt

import (
	"bufio"
	"encoding/json"
	"io"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// JSONWriter writes one JSON object per socket per line; the keys are
// listed in the package documentation. Names, when set, resolves the
// interface name and cgroup path; nothing else is looked up.
type JSONWriter struct {
	w     *bufio.Writer
	enc   *json.Encoder
	names Names
}

// NewJSONWriter returns a JSONWriter on w. Call Close to flush.
func NewJSONWriter(w io.Writer, names Names) *JSONWriter {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	return &JSONWriter{w: bw, enc: enc, names: names}
}

// Add writes the line for s.
func (j *JSONWriter) Add(s *sock.Socket) error { return j.enc.Encode(j.Row(s)) }

// Close flushes buffered lines.
func (j *JSONWriter) Close() error { return j.w.Flush() }

// JSONRow is the JSON shape of one socket; field tags are the documented,
// stable keys.
type JSONRow struct {
	Netid     string         `json:"netid"`
	Family    string         `json:"family"`
	State     string         `json:"state"`
	RecvQ     uint32         `json:"recvq"`
	SendQ     uint32         `json:"sendq"`
	Saddr     string         `json:"saddr,omitempty"`
	Sport     *uint16        `json:"sport,omitempty"`
	Daddr     string         `json:"daddr,omitempty"`
	Dport     *uint16        `json:"dport,omitempty"`
	Iface     string         `json:"iface,omitempty"`
	Path      string         `json:"path,omitempty"`
	PeerInode *uint64        `json:"peer_inode,omitempty"`
	Pending   []uint64       `json:"pending,omitempty"`
	Protocol  *uint16        `json:"protocol,omitempty"`
	PortID    *int32         `json:"portid,omitempty"`
	DstPortID *uint32        `json:"dst_portid,omitempty"`
	DstGroup  *uint32        `json:"dst_group,omitempty"`
	Groups    *uint64        `json:"groups,omitempty"`
	NetNS     uint64         `json:"netns,omitempty"`
	UID       uint32         `json:"uid"`
	Inode     uint64         `json:"inode"`
	Cookie    uint64         `json:"cookie"`
	Timer     *JSONTimer     `json:"timer,omitempty"`
	Mark      *uint32        `json:"mark,omitempty"`
	CgroupID  *uint64        `json:"cgroup_id,omitempty"`
	Cgroup    string         `json:"cgroup,omitempty"`
	V6Only    *bool          `json:"v6only,omitempty"`
	Shutdown  string         `json:"shutdown,omitempty"`
	TOS       *uint8         `json:"tos,omitempty"`
	TClass    *uint8         `json:"tclass,omitempty"`
	Owners    []JSONProcess  `json:"owners,omitempty"`
	Skmem     *JSONSkmem     `json:"skmem,omitempty"`
	TCPInfo   *JSONTCPInfo   `json:"tcp_info,omitempty"`
	MPTCPInfo *JSONMPTCPInfo `json:"mptcp_info,omitempty"`
}

// JSONTimer is the "timer" object.
type JSONTimer struct {
	Name      string `json:"name"`
	ExpiresMS int64  `json:"expires_ms"`
	Retrans   uint8  `json:"retrans"`
}

// JSONProcess is one entry of "owners".
type JSONProcess struct {
	Comm string `json:"comm"`
	PID  int    `json:"pid"`
	FD   int    `json:"fd"`
	// TID is the thread, under -T only.
	TID int `json:"tid,omitempty"`
}

// JSONSkmem is the "skmem" object.
type JSONSkmem struct {
	RmemAlloc  uint32 `json:"rmem_alloc"`
	RcvBuf     uint32 `json:"rcvbuf"`
	WmemAlloc  uint32 `json:"wmem_alloc"`
	SndBuf     uint32 `json:"sndbuf"`
	FwdAlloc   uint32 `json:"fwd_alloc"`
	WmemQueued uint32 `json:"wmem_queued"`
	OptMem     uint32 `json:"optmem"`
	Backlog    uint32 `json:"backlog"`
	Drops      uint32 `json:"drops"`
}

// Row builds the JSON shape of s.
func (j *JSONWriter) Row(s *sock.Socket) JSONRow {
	r := JSONRow{
		Netid:    Netid(s),
		State:    s.State.String(),
		RecvQ:    s.RecvQ,
		SendQ:    s.SendQ,
		NetNS:    s.NetNS,
		UID:      s.UID,
		Inode:    s.Inode,
		Cookie:   s.Cookie,
		Mark:     s.Mark,
		CgroupID: s.CgroupID,
		TOS:      s.TOS,
		TClass:   s.TClass,
	}
	switch s.Family {
	case unix.AF_INET:
		r.Family = "inet"
	case unix.AF_INET6:
		r.Family = "inet6"
		r.V6Only = s.V6Only
	default:
		r.Family = sock.FamilyName(s.Family)
	}
	switch s.Proto {
	case sock.ProtoPacket, sock.ProtoNetlink:
		j.linkKeys(&r, s)
	case sock.ProtoUNIX:
		r.Family = "unix"
		var peer uint64
		if s.Unix != nil {
			if s.Unix.Path != "" {
				r.Path = unixName(s.Unix.Path)
			}
			peer = s.Unix.PeerInode
			r.Pending = s.Unix.Pending
		}
		r.PeerInode = &peer
	default:
		sp, dp := s.Local.Port(), s.Peer.Port()
		r.Saddr, r.Sport = addrText(s.Local.Addr(), s.Family), &sp
		r.Daddr, r.Dport = addrText(s.Peer.Addr(), s.Family), &dp
		r.Iface = j.ifaceName(s.Iface)
	}
	if s.Timer.Kind != 0 {
		r.Timer = &JSONTimer{Name: TimerName(s.Timer.Kind), ExpiresMS: max(s.Timer.Expires.Milliseconds(), 0), Retrans: s.Timer.Retrans}
	}
	if s.CgroupID != nil && j.names != nil {
		if p, ok := j.names.Cgroup(*s.CgroupID); ok {
			r.Cgroup = p
		}
	}
	if s.Shutdown != nil {
		r.Shutdown = ShutdownString(*s.Shutdown)
	}
	for _, p := range s.Procs {
		r.Owners = append(r.Owners, JSONProcess(p))
	}
	if m := s.Mem; m != nil {
		r.Skmem = &JSONSkmem{m.RmemAlloc, m.RcvBuf, m.WmemAlloc, m.SndBuf, m.FwdAlloc, m.WmemQueued, m.OptMem, m.Backlog, m.Drops}
	}
	if s.TCP != nil {
		r.TCPInfo = tcpInfoJSON(s.TCP)
	}
	if m := s.MPTCPInfo; m != nil {
		r.MPTCPInfo = &JSONMPTCPInfo{m.Subflows, m.AddAddrSignal, m.AddAddrAccepted, m.SubflowsMax,
			m.AddAddrSignalMax, m.AddAddrAcceptedMax, m.Flags, m.Token, m.WriteSeq, m.SndUna, m.RcvNxt}
	}
	return r
}

// JSONMPTCPInfo is an MPTCP socket's "mptcp_info" (-i): the kernel's
// struct mptcp_info fields ss prints, in their own units.
type JSONMPTCPInfo struct {
	Subflows           uint8  `json:"subflows"`
	AddAddrSignal      uint8  `json:"add_addr_signal"`
	AddAddrAccepted    uint8  `json:"add_addr_accepted"`
	SubflowsMax        uint8  `json:"subflows_max"`
	AddAddrSignalMax   uint8  `json:"add_addr_signal_max"`
	AddAddrAcceptedMax uint8  `json:"add_addr_accepted_max"`
	Flags              uint32 `json:"flags"`
	Token              uint32 `json:"token"`
	WriteSeq           uint64 `json:"write_seq"`
	SndUna             uint64 `json:"snd_una"`
	RcvNxt             uint64 `json:"rcv_nxt"`
}

// ifaceName names a bound interface: its name, "ifN" when Names has none,
// "" for 0 (unbound).
func (j *JSONWriter) ifaceName(index uint32) string {
	if index == 0 {
		return ""
	}
	if j.names != nil {
		if n, ok := j.names.Iface(index); ok {
			return n
		}
	}
	return "if" + utoa(uint64(index))
}

// addrText is the canonical text of an address: dotted quad for IPv4
// sockets, inet_ntop's form for IPv6 ones.
func addrText(a netip.Addr, family uint8) string {
	if !a.IsValid() {
		if family == unix.AF_INET6 {
			return "::"
		}
		return "0.0.0.0"
	}
	if family == unix.AF_INET6 {
		return NtoP6(a.As16())
	}
	return a.Unmap().String()
}
