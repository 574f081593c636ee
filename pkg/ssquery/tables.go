package ssquery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/filter"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
)

// The tables ss lists besides the inet and UNIX ones.
//
// Packet and netlink sockets have no state: the kernel's diag modules
// return every socket, ss shows each as UNCONN, and it asks for them only
// when its state set holds CLOSE (so `ss -0` lists them, `ss -A packet`
// without -a does not). ss keeps the packet rows of both types whatever
// `-A packet_raw` or `-A packet_dgram` said (its packet_diag path never
// checks the type), and so does sstrace.
//
// DCCP, SCTP, vsock, TIPC and XDP rows are not decoded. They are asked for
// as ss asks (for SCTP and DCCP, once more with the old request when the
// first fails), and where the kernel has no sock_diag module for them (it
// answers ENOENT), the answer is ss's: no rows, exit status 0. Another
// error is printed as ss prints it ("RTNETLINK answers: Invalid argument",
// what this kernel answers the old DCCP request) and the listing goes on. A kernel
// that does send rows gets an error instead of a wrong, empty table.

// dumpLinkTables dumps the netlink, then the packet table, as ss does
// before every other.
func dumpLinkTables(ctx context.Context, src Source, sel *Selection, states sock.StateSet,
	o *Options, emit func(*sock.Socket) error) error {
	if !states.Has(sock.Close) {
		return nil
	}
	for _, t := range [...]struct {
		on     bool
		proto  sock.Proto
		module string
	}{
		{sel.hasTable(Netlink) && sel.hasFamily(afNetlink), sock.ProtoNetlink, "netlink_diag"},
		{sel.tables&packetTables != 0 && sel.hasFamily(afPacket), sock.ProtoPacket, "packet_diag"},
	} {
		if !t.on {
			continue
		}
		err := src.Dump(ctx, Request{Protos: []sock.Proto{t.proto}, States: 1 << sock.Close, Mem: o.Memory}, emit)
		if errors.Is(err, unix.ENOENT) {
			// ss would read /proc/net/packet or /proc/net/netlink.
			return fmt.Errorf("%w (the kernel has no %s module; sstrace does not read /proc/net instead)", err, t.module)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// dumpUndecoded asks for the DCCP, SCTP, vsock, TIPC and XDP tables that
// are selected, each under ss's own condition, and answers as ss does
// where the kernel has no module for them.
func dumpUndecoded(ctx context.Context, src Source, stderr io.Writer, sel *Selection,
	kernelStates sock.StateSet, q *filter.Query) error {
	inet := sel.hasFamily(afInet) || sel.hasFamily(afInet6)
	for _, t := range [...]struct {
		on    bool
		proto sock.Proto
	}{
		{sel.hasTable(DCCP) && inet, sock.ProtoDCCP},
		{sel.hasTable(SCTP) && inet, sock.ProtoSCTP},
		{sel.tables&vsockTables != 0 && sel.hasFamily(afVsock), sock.ProtoVsock},
		{sel.hasTable(TIPC), sock.ProtoTIPC},
		{sel.hasTable(XDP) && sel.hasFamily(afXDP) && kernelStates.Has(sock.Close), sock.ProtoXDP},
	} {
		if !t.on {
			continue
		}
		req := Request{Protos: []sock.Proto{t.proto}, States: kernelStates}
		if t.proto == sock.ProtoDCCP || t.proto == sock.ProtoSCTP {
			req.Families = sel.inetFamilies()
			if len(req.Families) == 0 {
				req.Families = bothInet
			}
			req.Bytecode = q.Bytecode
		}
		err := src.Dump(ctx, req, func(*sock.Socket) error { return nil })
		if err != nil && req.Families != nil && !errors.Is(err, sockdiag.ErrNotDecoded) {
			// ss asks once more, the old way, and reports that
			// answer (see sockdiag's legacyInetRequest).
			req.Families, req.Bytecode = legacyFamily, nil
			err = src.Dump(ctx, req, func(*sock.Socket) error { return nil })
		}
		if err := answerAsSS(stderr, t.proto, err); err != nil {
			return err
		}
	}
	return nil
}

// legacyFamily asks a Source for ss's legacy inet request (read-only).
var legacyFamily = []uint8{unix.AF_UNSPEC}

// answerAsSS turns the error of a dump of an undecoded table into ss's
// answer: nothing for ENOENT and EOPNOTSUPP (no sock_diag module), ss's
// "RTNETLINK answers: " line on stderr for another kernel error, an error
// for rows sstrace cannot show.
func answerAsSS(stderr io.Writer, p sock.Proto, err error) error {
	var errno syscall.Errno
	switch {
	case err == nil, errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP):
		return nil
	case errors.Is(err, sockdiag.ErrNotDecoded):
		return fmt.Errorf("the kernel has a sock_diag module for %s and lists %s sockets; sstrace does not decode them (use ss)", p, p)
	case errors.As(err, &errno):
		fmt.Fprintf(stderr, "RTNETLINK answers: %s\n", strerror(errno))
		return nil
	}
	return err
}

// strerror is glibc's message for errno: Go's, with its first letter
// capitalised.
func strerror(errno syscall.Errno) string {
	msg := errno.Error()
	if msg != "" && msg[0] >= 'a' && msg[0] <= 'z' {
		msg = string(msg[0]-'a'+'A') + msg[1:]
	}
	return msg
}
