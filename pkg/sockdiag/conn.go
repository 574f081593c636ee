package sockdiag

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
)

// ne is the host byte order, in which netlink headers and most sock_diag
// fields travel (ports and addresses are the exception: network order).
var ne = binary.NativeEndian

// recvBufSize is the receive buffer. The kernel fills one skb of at most
// 32 KiB per dump step (netlink_recvmsg caps max_recvmsg_len there), so 64 KiB
// always holds a whole batch; MSG_TRUNC still catches anything larger.
const recvBufSize = 64 << 10

const (
	nlmsgHdrLen = 16
	inetReqLen  = 56 // struct inet_diag_req_v2
	unixReqLen  = 24 // struct unix_diag_req
	inetMsgLen  = 72 // struct inet_diag_msg
	unixMsgLen  = 16 // struct unix_diag_msg
	nlaHdrLen   = 4
	// nlaTypeMask drops NLA_F_NESTED and NLA_F_NET_BYTEORDER.
	nlaTypeMask      = 0x3fff
	inetDiagNoCookie = ^uint32(0)
)

// Kernel constants from linux/inet_diag.h and linux/unix_diag.h that
// x/sys/unix does not carry.
const (
	inetDiagReqBytecode = 1
	// inetDiagReqProtocol carries a protocol number that does not fit
	// inet_diag_req_v2's u8 (MPTCP, 262), as ss sends it.
	inetDiagReqProtocol = 3
	ipprotoMPTCP        = 262

	inetDiagMeminfo   = 1
	inetDiagInfo      = 2
	inetDiagVegasInfo = 3
	inetDiagCong      = 4
	inetDiagTOS       = 5
	inetDiagTClass    = 6
	inetDiagSkMeminfo = 7
	inetDiagShutdown  = 8
	inetDiagDCTCPInfo = 9
	inetDiagProtocol  = 10
	inetDiagSkV6Only  = 11
	inetDiagMark      = 15
	inetDiagBBRInfo   = 16
	inetDiagClassID   = 17
	inetDiagMD5Sig    = 18
	inetDiagULPInfo   = 19
	inetDiagCgroupID  = 21
	inetDiagSockopt   = 22
	// Nested in INET_DIAG_ULP_INFO (include/uapi/linux/inet_diag.h) and
	// its INET_ULP_INFO_TLS (include/uapi/linux/tls.h).
	inetULPInfoName  = 1
	inetULPInfoTLS   = 2
	inetULPInfoMPTCP = 3
	// tcpDiagMD5SigLen is struct tcp_diag_md5sig (include/uapi/linux/tcp.h).
	tcpDiagMD5SigLen = 100
	tlsInfoVersion   = 1
	tlsInfoCipher    = 2
	tlsInfoTXConf    = 3
	tlsInfoRXConf    = 4
	tlsInfoZCROTX    = 5

	udiagShowName    = 0x01
	udiagShowVFS     = 0x02
	udiagShowPeer    = 0x04
	udiagShowIcons   = 0x08
	udiagShowRqlen   = 0x10
	udiagShowMeminfo = 0x20
	udiagShowUID     = 0x40

	unixDiagName     = 0
	unixDiagVFS      = 1
	unixDiagPeer     = 2
	unixDiagIcons    = 3
	unixDiagRqlen    = 4
	unixDiagMeminfo  = 5
	unixDiagShutdown = 6
	unixDiagUID      = 7
)

// transport carries requests to the kernel and batches of replies back:
// a netlink socket in production, a script in the retry tests.
type transport interface {
	send(msg []byte) error
	// recv returns one datagram; the slice is valid until the next call.
	recv() ([]byte, error)
	close()
	// interrupt makes a pending or future recv fail at once.
	interrupt()
}

// conn is a sock_diag session with one network namespace.
type conn struct {
	t        transport
	seq      uint32
	ns       netns.Namespace
	netnsIno uint64
	// delivered holds the cookies of the rows a pass has delivered, kept
	// across passes so its storage is reused (8 bytes per socket).
	delivered []uint64
	// raw receives every reply datagram as is (Request.Raw); nil: none.
	raw io.Writer
}

func dial(ns netns.Namespace) (*conn, error) {
	fd := -1
	ino, err := ns.DoWithInode(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK,
			unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return fmt.Errorf("netlink socket: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "sock_diag")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	return &conn{t: &nlSocket{f: f, rc: rc, buf: make([]byte, recvBufSize)}, ns: ns, netnsIno: ino}, nil
}

func (c *conn) close()     { c.t.close() }
func (c *conn) interrupt() { c.t.interrupt() }
func (c *conn) send(msg []byte) error {
	return c.t.send(msg)
}
func (c *conn) recv() ([]byte, error) { return c.t.recv() }

// nlSocket is a NETLINK_SOCK_DIAG socket, bound to the namespace it was
// created in. It is non-blocking and registered with the Go poller, so a
// cancelled context can interrupt a wait through a read deadline.
type nlSocket struct {
	f   *os.File
	rc  syscall.RawConn
	buf []byte
}

func (s *nlSocket) close() { s.f.Close() }

func (s *nlSocket) interrupt() { _ = s.f.SetReadDeadline(time.Unix(1, 0)) }

func (s *nlSocket) send(msg []byte) error {
	var serr error
	err := s.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("send request: %w", serr)
	}
	return nil
}

// recv reads one datagram (one kernel batch) without MSG_PEEK: the buffer
// is already larger than any batch, and MSG_TRUNC makes the kernel report
// the true length so a larger one is an error, not silent loss.
func (s *nlSocket) recv() ([]byte, error) {
	var n int
	var rerr error
	err := s.rc.Read(func(fd uintptr) bool {
		r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)), unix.MSG_TRUNC, 0, 0)
		for errno == unix.EINTR {
			r, _, errno = unix.Syscall6(unix.SYS_RECVFROM, fd,
				uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)), unix.MSG_TRUNC, 0, 0)
		}
		switch errno {
		case 0:
			n, rerr = int(r), nil
		case unix.EAGAIN:
			return false // nothing queued yet: wait for the poller
		default:
			rerr = errno
		}
		return true
	})
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, context.Canceled
		}
		return nil, fmt.Errorf("receive: %w", err)
	}
	if rerr != nil {
		if rerr == unix.ENOBUFS {
			return nil, fmt.Errorf("receive: %w (socket receive buffer overrun)", rerr)
		}
		return nil, fmt.Errorf("receive: %w", rerr)
	}
	if n > len(s.buf) {
		return nil, fmt.Errorf("receive: reply of %d bytes truncated to %d", n, len(s.buf))
	}
	return s.buf[:n], nil
}

// buildInetRequest builds an inet_diag_req_v2 request into dst.
func buildInetRequest(dst []byte, seq uint32, flags uint16, family uint8, proto uint8, ext uint8, states uint32, bytecode []byte) []byte {
	total := nlmsgHdrLen + inetReqLen
	if bytecode != nil {
		total += nlaAlign(nlaHdrLen + len(bytecode))
	}
	msg := slices.Grow(dst[:0], total)[:total]
	clear(msg)
	putNlmsghdr(msg, total, unix.SOCK_DIAG_BY_FAMILY, flags, seq)
	r := msg[nlmsgHdrLen:]
	r[0] = family
	r[1] = proto
	r[2] = ext
	ne.PutUint32(r[4:], states)
	// A dump wants any cookie; the kernel checks it only on exact lookups.
	ne.PutUint32(r[48:], inetDiagNoCookie)
	ne.PutUint32(r[52:], inetDiagNoCookie)
	if bytecode != nil {
		a := msg[nlmsgHdrLen+inetReqLen:]
		ne.PutUint16(a[0:], uint16(nlaHdrLen+len(bytecode)))
		ne.PutUint16(a[2:], inetDiagReqBytecode)
		copy(a[nlaHdrLen:], bytecode)
	}
	return msg
}

func buildUnixRequest(dst []byte, seq uint32, states uint32, show uint32) []byte {
	total := nlmsgHdrLen + unixReqLen
	msg := slices.Grow(dst[:0], total)[:total]
	clear(msg)
	putNlmsghdr(msg, total, unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq)
	r := msg[nlmsgHdrLen:]
	r[0] = unix.AF_UNIX
	ne.PutUint32(r[4:], states)
	ne.PutUint32(r[12:], show)
	ne.PutUint32(r[16:], inetDiagNoCookie)
	ne.PutUint32(r[20:], inetDiagNoCookie)
	return msg
}

func putNlmsghdr(b []byte, length int, typ, flags uint16, seq uint32) {
	ne.PutUint32(b[0:], uint32(length))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[12:], 0)
}

func nlaAlign(n int) int { return (n + 3) &^ 3 }

func ipProto(p sock.Proto) uint8 {
	switch p {
	case sock.ProtoTCP:
		return unix.IPPROTO_TCP
	case sock.ProtoUDP:
		return unix.IPPROTO_UDP
	case sock.ProtoRAW:
		return unix.IPPROTO_RAW
	case sock.ProtoSCTP:
		return ipprotoSCTP
	case sock.ProtoDCCP:
		return ipprotoDCCP
	case sock.ProtoMPTCP:
		// The u8 field gets the low byte, as in ss; the kernel takes the
		// INET_DIAG_REQ_PROTOCOL attribute (withProtocolAttr).
		return ipprotoMPTCP & 0xff
	}
	return 0
}

// isInet reports whether p is dumped through inet_diag.
func isInet(p sock.Proto) bool {
	switch p {
	case sock.ProtoTCP, sock.ProtoUDP, sock.ProtoRAW, sock.ProtoMPTCP, sock.ProtoSCTP, sock.ProtoDCCP:
		return true
	}
	return false
}

// withProtocolAttr appends INET_DIAG_REQ_PROTOCOL to an inet request for a
// protocol whose number does not fit its u8 field (MPTCP), and fixes the
// netlink length.
func withProtocolAttr(msg []byte, p sock.Proto) []byte {
	if p != sock.ProtoMPTCP {
		return msg
	}
	var a [8]byte
	ne.PutUint16(a[0:], 8)
	ne.PutUint16(a[2:], inetDiagReqProtocol)
	ne.PutUint32(a[4:], ipprotoMPTCP)
	msg = append(msg, a[:]...)
	ne.PutUint32(msg[0:], uint32(len(msg)))
	return msg
}

// inetExt returns the idiag_ext bits for req (see Request for the choice).
func inetExt(req Request, proto sock.Proto) uint8 {
	var ext uint8
	bit := func(attr int) uint8 { return 1 << (attr - 1) }
	if req.Info && (proto == sock.ProtoTCP || proto == sock.ProtoMPTCP) {
		// ss asks MPTCP for the same (its mptcp_info comes as INFO).
		ext |= bit(inetDiagInfo) | bit(inetDiagVegasInfo) | bit(inetDiagCong)
	}
	if req.Mem {
		ext |= bit(inetDiagSkMeminfo)
		if req.Raw != nil {
			// ss asks for the old MEMINFO as well; the raw replies
			// (ss -D) carry it then.
			ext |= bit(inetDiagMeminfo)
		}
	}
	if req.TOS {
		ext |= bit(inetDiagTOS) | bit(inetDiagTClass)
	}
	return ext
}

func unixShow(req Request) uint32 {
	show := uint32(udiagShowName | udiagShowVFS | udiagShowPeer | udiagShowRqlen | udiagShowIcons | udiagShowUID)
	if req.Mem {
		show |= udiagShowMeminfo
	}
	return show
}

// runPass runs one protocol/family dump, retrying it when the kernel flags
// it interrupted. Rows delivered by an interrupted attempt are remembered by
// cookie so a retry does not deliver them again.
func (c *conn) runPass(ctx context.Context, p pass, req Request, d *decoder, fn func(*sock.Socket) error) error {
	var msg []byte
	var skip map[uint64]struct{}
	delivered := c.delivered[:0]
	defer func() { c.delivered = delivered[:0] }()
	for attempt := 1; ; attempt++ {
		c.seq++
		switch p.proto {
		case sock.ProtoUNIX:
			msg = buildUnixRequest(msg, c.seq, uint32(req.States), unixShow(req))
		case sock.ProtoPacket:
			msg = buildPacketRequest(msg, c.seq)
		case sock.ProtoNetlink:
			msg = buildNetlinkRequest(msg, c.seq)
		case sock.ProtoVsock, sock.ProtoTIPC, sock.ProtoXDP:
			msg = buildUndecodedRequest(msg, c.seq, p.proto, uint32(req.States))
		case sock.ProtoSCTP, sock.ProtoDCCP:
			if p.family == unix.AF_UNSPEC {
				msg = legacyInetRequest(msg, c.seq, p.proto, uint32(req.States))
				break
			}
			fallthrough
		default:
			var bc []byte
			if req.Bytecode != nil {
				if b, ok := req.Bytecode(p.family); ok {
					if len(b) == 0 || len(b)+nlaHdrLen > 0xffff {
						return fmt.Errorf("filter bytecode of %d bytes does not fit a netlink attribute", len(b))
					}
					bc = b
				}
			}
			msg = buildInetRequest(msg, c.seq, unix.NLM_F_REQUEST|unix.NLM_F_DUMP,
				p.family, ipProto(p.proto), inetExt(req, p.proto), uint32(req.States), bc)
			msg = withProtocolAttr(msg, p.proto)
		}
		if err := c.send(msg); err != nil {
			return err
		}
		interrupted, err := c.readDump(ctx, c.seq, func(payload []byte) error {
			row, ok, err := d.decode(p, payload)
			if err != nil || !ok {
				return err
			}
			// RAW dumps ignore idiag_states in the kernel (raw_diag_dump
			// never looks at it); apply the set here so every protocol
			// honours Request.States.
			if p.proto == sock.ProtoRAW && !req.States.Has(row.State) {
				return nil
			}
			if skip != nil {
				if _, dup := skip[row.Cookie]; dup {
					return nil
				}
			}
			delivered = append(delivered, row.Cookie)
			if err := fn(row); err != nil {
				return callbackError{err}
			}
			return nil
		})
		if err != nil {
			// No handler for the protocol answers ENOENT before any row.
			if p.proto == sock.ProtoRAW && attempt == 1 && len(delivered) == 0 && errors.Is(err, unix.ENOENT) {
				return c.rawFromProc(p, req, d, fn)
			}
			if isInet(p.proto) && req.Bytecode != nil && errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("%w (kernel rejected the filter bytecode?)", err)
			}
			return err
		}
		if !interrupted {
			return nil
		}
		if attempt == maxDumpAttempts {
			return fmt.Errorf("%w (%d attempts)", ErrInterrupted, attempt)
		}
		if skip == nil {
			skip = make(map[uint64]struct{}, len(delivered))
		}
		for _, ck := range delivered {
			skip[ck] = struct{}{}
		}
		delivered = delivered[:0]
	}
}

// readDump reads a dump's replies up to NLMSG_DONE, handing every data
// message's payload to each. It reports whether any message carried
// NLM_F_DUMP_INTR.
//
// The kernel builds a dump's next batch inside the recvmsg that asks for
// it, so a reader goroutine receives while this one decodes and the caller
// renders: with two CPUs the kernel's walk and our work overlap (a 100 000
// socket -tan: about a third less wall time). Batches are copied out of
// the socket's buffer into a few recycled ones. If each fails or ctx ends
// midway, the reader goes on to the end of the dump, dropping the rest,
// so that the socket is clean for the next request; readDump returns only
// once the reader has stopped.
func (c *conn) readDump(ctx context.Context, seq uint32, each func(payload []byte) error) (interrupted bool, err error) {
	type batch struct {
		b   []byte
		err error
	}
	batches := make(chan batch, 4)
	free := make(chan []byte, 6)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(batches)
		for {
			b, err := c.recv()
			if err != nil {
				select {
				case batches <- batch{err: err}:
				case <-stop:
				}
				return
			}
			last := endsDump(b, seq)
			var buf []byte
			select {
			case buf = <-free:
			default:
			}
			buf = append(buf[:0], b...)
			select {
			case batches <- batch{b: buf}:
			case <-stop: // the consumer is gone: read on to the end
			}
			if last {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		for range batches {
		}
		wg.Wait()
	}()
	for bt := range batches {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if bt.err != nil {
			return false, bt.err
		}
		if c.raw != nil {
			if _, err := c.raw.Write(bt.b); err != nil {
				return false, fmt.Errorf("write raw replies: %w", err)
			}
		}
		done, intr, err := walkMessages(bt.b, seq, each)
		interrupted = interrupted || intr
		if err != nil || done {
			return interrupted, err
		}
		select {
		case free <- bt.b:
		default:
		}
	}
	return interrupted, errors.New("netlink dump ended without NLMSG_DONE")
}

// endsDump reports whether a datagram holds the message that ends the dump
// of request seq (NLMSG_DONE or NLMSG_ERROR), reading headers only.
func endsDump(b []byte, seq uint32) bool {
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return true // malformed: walkMessages reports it; read no further
		}
		if typ := ne.Uint16(b[4:]); ne.Uint32(b[8:]) == seq && (typ == unix.NLMSG_DONE || typ == unix.NLMSG_ERROR) {
			return true
		}
		next := nlaAlign(l)
		if next > len(b) {
			break
		}
		b = b[next:]
	}
	return false
}

// walkMessages walks the netlink messages of one datagram. done reports an
// NLMSG_DONE (or a terminating NLMSG_ERROR, returned as err).
func walkMessages(b []byte, seq uint32, each func(payload []byte) error) (done, interrupted bool, err error) {
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		typ := ne.Uint16(b[4:])
		flags := ne.Uint16(b[6:])
		mseq := ne.Uint32(b[8:])
		if l < nlmsgHdrLen || l > len(b) {
			return false, interrupted, fmt.Errorf("malformed netlink message: length %d of %d bytes left", l, len(b))
		}
		payload := b[nlmsgHdrLen:l]
		next := nlaAlign(l)
		if next > len(b) {
			next = len(b)
		}
		b = b[next:]
		if mseq != seq {
			continue // a reply to an earlier, abandoned request
		}
		if flags&unix.NLM_F_DUMP_INTR != 0 {
			interrupted = true
		}
		switch typ {
		case unix.NLMSG_NOOP:
			continue
		case unix.NLMSG_DONE:
			// A dump that failed midway puts its error here.
			if len(payload) >= 4 {
				if e := int32(ne.Uint32(payload)); e < 0 {
					return true, interrupted, syscall.Errno(-e)
				}
			}
			return true, interrupted, nil
		case unix.NLMSG_ERROR:
			if len(payload) < 4 {
				return true, interrupted, errors.New("truncated netlink error message")
			}
			if e := int32(ne.Uint32(payload)); e < 0 {
				return true, interrupted, syscall.Errno(-e)
			}
			return true, interrupted, nil // an ACK
		case unix.SOCK_DIAG_BY_FAMILY:
			if err := each(payload); err != nil {
				return false, interrupted, err
			}
		}
	}
	return false, interrupted, nil
}

// lookup runs an exact-tuple request and returns the one reply as a row the
// caller owns.
func (c *conn) lookup(proto sock.Proto, family uint8, local, peer netip.AddrPort) (*sock.Socket, error) {
	c.seq++
	msg := buildInetRequest(nil, c.seq, unix.NLM_F_REQUEST, family, ipProto(proto), 0, uint32(sock.AllStates), nil)
	r := msg[nlmsgHdrLen:]
	// TCP reads idiag_src/sport as the local end. UDP swaps them "for
	// historical reasons" (udp_dump_one passes src as the packet source,
	// i.e. the remote end), so the tuple goes in the other way round.
	src, dst := local, peer
	if proto == sock.ProtoUDP {
		src, dst = peer, local
	}
	binary.BigEndian.PutUint16(r[8:], src.Port())
	binary.BigEndian.PutUint16(r[10:], dst.Port())
	putAddr(r[12:28], src.Addr())
	putAddr(r[28:44], dst.Addr())
	if err := c.send(msg); err != nil {
		return nil, err
	}
	d := newDecoder(c.netnsIno)
	p := pass{proto: proto, family: family}
	var found *sock.Socket
	for found == nil {
		b, err := c.recv()
		if err != nil {
			return nil, err
		}
		done, _, err := walkMessages(b, c.seq, func(payload []byte) error {
			row, ok, err := d.decode(p, payload)
			if err != nil || !ok {
				return err
			}
			found = Clone(row)
			return nil
		})
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil, fmt.Errorf("%v -> %v: %w", local, peer, ErrNotFound)
			}
			return nil, err
		}
		if done && found == nil {
			return nil, fmt.Errorf("%v -> %v: %w", local, peer, ErrNotFound)
		}
	}
	return found, nil
}

func putAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		b := a.As4()
		copy(dst, b[:])
		return
	}
	b := a.As16()
	copy(dst, b[:])
}
