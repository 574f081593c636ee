package filter

// Privileged end-to-end tests: the bytecode goes into a real sock_diag dump
// in a fresh network namespace, and Match is compared with the kernel's
// answer and with the real `ss` binary on the same sockets.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/testutil"
	"golang.org/x/sys/unix"
)

// Attribute numbers from linux/inet_diag.h that x/sys does not define.
const (
	inetDiagReqBytecode = 1
	inetDiagMark        = 15
	inetDiagCgroupID    = 21
)

// diagDump asks the kernel for every TCP socket of one family, with an
// optional bytecode program, from a netlink socket made inside the netns.
func diagDump(t *testing.T, ns *testutil.NS, family uint8, prog []byte) ([]sock.Socket, error) {
	t.Helper()
	var fd int
	if err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		return err
	}); err != nil {
		t.Fatalf("netlink socket: %v", err)
	}
	defer unix.Close(fd)

	// nlmsghdr + inet_diag_req_v2 (+ the bytecode attribute).
	req := make([]byte, 16+56)
	req[16] = family
	req[17] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[20:], uint32(sock.AllStates))
	if prog != nil {
		attr := make([]byte, 4, 4+len(prog))
		binary.NativeEndian.PutUint16(attr[0:], uint16(4+len(prog)))
		binary.NativeEndian.PutUint16(attr[2:], inetDiagReqBytecode)
		req = append(req, append(attr, prog...)...)
	}
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatalf("send dump request: %v", err)
	}

	var rows []sock.Socket
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("receive dump: %v", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			t.Fatalf("parse dump: %v", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return rows, nil
			case unix.NLMSG_ERROR:
				code := int32(binary.NativeEndian.Uint32(m.Data))
				return nil, fmt.Errorf("dump: %w", syscall.Errno(-code))
			}
			rows = append(rows, parseDiagMsg(t, m.Data))
		}
	}
}

func parseDiagMsg(t *testing.T, b []byte) sock.Socket {
	if len(b) < 72 {
		t.Fatalf("short inet_diag_msg: %d bytes", len(b))
	}
	s := sock.Socket{Proto: sock.ProtoTCP, Family: b[0], State: sock.State(b[1])}
	sport, dport := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:])
	addr := func(raw []byte) netip.Addr {
		if s.Family == unix.AF_INET {
			return netip.AddrFrom4([4]byte(raw[:4]))
		}
		return netip.AddrFrom16([16]byte(raw[:16]))
	}
	s.Local = netip.AddrPortFrom(addr(b[8:24]), sport)
	s.Peer = netip.AddrPortFrom(addr(b[24:40]), dport)
	s.Iface = binary.NativeEndian.Uint32(b[40:])
	s.Cookie = uint64(binary.NativeEndian.Uint32(b[44:])) | uint64(binary.NativeEndian.Uint32(b[48:]))<<32
	s.Inode = uint64(binary.NativeEndian.Uint32(b[68:]))
	for a := b[72:]; len(a) >= 4; {
		l, typ := int(binary.NativeEndian.Uint16(a)), binary.NativeEndian.Uint16(a[2:])
		if l < 4 || l > len(a) {
			break
		}
		switch data := a[4:l]; typ {
		case inetDiagMark:
			s.Mark = u32(binary.NativeEndian.Uint32(data))
		case inetDiagCgroupID:
			s.CgroupID = u64(binary.NativeEndian.Uint64(data))
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	return s
}

// sockets opens a mix of TCP sockets in ns: listeners on v4, v6 and
// dual-stack addresses, connections over each (one v4-mapped), an
// explicitly bound client, a marked one, one bound to lo, and a TIME-WAIT.
func sockets(t *testing.T, ns *testutil.NS) {
	closers := &closerList{}
	t.Cleanup(closers.closeAll)
	listen := func(network, addr string) net.Listener {
		var l net.Listener
		if err := ns.Do(func() (err error) {
			l, err = net.Listen(network, addr)
			return err
		}); err != nil {
			t.Fatalf("listen %s: %v", addr, err)
		}
		closers.add(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				closers.add(func() { c.Close() })
			}
		}()
		return l
	}
	dial := func(addr string, local string, ctl func(fd uintptr) error) net.Conn {
		d := net.Dialer{Timeout: 5 * time.Second}
		if local != "" {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.MustParseAddrPort(local))
		}
		if ctl != nil {
			d.Control = func(_, _ string, c syscall.RawConn) error {
				var cerr error
				if err := c.Control(func(fd uintptr) { cerr = ctl(fd) }); err != nil {
					return err
				}
				return cerr
			}
		}
		var c net.Conn
		if err := ns.Do(func() (err error) {
			c, err = d.Dial("tcp", addr)
			return err
		}); err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		closers.add(func() { c.Close() })
		return c
	}
	listen("tcp4", "127.0.0.1:22")
	listen("tcp", "[::]:8080")
	listen("tcp6", "[::1]:443")
	listen("tcp4", "127.0.0.2:2000")
	dial("127.0.0.1:22", "", nil)
	dial("127.0.0.1:8080", "", nil)
	dial("[::1]:8080", "", nil)
	dial("[::1]:443", "", nil)
	// A client that binds its port before connecting: the kernel's
	// autobound sees SOCK_BINDPORT_LOCK, which rows do not carry.
	dial("127.0.0.2:2000", explicitClient, nil)
	dial("127.0.0.1:22", "", func(fd uintptr) error { return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, 0x15) })
	dial("127.0.0.1:22", "", func(fd uintptr) error { return unix.BindToDevice(int(fd), "lo") })
	// TIME-WAIT: the client closes first, then the server's side closes.
	tw := listen("tcp4", "127.0.0.3:3000")
	c := dial("127.0.0.3:3000", "", nil)
	c.Close()
	tw.Close()
	time.Sleep(50 * time.Millisecond)
}

// closerList gathers what a test opened, from the test's goroutine and
// from the accept loops, which run concurrently with it; whatever an
// accept loop hands over after the cleanup ran is closed at once, so no
// accepted connection outlives the test.
type closerList struct {
	mu     sync.Mutex
	closed bool
	fns    []func()
}

func (c *closerList) add(f func()) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		f()
		return
	}
	c.fns = append(c.fns, f)
	c.mu.Unlock()
}

func (c *closerList) closeAll() {
	c.mu.Lock()
	c.closed = true
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

const explicitClient = "127.0.0.1:1500"

// knownAutoboundGap reports the one row whose autobound verdict Match
// cannot know (see bindPortLocked).
func knownAutoboundGap(filter string, s *sock.Socket) bool {
	return strings.Contains(filter, "autobound") && s.Local == netip.MustParseAddrPort(explicitClient)
}

func nsOpts(t *testing.T, ns *testutil.NS) ParseOptions {
	o := ParseOptions{}
	o.LocalPortRange = func() (lo, hi int, err error) {
		err = ns.Do(func() error {
			var e error
			lo, hi, e = ReadLocalPortRange("/proc/sys/net/ipv4/ip_local_port_range")
			return e
		})
		return lo, hi, err
	}
	o.LookupIface = func(name string) (idx uint32, err error) {
		err = ns.Do(func() error {
			var e error
			idx, e = systemLookupIface(name)
			return e
		})
		return idx, err
	}
	o.LookupHost = func(name string) ([]netip.Addr, error) {
		if name == "localhost" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, errors.New("tests resolve localhost only")
	}
	return o
}

// parityFilters are checked against the kernel and against ss.
var parityFilters = []string{
	"",
	"sport = :22",
	"dport = :22",
	"dport :0",
	"sport > :1024",
	"sport gt 1024",
	"sport < :1024",
	"sport >= :2000 and sport <= :8080",
	"sport = :22 or sport = :8080 and dport != :0",
	"! sport = :22 and dport = :22",
	"dst 127.0.0.1",
	"dst [::ffff:127.0.0.1]",
	"src [::ffff:127.0.0.0/104]",
	"src 0.0.0.0/0",
	"src ::/0",
	"src any",
	"src *:8080",
	"src :22",
	"src [::1]",
	"src [::1]:443 or dst [::1]:443",
	"src 127/8",
	"src 127.0.0.0/255.255.255.0",
	"src inet:127.0.0.1",
	"src inet6:*:8080",
	"dst localhost",
	"src 127.0.0.1:1500",
	"sport = *",
	"sport > *",
	"sport = :-1",
	"sport = :99999",
	"sport >= 65558",
	"autobound",
	"not autobound",
	"dev lo",
	"dev != lo",
	"dev 0",
	"fwmark = 0x15",
	"fwmark 0x10/0x10",
	"fwmark != 0x15",
	"( src 127.0.0.1 or src [::1] ) and ( dport >= :1024 or sport = :22 )",
	"src 127.0.0.1 and ( sport = 22 and dport >= 40000 )",
}

func cookieSet(rows []sock.Socket, keep func(*sock.Socket) bool) map[uint64]bool {
	m := map[uint64]bool{}
	for i := range rows {
		if keep == nil || keep(&rows[i]) {
			m[rows[i].Cookie] = true
		}
	}
	return m
}

// privileged starts an end-to-end test: skipped by -short (make test-unit),
// then root required.
func privileged(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; -short runs unit tests only")
	}
	testutil.RequireRoot(t)
}

func TestBytecodeAgainstKernel(t *testing.T) {
	privileged(t)
	ns := testutil.NewNS(t)
	sockets(t, ns)
	opts := nsOpts(t, ns)

	// The cgroup condition has no ss parity check (ss -N cannot see the
	// cgroup mount); check it against the kernel only.
	filters := append([]string(nil), parityFilters...)
	if id, err := LookupCgroupID("/sys/fs/cgroup/unified"); err == nil {
		filters = append(filters, "cgroup = /sys/fs/cgroup/unified", "cgroup != /sys/fs/cgroup/unified")
		_ = id
	} else {
		t.Logf("no cgroup2 check: %v", err)
	}

	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		all, err := diagDump(t, ns, fam, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) < 5 {
			t.Fatalf("family %d: only %d sockets in the namespace", fam, len(all))
		}
		for _, f := range filters {
			q, err := Parse([]string{"state", "all", f}, opts)
			if err != nil {
				t.Errorf("%q: %v", f, err)
				continue
			}
			prog, ok := q.Bytecode(fam)
			if !ok {
				if q.Expr != nil && !strings.HasPrefix(f, "dev") {
					t.Errorf("%q: no bytecode (%s)", f, q.progErr)
				}
				continue
			}
			got, err := diagDump(t, ns, fam, prog)
			if err != nil {
				t.Errorf("%q: kernel refused %x: %v", f, prog, err)
				continue
			}
			kernel := cookieSet(got, nil)
			for i := range all {
				s := &all[i]
				if knownAutoboundGap(f, s) {
					continue
				}
				if want := q.matchKernel(s); kernel[s.Cookie] != want {
					t.Errorf("%q: %s %s->%s: kernel %v, our bytecode interpreter %v",
						f, s.State.SSLabel(), s.Local, s.Peer, kernel[s.Cookie], want)
				}
			}
		}
	}
}

var skRe = regexp.MustCompile(`\bsk:([0-9a-f]+)`)

// TestMatchAgainstSS runs the real ss in the namespace for every filter and
// checks it lists exactly the sockets Match selects.
func TestMatchAgainstSS(t *testing.T) {
	privileged(t)
	ssPath, err := exec.LookPath("ss")
	if err != nil {
		testutil.Unavailable(t, "ss binary: %v", err)
	}
	ns := testutil.NewNS(t)
	sockets(t, ns)
	opts := nsOpts(t, ns)
	var all []sock.Socket
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		rows, err := diagDump(t, ns, fam, nil)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rows...)
	}
	for i, f := range parityFilters {
		stateSets := [][]string{{"state", "all"}}
		if i%4 == 0 || strings.Contains(f, "autobound") {
			// The default state set too, on a sample: ss runs are slow.
			stateSets = append(stateSets, nil)
		}
		for _, stateArgs := range stateSets {
			args := append(append([]string(nil), stateArgs...), f)
			q, err := Parse(args, opts)
			if err != nil {
				t.Errorf("%q: %v", args, err)
				continue
			}
			want := cookieSet(all, q.Match)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			cmdArgs := append([]string{"-N", ns.Name, "-Htne"}, args...)
			var stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, ssPath, cmdArgs...)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			cancel()
			if err != nil {
				t.Errorf("ss %q: %v: %s", cmdArgs, err, stderr.String())
				continue
			}
			got := map[uint64]bool{}
			for _, m := range skRe.FindAllStringSubmatch(string(out), -1) {
				c, _ := strconv.ParseUint(m[1], 16, 64)
				got[c] = true
			}
			for i := range all {
				if knownAutoboundGap(f, &all[i]) {
					delete(got, all[i].Cookie)
					delete(want, all[i].Cookie)
				}
			}
			if !sameSet(got, want) {
				t.Errorf("ss %q lists %d sockets, Match %d:\n%s\nMatch selects:\n%s", strings.Join(args, " "),
					len(got), len(want), out, describe(all, want))
			}
		}
	}
}

func sameSet(a, b map[uint64]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func describe(rows []sock.Socket, set map[uint64]bool) string {
	var lines []string
	for _, s := range rows {
		if set[s.Cookie] {
			lines = append(lines, fmt.Sprintf("  %s %s %s sk:%x", s.State.SSLabel(), s.Local, s.Peer, s.Cookie))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestBytecodeMatchesSS captures the program ss itself sends (through
// strace) and compares it byte for byte with ours.
func TestBytecodeMatchesSS(t *testing.T) {
	privileged(t)
	stracePath, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace not installed: the byte-for-byte comparison with ss needs it")
	}
	ns := testutil.NewNS(t)
	opts := nsOpts(t, ns)
	for _, f := range parityFilters {
		if f == "" || strings.HasPrefix(f, "dev") {
			continue
		}
		q, err := Parse([]string{f}, opts)
		if err != nil {
			t.Fatalf("%q: %v", f, err)
		}
		ours, _ := q.Bytecode(unix.AF_INET)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, stracePath, "-f", "-e", "trace=sendmsg", "-e", "write=all", "-o", "/dev/stderr",
			"ss", "-N", ns.Name, "-Htn", f)
		var trace bytes.Buffer
		cmd.Stderr = &trace
		cmd.Stdout = nil
		err = cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("strace ss %q: %v\n%s", f, err, trace.String())
		}
		theirs := firstBytecode(trace.String())
		if !bytes.Equal(ours, theirs) {
			t.Errorf("%q:\n ours %x\n ss   %x", f, ours, theirs)
		}
	}
}

// strace -e write= prints " | 00000  07 10 14 00 ...  ..ascii.. |": the hex
// bytes sit in columns 10-57.
var dumpLine = regexp.MustCompile(`^ \| [0-9a-f]{5}  `)

// firstBytecode extracts "buffer 2" (the program) of the first sendmsg
// that carried one, from strace's hex dump.
func firstBytecode(trace string) []byte {
	var out []byte
	in := false
	for _, line := range strings.Split(trace, "\n") {
		switch {
		case strings.Contains(line, "bytes in buffer 2"):
			in = true
			continue
		case strings.HasPrefix(line, " * ") || strings.HasPrefix(line, "sendmsg") || (len(line) > 0 && line[0] >= '0' && line[0] <= '9'):
			if in {
				return out
			}
			continue
		}
		if !in {
			continue
		}
		if dumpLine.MatchString(line) && len(line) >= 58 {
			for _, h := range strings.Fields(line[10:58]) {
				v, _ := strconv.ParseUint(h, 16, 8)
				out = append(out, byte(v))
			}
		}
	}
	return out
}
