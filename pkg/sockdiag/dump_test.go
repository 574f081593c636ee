package sockdiag

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// ssRow is one line of `ss -tuxwaneoH` output, parsed.
type ssRow struct {
	line         string
	netid, state string
	rq, sq       uint64
	// local/peer are the address columns; for UNIX the name, with the
	// inode ports in lport/pport.
	local, peer  string
	lport, pport string
	ino          uint64
	hasIno       bool
	sk           string
	uid          uint64
	timer        string // "on,2.436ms,9" without the parentheses
	shut         string // "<->", "-->", "<--" or "---"
}

// runSS runs the real ss in the namespace and parses its lines.
func runSS(t *testing.T, nsName string) []ssRow {
	t.Helper()
	path, err := exec.LookPath("ss")
	if err != nil {
		testutil.Unavailable(t, "ss binary: %v", err)
	}
	out, err := exec.CommandContext(t.Context(), path, "-N", nsName, "-tuxwaneoH").Output()
	if err != nil {
		t.Fatalf("ss -N %s -tuxwaneoH: %v", nsName, err)
	}
	var rows []ssRow
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		rows = append(rows, parseSSLine(t, line))
	}
	return rows
}

func parseSSLine(t *testing.T, line string) ssRow {
	t.Helper()
	f := strings.Fields(line)
	r := ssRow{line: line}
	if len(f) < 6 {
		t.Fatalf("short ss line %q", line)
	}
	r.netid, r.state = f[0], f[1]
	var err error
	if r.rq, err = strconv.ParseUint(f[2], 10, 32); err != nil {
		t.Fatalf("ss line %q: recv-q: %v", line, err)
	}
	if r.sq, err = strconv.ParseUint(f[3], 10, 32); err != nil {
		t.Fatalf("ss line %q: send-q: %v", line, err)
	}
	var rest []string
	if strings.HasPrefix(r.netid, "u_") {
		if len(f) < 8 {
			t.Fatalf("short unix ss line %q", line)
		}
		r.local, r.lport, r.peer, r.pport = f[4], f[5], f[6], f[7]
		rest = f[8:]
	} else {
		r.local, r.peer = f[4], f[5]
		rest = f[6:]
	}
	for _, tok := range rest {
		switch {
		case strings.HasPrefix(tok, "ino:"):
			r.ino, err = strconv.ParseUint(tok[4:], 10, 64)
			r.hasIno = err == nil
		case strings.HasPrefix(tok, "sk:"):
			r.sk = tok[3:]
		case strings.HasPrefix(tok, "uid:"):
			r.uid, _ = strconv.ParseUint(tok[4:], 10, 32)
		case strings.HasPrefix(tok, "timer:("):
			r.timer = strings.TrimSuffix(strings.TrimPrefix(tok, "timer:("), ")")
		case tok == "<->" || tok == "-->" || tok == "<--" || tok == "---":
			r.shut = tok
		}
	}
	return r
}

// parseSSAddr parses an ss address column: "127.0.0.1:80", "[::1]:22",
// "*:22" (IPv6 any), "0.0.0.0:*", "127.0.0.1%lo:53".
func parseSSAddr(s string) (netip.Addr, uint16, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.Addr{}, 0, fmt.Errorf("no port in %q", s)
	}
	host, port := s[:i], s[i+1:]
	var p uint16
	if port != "*" {
		v, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return netip.Addr{}, 0, fmt.Errorf("port in %q: %v", s, err)
		}
		p = uint16(v)
	}
	if j := strings.IndexByte(host, '%'); j >= 0 {
		host = host[:j]
	}
	if host == "*" {
		return netip.IPv6Unspecified(), p, nil
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	a, err := netip.ParseAddr(host)
	return a, p, err
}

var timerKindNames = map[uint8]string{1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}

// parseSSTimer parses ss's print_ms_timer text ("1min", "59sec", "2.436ms",
// "118min") into milliseconds and the precision ss kept.
func parseSSTimer(s string) (ms int64, precision int64, err error) {
	m := regexp.MustCompile(`^(?:(\d+)min)?(?:(\d+)(?:sec|\.))?(?:(\d+)ms)?$`).FindStringSubmatch(s)
	if m == nil {
		return 0, 0, fmt.Errorf("timer %q", s)
	}
	num := func(x string) int64 { v, _ := strconv.ParseInt(x, 10, 64); return v }
	ms = num(m[1])*60000 + num(m[2])*1000 + num(m[3])
	precision = 1
	switch {
	case num(m[1]) > 9:
		precision = 60000
	case m[1] != "" || num(m[2]) > 9:
		precision = 1000
	}
	return ms, precision, nil
}

func ssNetid(s *sock.Socket) string {
	if s.Proto != sock.ProtoUNIX {
		return s.Proto.String()
	}
	switch s.Unix.Type {
	case unix.SOCK_STREAM:
		return "u_str"
	case unix.SOCK_DGRAM:
		return "u_dgr"
	case unix.SOCK_SEQPACKET:
		return "u_seq"
	}
	return "u_???"
}

// ssKey identifies a row in both outputs: the cookie for inet sockets ss
// got through sock_diag, the inode for UNIX sockets, and the endpoints for
// RAW sockets ss read from procfs (no cookie there).
func ssKeyOfRow(r ssRow) string {
	switch {
	case strings.HasPrefix(r.netid, "u_"):
		return "unix:" + r.lport
	case r.sk != "":
		return "sk:" + r.sk
	}
	la, lp, _ := parseSSAddr(r.local)
	pa, pp, _ := parseSSAddr(r.peer)
	return fmt.Sprintf("%s:%v|%v", r.netid, netip.AddrPortFrom(la, lp), netip.AddrPortFrom(pa, pp))
}

func ssKeyOfSocket(s *sock.Socket) string {
	switch {
	case s.Proto == sock.ProtoUNIX:
		return "unix:" + strconv.FormatUint(s.Inode, 10)
	case s.Cookie != 0:
		return "sk:" + strconv.FormatUint(s.Cookie, 16)
	}
	local, peer := s.Local, s.Peer
	// ss prints an unspecified IPv6 as "*", which the parser reads as ::.
	return fmt.Sprintf("%s:%v|%v", s.Proto, local, peer)
}

func shutArrows(s *sock.Socket) string {
	if s.Shutdown == nil {
		return ""
	}
	m := *s.Shutdown
	a, b := "<", ">"
	if m&1 != 0 {
		a = "-"
	}
	if m&2 != 0 {
		b = "-"
	}
	return a + "-" + b
}

// compareRow checks one of our rows against ss's view of the same socket.
func compareRow(t *testing.T, s *sock.Socket, r ssRow) {
	t.Helper()
	fail := func(what string, got, want any) {
		t.Errorf("%s: %s = %v, ss says %v\n  ss: %s", ssKeyOfSocket(s), what, got, want, r.line)
	}
	if got := ssNetid(s); got != r.netid {
		fail("netid", got, r.netid)
	}
	if got := s.State.SSLabel(); got != r.state {
		fail("state", got, r.state)
	}
	if uint64(s.RecvQ) != r.rq {
		fail("recv-q", s.RecvQ, r.rq)
	}
	// A SYN-SENT socket's send queue holds the SYN; it may be resent
	// between the two reads but stays 1.
	if uint64(s.SendQ) != r.sq {
		fail("send-q", s.SendQ, r.sq)
	}
	if s.Proto == sock.ProtoUNIX {
		name := s.Unix.Path
		if name == "" {
			name = "*"
		}
		if name != r.local {
			fail("name", name, r.local)
		}
		if got := strconv.FormatUint(s.Unix.PeerInode, 10); got != r.pport {
			fail("peer inode", got, r.pport)
		}
		return
	}
	la, lp, err := parseSSAddr(r.local)
	if err != nil {
		t.Fatalf("ss local %q: %v", r.local, err)
	}
	pa, pp, err := parseSSAddr(r.peer)
	if err != nil {
		t.Fatalf("ss peer %q: %v", r.peer, err)
	}
	if s.Local.Addr() != la || s.Local.Port() != lp {
		fail("local", s.Local, r.local)
	}
	if s.Peer.Addr() != pa || s.Peer.Port() != pp {
		fail("peer", s.Peer, r.peer)
	}
	if r.hasIno && s.Inode != r.ino {
		fail("ino", s.Inode, r.ino)
	}
	if r.sk != "" && strconv.FormatUint(s.Cookie, 16) != r.sk {
		fail("cookie", fmt.Sprintf("%x", s.Cookie), r.sk)
	}
	if uint64(s.UID) != r.uid {
		fail("uid", s.UID, r.uid)
	}
	if r.shut != "" && shutArrows(s) != r.shut {
		fail("shutdown", shutArrows(s), r.shut)
	}
	if r.timer == "" {
		if s.Timer.Kind != 0 && s.Proto != sock.ProtoRAW {
			fail("timer", s.Timer, "none")
		}
		return
	}
	parts := strings.Split(r.timer, ",")
	if len(parts) != 3 {
		t.Fatalf("ss timer %q", r.timer)
	}
	if got := timerKindNames[s.Timer.Kind]; got != parts[0] {
		fail("timer kind", got, parts[0])
	}
	ssMS, prec, err := parseSSTimer(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	// ss read after us: its value may be lower by the time between reads
	// (allow 2 s) and is truncated to the precision it printed.
	ours := s.Timer.Expires.Milliseconds()
	if d := ours - ssMS; d < -prec || d > 2000+prec {
		fail("timer expiry (ms)", ours, ssMS)
	}
}

// TestDumpMatchesSS builds a population in a fresh namespace and checks
// that every socket ss shows is in our dump with the same fields, and that
// we show nothing ss does not.
func TestDumpMatchesSS(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	p := buildPopulation(t, ns)

	rows := dumpAll(t, netns.ByName(ns.Name), Request{})
	ssRows := runSS(t, ns.Name)

	ours := make(map[string]*sock.Socket)
	for _, s := range rows {
		if s.NetNS != ns.Inode {
			t.Errorf("%s: NetNS %d, want %d", ssKeyOfSocket(s), s.NetNS, ns.Inode)
		}
		k := ssKeyOfSocket(s)
		if _, dup := ours[k]; dup {
			t.Errorf("duplicate row %s", k)
		}
		ours[k] = s
	}
	t.Logf("%d rows from sock_diag, %d from ss", len(rows), len(ssRows))
	seen := make(map[string]bool)
	for _, r := range ssRows {
		k := ssKeyOfRow(r)
		s, ok := ours[k]
		if !ok {
			t.Errorf("ss shows a socket we did not dump (%s):\n  %s", k, r.line)
			continue
		}
		seen[k] = true
		compareRow(t, s, r)
	}
	for k, s := range ours {
		if !seen[k] {
			t.Errorf("we dumped a socket ss does not show: %s %v %v %v", k, s.State, s.Local, s.Peer)
		}
	}

	// The population must really contain every shape, or the comparison
	// above proves less than it claims.
	want := map[string]bool{
		"tcp LISTEN": false, "tcp ESTAB": false, "tcp CLOSE-WAIT": false, "tcp TIME-WAIT": false,
		"tcp FIN-WAIT-2": false, "tcp SYN-SENT": false, "tcp SYN-RECV": false,
		"udp UNCONN": false, "udp ESTAB": false, "raw UNCONN": false,
		"u_str LISTEN": false, "u_str ESTAB": false, "u_dgr UNCONN": false, "u_seq ESTAB": false,
	}
	var sawPending, sawAbstract, sawPath, sawUID, sawV6, sawMapped, sawTimewaitTimer bool
	for _, s := range rows {
		want[ssNetid(s)+" "+s.State.SSLabel()] = true
		if s.Family == unix.AF_INET6 {
			sawV6 = true
		}
		if s.Peer.Addr().Is4In6() {
			sawMapped = true
		}
		if s.UID == otherUID {
			sawUID = true
		}
		if s.State == sock.TimeWait && s.Timer.Kind == 3 && s.Timer.Expires > 50*time.Second && s.Inode == 0 {
			sawTimewaitTimer = true
		}
		if s.Unix != nil {
			if strings.HasPrefix(s.Unix.Path, "@sstrace-sockdiag-") {
				sawAbstract = true
			}
			if s.Unix.Path == p.unixListenPath && s.State == sock.Listen {
				sawPath = true
				if len(s.Unix.Pending) == 1 {
					if _, ok := ours["unix:"+strconv.FormatUint(s.Unix.Pending[0], 10)]; ok {
						sawPending = true
					}
				}
			}
		}
	}
	for k, ok := range want {
		if !ok {
			t.Errorf("population has no %s socket", k)
		}
	}
	for what, ok := range map[string]bool{
		"pending connection on the UNIX listener": sawPending, "abstract UNIX name": sawAbstract,
		"path UNIX listener": sawPath, "socket of uid 4321": sawUID, "IPv6 socket": sawV6,
		"v4-mapped peer": sawMapped, "TIME-WAIT timer near 60s with ino 0": sawTimewaitTimer,
	} {
		if !ok {
			t.Errorf("dump lacks %s", what)
		}
	}
}

// TestCookieIsSOCookie checks the dump's cookie against getsockopt(SO_COOKIE)
// on live sockets, and that NetNS is the namespace's inode.
func TestCookieIsSOCookie(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	p := buildPopulation(t, ns)
	byCookie := make(map[uint64]*sock.Socket)
	for _, s := range dumpAll(t, netns.ByName(ns.Name), Request{}) {
		byCookie[s.Cookie] = s
	}
	check := func(name string, ck uint64, local net.Addr) {
		s, ok := byCookie[ck]
		if !ok {
			t.Errorf("%s: SO_COOKIE %#x not in the dump", name, ck)
			return
		}
		if s.Local.String() != netip.MustParseAddrPort(local.String()).String() {
			t.Errorf("%s: cookie %#x is on %v, want %v", name, ck, s.Local, local)
		}
	}
	check("tcp4 client", soCookie(t, p.estabClient4), p.estabClient4.LocalAddr())
	check("tcp6 client", soCookie(t, p.estabClient6), p.estabClient6.LocalAddr())
	check("udp4 bound", soCookie(t, p.udpBound4), p.udpBound4.LocalAddr())
	check("tcp4 listener", soCookie(t, p.listener4), p.listener4.Addr())
}

// TestNamespaceIsolation: a socket in namespace A must appear when dumping
// A and never when dumping B or our own namespace (the trap of opening the
// netlink socket in the wrong namespace).
func TestNamespaceIsolation(t *testing.T) {
	testutil.RequireRoot(t)
	a := testutil.NewNS(t)
	b := testutil.NewNS(t)
	var ln *net.TCPListener
	if err := a.Do(func() error {
		var err error
		ln, err = listenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ck := soCookie(t, ln)

	has := func(ns netns.Namespace) (bool, int) {
		n := 0
		found := false
		for _, s := range dumpAll(t, ns, Request{Protos: []sock.Proto{sock.ProtoTCP}}) {
			n++
			if s.Cookie == ck {
				found = true
			}
		}
		return found, n
	}
	if ok, _ := has(netns.ByName(a.Name)); !ok {
		t.Fatalf("listener (cookie %#x) missing from the dump of its own namespace %s", ck, a.Name)
	}
	if ok, n := has(netns.ByName(b.Name)); ok || n != 0 {
		t.Errorf("dump of empty namespace %s returned %d TCP sockets (listener of %s among them: %v)", b.Name, n, a.Name, ok)
	}
	if ok, _ := has(netns.Namespace{}); ok {
		t.Errorf("dump of our own namespace shows the listener of %s", a.Name)
	}
	// The same through /proc/PID/ns/net paths and the inode helpers.
	inoA, err := netns.ByName(a.Name).Inode()
	if err != nil || inoA != a.Inode {
		t.Errorf("Inode(%s) = %d, %v; want %d", a.Name, inoA, err, a.Inode)
	}
}

func TestLookup(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	other := testutil.NewNS(t)
	p := buildPopulation(t, ns)
	nsA := netns.ByName(ns.Name)
	ap := func(a net.Addr) netip.AddrPort { return netip.MustParseAddrPort(a.String()) }

	cases := []struct {
		name        string
		proto       sock.Proto
		local, peer netip.AddrPort
		cookie      uint64
		state       sock.State
	}{
		{"tcp4 established", sock.ProtoTCP, ap(p.estabClient4.LocalAddr()), ap(p.estabClient4.RemoteAddr()), soCookie(t, p.estabClient4), sock.Established},
		{"tcp6 established", sock.ProtoTCP, ap(p.estabClient6.LocalAddr()), ap(p.estabClient6.RemoteAddr()), soCookie(t, p.estabClient6), sock.Established},
		{"tcp4 listener", sock.ProtoTCP, ap(p.listener4.Addr()), netip.MustParseAddrPort("0.0.0.0:0"), soCookie(t, p.listener4), sock.Listen},
		{"udp4 bound", sock.ProtoUDP, ap(p.udpBound4.LocalAddr()), netip.MustParseAddrPort("0.0.0.0:0"), soCookie(t, p.udpBound4), sock.Close},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Lookup(t.Context(), nsA, c.proto, c.local, c.peer)
			if err != nil {
				t.Fatalf("Lookup(%v, %v -> %v): %v", c.proto, c.local, c.peer, err)
			}
			if s.Cookie != c.cookie {
				t.Errorf("cookie %#x, SO_COOKIE %#x", s.Cookie, c.cookie)
			}
			if s.State != c.state || s.Local != c.local || s.NetNS != ns.Inode {
				t.Errorf("got %v %v->%v netns %d; want %v %v netns %d", s.State, s.Local, s.Peer, s.NetNS, c.state, c.local, ns.Inode)
			}
			// The same tuple does not exist in another namespace.
			_, err = Lookup(t.Context(), netns.ByName(other.Name), c.proto, c.local, c.peer)
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("lookup in %s: %v, want ErrNotFound", other.Name, err)
			}
		})
	}
	// A TIME-WAIT socket is found too, with its cookie and ino 0.
	for _, s := range dumpAll(t, nsA, Request{Protos: []sock.Proto{sock.ProtoTCP}, States: sock.StateSet(0).With(sock.TimeWait)}) {
		got, err := Lookup(t.Context(), nsA, sock.ProtoTCP, s.Local, s.Peer)
		if err != nil {
			t.Fatalf("lookup TIME-WAIT %v->%v: %v", s.Local, s.Peer, err)
		}
		if got.Cookie != s.Cookie || got.State != s.State || got.Inode != 0 || got.Timer.Kind != 3 {
			t.Errorf("TIME-WAIT lookup: %+v, dump had cookie %#x state %v", got, s.Cookie, s.State)
		}
	}

	_, err := Lookup(t.Context(), nsA, sock.ProtoTCP, netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2"))
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("missing tuple: %v, want ErrNotFound", err)
	}
	if err == nil || !strings.Contains(err.Error(), "sock_diag tcp/inet in netns /run/netns/"+ns.Name) {
		t.Errorf("error %q does not name protocol and namespace", err)
	}
	for _, bad := range []struct {
		proto       sock.Proto
		local, peer string
	}{
		{sock.ProtoUNIX, "127.0.0.1:1", "127.0.0.1:2"},
		{sock.ProtoTCP, "127.0.0.1:1", "[::1]:2"},
	} {
		if _, err := Lookup(t.Context(), nsA, bad.proto, netip.MustParseAddrPort(bad.local), netip.MustParseAddrPort(bad.peer)); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup(%v, %s, %s) = %v, want a usage error", bad.proto, bad.local, bad.peer, err)
		}
	}
}

// TestDumpStatesAndFamilies: the state set and family list reach the kernel.
func TestDumpStatesAndFamilies(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	buildPopulation(t, ns)
	nsA := netns.ByName(ns.Name)
	listen := sock.StateSet(0).With(sock.Listen)
	rows := dumpAll(t, nsA, Request{Protos: []sock.Proto{sock.ProtoTCP, sock.ProtoUNIX}, States: listen})
	if len(rows) < 4 {
		t.Errorf("only %d listeners", len(rows))
	}
	for _, s := range rows {
		if s.State != sock.Listen {
			t.Errorf("state filter LISTEN returned %v %v", s.State, s.Local)
		}
	}
	for _, s := range dumpAll(t, nsA, Request{Protos: []sock.Proto{sock.ProtoTCP, sock.ProtoUDP, sock.ProtoRAW}, Families: []uint8{unix.AF_INET6}}) {
		if s.Family != unix.AF_INET6 {
			t.Errorf("AF_INET6 dump returned family %d (%v)", s.Family, s.Local)
		}
	}
	// Info and Mem fill their parts.
	var withInfo, withMem int
	for _, s := range dumpAll(t, nsA, Request{Protos: []sock.Proto{sock.ProtoTCP}, Info: true, Mem: true, TOS: true}) {
		if s.State == sock.Established && s.TCP != nil && s.TCP.Len > 100 && s.TCP.Congestion != "" && s.TCP.Info.State == uint8(sock.Established) {
			withInfo++
		}
		if s.Mem != nil && s.Mem.RcvBuf > 0 {
			withMem++
		}
		// Timewait and request sockets are not full sockets: no TOS.
		if s.Inode != 0 && s.TOS == nil {
			t.Errorf("TOS asked but missing on %v %v", s.State, s.Local)
		}
	}
	if withInfo == 0 || withMem == 0 {
		t.Errorf("tcp_info on %d and meminfo on %d established sockets", withInfo, withMem)
	}
}

// TestDumpErrors: bad requests and missing namespaces fail clearly.
func TestDumpErrors(t *testing.T) {
	nop := func(*sock.Socket) error { return nil }
	err := Dump(t.Context(), netns.ByName("sstrace-no-such-ns"), Request{Protos: []sock.Proto{sock.ProtoTCP}, States: sock.AllStates}, nop)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), `no network namespace named "sstrace-no-such-ns"`) ||
		!strings.Contains(err.Error(), "sock_diag tcp/inet in netns /run/netns/sstrace-no-such-ns") {
		t.Errorf("missing namespace: %v", err)
	}
	err = Dump(t.Context(), netns.ByPID(1<<30), Request{Protos: []sock.Proto{sock.ProtoUNIX}, States: sock.AllStates}, nop)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no process") {
		t.Errorf("missing process: %v", err)
	}
	err = Dump(t.Context(), netns.Namespace{Path: "/proc/self/status"}, Request{Protos: []sock.Proto{sock.ProtoTCP}, States: sock.AllStates}, nop)
	if err == nil || !strings.Contains(err.Error(), "not a namespace file") {
		t.Errorf("non-namespace file: %v", err)
	}
	for _, req := range []Request{
		{},
		{Protos: []sock.Proto{sock.Proto(99)}},
		{Protos: []sock.Proto{sock.ProtoTCP}, Families: []uint8{unix.AF_UNIX}},
	} {
		if err := Dump(t.Context(), netns.Namespace{}, req, nop); err == nil {
			t.Errorf("Dump(%+v) accepted a bad request", req)
		}
	}
	if err := Dump(t.Context(), netns.Namespace{}, Request{Protos: []sock.Proto{sock.ProtoUNIX}}, nil); err == nil {
		t.Error("Dump accepted a nil callback")
	}
}

// TestDumpCallbackErrorAndCancel: fn's error comes back unchanged and a
// cancelled context stops the dump.
func TestDumpCallbackErrorAndCancel(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	buildPopulation(t, ns)
	stop := errors.New("enough")
	n := 0
	err := Dump(t.Context(), netns.ByName(ns.Name), Request{Protos: []sock.Proto{sock.ProtoTCP}, States: sock.AllStates}, func(*sock.Socket) error {
		n++
		return stop
	})
	if err != stop || n != 1 {
		t.Errorf("callback error: got %v after %d rows, want %v after 1", err, n, stop)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Dump(ctx, netns.ByName(ns.Name), Request{Protos: []sock.Proto{sock.ProtoTCP}, States: sock.AllStates}, func(*sock.Socket) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}
