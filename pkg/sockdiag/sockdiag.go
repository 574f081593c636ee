// Package sockdiag dumps the sockets of a network namespace through the
// kernel's NETLINK_SOCK_DIAG interface into sock.Socket rows: TCP (every
// state, including TIME-WAIT and request sockets), UDP, RAW, UNIX, MPTCP,
// packet (packet_diag) and netlink (netlink_diag). It asks for SCTP, DCCP,
// vsock, TIPC and XDP sockets as ss does, without decoding their rows
// (ErrNotDecoded), so that a kernel without their sock_diag module gets
// ss's answer.
//
// It is the source of rows for a one-shot `sstrace ss` and the seed of the
// daemon's table, so it is built for speed: one netlink socket per Dump, one
// recvfrom per kernel batch (no MSG_PEEK round trip), replies parsed in place
// into a reused row without reflection or per-attribute allocations.
//
// A netlink socket belongs to the network namespace it was created in, so
// Dump enters the target namespace (a pkg/netns Namespace) on a locked OS
// thread only for the socket(2) call and talks to the kernel from any thread
// afterwards.
//
// Usage:
//
//	err := sockdiag.Dump(ctx, netns.ByName("blue"), sockdiag.Request{
//		Protos: []sock.Proto{sock.ProtoTCP},
//		States: sock.AllStates,
//	}, func(s *sock.Socket) error {
//		fmt.Println(s.Local, s.Peer, s.State.SSLabel())
//		return nil
//	})
package sockdiag

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
)

// Request says what to dump and which optional attributes to ask for.
//
// Which extensions ss 6.1 asks for, and why the fields map as they do:
// `-i` asks INET_DIAG_INFO, VEGASINFO and CONG (Info); `-m` asks
// MEMINFO and SKMEMINFO (Mem; we ask SKMEMINFO only: ss prints MEMINFO just
// as a fallback for kernels without SKMEMINFO, older than 3.6); `--tos` asks
// TOS and TCLASS (TOS). `-e`, `-o` and `--json` ask no inet extension:
// SHUTDOWN, MARK (with CAP_NET_ADMIN), CGROUP_ID, SKV6ONLY (IPv6 listen and
// close sockets) and PROTOCOL (RAW) come with every reply. For UNIX sockets
// we always ask for name, peer, queue lengths, pending connections (ICONS,
// what ss -xe prints as "peers:") and UID: they are small and the row has a
// place for each.
type Request struct {
	// Protos lists the protocols to dump, in order. It must not be empty.
	Protos []sock.Proto
	// Families restricts inet protocols to unix.AF_INET and/or
	// unix.AF_INET6, dumped in the order given; empty means both (INET
	// first, as ss does). The other families' protocols ignore it.
	Families []uint8
	// States is passed to the kernel (idiag_states / udiag_states); only
	// sockets in these states are returned. The zero set matches nothing:
	// use sock.AllStates for every state.
	States sock.StateSet
	// Bytecode, when set, returns the INET_DIAG_REQ_BYTECODE filter program
	// for a family (from pkg/filter); ok=false sends no filter for that
	// family. UNIX dumps have no kernel filter and ignore it.
	Bytecode func(family uint8) (bc []byte, ok bool)
	// Info asks for tcp_info and congestion control state into Socket.TCP
	// (TCP only).
	Info bool
	// Mem asks for socket memory into Socket.Mem.
	Mem bool
	// TOS asks for INET_DIAG_TOS and INET_DIAG_TCLASS into Socket.TOS and
	// Socket.TClass (ss --tos).
	TOS bool
	// Raw, when set, receives every datagram of the kernel's replies as it
	// arrives, headers and all (ss -D FILE writes the same bytes). The
	// rows are decoded and passed to fn as well.
	Raw io.Writer
}

// maxDumpAttempts bounds how often a dump the kernel marks inconsistent
// (NLM_F_DUMP_INTR) is run again before Dump gives up.
const maxDumpAttempts = 3

// ErrNotFound is returned (wrapped) by Lookup when the kernel has no socket
// with the given tuple.
var ErrNotFound = errors.New("no such socket")

// ErrInterrupted is returned (wrapped) when the kernel kept marking a dump
// inconsistent (NLM_F_DUMP_INTR) after every retry.
var ErrInterrupted = errors.New("dump interrupted by concurrent changes, retries exhausted")

// Error is a failure of one sock_diag operation. It names the namespace and,
// when one was being dumped, the protocol and family, so that a message like
// "sock_diag tcp/inet6 in netns /run/netns/x: permission denied" says where
// it went wrong.
type Error struct {
	Proto  sock.Proto // 0 when the failure is not specific to a protocol
	Family uint8      // 0 for UNIX or when not specific to a family
	NS     netns.Namespace
	Err    error
}

// Error names the protocol, family and namespace, then the cause.
func (e *Error) Error() string {
	what := "sock_diag"
	if e.Proto != 0 {
		what += " " + e.Proto.String()
		if e.Family != 0 && e.Proto != sock.ProtoUNIX {
			what += "/" + sock.FamilyName(e.Family)
		}
	}
	return what + " in netns " + e.NS.String() + ": " + e.Err.Error()
}

// Unwrap returns the cause, so errors.Is works on errno values and on
// ErrNotFound, ErrInterrupted and fs.ErrNotExist (missing namespace).
func (e *Error) Unwrap() error { return e.Err }

// Dump streams every socket of ns matching req to fn. Every row has NetNS set
// to the namespace's inode.
//
// The row passed to fn, and everything it points to, is reused for the next
// row once fn returns: this keeps memory flat and the dump allocation-free
// for 100k+ sockets. A caller that keeps rows must copy them with Clone.
//
// If fn returns an error, the dump stops and Dump returns that error
// unchanged. If the kernel marks a dump inconsistent (NLM_F_DUMP_INTR) the
// pass is run again, at most 3 times in all; rows already delivered (same
// cookie) are not delivered twice. Other failures are *Error values.
func Dump(ctx context.Context, ns netns.Namespace, req Request, fn func(*sock.Socket) error) error {
	if fn == nil {
		return &Error{NS: ns, Err: errors.New("nil row callback")}
	}
	passes, err := planPasses(req)
	if err != nil {
		return &Error{NS: ns, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := dial(ns)
	if err != nil {
		return &Error{Proto: passes[0].proto, Family: passes[0].family, NS: ns, Err: err}
	}
	defer c.close()
	stop := context.AfterFunc(ctx, c.interrupt)
	defer stop()

	c.raw = req.Raw
	d := newDecoder(c.netnsIno)
	for _, p := range passes {
		if err := c.runPass(ctx, p, req, d, fn); err != nil {
			var cbErr callbackError
			if errors.As(err, &cbErr) {
				return cbErr.err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &Error{Proto: p.proto, Family: p.family, NS: ns, Err: err}
		}
	}
	return nil
}

// Lookup asks the kernel for one TCP or UDP socket by its exact tuple
// (SOCK_DIAG_BY_FAMILY without NLM_F_DUMP). The kernel generates the socket's
// cookie if it had none, so this is how the tracer learns cookies on kernels
// where BPF cannot read them. local and peer must be of the same family
// (IPv4, or IPv6 including v4-mapped). A listener or an unconnected UDP
// socket is found with a zero peer (0.0.0.0:0 or [::]:0). The returned row is
// the caller's to keep. A missing socket gives an error wrapping ErrNotFound.
func Lookup(ctx context.Context, ns netns.Namespace, proto sock.Proto, local, peer netip.AddrPort) (*sock.Socket, error) {
	family := uint8(unix.AF_INET6)
	if local.Addr().Is4() {
		family = unix.AF_INET
	}
	fail := func(err error) (*sock.Socket, error) {
		return nil, &Error{Proto: proto, Family: family, NS: ns, Err: err}
	}
	if proto != sock.ProtoTCP && proto != sock.ProtoUDP {
		return fail(fmt.Errorf("lookup supports tcp and udp, not %v", proto))
	}
	if !local.IsValid() || !peer.IsValid() {
		return fail(errors.New("lookup needs a valid local and peer address (use 0.0.0.0:0 or [::]:0 for no peer)"))
	}
	if local.Addr().Is4() != peer.Addr().Is4() {
		return fail(fmt.Errorf("local %v and peer %v are of different families", local, peer))
	}
	if local.Addr().Zone() != "" || peer.Addr().Zone() != "" {
		return fail(errors.New("lookup does not take zoned addresses"))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := dial(ns)
	if err != nil {
		return fail(err)
	}
	defer c.close()
	stop := context.AfterFunc(ctx, c.interrupt)
	defer stop()

	row, err := c.lookup(proto, family, local, peer)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return fail(err)
	}
	return row, nil
}

// pass is one request/dump exchange: one protocol and, for inet, one family.
type pass struct {
	proto  sock.Proto
	family uint8
}

func planPasses(req Request) ([]pass, error) {
	if len(req.Protos) == 0 {
		return nil, errors.New("no protocol requested")
	}
	families := req.Families
	if len(families) == 0 {
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	for _, f := range families {
		if f == unix.AF_UNSPEC && len(req.Protos) == 1 && (req.Protos[0] == sock.ProtoSCTP || req.Protos[0] == sock.ProtoDCCP) {
			continue // ss's legacy request (see legacyInetRequest)
		}
		if f != unix.AF_INET && f != unix.AF_INET6 {
			return nil, fmt.Errorf("family %d is not AF_INET or AF_INET6", f)
		}
	}
	var passes []pass
	for _, p := range req.Protos {
		switch p {
		case sock.ProtoTCP, sock.ProtoUDP, sock.ProtoRAW, sock.ProtoMPTCP, sock.ProtoSCTP, sock.ProtoDCCP:
			for _, f := range families {
				passes = append(passes, pass{proto: p, family: f})
			}
		case sock.ProtoUNIX:
			passes = append(passes, pass{proto: p, family: unix.AF_UNIX})
		case sock.ProtoPacket:
			passes = append(passes, pass{proto: p, family: unix.AF_PACKET})
		case sock.ProtoNetlink:
			passes = append(passes, pass{proto: p, family: unix.AF_NETLINK})
		case sock.ProtoVsock, sock.ProtoTIPC, sock.ProtoXDP:
			f, _ := undecodedFamily(p)
			passes = append(passes, pass{proto: p, family: f})
		default:
			return nil, fmt.Errorf("unknown protocol %d", uint8(p))
		}
	}
	return passes, nil
}

// callbackError carries fn's error through the receive loop so that Dump can
// return it unwrapped.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// DumpEach runs Dump in each namespace of nss, in order, and passes every
// row to fn. A namespace that vanished since it was listed (its last
// process exited; a bind mount gone) is skipped: its sockets went with it.
// Other errors stop the walk, naming the namespace.
func DumpEach(ctx context.Context, nss []netns.Namespace, req Request, fn func(*sock.Socket) error) error {
	for _, ns := range nss {
		err := Dump(ctx, ns, req, fn)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ns.Path != "" && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return fmt.Errorf("dump %s: %w", ns, err)
	}
	return nil
}
