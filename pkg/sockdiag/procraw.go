package sockdiag

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// RAW sockets are dumped through sock_diag only when the kernel has
// CONFIG_INET_RAW_DIAG; without it the request fails with ENOENT and, like
// ss, we read /proc/net/raw and /proc/net/raw6 of the namespace instead.
// Those files carry no cookie, mark, cgroup or memory info: such rows have
// Cookie 0 and no optional attributes, and no kernel filter (bytecode) was
// applied to them, so a caller with a filter must apply it itself (ss does
// the same: it re-runs its filter on every row in user space).

// rawFromProc delivers the RAW sockets of one family from procfs.
func (c *conn) rawFromProc(p pass, req Request, d *decoder, fn func(*sock.Socket) error) error {
	name := "/proc/thread-self/net/raw"
	if p.family == unix.AF_INET6 {
		name += "6"
	}
	var data []byte
	// The file shows the namespace of the thread that opens it, so it is
	// read on a thread inside the namespace.
	_, err := c.ns.DoWithInode(func() error {
		var err error
		data, err = os.ReadFile(name)
		return err
	})
	if err != nil {
		return fmt.Errorf("no sock_diag RAW support (CONFIG_INET_RAW_DIAG), and procfs fallback failed: %w", err)
	}
	return parseProcRaw(data, p.family, c.netnsIno, req.States, &d.row, fn)
}

// parseProcRaw parses /proc/net/raw{,6} text (net/ipv4/raw.c raw_sock_seq_show,
// net/ipv6/raw.c via ip6_dgram_sock_seq_show) into rows.
func parseProcRaw(data []byte, family uint8, netnsIno uint64, states sock.StateSet, row *sock.Socket, fn func(*sock.Socket) error) error {
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		if i == 0 {
			continue // header
		}
		f := bytes.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 10 {
			return fmt.Errorf("procfs raw line %d: %d fields, want at least 10", i+1, len(f))
		}
		local, err := parseProcAddr(f[1], family)
		if err != nil {
			return fmt.Errorf("procfs raw line %d: local address: %w", i+1, err)
		}
		peer, err := parseProcAddr(f[2], family)
		if err != nil {
			return fmt.Errorf("procfs raw line %d: remote address: %w", i+1, err)
		}
		st, err := strconv.ParseUint(string(f[3]), 16, 8)
		if err != nil {
			return fmt.Errorf("procfs raw line %d: state: %w", i+1, err)
		}
		tx, rx, ok := bytes.Cut(f[4], []byte(":"))
		if !ok {
			return fmt.Errorf("procfs raw line %d: queues %q", i+1, f[4])
		}
		txq, err1 := strconv.ParseUint(string(tx), 16, 32)
		rxq, err2 := strconv.ParseUint(string(rx), 16, 32)
		uid, err3 := strconv.ParseUint(string(f[7]), 10, 32)
		ino, err4 := strconv.ParseUint(string(f[9]), 10, 64)
		for _, e := range []error{err1, err2, err3, err4} {
			if e != nil {
				return fmt.Errorf("procfs raw line %d: %w", i+1, e)
			}
		}
		*row = sock.Socket{
			Proto:  sock.ProtoRAW,
			Family: family,
			State:  sock.State(st),
			NetNS:  netnsIno,
			Local:  local,
			Peer:   peer,
			RecvQ:  uint32(rxq),
			SendQ:  uint32(txq),
			UID:    uint32(uid),
			Inode:  ino,
			// The "port" of a RAW socket is its protocol (inet_num).
			RawProtocol: uint8(local.Port()),
		}
		if !states.Has(row.State) {
			continue
		}
		if err := fn(row); err != nil {
			return callbackError{err}
		}
	}
	return nil
}

// parseProcAddr parses "0100007F:0001" (IPv4) or 32 hex digits and a port
// (IPv6): the address words are printed as host-order integers.
func parseProcAddr(b []byte, family uint8) (netip.AddrPort, error) {
	a, p, ok := bytes.Cut(b, []byte(":"))
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%q has no port", b)
	}
	port, err := strconv.ParseUint(string(p), 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", p, err)
	}
	want := 8
	if family == unix.AF_INET6 {
		want = 32
	}
	if len(a) != want {
		return netip.AddrPort{}, fmt.Errorf("address %q: %d hex digits, want %d", a, len(a), want)
	}
	var raw [16]byte
	for w := 0; w < want/8; w++ {
		v, err := strconv.ParseUint(string(a[w*8:w*8+8]), 16, 32)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q: %w", a, err)
		}
		ne.PutUint32(raw[w*4:], uint32(v))
	}
	if family == unix.AF_INET {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(raw[:4])), uint16(port)), nil
	}
	return netip.AddrPortFrom(netip.AddrFrom16(raw), uint16(port)), nil
}
