package sockdiag

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// The tables of ss that sstrace asks the kernel for without decoding
// their rows: SCTP and DCCP (inet_diag), vsock (vsock_diag), TIPC (its
// sock_diag handler) and XDP (xdp_diag). The request is ss's; a kernel
// without the sock_diag module answers ENOENT (or, for an inet protocol
// it does not know, EINVAL), which the caller handles as ss does. A
// kernel that has one sends rows, and Dump stops with ErrNotDecoded:
// better no answer than a wrong one.

// ErrNotDecoded is returned (wrapped) when the kernel sends rows of a
// table whose rows sstrace does not decode (SCTP, DCCP, vsock, TIPC, XDP).
var ErrNotDecoded = errors.New("the kernel sent rows sstrace does not decode")

const (
	ipprotoSCTP = 132
	ipprotoDCCP = 33

	vsockReqLen = 24 // struct vsock_diag_req
	tipcReqLen  = 8  // struct tipc_sock_diag_req
	xdpReqLen   = 20 // struct xdp_diag_req

	// xdpShowAll is XDP_SHOW_INFO | RING_CFG | UMEM | MEMINFO | STATS,
	// what ss asks.
	xdpShowAll = 0x1f
)

// undecodedFamily is the address family of an undecoded table's request.
func undecodedFamily(p sock.Proto) (uint8, bool) {
	switch p {
	case sock.ProtoVsock:
		return unix.AF_VSOCK, true
	case sock.ProtoTIPC:
		return unix.AF_TIPC, true
	case sock.ProtoXDP:
		return unix.AF_XDP, true
	}
	return 0, false
}

// buildUndecodedRequest builds ss's request for vsock, TIPC or XDP.
func buildUndecodedRequest(dst []byte, seq uint32, p sock.Proto, states uint32) []byte {
	switch p {
	case sock.ProtoVsock:
		msg := diagRequest(dst, seq, vsockReqLen, unix.AF_VSOCK, 0)
		ne.PutUint32(msg[nlmsgHdrLen+4:], states)
		ne.PutUint32(msg[nlmsgHdrLen+16:], inetDiagNoCookie)
		ne.PutUint32(msg[nlmsgHdrLen+20:], inetDiagNoCookie)
		return msg
	case sock.ProtoTIPC:
		msg := diagRequest(dst, seq, tipcReqLen, unix.AF_TIPC, 0)
		ne.PutUint32(msg[nlmsgHdrLen+4:], states)
		return msg
	default:
		msg := diagRequest(dst, seq, xdpReqLen, unix.AF_XDP, 0)
		ne.PutUint32(msg[nlmsgHdrLen+8:], xdpShowAll)
		return msg
	}
}

const (
	legacyInetReqLen = 60 // struct inet_diag_req
	tcpdiagGetsock   = 18 // TCPDIAG_GETSOCK
	dccpdiagGetsock  = 19 // DCCPDIAG_GETSOCK
)

// legacyInetRequest is the request ss falls back to when its
// SOCK_DIAG_BY_FAMILY request for SCTP or DCCP fails (it asks again with
// family AF_UNSPEC): the old struct inet_diag_req, as TCPDIAG_GETSOCK, or
// DCCPDIAG_GETSOCK for DCCP. A kernel without DCCP answers that one
// EINVAL, which ss prints. Dump sends it for family AF_UNSPEC.
func legacyInetRequest(dst []byte, seq uint32, p sock.Proto, states uint32) []byte {
	typ := uint16(tcpdiagGetsock)
	if p == sock.ProtoDCCP {
		typ = dccpdiagGetsock
	}
	msg := diagRequest(dst, seq, legacyInetReqLen, unix.AF_INET, 0)
	ne.PutUint16(msg[4:], typ)
	ne.PutUint32(msg[nlmsgHdrLen+52:], states)
	return msg
}

// notDecoded is the decoder's answer to any row of an undecoded table.
func notDecoded(p sock.Proto) error {
	return fmt.Errorf("%s: %w", p, ErrNotDecoded)
}
