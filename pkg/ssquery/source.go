package ssquery

import (
	"context"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
)

// Request is what Run asks a Source for: the sockets of some protocols and
// families in some states. Run asks one protocol at a time, in ss's order
// (netlink, packet, UNIX, RAW, UDP, TCP, DCCP, SCTP, vsock, TIPC, XDP,
// MPTCP), and prints rows in the order the Source emits them.
type Request struct {
	// Protos lists the protocols, in the order their rows are wanted.
	Protos []sock.Proto
	// Families restricts inet protocols to unix.AF_INET and/or AF_INET6,
	// in the order their rows are wanted (ss's: IPv4 first unless -6 was
	// the last family chosen); empty means both, IPv4 first. Protocols
	// of other families ignore it. For SCTP and DCCP, AF_UNSPEC alone
	// asks the old way, as ss does when its first request fails.
	Families []uint8
	// States is the set of kernel states wanted. It is ss's state set with
	// NEW_SYN_RECV added when SYN-RECV is in it (request sockets are
	// NEW_SYN_RECV in the kernel) and ss's UNKNOWN bit removed.
	States sock.StateSet
	// Bytecode is the filter compiled for the kernel (INET_DIAG_REQ_BYTECODE,
	// per family; nil when there is none). A source may use it to skip rows
	// early or ignore it: Run matches the whole filter on every row anyway.
	Bytecode func(family uint8) (prog []byte, ok bool)
	// Info asks for TCP information (Socket.TCP), for -i.
	Info bool
	// Mem asks for socket memory (Socket.Mem), for -m.
	Mem bool
	// TOS asks for the TOS, TCLASS and class id (Socket.TOS, TClass,
	// ClassID), for --tos.
	TOS bool
}

// Source serves the rows of one ss query: a live dump of the kernel
// (LiveSource) or a table kept elsewhere (RowsSource, or a type of the
// daemon's).
type Source interface {
	// Dump calls emit with every socket that matches req, in req's
	// protocol and family order, and stops at the first error emit
	// returns, returning it unchanged.
	//
	// The row passed to emit belongs to the Source and is valid until emit
	// returns; emit may change it (Run sets Procs for -p), so a Source must
	// not pass rows it needs to keep unchanged. Run keeps rows beyond emit
	// only as copies.
	Dump(ctx context.Context, req Request, emit func(*sock.Socket) error) error
}

// LiveSource dumps the sockets of a network namespace through sock_diag: a
// one-shot `sstrace ss`.
type LiveSource struct {
	// NS is the namespace; the zero value is the caller's own.
	NS netns.Namespace
}

// Dump dumps req's protocols one after the other, each through dumpInet.
func (l LiveSource) Dump(ctx context.Context, req Request, emit func(*sock.Socket) error) error {
	for _, p := range req.Protos {
		r := sockdiag.Request{
			Protos: []sock.Proto{p},
			States: req.States,
			Mem:    req.Mem,
			TOS:    req.TOS,
		}
		switch p {
		case sock.ProtoUNIX, sock.ProtoPacket, sock.ProtoNetlink, sock.ProtoVsock, sock.ProtoTIPC, sock.ProtoXDP:
			// No kernel filter and one family.
			if err := sockdiag.Dump(ctx, l.NS, r, emit); err != nil {
				return err
			}
			continue
		case sock.ProtoSCTP, sock.ProtoDCCP:
			// Asked as ss asks, one family after the other, stopping
			// at the first error (see ssquery's dump).
			r.Bytecode = req.Bytecode
			r.Families = req.Families
			if err := sockdiag.Dump(ctx, l.NS, r, emit); err != nil {
				return err
			}
			continue
		}
		r.Bytecode = req.Bytecode
		// tcp_info, and MPTCP's mptcp_info, exist for those two only.
		r.Info = req.Info && (p == sock.ProtoTCP || p == sock.ProtoMPTCP)
		fams := req.Families
		if len(fams) == 0 {
			fams = bothInet
		}
		if err := dumpInet(ctx, l.NS, r, fams, emit); err != nil {
			return err
		}
	}
	return nil
}

// bothInet is the inet family order when a request names none (read-only).
var bothInet = []uint8{unix.AF_INET, unix.AF_INET6}

// dumpInet dumps one inet protocol for fams, in that order. The kernel
// walks all of the protocol's sockets (every namespace's: the hash tables
// are shared) once per family asked, so for two families the second walk
// runs at the same time as the first, on a netlink socket of its own: its
// rows are kept, copied (the dump reuses its row), and emitted once the
// first family is done. The output is the same as dumping one family after
// the other; with two CPUs the walks overlap.
func dumpInet(ctx context.Context, ns netns.Namespace, req sockdiag.Request, fams []uint8,
	emit func(*sock.Socket) error) error {
	if len(fams) < 2 {
		req.Families = fams
		return sockdiag.Dump(ctx, ns, req, emit)
	}
	laterCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		rows []*sock.Socket
		err  error
	}
	later := make(chan result, 1)
	// The goroutine gets a request of its own: req changes below.
	r := req
	r.Families = fams[1:]
	go func() {
		var res result
		res.err = sockdiag.Dump(laterCtx, ns, r, func(s *sock.Socket) error {
			res.rows = append(res.rows, sockdiag.Clone(s))
			return nil
		})
		later <- res
	}()
	req.Families = fams[:1]
	if err := sockdiag.Dump(ctx, ns, req, emit); err != nil {
		cancel()
		<-later
		return err
	}
	res := <-later
	if res.err != nil {
		return res.err
	}
	for _, s := range res.rows {
		if err := emit(s); err != nil {
			return err
		}
	}
	return nil
}

// RowsSource serves a fixed set of rows, such as a snapshot of the daemon's
// table, selecting by protocol, family and state in Go. It ignores
// Request.Bytecode: Run matches the whole filter on every row anyway. A row
// passes without its TCP information or memory unless Info or Mem asks for
// them, as a live dump would send it (--json prints what a row holds).
//
// The rows are not modified: each is passed to emit as a shallow copy in a
// reused value, so what Run sets (Procs) stays in the copy.
type RowsSource []*sock.Socket

// Dump emits the rows of each protocol of req, family by family in req's
// order, each in the order of the slice.
func (rs RowsSource) Dump(ctx context.Context, req Request, emit func(*sock.Socket) error) error {
	var row sock.Socket
	for _, p := range req.Protos {
		fams := req.Families
		switch {
		case p == sock.ProtoUNIX:
			fams = onlyUnix
		case len(fams) == 0:
			fams = bothInet
		}
		for _, fam := range fams {
			if err := ctx.Err(); err != nil {
				return err
			}
			for _, s := range rs {
				if s.Proto != p || s.Family != fam || !req.States.Has(s.State) {
					continue
				}
				row = *s
				if !req.Info {
					row.TCP, row.MPTCPInfo = nil, nil
				}
				if !req.Mem {
					row.Mem = nil
				}
				if err := emit(&row); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// onlyUnix is the family list of a UNIX request (read-only).
var onlyUnix = []uint8{unix.AF_UNIX}
