package main

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

// stateCounts is the number of TCP sockets per kernel state, indexed by
// state number.
type stateCounts [sock.MaxState + 1]int

// Total is the number of sockets counted.
func (c stateCounts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// Transient is the number of sockets in states that only last while a
// connection opens or closes.
func (c stateCounts) Transient() int {
	n := 0
	for s := sock.State(0); s <= sock.MaxState; s++ {
		switch s {
		case sock.Established, sock.Listen, sock.CloseWait, sock.TimeWait:
		default:
			n += c[s]
		}
	}
	return n
}

// String lists the non-zero states, for messages.
func (c stateCounts) String() string {
	var b strings.Builder
	for s := sock.State(0); s <= sock.MaxState; s++ {
		if c[s] > 0 {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s=%d", s.SSLabel(), c[s])
		}
	}
	return b.String()
}

// diagCounter counts a namespace's TCP sockets by state through sock_diag,
// the same source ss reads: the farm reports what the kernel holds, not
// what it meant to build. The netlink socket belongs to the namespace it
// was created in, so it can be used from any goroutine afterwards.
type diagCounter struct {
	fd  int
	buf []byte
	seq uint32
}

// newDiagCounter opens the sock_diag socket; call it on the namespace
// thread.
func newDiagCounter() (*diagCounter, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind sock_diag socket: %w", err)
	}
	return &diagCounter{fd: fd, buf: make([]byte, 1<<16)}, nil
}

// Close releases the socket.
func (d *diagCounter) Close() error { return unix.Close(d.fd) }

// count dumps the TCP sockets of both families in the given states (a
// sock.StateSet bit mask; the kernel filters) and counts them by state.
func (d *diagCounter) count(states sock.StateSet) (stateCounts, error) {
	var c stateCounts
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := d.dump(fam, states, &c); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Layout of the request: struct nlmsghdr followed by struct
// inet_diag_req_v2 (include/uapi/linux/inet_diag.h), whose embedded
// inet_diag_sockid is left zero because a dump ignores it.
const (
	nlmsgHdrLen    = 16
	inetDiagReqLen = 56
)

func (d *diagCounter) dump(family uint8, states sock.StateSet, c *stateCounts) error {
	d.seq++
	req := make([]byte, nlmsgHdrLen+inetDiagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], d.seq)
	req[16] = family
	req[17] = unix.IPPROTO_TCP
	ne.PutUint32(req[20:], uint32(states))
	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		b := d.buf[:n]
		for len(b) >= nlmsgHdrLen {
			l := int(ne.Uint32(b[0:]))
			typ := ne.Uint16(b[4:])
			seq := ne.Uint32(b[8:])
			if l < nlmsgHdrLen || l > len(b) {
				return fmt.Errorf("sock_diag reply: bad message length %d", l)
			}
			payload := b[nlmsgHdrLen:l]
			b = b[min((l+3)&^3, len(b)):]
			if seq != d.seq {
				continue // a late part of an earlier, abandoned dump
			}
			switch typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(payload) >= 4 {
					if e := int32(ne.Uint32(payload)); e != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return nil
			case unix.SOCK_DIAG_BY_FAMILY:
				// struct inet_diag_msg starts with family, then state.
				if len(payload) < 2 {
					return fmt.Errorf("sock_diag reply: short message (%d bytes)", len(payload))
				}
				if st := payload[1]; int(st) < len(c) {
					c[st]++
				}
			}
		}
	}
}
