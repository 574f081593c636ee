package sockdiag

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
)

// sock_diag's multicast groups (include/uapi/linux/sock_diag.h,
// SKNLGRP_*): the kernel sends one SOCK_DIAG_BY_FAMILY message to each
// member when a socket of that kind is destroyed.
const (
	grpInetTCPDestroy  = 1
	grpInetUDPDestroy  = 2
	grpInet6TCPDestroy = 3
	grpInet6UDPDestroy = 4
)

// DestroyedRequest says which destroyed sockets FollowDestroyed reports.
type DestroyedRequest struct {
	// Protos is a subset of TCP and UDP, the protocols the kernel
	// announces; others are ignored.
	Protos []sock.Proto
	// Families is a subset of unix.AF_INET and AF_INET6.
	Families []uint8
}

// groups is the bind mask of req's multicast groups, as ss -E computes it.
func (req DestroyedRequest) groups() uint32 {
	var g uint32
	for _, p := range req.Protos {
		for _, f := range req.Families {
			switch {
			case p == sock.ProtoTCP && f == unix.AF_INET:
				g |= 1 << (grpInetTCPDestroy - 1)
			case p == sock.ProtoUDP && f == unix.AF_INET:
				g |= 1 << (grpInetUDPDestroy - 1)
			case p == sock.ProtoTCP && f == unix.AF_INET6:
				g |= 1 << (grpInet6TCPDestroy - 1)
			case p == sock.ProtoUDP && f == unix.AF_INET6:
				g |= 1 << (grpInet6UDPDestroy - 1)
			}
		}
	}
	return g
}

// ErrNoDestroyGroup is returned by FollowDestroyed when the request names
// no protocol and family the kernel announces destruction for.
var ErrNoDestroyGroup = errors.New("no TCP or UDP socket of an inet family to follow")

// FollowDestroyed reports the sockets of ns as the kernel destroys them
// (ss -E): it joins sock_diag's destroy multicast groups and calls fn with
// each socket's last state, as the kernel describes it then (addresses,
// queues, the tcp_info, memory; inode 0, the file being gone). It runs
// until ctx ends (then it returns nil), fn fails (its error is returned
// unchanged) or the socket fails. Joining the groups needs CAP_NET_ADMIN.
// The row passed to fn is reused, as Dump's.
func FollowDestroyed(ctx context.Context, ns netns.Namespace, req DestroyedRequest, fn func(*sock.Socket) error) error {
	groups := req.groups()
	if groups == 0 {
		return ErrNoDestroyGroup
	}
	c, err := dial(ns)
	if err != nil {
		return &Error{NS: ns, Err: err}
	}
	defer c.close()
	if err := c.t.(*nlSocket).join(groups); err != nil {
		return &Error{NS: ns, Err: err}
	}
	stop := context.AfterFunc(ctx, c.interrupt)
	defer stop()
	d := newDecoder(c.netnsIno)
	for {
		b, err := c.recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &Error{NS: ns, Err: err}
		}
		if err := eachBroadcast(b, func(payload []byte) error {
			row, ok, err := d.decodeInet(0, payload)
			if err != nil || !ok {
				return err
			}
			// The message names the protocol in INET_DIAG_PROTOCOL.
			switch row.RawProtocol {
			case unix.IPPROTO_TCP:
				row.Proto = sock.ProtoTCP
			case unix.IPPROTO_UDP:
				row.Proto = sock.ProtoUDP
			default:
				return nil
			}
			row.RawProtocol = 0
			return fn(row)
		}); err != nil {
			return err
		}
	}
}

// eachBroadcast calls each with the payload of every SOCK_DIAG_BY_FAMILY
// message in one datagram.
func eachBroadcast(b []byte, each func(payload []byte) error) error {
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return fmt.Errorf("malformed netlink message: length %d of %d bytes left", l, len(b))
		}
		if ne.Uint16(b[4:]) == unix.SOCK_DIAG_BY_FAMILY {
			if err := each(b[nlmsgHdrLen:l]); err != nil {
				return err
			}
		}
		b = b[min(nlaAlign(l), len(b)):]
	}
	return nil
}

// join binds the socket to multicast groups (a bit per group).
func (s *nlSocket) join(groups uint32) error {
	var berr error
	err := s.rc.Control(func(fd uintptr) {
		berr = unix.Bind(int(fd), &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups})
	})
	if err == nil {
		err = berr
	}
	if err != nil {
		return fmt.Errorf("join the sock_diag destroy groups: %w", err)
	}
	return nil
}
