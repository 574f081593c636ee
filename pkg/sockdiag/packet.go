package sockdiag

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// AF_PACKET sockets through packet_diag (linux/packet_diag.h), as ss -0
// dumps them.

const (
	packetReqLen = 20 // struct packet_diag_req
	packetMsgLen = 16 // struct packet_diag_msg

	packetShowInfo    = 0x01
	packetShowRingCfg = 0x04
	packetShowFanout  = 0x08
	packetShowMeminfo = 0x10

	packetDiagInfo    = 0
	packetDiagRxRing  = 2
	packetDiagTxRing  = 3
	packetDiagFanout  = 4
	packetDiagUID     = 5
	packetDiagMeminfo = 6
)

// buildPacketRequest asks for every packet socket with what ss asks for
// (but the socket filter, which only -b prints).
func buildPacketRequest(dst []byte, seq uint32) []byte {
	msg := diagRequest(dst, seq, packetReqLen, unix.AF_PACKET, 0)
	ne.PutUint32(msg[nlmsgHdrLen+8:], packetShowInfo|packetShowRingCfg|packetShowFanout|packetShowMeminfo)
	return msg
}

// diagRequest starts a SOCK_DIAG_BY_FAMILY dump request whose body, of
// reqLen bytes, begins with sdiag_family and sdiag_protocol, as every
// family's request does; the rest of the body is zero.
func diagRequest(dst []byte, seq uint32, reqLen int, family, protocol uint8) []byte {
	total := nlmsgHdrLen + reqLen
	msg := slices.Grow(dst[:0], total)[:total]
	clear(msg)
	putNlmsghdr(msg, total, unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq)
	msg[nlmsgHdrLen] = family
	msg[nlmsgHdrLen+1] = protocol
	return msg
}

// decodePacket parses one packet_diag_msg and its attributes. A packet
// socket has no state; it is Close, as ss shows it (UNCONN).
func (d *decoder) decodePacket(b []byte) (*sock.Socket, bool, error) {
	if len(b) < packetMsgLen {
		return nil, false, fmt.Errorf("packet_diag_msg of %d bytes, want %d", len(b), packetMsgLen)
	}
	if b[0] != unix.AF_PACKET {
		return nil, false, nil
	}
	r := &d.row
	*r = sock.Socket{
		Proto:  sock.ProtoPacket,
		Family: unix.AF_PACKET,
		State:  sock.Close,
		NetNS:  d.netnsIno,
		Inode:  uint64(ne.Uint32(b[4:])),
		Cookie: uint64(ne.Uint32(b[8:])) | uint64(ne.Uint32(b[12:]))<<32,
	}
	d.packet = sock.PacketInfo{Type: b[1], Protocol: ne.Uint16(b[2:])}
	p := &d.packet
	err := walkAttrs(b[packetMsgLen:], func(typ uint16, v []byte) error {
		switch typ {
		case packetDiagInfo:
			if len(v) >= 24 {
				r.Iface = ne.Uint32(v[0:])
				p.Version = ne.Uint32(v[4:])
				p.CopyThresh = ne.Uint32(v[12:])
				p.Flags = ne.Uint32(v[20:])
			}
		case packetDiagRxRing, packetDiagTxRing:
			ring := &d.rxRing
			if typ == packetDiagTxRing {
				ring = &d.txRing
			}
			if len(v) >= 28 {
				*ring = sock.PacketRing{
					BlockSize: ne.Uint32(v[0:]), BlockNr: ne.Uint32(v[4:]),
					FrameSize: ne.Uint32(v[8:]), FrameNr: ne.Uint32(v[12:]),
					RetireTmo: ne.Uint32(v[16:]), Features: ne.Uint32(v[24:]),
				}
				if typ == packetDiagTxRing {
					p.TxRing = ring
				} else {
					p.RxRing = ring
				}
			}
		case packetDiagFanout:
			if len(v) >= 4 {
				d.fanout = ne.Uint32(v)
				p.Fanout = &d.fanout
			}
		case packetDiagUID:
			if len(v) >= 4 {
				r.UID = ne.Uint32(v)
			}
		case packetDiagMeminfo:
			d.meminfo(r, v)
			r.RecvQ = d.mem.RmemAlloc
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	r.Packet = p
	return r, true, nil
}
