package sockdiag

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// AF_NETLINK sockets through netlink_diag (linux/netlink_diag.h), as
// ss -A netlink dumps them.

const (
	netlinkReqLen = 20 // struct netlink_diag_req
	netlinkMsgLen = 28 // struct netlink_diag_msg

	// ndiagProtoAll asks for the sockets of every netlink protocol.
	ndiagProtoAll     = 255
	ndiagShowMeminfo  = 0x01
	ndiagShowGroups   = 0x02
	netlinkDiagMem    = 0
	netlinkDiagGroups = 1
	netlinkConnected  = 1
)

// buildNetlinkRequest asks for every netlink socket with its groups and
// memory, as ss does.
func buildNetlinkRequest(dst []byte, seq uint32) []byte {
	msg := diagRequest(dst, seq, netlinkReqLen, unix.AF_NETLINK, ndiagProtoAll)
	ne.PutUint32(msg[nlmsgHdrLen+8:], ndiagShowMeminfo|ndiagShowGroups)
	return msg
}

// decodeNetlink parses one netlink_diag_msg and its attributes. A netlink
// socket is Close whatever its ndiag_state, as ss shows it (UNCONN); its
// queues are the memory counters.
func (d *decoder) decodeNetlink(b []byte) (*sock.Socket, bool, error) {
	if len(b) < netlinkMsgLen {
		return nil, false, fmt.Errorf("netlink_diag_msg of %d bytes, want %d", len(b), netlinkMsgLen)
	}
	if b[0] != unix.AF_NETLINK {
		return nil, false, nil
	}
	r := &d.row
	*r = sock.Socket{
		Proto:  sock.ProtoNetlink,
		Family: unix.AF_NETLINK,
		State:  sock.Close,
		NetNS:  d.netnsIno,
		Inode:  uint64(ne.Uint32(b[16:])),
		Cookie: uint64(ne.Uint32(b[20:])) | uint64(ne.Uint32(b[24:]))<<32,
	}
	d.netlink = sock.NetlinkInfo{
		Protocol:  b[2],
		Connected: b[3] == netlinkConnected,
		PortID:    int32(ne.Uint32(b[4:])),
		DstPortID: ne.Uint32(b[8:]),
		DstGroup:  ne.Uint32(b[12:]),
	}
	n := &d.netlink
	err := walkAttrs(b[netlinkMsgLen:], func(typ uint16, v []byte) error {
		switch typ {
		case netlinkDiagMem:
			d.meminfo(r, v)
			r.RecvQ, r.SendQ = d.mem.RmemAlloc, d.mem.WmemAlloc
		case netlinkDiagGroups:
			// An array of longs; ss reads the first one.
			if len(v) >= 8 {
				n.Groups = ne.Uint64(v)
			} else if len(v) >= 4 {
				n.Groups = uint64(ne.Uint32(v))
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	r.Netlink = n
	return r, true, nil
}
