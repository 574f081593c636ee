package sockdiag

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
)

// sockDestroy is SOCK_DESTROY (include/uapi/linux/sock_diag.h), the request
// `ss -K` sends; golang.org/x/sys/unix does not name it.
const sockDestroy = 21

// ErrCannotDestroy says the kernel cannot close that kind of socket
// (EOPNOTSUPP: no destroy handler, or CONFIG_INET_DIAG_DESTROY off), or it
// was gone already (ENOENT). `ss -K` skips such sockets silently.
var ErrCannotDestroy = errors.New("socket cannot be closed, or is already closed")

// Destroyer closes sockets of one network namespace with SOCK_DESTROY, as
// `ss -K` does: the kernel aborts each one (an RST to the peer for a TCP
// connection) as if it had timed out. It needs CAP_NET_ADMIN in the
// namespace. Close releases its netlink socket.
type Destroyer struct {
	c *conn
}

// NewDestroyer opens a sock_diag socket in ns for Destroy.
func NewDestroyer(ns netns.Namespace) (*Destroyer, error) {
	c, err := dial(ns)
	if err != nil {
		return nil, err
	}
	return &Destroyer{c: c}, nil
}

// Close releases the netlink socket.
func (d *Destroyer) Close() { d.c.close() }

// Destroy closes the TCP, UDP or RAW socket s names (its family,
// addresses, bound device and cookie, as a dump row gives them), as ss -K
// does for every inet row: tcp_abort sends the peer an RST, udp_abort and
// raw_abort disconnect the socket and hand its owner ECONNABORTED. A socket
// the kernel cannot close or that is gone gives ErrCannotDestroy; a caller
// without CAP_NET_ADMIN gets an error wrapping unix.EPERM.
func (d *Destroyer) Destroy(ctx context.Context, s *sock.Socket) error {
	switch s.Proto {
	case sock.ProtoTCP, sock.ProtoUDP, sock.ProtoRAW:
	default:
		// MPTCP has no destroy handler (its subflows are TCP rows of
		// their own); UNIX sockets none either.
		return ErrCannotDestroy
	}
	stop := context.AfterFunc(ctx, d.c.interrupt)
	defer stop()
	c := d.c
	c.seq++
	msg := buildInetRequest(nil, c.seq, unix.NLM_F_REQUEST|unix.NLM_F_ACK, s.Family, ipProto(s.Proto), 0,
		uint32(sock.AllStates), nil)
	putNlmsghdr(msg, len(msg), sockDestroy, unix.NLM_F_REQUEST|unix.NLM_F_ACK, c.seq)
	r := msg[nlmsgHdrLen:]
	if s.Proto == sock.ProtoRAW {
		// inet_diag_req_raw: the pad byte is sdiag_raw_protocol, which
		// raw_diag matches the socket's protocol against.
		r[3] = s.RawProtocol
	}
	// The exact socket: tuple, device and cookie, as the dump gave them.
	binary.BigEndian.PutUint16(r[8:], s.Local.Port())
	binary.BigEndian.PutUint16(r[10:], s.Peer.Port())
	putAddr(r[12:28], s.Local.Addr())
	putAddr(r[28:44], s.Peer.Addr())
	ne.PutUint32(r[44:], s.Iface)
	ne.PutUint32(r[48:], uint32(s.Cookie))
	ne.PutUint32(r[52:], uint32(s.Cookie>>32))
	if err := c.send(msg); err != nil {
		return err
	}
	for {
		b, err := c.recv()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		done, _, err := walkMessages(b, c.seq, func([]byte) error { return nil })
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP):
			return ErrCannotDestroy
		case err != nil:
			return fmt.Errorf("SOCK_DESTROY: %w", err)
		case done:
			return nil
		}
	}
}
