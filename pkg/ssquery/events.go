package ssquery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
)

// UsageError is input ss rejects with its usage text and exit status 255
// (an unknown option, a bad -A or -f value, a filter that does not parse,
// a -F file that does not open). sstrace prints one line instead of the
// usage text, with the same status.
type UsageError struct{ Err error }

// Error is the cause's message.
func (e *UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *UsageError) Unwrap() error { return e.Err }

// SSVersion is the iproute2 release whose ss sstrace ss answers as.
const SSVersion = "6.1.0"

// UsageExitStatus is ss's exit status for rejected input (exit(-1)).
const UsageExitStatus = 255

// Follower is a Source that can report sockets as the kernel destroys
// them (-E): a live one.
type Follower interface {
	// FollowDestroyed calls emit with each destroyed socket of req's
	// protocols and families until ctx ends.
	FollowDestroyed(ctx context.Context, req sockdiag.DestroyedRequest, emit func(*sock.Socket) error) error
}

// FollowDestroyed joins the namespace's sock_diag destroy groups.
func (l LiveSource) FollowDestroyed(ctx context.Context, req sockdiag.DestroyedRequest, emit func(*sock.Socket) error) error {
	return sockdiag.FollowDestroyed(ctx, l.NS, req, emit)
}

// RawDumper is a Source that can hand over the kernel's replies as they
// came (-D): a live one.
type RawDumper interface {
	// DumpRaw runs req's dump, writing every reply datagram to w.
	DumpRaw(ctx context.Context, req Request, w io.Writer) error
}

// DumpRaw dumps req with sockdiag.Request.Raw set to w; the rows
// themselves are dropped.
func (l LiveSource) DumpRaw(ctx context.Context, req Request, w io.Writer) error {
	r := sockdiag.Request{Protos: req.Protos, Families: req.Families, States: req.States,
		Info: req.Info, Mem: req.Mem, TOS: req.TOS, Raw: w}
	return sockdiag.Dump(ctx, l.NS, r, func(*sock.Socket) error { return nil })
}

// checkSELinux is -Z and -z's answer. ss asks libselinux whether SELinux
// is enabled (is_selinux_enabled: selinuxfs mounted) and without it fails
// with "SELinux is not enabled." and status 1; with it, sstrace does not
// read contexts and says so.
func checkSELinux(level int) error {
	if level == 0 {
		return nil
	}
	if _, err := os.Stat("/sys/fs/selinux/enforce"); err != nil {
		return errors.New("ss: SELinux is not enabled.")
	}
	return errors.New("ss: -Z/-z: sstrace does not print SELinux contexts (run iproute2's ss -Z)")
}

// diagDump is -D FILE: ss's raw TCP dump. ss runs it before it parses the
// filter, so no bytecode goes with it; it writes to stdout for a name
// starting with "-", prints no rows and exits 0, as does a -D without TCP
// in the selection (with a note).
func diagDump(ctx context.Context, stdout, stderr io.Writer, o *Options, sel *Selection, src Source) error {
	if !sel.hasTable(TCP) {
		fmt.Fprintln(stderr, "ss: tcpdiag dump requested and no tcp in filter.")
		return nil
	}
	rd, ok := src.(RawDumper)
	if !ok {
		return errors.New("ss: -D dumps live sockets: it does not apply here (a table snapshot, --at, or the daemon)")
	}
	w := stdout
	if !strings.HasPrefix(o.Diag, "-") {
		f, err := os.Create(o.Diag)
		if err != nil {
			return fmt.Errorf("ss: -D: %w", err)
		}
		defer f.Close()
		w = f
	}
	req := Request{
		Protos:   []sock.Proto{sock.ProtoTCP},
		Families: sel.inetFamilies(),
		States:   kernelStates(sel.states),
		Info:     o.Info,
		Mem:      o.Memory,
		TOS:      o.TOS,
	}
	if err := rd.DumpRaw(ctx, req, w); err != nil {
		return fmt.Errorf("ss: -D: %w", err)
	}
	if f, ok := w.(*os.File); ok && f != stdout {
		if err := f.Close(); err != nil {
			return fmt.Errorf("ss: -D: %w", err)
		}
	}
	return nil
}

// eventSink is what -E prints to: the table, rendered after each socket
// as ss renders it (column widths grow with the widest field seen).
type eventSink interface {
	rowSink
	Render() error
}

// followDestroyed is -E: ss subscribes to the destroy groups of TCP and
// UDP of the selected families, and prints every destroyed socket the
// filter matches, whatever its state, until interrupted.
func followDestroyed(ctx context.Context, src Source, sel *Selection, match func(*sock.Socket) bool, sink eventSink) error {
	f, ok := src.(Follower)
	if !ok {
		return errors.New("ss: -E follows live sockets: it does not apply here (a table snapshot, --at, or the daemon)")
	}
	var req sockdiag.DestroyedRequest
	for _, t := range []struct {
		table Table
		proto sock.Proto
	}{{TCP, sock.ProtoTCP}, {UDP, sock.ProtoUDP}} {
		if sel.hasTable(t.table) {
			req.Protos = append(req.Protos, t.proto)
		}
	}
	for _, fam := range []uint8{afInet, afInet6} {
		if sel.hasFamily(int(fam)) {
			req.Families = append(req.Families, fam)
		}
	}
	err := f.FollowDestroyed(ctx, req, func(s *sock.Socket) error {
		if !sel.hasFamily(int(s.Family)) || !match(s) {
			return nil
		}
		sink.Add(s)
		return sink.Render()
	})
	if errors.Is(err, sockdiag.ErrNoDestroyGroup) {
		// ss exits 255 without a word when it has no group to join.
		return &UsageError{Err: fmt.Errorf("ss: -E: %w (-E follows tcp and udp)", err)}
	}
	if err != nil {
		return fmt.Errorf("ss: -E: %w", err)
	}
	return nil
}
