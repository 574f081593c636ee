package sockdiag

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// decoder turns sock_diag replies into one reused row. The optional fields
// of the row point into the decoder's own storage, so a reply decodes
// without allocating (except UNIX path names, which become strings).
type decoder struct {
	row      sock.Socket
	netnsIno uint64

	mark     uint32
	cgroupID uint64
	shutdown uint8
	tos      uint8
	tclass   uint8
	v6only   bool
	classID  uint32
	sockopt  [2]byte
	ulp      sock.ULPInfo
	tls      sock.TLSInfo
	subflow  sock.MPTCPSubflow
	mptcp    sock.MPTCPInfo
	md5      []sock.MD5Key
	mem      sock.MemInfo
	tcp      sock.TCPInfo
	bbr      unix.TCPBBRInfo
	dctcp    unix.TCPDCTCPInfo
	vegas    unix.TCPVegasInfo
	unix     sock.UnixInfo
	vfs      sock.UnixVFS
	pending  []uint64
	packet   sock.PacketInfo
	rxRing   sock.PacketRing
	txRing   sock.PacketRing
	fanout   uint32
	netlink  sock.NetlinkInfo
	// congNames interns congestion-control names: a handful of distinct
	// values across 100k sockets, so one string each.
	congNames map[string]string
}

func newDecoder(netnsIno uint64) *decoder {
	return &decoder{netnsIno: netnsIno}
}

// decode parses one SOCK_DIAG_BY_FAMILY payload of pass p. ok is false for a
// message that is not of the expected shape family-wise (skipped).
func (d *decoder) decode(p pass, b []byte) (*sock.Socket, bool, error) {
	switch p.proto {
	case sock.ProtoUNIX:
		return d.decodeUnix(b)
	case sock.ProtoPacket:
		return d.decodePacket(b)
	case sock.ProtoNetlink:
		return d.decodeNetlink(b)
	case sock.ProtoSCTP, sock.ProtoDCCP, sock.ProtoVsock, sock.ProtoTIPC, sock.ProtoXDP:
		return nil, false, notDecoded(p.proto)
	}
	return d.decodeInet(p.proto, b)
}

func (d *decoder) decodeInet(proto sock.Proto, b []byte) (*sock.Socket, bool, error) {
	if len(b) < inetMsgLen {
		return nil, false, fmt.Errorf("inet_diag_msg of %d bytes, want %d", len(b), inetMsgLen)
	}
	r := &d.row
	*r = sock.Socket{}
	family := b[0]
	switch family {
	case unix.AF_INET:
		r.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[8:12])), binary.BigEndian.Uint16(b[4:]))
		r.Peer = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[24:28])), binary.BigEndian.Uint16(b[6:]))
	case unix.AF_INET6:
		r.Local = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), binary.BigEndian.Uint16(b[4:]))
		r.Peer = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[24:40])), binary.BigEndian.Uint16(b[6:]))
	default:
		return nil, false, nil
	}
	r.Proto = proto
	r.Family = family
	r.State = sock.State(b[1])
	r.NetNS = d.netnsIno
	r.Timer = sock.Timer{
		Kind: b[2],
		// idiag_expires is in milliseconds. Read as signed: old
		// kernels sent an overdue timer as a wrapped negative delta.
		Expires: time.Duration(int32(ne.Uint32(b[52:]))) * time.Millisecond,
		Retrans: b[3],
	}
	r.Iface = ne.Uint32(b[40:])
	r.Cookie = uint64(ne.Uint32(b[44:])) | uint64(ne.Uint32(b[48:]))<<32
	r.RecvQ = ne.Uint32(b[56:])
	r.SendQ = ne.Uint32(b[60:])
	r.UID = ne.Uint32(b[64:])
	r.Inode = uint64(ne.Uint32(b[68:]))

	var tcpLen int
	var haveBBR, haveDCTCP, haveVegas, haveCong, haveULP, haveMD5 bool
	var cong []byte
	err := walkAttrs(b[inetMsgLen:], func(typ uint16, v []byte) error {
		switch typ {
		case inetDiagShutdown:
			if len(v) >= 1 {
				d.shutdown = v[0]
				r.Shutdown = &d.shutdown
			}
		case inetDiagTOS:
			if len(v) >= 1 {
				d.tos = v[0]
				r.TOS = &d.tos
			}
		case inetDiagTClass:
			if len(v) >= 1 {
				d.tclass = v[0]
				r.TClass = &d.tclass
			}
		case inetDiagSkV6Only:
			if len(v) >= 1 {
				d.v6only = v[0] != 0
				r.V6Only = &d.v6only
			}
		case inetDiagMark:
			if len(v) >= 4 {
				d.mark = ne.Uint32(v)
				r.Mark = &d.mark
			}
		case inetDiagCgroupID:
			if len(v) >= 8 {
				d.cgroupID = ne.Uint64(v)
				r.CgroupID = &d.cgroupID
			}
		case inetDiagClassID:
			if len(v) >= 4 {
				d.classID = ne.Uint32(v)
				r.ClassID = &d.classID
			}
		case inetDiagSockopt:
			if len(v) >= 2 {
				d.sockopt = [2]byte(v[:2])
				r.Sockopt = &d.sockopt
			}
		case inetDiagULPInfo:
			haveULP = true
			return d.decodeULP(v)
		case inetDiagMD5Sig:
			haveMD5 = true
			d.decodeMD5(v)
		case inetDiagProtocol:
			if len(v) >= 1 {
				r.RawProtocol = v[0]
			}
		case inetDiagSkMeminfo:
			d.meminfo(r, v)
		case inetDiagInfo:
			if proto == sock.ProtoMPTCP {
				d.mptcp = decodeMPTCPInfo(v)
				r.MPTCPInfo = &d.mptcp
				return nil
			}
			d.tcp.Info = unix.TCPInfo{}
			tcpLen = copyStruct(&d.tcp.Info, v)
			d.tcp.SndWscale, d.tcp.RcvWscale, d.tcp.DeliveryRateAppLimited, d.tcp.FastopenClientFail = 0, 0, false, 0
			if len(v) >= 8 {
				// Bitfields (little-endian: first declared is lowest):
				// byte 6 snd_wscale:4 rcv_wscale:4; byte 7
				// delivery_rate_app_limited:1 fastopen_client_fail:2.
				d.tcp.SndWscale, d.tcp.RcvWscale = v[6]&0xf, v[6]>>4
				d.tcp.DeliveryRateAppLimited = v[7]&1 != 0
				d.tcp.FastopenClientFail = (v[7] >> 1) & 3
			}
		case inetDiagCong:
			cong = v
			haveCong = true
		case inetDiagBBRInfo:
			d.bbr = unix.TCPBBRInfo{}
			copyStruct(&d.bbr, v)
			haveBBR = true
		case inetDiagDCTCPInfo:
			d.dctcp = unix.TCPDCTCPInfo{}
			copyStruct(&d.dctcp, v)
			haveDCTCP = true
		case inetDiagVegasInfo:
			d.vegas = unix.TCPVegasInfo{}
			copyStruct(&d.vegas, v)
			haveVegas = true
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	// The ULP rides along with the TCP information (-i), never alone.
	if tcpLen > 0 || haveCong || haveBBR || haveDCTCP || haveVegas {
		t := &d.tcp
		t.Len = tcpLen
		if tcpLen == 0 {
			t.Info = unix.TCPInfo{}
		}
		t.Congestion = ""
		if haveCong {
			t.Congestion = d.intern(cstring(cong))
		}
		t.BBR, t.DCTCP, t.Vegas = nil, nil, nil
		if haveBBR {
			t.BBR = &d.bbr
		}
		if haveDCTCP {
			t.DCTCP = &d.dctcp
		}
		if haveVegas {
			t.Vegas = &d.vegas
		}
		t.ULP = nil
		if haveULP {
			t.ULP = &d.ulp
		}
		t.MD5Keys = nil
		if haveMD5 && len(d.md5) > 0 {
			t.MD5Keys = d.md5
		}
		r.TCP = t
	}
	return r, true, nil
}

// decodeULP reads INET_DIAG_ULP_INFO's nested attributes into d.ulp: the
// name and, for kTLS, its version, cipher and configurations.
func (d *decoder) decodeULP(b []byte) error {
	d.ulp = sock.ULPInfo{}
	return walkAttrs(b, func(typ uint16, v []byte) error {
		switch typ {
		case inetULPInfoName:
			d.ulp.Name = d.intern(cstring(v))
		case inetULPInfoMPTCP:
			d.subflow = sock.MPTCPSubflow{}
			d.ulp.MPTCP = &d.subflow
			return walkAttrs(v, func(typ uint16, v []byte) error {
				if typ < 32 {
					d.subflow.Has |= 1 << typ
				}
				u32 := func() uint32 {
					if len(v) >= 4 {
						return ne.Uint32(v)
					}
					return 0
				}
				switch typ {
				case sock.MPTCPSubflowFlags:
					d.subflow.Flags = u32()
				case sock.MPTCPSubflowTokenRem:
					d.subflow.TokenRem = u32()
				case sock.MPTCPSubflowTokenLoc:
					d.subflow.TokenLoc = u32()
				case sock.MPTCPSubflowIDRem, sock.MPTCPSubflowIDLoc:
					var id uint8
					if len(v) >= 1 {
						id = v[0]
					}
					if typ == sock.MPTCPSubflowIDRem {
						d.subflow.IDRem = id
					} else {
						d.subflow.IDLoc = id
					}
				case sock.MPTCPSubflowMapSeq:
					if len(v) >= 8 {
						d.subflow.MapSeq = ne.Uint64(v)
					}
				case sock.MPTCPSubflowMapSfseq:
					d.subflow.MapSfseq = u32()
				case sock.MPTCPSubflowSsnOffset:
					d.subflow.SsnOffset = u32()
				case sock.MPTCPSubflowMapDatalen:
					d.subflow.MapDatalen = u32()
				}
				return nil
			})
		case inetULPInfoTLS:
			d.tls = sock.TLSInfo{}
			d.ulp.TLS = &d.tls
			return walkAttrs(v, func(typ uint16, v []byte) error {
				if typ < 32 {
					d.tls.Has |= 1 << typ
				}
				var val uint16
				if len(v) >= 2 {
					val = ne.Uint16(v)
				}
				switch typ {
				case tlsInfoVersion:
					d.tls.Version = val
				case tlsInfoCipher:
					d.tls.Cipher = val
				case tlsInfoTXConf:
					d.tls.TXConf = val
				case tlsInfoRXConf:
					d.tls.RXConf = val
				case tlsInfoZCROTX:
					d.tls.ZeroCopyTX = true
				}
				return nil
			})
		}
		return nil
	})
}

// decodeMPTCPInfo reads struct mptcp_info; a shorter one (an older
// kernel's) leaves the missing fields 0, as ss reads it.
func decodeMPTCPInfo(v []byte) sock.MPTCPInfo {
	var b [40]byte
	copy(b[:], v)
	return sock.MPTCPInfo{
		Subflows: b[0], AddAddrSignal: b[1], AddAddrAccepted: b[2],
		SubflowsMax: b[3], AddAddrSignalMax: b[4], AddAddrAcceptedMax: b[5],
		Flags: ne.Uint32(b[8:]), Token: ne.Uint32(b[12:]),
		WriteSeq: ne.Uint64(b[16:]), SndUna: ne.Uint64(b[24:]), RcvNxt: ne.Uint64(b[32:]),
	}
}

// decodeMD5 reads INET_DIAG_MD5SIG: an array of struct tcp_diag_md5sig
// (family, prefix length, key length, address, key).
func (d *decoder) decodeMD5(v []byte) {
	d.md5 = d.md5[:0]
	for ; len(v) >= tcpDiagMD5SigLen; v = v[tcpDiagMD5SigLen:] {
		var addr netip.Addr
		switch v[0] {
		case unix.AF_INET:
			addr = netip.AddrFrom4([4]byte(v[4:8]))
		case unix.AF_INET6:
			addr = netip.AddrFrom16([16]byte(v[4:20]))
		default:
			continue
		}
		keyLen := min(int(ne.Uint16(v[2:])), tcpDiagMD5SigLen-20)
		d.md5 = append(d.md5, sock.MD5Key{
			Prefix: netip.PrefixFrom(addr, int(v[1])),
			Key:    append([]byte(nil), v[20:20+keyLen]...),
		})
	}
}

func (d *decoder) decodeUnix(b []byte) (*sock.Socket, bool, error) {
	if len(b) < unixMsgLen {
		return nil, false, fmt.Errorf("unix_diag_msg of %d bytes, want %d", len(b), unixMsgLen)
	}
	if b[0] != unix.AF_UNIX {
		return nil, false, nil
	}
	r := &d.row
	*r = sock.Socket{}
	r.Proto = sock.ProtoUNIX
	r.Family = unix.AF_UNIX
	r.State = sock.State(b[2])
	r.NetNS = d.netnsIno
	r.Inode = uint64(ne.Uint32(b[4:]))
	r.Cookie = uint64(ne.Uint32(b[8:])) | uint64(ne.Uint32(b[12:]))<<32
	u := &d.unix
	*u = sock.UnixInfo{Type: b[1]}
	d.pending = d.pending[:0]
	havePending := false
	err := walkAttrs(b[unixMsgLen:], func(typ uint16, v []byte) error {
		switch typ {
		case unixDiagName:
			u.Path = unixName(v)
		case unixDiagVFS:
			if len(v) >= 8 {
				d.vfs = sock.UnixVFS{Inode: ne.Uint32(v), Dev: ne.Uint32(v[4:])}
				u.VFS = &d.vfs
			}
		case unixDiagPeer:
			if len(v) >= 4 {
				u.PeerInode = uint64(ne.Uint32(v))
			}
		case unixDiagIcons:
			havePending = true
			for ; len(v) >= 4; v = v[4:] {
				d.pending = append(d.pending, uint64(ne.Uint32(v)))
			}
		case unixDiagRqlen:
			if len(v) >= 8 {
				r.RecvQ = ne.Uint32(v)
				r.SendQ = ne.Uint32(v[4:])
			}
		case unixDiagMeminfo:
			d.meminfo(r, v)
		case unixDiagShutdown:
			if len(v) >= 1 {
				d.shutdown = v[0]
				r.Shutdown = &d.shutdown
			}
		case unixDiagUID:
			if len(v) >= 4 {
				r.UID = ne.Uint32(v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if havePending {
		u.Pending = d.pending
	}
	r.Unix = u
	return r, true, nil
}

// unixName renders a bound name as ss does: a path as is; an abstract name
// (leading NUL) with every NUL shown as '@'.
func unixName(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	if v[0] != 0 {
		// A path ends at its NUL; binders may count it in the length.
		return string(cstring(v))
	}
	out := make([]byte, len(v))
	for i, c := range v {
		if c == 0 {
			c = '@'
		}
		out[i] = c
	}
	return string(out)
}

// walkAttrs calls fn for every netlink attribute in b.
func walkAttrs(b []byte, fn func(typ uint16, v []byte) error) error {
	for len(b) >= nlaHdrLen {
		l := int(ne.Uint16(b[0:]))
		typ := ne.Uint16(b[2:]) & nlaTypeMask
		if l < nlaHdrLen || l > len(b) {
			return fmt.Errorf("malformed attribute %d: length %d of %d bytes left", typ, l, len(b))
		}
		if err := fn(typ, b[nlaHdrLen:l]); err != nil {
			return err
		}
		n := nlaAlign(l)
		if n > len(b) {
			n = len(b)
		}
		b = b[n:]
	}
	return nil
}

// meminfo sets r.Mem from a meminfo attribute (every family's
// *_DIAG_MEMINFO carries the same sk_meminfo array), in d's storage.
func (d *decoder) meminfo(r *sock.Socket, v []byte) {
	d.mem = sock.MemInfo{}
	copyStruct(&d.mem, v)
	r.Mem = &d.mem
}

// copyStruct copies the kernel's bytes into the fixed-layout struct *dst
// (already zeroed) and returns how many bytes it took. A shorter payload
// leaves the tail zero (older kernel); a longer one is cut (newer kernel):
// the layout is append-only ABI, so both are safe.
func copyStruct[T any](dst *T, v []byte) int {
	raw := unsafe.Slice((*byte)(unsafe.Pointer(dst)), unsafe.Sizeof(*dst))
	return copy(raw, v)
}

func cstring(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

func (d *decoder) intern(b []byte) string {
	if s, ok := d.congNames[string(b)]; ok {
		return s
	}
	if d.congNames == nil {
		d.congNames = make(map[string]string)
	}
	s := string(b)
	d.congNames[s] = s
	return s
}

// Clone returns a deep copy of s that shares nothing with it: the way to keep
// a row passed to a Dump callback.
func Clone(s *sock.Socket) *sock.Socket {
	if s == nil {
		return nil
	}
	c := *s
	c.Mark = clonePtr(s.Mark)
	c.CgroupID = clonePtr(s.CgroupID)
	c.Shutdown = clonePtr(s.Shutdown)
	c.TOS = clonePtr(s.TOS)
	c.TClass = clonePtr(s.TClass)
	c.V6Only = clonePtr(s.V6Only)
	c.ClassID = clonePtr(s.ClassID)
	c.Sockopt = clonePtr(s.Sockopt)
	c.Mem = clonePtr(s.Mem)
	if s.TCP != nil {
		t := *s.TCP
		t.BBR = clonePtr(s.TCP.BBR)
		t.DCTCP = clonePtr(s.TCP.DCTCP)
		t.Vegas = clonePtr(s.TCP.Vegas)
		if s.TCP.ULP != nil {
			u := *s.TCP.ULP
			u.TLS = clonePtr(s.TCP.ULP.TLS)
			u.MPTCP = clonePtr(s.TCP.ULP.MPTCP)
			t.ULP = &u
		}
		if s.TCP.MD5Keys != nil {
			t.MD5Keys = make([]sock.MD5Key, len(s.TCP.MD5Keys))
			for i, k := range s.TCP.MD5Keys {
				t.MD5Keys[i] = sock.MD5Key{Prefix: k.Prefix, Key: append([]byte(nil), k.Key...)}
			}
		}
		c.TCP = &t
	}
	if s.Unix != nil {
		u := *s.Unix
		if s.Unix.Pending != nil {
			u.Pending = append([]uint64{}, s.Unix.Pending...)
		}
		u.VFS = clonePtr(s.Unix.VFS)
		c.Unix = &u
	}
	if s.Packet != nil {
		p := *s.Packet
		p.RxRing = clonePtr(s.Packet.RxRing)
		p.TxRing = clonePtr(s.Packet.TxRing)
		p.Fanout = clonePtr(s.Packet.Fanout)
		c.Packet = &p
	}
	c.Netlink = clonePtr(s.Netlink)
	c.MPTCPInfo = clonePtr(s.MPTCPInfo)
	if s.Procs != nil {
		c.Procs = append([]sock.Process{}, s.Procs...)
	}
	return &c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
