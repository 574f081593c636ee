package main

// Parity of `sstrace ss` with iproute2's ss (the real /usr/bin/ss): both
// list the same socket population, built in a fresh network namespace, for
// a battery of option and filter combinations, and their outputs must agree
// row for row after collapsing runs of spaces and ignoring row order. The
// few values that move between two runs (timer countdowns, SYN retransmit
// counts, milliseconds since the last packet) are compared with a
// tolerance, not dropped.
//
//	sudo go test ./cmd/sstrace -run Parity -v

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// Well-known ports, so that ss's service names (http, ssh, http-alt,
// domain, mdns, discard) show up without -n.
const (
	portHTTP    = 80
	portSSH     = 22
	portHTTPAlt = 8080
	port8443    = 8443
	portDNS     = 53
	portMDNS    = 5353
	portDiscard = 9
	portMPTCP   = 8444
)

// population is the socket zoo the parity tests list.
type population struct {
	ns      *testutil.NS
	closers []func()
	// estPeerPort is the client port of the 127.0.0.2 -> 127.0.0.1:8080
	// connection (the ssfilter.t "src and sport and dport" cases).
	estPeerPort int
	filterFile  string
}

func (p *population) keep(c interface{ Close() error }) {
	p.closers = append(p.closers, func() { c.Close() })
}
func (p *population) keepFD(fd int) { p.closers = append(p.closers, func() { unix.Close(fd) }) }

// Go listeners default to MPTCP since Go 1.24; the population is plain
// TCP (sstrace does not dump MPTCP sockets, see the report of ss.go).
var noKeepAlive = func() net.ListenConfig {
	lc := net.ListenConfig{KeepAlive: -1}
	lc.SetMultipathTCP(false)
	return lc
}()
var noKeepAliveDialer = net.Dialer{KeepAlive: -1}

func buildPopulation(t *testing.T) *population {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("ss"); err != nil {
		testutil.Unavailable(t, "iproute2 ss not installed: %v", err)
	}
	ns := testutil.NewNS(t)
	p := &population{ns: ns}
	t.Cleanup(func() {
		for i := len(p.closers) - 1; i >= 0; i-- {
			p.closers[i]()
		}
	})
	ctx := context.Background()
	listen := func(network, addr string) net.Listener {
		var l net.Listener
		err := ns.Do(func() (err error) {
			l, err = noKeepAlive.Listen(ctx, network, addr)
			return err
		})
		if err != nil {
			t.Fatalf("listen %s %s: %v", network, addr, err)
		}
		p.keep(l)
		return l
	}
	dial := func(d net.Dialer, network, addr string) net.Conn {
		var c net.Conn
		err := ns.Do(func() (err error) {
			c, err = d.Dial(network, addr)
			return err
		})
		if err != nil {
			t.Fatalf("dial %s %s: %v", network, addr, err)
		}
		p.keep(c)
		return c
	}
	accept := func(l net.Listener) net.Conn {
		c, err := l.Accept()
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		p.keep(c)
		return c
	}
	write := func(c net.Conn, n int) {
		if _, err := c.Write(bytes.Repeat([]byte("x"), n)); err != nil {
			t.Fatalf("write: %v", err)
		}
	}

	// Listeners: IPv4 wildcard and loopback, IPv6 wildcard (dual stack)
	// and loopback.
	lHTTP := listen("tcp4", fmt.Sprintf("0.0.0.0:%d", portHTTP))
	lAlt := listen("tcp4", fmt.Sprintf("127.0.0.1:%d", portHTTPAlt))
	listen("tcp6", fmt.Sprintf("[::]:%d", portSSH))
	l6 := listen("tcp6", fmt.Sprintf("[::1]:%d", port8443))

	// Established IPv4 with 1000 unread bytes at the server.
	c1 := dial(noKeepAliveDialer, "tcp4", fmt.Sprintf("127.0.0.1:%d", portHTTPAlt))
	accept(lAlt)
	write(c1, 1000)
	// Established IPv6 with 300 unread bytes at the client.
	dial(noKeepAliveDialer, "tcp6", fmt.Sprintf("[::1]:%d", port8443))
	write(accept(l6), 300)
	// Established from a second loopback address (ssfilter.t's dst case).
	from2 := net.Dialer{KeepAlive: -1, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	c2 := dial(from2, "tcp4", fmt.Sprintf("127.0.0.1:%d", portHTTPAlt))
	p.estPeerPort = c2.LocalAddr().(*net.TCPAddr).Port
	accept(lAlt)
	// Keepalive timer (system default idle, 2 hours).
	ka := dial(noKeepAliveDialer, "tcp4", fmt.Sprintf("127.0.0.1:%d", portHTTPAlt))
	if err := ka.(*net.TCPConn).SetKeepAlive(true); err != nil {
		t.Fatalf("keepalive: %v", err)
	}
	accept(lAlt)
	// CLOSE-WAIT at the server, FIN-WAIT-2 at the client.
	cw := dial(noKeepAliveDialer, "tcp4", fmt.Sprintf("127.0.0.1:%d", portHTTPAlt))
	accept(lAlt)
	cw.Close()
	// TIME-WAIT: the server closes first, then the client.
	tw := dial(noKeepAliveDialer, "tcp4", fmt.Sprintf("127.0.0.1:%d", portHTTP))
	accept(lHTTP).Close()
	time.Sleep(20 * time.Millisecond)
	tw.Close()

	// SYN-SENT: a route sends 10.99.99.0/24 out of lo, where nothing
	// answers, so the SYN is retransmitted for minutes.
	err := ns.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		dst := &net.IPNet{IP: net.IPv4(10, 99, 99, 0), Mask: net.CIDRMask(24, 32)}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: dst}); err != nil {
			return fmt.Errorf("route: %w", err)
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		p.keepFD(fd)
		err = unix.Connect(fd, &unix.SockaddrInet4{Port: portDiscard, Addr: [4]byte{10, 99, 99, 1}})
		if err != unix.EINPROGRESS {
			return fmt.Errorf("connect to dropped address: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("syn-sent: %v", err)
	}

	// UDP: bound with unread datagrams, IPv6 wildcard, connected.
	var u4 *net.UDPConn
	err = ns.Do(func() (err error) {
		if u4, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: portDNS}); err != nil {
			return err
		}
		p.keep(u4)
		u6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified, Port: portMDNS})
		if err != nil {
			return err
		}
		p.keep(u6)
		uc, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: portDNS})
		if err != nil {
			return err
		}
		p.keep(uc)
		for i := 0; i < 2; i++ {
			if _, err := uc.Write([]byte("query")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("udp: %v", err)
	}

	// RAW: ICMP over IPv4 and protocol 255 over IPv6.
	err = ns.Do(func() error {
		for _, s := range []struct{ fam, proto int }{{unix.AF_INET, unix.IPPROTO_ICMP}, {unix.AF_INET6, unix.IPPROTO_RAW}} {
			fd, err := unix.Socket(s.fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, s.proto)
			if err != nil {
				return err
			}
			p.keepFD(fd)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("raw: %v", err)
	}

	// UNIX: a stream listener on a path with a connection carrying unread
	// data, an abstract datagram socket, a seqpacket pair, a datagram pair.
	dir := t.TempDir()
	err = ns.Do(func() error {
		ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s.sock"), Net: "unix"})
		if err != nil {
			return err
		}
		p.keep(ul)
		uc, err := net.DialUnix("unix", nil, ul.Addr().(*net.UnixAddr))
		if err != nil {
			return err
		}
		p.keep(uc)
		ua, err := ul.Accept()
		if err != nil {
			return err
		}
		p.keep(ua)
		if _, err := uc.Write(bytes.Repeat([]byte("z"), 77)); err != nil {
			return err
		}
		ud, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: fmt.Sprintf("@sstrace-parity-%d", os.Getpid()), Net: "unixgram"})
		if err != nil {
			return err
		}
		p.keep(ud)
		for _, typ := range []int{unix.SOCK_SEQPACKET, unix.SOCK_DGRAM} {
			fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			p.keepFD(fds[0])
			p.keepFD(fds[1])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("unix: %v", err)
	}

	// MPTCP (every Go >= 1.24 listener is one): a listener on IPv4 and on
	// IPv6, and an accepted connection, whose subflows are TCP rows too.
	err = ns.Do(func() error {
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			// CLOEXEC, as Go's own sockets: ss and sstrace, children of
			// this process, must not hold them (-p would list them).
			l, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 262)
			if err != nil {
				return fmt.Errorf("MPTCP socket: %w", err)
			}
			p.keepFD(l)
			var sa unix.Sockaddr = &unix.SockaddrInet4{Port: portMPTCP, Addr: [4]byte{127, 0, 0, 1}}
			if fam == unix.AF_INET6 {
				sa = &unix.SockaddrInet6{Port: portMPTCP, Addr: [16]byte{15: 1}}
			}
			if err := unix.Bind(l, sa); err != nil {
				return err
			}
			if err := unix.Listen(l, 16); err != nil {
				return err
			}
			c, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 262)
			if err != nil {
				return err
			}
			p.keepFD(c)
			if err := unix.Connect(c, sa); err != nil {
				return err
			}
			a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
			if err != nil {
				return err
			}
			p.keepFD(a)
		}
		return nil
	})
	if err != nil {
		testutil.Unavailable(t, "MPTCP sockets (net.mptcp.enabled): %v", err)
	}

	p.filterFile = filepath.Join(dir, "filter")
	content := fmt.Sprintf("# ssfilter file\nsrc 127.0.0.1\nand dport = :%d\n", portHTTPAlt)
	if err := os.WriteFile(p.filterFile, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	// Let the handshakes and FINs settle.
	time.Sleep(50 * time.Millisecond)
	return p
}

// runOurs runs `sstrace ss ARGS` in-process.
func runOurs(ctx context.Context, args []string) (stdout, stderr string, err error) {
	cmd := newSSCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	cmd.SilenceErrors = true
	cmd.SilenceUsage = true
	err = cmd.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

func runReal(t *testing.T, args []string) string {
	t.Helper()
	cmd := exec.Command("ss", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ss %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// line is one logical output line (a row plus its -i/-m continuation),
// with the volatile numbers lifted out.
type line struct {
	masked string
	vals   []volatile
}

type volatile struct {
	what string
	v    float64
	tol  float64
}

var (
	spaces = regexp.MustCompile(` +`)
	// ss's timer: name, print_ms_timer duration, retransmits.
	timerRe = regexp.MustCompile(`timer:\((on|keepalive|timewait|persist|unknown),((?:\d+min)?(?:\d+sec)?(?:\d+\.)?(?:\d{3}ms)?),(\d+)\)`)
	lastRe  = regexp.MustCompile(`\b(lastsnd|lastrcv|lastack):(\d+)`)
	msRe    = regexp.MustCompile(`^(?:(\d+)min)?(?:(\d+)sec)?(?:(\d+)\.)?(?:(\d{3})ms)?$`)
)

// timerMS parses print_ms_timer's output back to milliseconds. A timer due
// right now prints as nothing at all ("timer:(on,,4)").
func timerMS(s string) (float64, bool) {
	m := msRe.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n := func(i int) float64 { v, _ := strconv.Atoi(m[i]); return float64(v) }
	return n(1)*60000 + n(2)*1000 + n(3)*1000 + n(4), true
}

func normalize(t *testing.T, out string) (header string, rows []line) {
	t.Helper()
	var logical []string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if strings.HasPrefix(l, "\t") && len(logical) > 0 {
			logical[len(logical)-1] += " |" + l[1:]
			continue
		}
		logical = append(logical, l)
	}
	for i, l := range logical {
		l = strings.TrimSpace(spaces.ReplaceAllString(l, " "))
		var vals []volatile
		l = timerRe.ReplaceAllStringFunc(l, func(m string) string {
			sm := timerRe.FindStringSubmatch(m)
			ms, ok := timerMS(sm[2])
			if !ok {
				t.Errorf("malformed timer %q", m)
			}
			// A countdown moves with time; print_ms_timer's precision
			// drops to minutes above 10 min.
			tol := 3000.0
			if ms >= 600000 {
				tol = 120000
			}
			vals = append(vals, volatile{"timer " + sm[1], ms, tol})
			retrans, _ := strconv.Atoi(sm[3])
			if sm[1] == "on" { // a SYN retransmit may happen between the runs
				vals = append(vals, volatile{"retransmits", float64(retrans), 1})
				return "timer:(" + sm[1] + ",T,R)"
			}
			return "timer:(" + sm[1] + ",T," + sm[3] + ")"
		})
		l = lastRe.ReplaceAllStringFunc(l, func(m string) string {
			sm := lastRe.FindStringSubmatch(m)
			v, _ := strconv.Atoi(sm[2])
			vals = append(vals, volatile{sm[1], float64(v), 3000})
			return sm[1] + ":N"
		})
		if i == 0 && strings.Contains(l, "Recv-Q") {
			header = l
			continue
		}
		rows = append(rows, line{l, vals})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].masked < rows[j].masked })
	return header, rows
}

// compare checks that two outputs list the same rows.
func compare(t *testing.T, want, got string) {
	t.Helper()
	wh, wrows := normalize(t, want)
	gh, grows := normalize(t, got)
	if wh != gh {
		t.Errorf("header:\n ss:      %q\n sstrace: %q", wh, gh)
	}
	if len(wrows) != len(grows) {
		t.Errorf("ss printed %d rows, sstrace %d\n--- ss:\n%s--- sstrace:\n%s", len(wrows), len(grows), want, got)
		return
	}
	for i := range wrows {
		w, g := wrows[i], grows[i]
		if w.masked != g.masked {
			t.Errorf("row differs:\n ss:      %s\n sstrace: %s", w.masked, g.masked)
			continue
		}
		for k := range w.vals {
			if d := w.vals[k].v - g.vals[k].v; d > w.vals[k].tol || d < -w.vals[k].tol {
				t.Errorf("%s: ss %v, sstrace %v (tolerance %v) in %s", w.vals[k].what, w.vals[k].v, g.vals[k].v, w.vals[k].tol, w.masked)
			}
		}
	}
}

func TestSSParity(t *testing.T) {
	p := buildPopulation(t)
	noMPTCP := fmt.Sprintf("not ( sport = :%d or dport = :%d )", portMPTCP, portMPTCP)
	alt := strconv.Itoa(portHTTPAlt)
	est := strconv.Itoa(p.estPeerPort)
	cases := [][]string{
		// Tables, states and columns.
		{"-tan"}, {"-tn"}, {"-ta"}, {"-tl"}, {"-t"}, {"-Htan"},
		{"-uan"}, {"-ua"}, {"-ul"}, {"-u"},
		{"-xa"}, {"-xl"}, {"-x"}, {"-Hxa"},
		{"-wan"}, {"-wa"},
		{"-4an"}, {"-6an"}, {"-4ta"}, {"-6ta"}, {"-6", "-4", "-tan"},
		{"-A", "tcp,udp", "-an"}, {"-A", "unix_stream", "-a"}, {"-f", "inet6", "-an"},
		{"--tcp", "--all", "--numeric"}, {"--udp", "--listening", "--no-header"},
		{"-n"}, {"-o"},
		// Display options.
		{"-tano"}, {"-tanoe"}, {"-uane"}, {"-wane"}, {"-tanm"}, {"-uanm"}, {"-xam"},
		// -i without the MPTCP subflows: ss prints their tcp-ulp-mptcp
		// details, which sstrace does not decode (docs/SS.md).
		{"-tani", "exclude", "syn-sent", noMPTCP}, {"-tanmi", "exclude", "syn-sent", noMPTCP},
		{"-tanmiO", "exclude", "syn-sent", noMPTCP}, {"-tanoeO"}, {"-tanp"}, {"-xap"}, {"-uap"},
		{"-tar", "-4", "src", "127.0.0.1"}, {"-ta"}, {"-xe"},
		// State selection.
		{"-tan", "state", "established"}, {"-tan", "state", "listening"},
		{"-tan", "state", "close-wait"}, {"-tan", "state", "time-wait"},
		{"-tan", "state", "syn-sent"}, {"-tan", "state", "fin-wait-2"},
		{"-tan", "exclude", "established"}, {"-ta", "state", "connected"},
		{"-ta", "state", "synchronized"}, {"-ta", "state", "bucket"}, {"-ta", "state", "big"},
		{"-tn", "state", "established", "state", "close-wait"},
		// iproute2 testsuite/tests/ss/ssfilter.t, on real sockets (its
		// 10.0.0.1:22 <- 10.0.0.2:50312 connection is our
		// 127.0.0.1:8080 <- 127.0.0.2:PORT one).
		{"-Htna", "dport", "=", alt},
		{"-Htna", "dport", alt},
		{"-Htna", "( dport = " + alt + " )"},
		{"-Htna", "src", "=", "0.0.0.0"},
		{"-Htna", "src", "0.0.0.0"},
		{"-Htna", "src", "0.0.0.0", "sport", "=", strconv.Itoa(portHTTP)},
		{"-Htna", "src", "0.0.0.0", "and", "sport", "=", strconv.Itoa(portHTTP)},
		{"-Htna", "src", "127.0.0.1", "and", "sport", "=", alt, "and", "dport", "=", est},
		{"-Htna", "src 127.0.0.1 and sport = " + alt + " and ( dport = " + est + " )"},
		{"-Htna", "src 127.0.0.1 and ( sport = " + alt + " and dport = " + est + " )"},
		{"-Htna", "( src 127.0.0.1 and sport = " + alt + " ) and dport = " + est},
		{"-Htna", "( src 0.0.0.0 or src 127.0.0.1 ) and dst 127.0.0.2"},
		// More of the filter language.
		{"-tan", "sport > :1024"}, {"-tan", "dport >= :8000 and dport <= :9000"},
		{"-tan", "! dport = :" + alt}, {"-tan", "dst [::1]"}, {"-tan", "src [::1]:8443"},
		{"-tan", "dst 127.0.0.0/8 or dst [::1]"}, {"-uan", "dport = :domain"},
		{"-tan", "sport = :http-alt"}, {"-an", "dst inet6:[::1]"},
		{"-tan", "-F", p.filterFile}, {"-tan", "state", "established", "-F", p.filterFile},
		{"-xa", "src", "*s.sock"},
		// MPTCP, alone and among the other tables.
		{"-Man"}, {"-Mn"}, {"-Ml"}, {"-Manp"}, {"-Mane"}, {"-Mano"}, {"-6Man"},
		{"-A", "mptcp", "-an"}, {"-A", "inet", "-an"}, {"-Man", "sport", "=", strconv.Itoa(portMPTCP)},
	}
	if len(cases) < 40 {
		t.Fatalf("battery too small: %d cases", len(cases))
	}
	ctx := context.Background()
	for _, args := range cases {
		full := append([]string{"-N", p.ns.Name}, args...)
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			want := runReal(t, full)
			got, _, err := runOurs(ctx, full)
			if err != nil {
				t.Fatalf("sstrace ss %s: %v", strings.Join(full, " "), err)
			}
			compare(t, want, got)
		})
	}
}

// TestSSSummaryParity compares -s. The sockstat counters of the namespace
// must match exactly; the TCP line's total, closed and orphaned counts
// include kernel-wide counters that other processes move, so they are
// only checked for form.
func TestSSSummaryParity(t *testing.T) {
	p := buildPopulation(t)
	args := []string{"-N", p.ns.Name, "-s"}
	want := runReal(t, args)
	got, _, err := runOurs(context.Background(), args)
	if err != nil {
		t.Fatal(err)
	}
	tcpLine := regexp.MustCompile(`^TCP:   \d+ \(estab (\d+), closed -?\d+, orphaned \d+, timewait (\d+)\)$`)
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	if len(wl) != len(gl) {
		t.Fatalf("ss -s printed %d lines, sstrace %d:\n%s---\n%s", len(wl), len(gl), want, got)
	}
	for i := range wl {
		if wm := tcpLine.FindStringSubmatch(wl[i]); wm != nil {
			gm := tcpLine.FindStringSubmatch(gl[i])
			if gm == nil || gm[1] != wm[1] || gm[2] != wm[2] {
				t.Errorf("TCP line: ss %q, sstrace %q", wl[i], gl[i])
			}
			continue
		}
		if wl[i] != gl[i] {
			t.Errorf("line %d: ss %q, sstrace %q", i+1, wl[i], gl[i])
		}
	}
}

// TestSSJSON checks the JSON lines against the text rows of the same
// namespace: one object per socket, with the keys the package documents.
func TestSSJSON(t *testing.T) {
	p := buildPopulation(t)
	args := []string{"-N", p.ns.Name, "-tan", "--json"}
	out, _, err := runOurs(context.Background(), args)
	if err != nil {
		t.Fatal(err)
	}
	text := runReal(t, []string{"-N", p.ns.Name, "-Htan"})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	rows := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != len(rows) {
		t.Fatalf("%d JSON lines for %d ss rows", len(lines), len(rows))
	}
	seen := map[string]bool{}
	for _, l := range lines {
		for _, key := range []string{`"netid":"tcp"`, `"state":`, `"saddr":`, `"sport":`, `"daddr":`, `"dport":`, `"cookie":`} {
			if !strings.Contains(l, key) {
				t.Errorf("line lacks %s: %s", key, l)
			}
		}
		seen[l] = true
	}
	for _, want := range []string{`"state":"SYN_SENT"`, `"state":"CLOSE_WAIT"`, `"state":"TIME_WAIT"`, `"recvq":1000`} {
		found := false
		for l := range seen {
			found = found || strings.Contains(l, want)
		}
		if !found {
			t.Errorf("no JSON line with %s", want)
		}
	}
}

// sstraceBinary builds the command into the test's temporary directory,
// for the tests that check exit status and stderr as a user sees them.
func sstraceBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sstrace-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		builtBin = filepath.Join(dir, "sstrace")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return builtBin
}

// The binary is built once per test run (a build is most of a second, and
// sixteen tests use it) and removed by TestMain.
var (
	buildOnce        sync.Once
	binDir, builtBin string
	buildErr         error
)

func TestMain(m *testing.M) {
	if ns := os.Getenv(envClientNetNS); ns != "" {
		os.Exit(runClient(ns)) // a client of the container tests
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// TestSSErrors runs bad command lines through both binaries: both must
// fail, and sstrace must say what is wrong in one line.
func TestSSErrors(t *testing.T) {
	p := buildPopulation(t)
	bin := sstraceBinary(t)
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"-N", p.ns.Name, "-tan", "dport = :80 or"}, "sstrace: ss: filter: unexpected end of filter"},
		{[]string{"-N", p.ns.Name, "-tan", "dport", "=", ":bogus-service"}, "sstrace: ss: filter: "},
		{[]string{"-N", p.ns.Name, "-tan", "( sport = :22"}, "sstrace: ss: filter: "},
		{[]string{"-N", p.ns.Name, "-tan", "state", "bogus"}, "sstrace: ss: filter: unknown state \"bogus\""},
		{[]string{"-N", p.ns.Name, "-q"}, "sstrace: ss: unknown shorthand flag: 'q' in -q"},
		{[]string{"-N", p.ns.Name, "--bogus"}, "sstrace: ss: unknown flag: --bogus"},
		{[]string{"-N", "sstrace-no-such-netns", "-tan"}, `sstrace: ss: cannot open network namespace "sstrace-no-such-netns": no such file or directory`},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args[2:], " "), func(t *testing.T) {
			if err := exec.Command("ss", c.args...).Run(); err == nil {
				t.Errorf("ss %s succeeded; the case is not an error", strings.Join(c.args, " "))
			}
			cmd := exec.Command(bin, append([]string{"ss"}, c.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() == 0 {
				t.Fatalf("sstrace ss %s: exit %v, want a non-zero status", strings.Join(c.args, " "), err)
			}
			msg := strings.TrimRight(stderr.String(), "\n")
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, c.msg) {
				t.Errorf("stderr = %q, want one line starting with %q", msg, c.msg)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout not empty: %q", stdout.String())
			}
		})
	}
}
