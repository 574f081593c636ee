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
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	// --tos and --inet-sockopt: a TOS and a priority (class_id) on the
	// http listener, a traffic class on the IPv6 one.
	setOpts(t, lHTTP.(*net.TCPListener), [][3]int{{unix.IPPROTO_IP, unix.IP_TOS, 0x10}, {unix.SOL_SOCKET, unix.SO_PRIORITY, 6}})
	setOpts(t, l6.(*net.TCPListener), [][3]int{{unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 0x20}})

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
		setOpts(t, u4, [][3]int{{unix.IPPROTO_IP, unix.IP_FREEBIND, 1}, {unix.IPPROTO_IP, unix.IP_RECVERR, 1}})
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

// setOpts sets integer socket options ({level, option, value}) on c.
func setOpts(t *testing.T, c syscall.Conn, opts [][3]int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for _, o := range opts {
			if serr = unix.SetsockoptInt(int(fd), o[0], o[1], o[2]); serr != nil {
				return
			}
		}
	})
	if err != nil || serr != nil {
		t.Fatalf("setsockopt: %v %v", err, serr)
	}
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
	out, _ := runRealBoth(t, args)
	return out
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
		// -i on plain TCP, then on the MPTCP subflows alone (their
		// tcp-ulp-mptcp details), then on everything.
		{"-tani", "exclude", "syn-sent", noMPTCP}, {"-tanmi", "exclude", "syn-sent", noMPTCP},
		{"-tanmiO", "exclude", "syn-sent", noMPTCP}, {"-tani", "exclude", "syn-sent", "not", "(", noMPTCP, ")"},
		{"-tani", "exclude", "syn-sent"}, {"-tanoeO"}, {"-tanp"}, {"-xap"}, {"-uap"},
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
		{"-Mani"}, {"-Manim"}, {"-ManiO"}, {"-Mi"},
		{"-A", "mptcp", "-an"}, {"-A", "inet", "-an"}, {"-Man", "sport", "=", strconv.Itoa(portMPTCP)},
		// Options of the rest of ss.
		{"-tan", "--tos"}, {"-uan", "--tos"}, {"-wan", "--tos"}, {"-tane", "--tos", "--cgroup"},
		{"-tuan", "--cgroup"}, {"-tuwan", "--inet-sockopt"}, {"-tanO", "--inet-sockopt", "--tos"},
		{"-tab"}, {"-uab"}, {"-tanbe"},
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

	// -M -i: each MPTCP connection's mptcp_info, its token the one ss
	// prints.
	out, _, err = runOurs(context.Background(), []string{"-N", p.ns.Name, "-Mani", "--json"})
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var row struct {
			MPTCPInfo *struct{ Token uint32 } `json:"mptcp_info"`
		}
		if err := json.Unmarshal([]byte(l), &row); err != nil {
			t.Fatal(err)
		}
		if row.MPTCPInfo != nil && row.MPTCPInfo.Token != 0 {
			ours = append(ours, strconv.FormatUint(uint64(row.MPTCPInfo.Token), 16))
		}
	}
	var theirs []string
	for _, m := range regexp.MustCompile(` token:([0-9a-f]+)`).FindAllStringSubmatch(runReal(t, []string{"-N", p.ns.Name, "-HMani"}), -1) {
		theirs = append(theirs, m[1])
	}
	sort.Strings(ours)
	sort.Strings(theirs)
	if len(theirs) == 0 || strings.Join(ours, " ") != strings.Join(theirs, " ") {
		t.Errorf("mptcp_info tokens in JSON %v, ss -Mi prints %v", ours, theirs)
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
	if os.Getenv(threadsHolderEnv) != "" {
		os.Exit(holdWithThreads())
	}
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
// fail with the same exit status (255 where ss prints its usage), and
// sstrace must say what is wrong in one line.
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
		{[]string{"-N", p.ns.Name, "-A", "bogus"}, `sstrace: ss: "bogus" is illegal socket table id`},
		{[]string{"-N", p.ns.Name, "-f", "bogus"}, `sstrace: ss: "bogus" is invalid family`},
		{[]string{"-N", p.ns.Name, "-tan", "-F", "/nonexistent/filter"}, "sstrace: ss: open filter file: "},
		{[]string{"-N", p.ns.Name, "-tanZ"}, "sstrace: ss: SELinux is not enabled."},
		{[]string{"-N", p.ns.Name, "-z"}, "sstrace: ss: SELinux is not enabled."},
		{[]string{"-N", p.ns.Name, "-tan", "dev", "=", "nosuchdev"}, "sstrace: ss: filter: bad device"},
		{[]string{"-N", p.ns.Name, "-tan", "fwmark", "=", "zz"}, "sstrace: ss: filter: bad mark"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args[2:], " "), func(t *testing.T) {
			ssErr := exec.Command("ss", c.args...).Run()
			ssExit, ok := ssErr.(*exec.ExitError)
			if !ok {
				t.Fatalf("ss %s: %v; the case is not an error", strings.Join(c.args, " "), ssErr)
			}
			cmd := exec.Command(bin, append([]string{"ss"}, c.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != ssExit.ExitCode() {
				t.Fatalf("sstrace ss %s: exit %v, want ss's status %d", strings.Join(c.args, " "), err, ssExit.ExitCode())
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

// addLinkSockets adds to p's namespace the sockets of ss's other tables:
// packet sockets (raw and datagram, bound to a veth end and to lo, with
// a ring, a fanout group and auxdata), netlink sockets (route with
// groups and unread replies, generic, a usersock pair connected to each
// other, one connected to the kernel) and whatever XDP, vsock, SCTP and
// TIPC sockets the kernel lets a process create. None is a
// NETLINK_SOCK_DIAG socket: the only ones in the namespace are the
// kernel's and the dumping tool's own (see maskSelf).
func addLinkSockets(t *testing.T, p *population) {
	t.Helper()
	err := p.ns.Do(func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sst0"}, PeerName: "sst1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		for _, name := range []string{"sst0", "sst1"} {
			// No IPv6 on the link: no router solicitation or DAD
			// packet lands in a packet socket's queue between runs.
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0); err != nil {
				return err
			}
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		sst0, err := net.InterfaceByName("sst0")
		if err != nil {
			return err
		}
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		htons := func(v uint16) uint16 { return v<<8 | v>>8 }
		packet := func(typ int, proto uint16, ifindex int) (int, error) {
			fd, err := unix.Socket(unix.AF_PACKET, typ|unix.SOCK_CLOEXEC, int(htons(proto)))
			if err != nil {
				return -1, fmt.Errorf("packet socket: %w", err)
			}
			p.keepFD(fd)
			if ifindex != 0 {
				if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}); err != nil {
					return -1, fmt.Errorf("bind packet socket: %w", err)
				}
			}
			return fd, nil
		}
		if _, err := packet(unix.SOCK_RAW, unix.ETH_P_ALL, sst0.Index); err != nil {
			return err
		}
		dg, err := packet(unix.SOCK_DGRAM, unix.ETH_P_IP, lo.Index)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(dg, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return err
		}
		if _, err := packet(unix.SOCK_DGRAM, 0, 0); err != nil { // no protocol: receives nothing
			return err
		}
		ring, err := packet(unix.SOCK_RAW, unix.ETH_P_ARP, sst0.Index)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(ring, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
			return err
		}
		req := unix.TpacketReq{Block_size: 4096, Block_nr: 2, Frame_size: 2048, Frame_nr: 4}
		if err := unix.SetsockoptTpacketReq(ring, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
			return fmt.Errorf("PACKET_RX_RING: %w", err)
		}
		fan, err := packet(unix.SOCK_RAW, unix.ETH_P_IPV6, sst0.Index)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fan, unix.SOL_PACKET, unix.PACKET_FANOUT, 7|unix.PACKET_FANOUT_LB<<16); err != nil {
			return fmt.Errorf("PACKET_FANOUT: %w", err)
		}

		nl := func(proto int, groups uint32) (int, error) {
			fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
			if err != nil {
				return -1, fmt.Errorf("netlink socket %d: %w", proto, err)
			}
			p.keepFD(fd)
			if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
				return -1, fmt.Errorf("bind netlink socket %d: %w", proto, err)
			}
			return fd, nil
		}
		rt, err := nl(unix.NETLINK_ROUTE, unix.RTMGRP_LINK|unix.RTMGRP_IPV4_IFADDR)
		if err != nil {
			return err
		}
		// A link dump left unread: a Recv-Q.
		getlink := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg)
		binary.NativeEndian.PutUint32(getlink[0:], uint32(len(getlink)))
		binary.NativeEndian.PutUint16(getlink[4:], unix.RTM_GETLINK)
		binary.NativeEndian.PutUint16(getlink[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
		if err := unix.Sendto(rt, getlink, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return err
		}
		if _, err := nl(unix.NETLINK_GENERIC, 0); err != nil {
			return err
		}
		toKernel, err := nl(unix.NETLINK_ROUTE, 0)
		if err != nil {
			return err
		}
		if err := unix.Connect(toKernel, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return err
		}
		a, err := nl(unix.NETLINK_USERSOCK, 0)
		if err != nil {
			return err
		}
		b, err := nl(unix.NETLINK_USERSOCK, 0)
		if err != nil {
			return err
		}
		sa, err := unix.Getsockname(b)
		if err != nil {
			return err
		}
		if err := unix.Connect(a, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: sa.(*unix.SockaddrNetlink).Pid}); err != nil {
			return err
		}

		// The families without a sock_diag module on many kernels:
		// created where the kernel allows it, so that a kernel with
		// the module has rows to show.
		for _, s := range []struct{ fam, typ, proto int }{
			{unix.AF_XDP, unix.SOCK_RAW, 0},
			{unix.AF_VSOCK, unix.SOCK_STREAM, 0},
			{unix.AF_VSOCK, unix.SOCK_DGRAM, 0},
			{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP},
			{unix.AF_TIPC, unix.SOCK_RDM, 0},
		} {
			if fd, err := unix.Socket(s.fam, s.typ|unix.SOCK_CLOEXEC, s.proto); err == nil {
				p.keepFD(fd)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("packet and netlink sockets: %v", err)
	}
}

// selfRow matches the netlink row of a dumping tool's own sock_diag
// socket (ss's "tcpdiag:ss/PID", sstrace's "tcpdiag:sstrace.test/PID" or
// a negative port id; "4:..." under -n) and the kernel's, whose queues
// hold the request or reply being processed: they differ between two
// tools by nature, so maskSelf replaces the port id and the queues.
var selfRow = regexp.MustCompile(`(?m)^((?:nl +)?(?:UNCONN +)?)\d+ +\d+( +)(tcpdiag|4):(\S+)`)

func maskSelf(out string) string {
	return selfRow.ReplaceAllStringFunc(out, func(m string) string {
		sm := selfRow.FindStringSubmatch(m)
		who := "SELF"
		if sm[4] == "kernel" || sm[4] == "0" {
			who = sm[4]
		}
		return sm[1] + "Q Q" + sm[2] + sm[3] + ":" + who
	})
}

// selfMem is the -m memory of a dumping tool's own sock_diag socket,
// whose buffer sizes each tool sets its own way.
var selfMem = regexp.MustCompile(`(?m)^(.*tcpdiag:SELF .*skmem:\().*\)`)

func maskSelfMem(out string) string { return selfMem.ReplaceAllString(maskSelf(out), "${1}M)") }

// runRealBoth runs ss and returns its stdout and stderr.
func runRealBoth(t *testing.T, args []string) (string, string) {
	t.Helper()
	cmd := exec.Command("ss", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ss %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), errb.String()
}

// TestSSTablesParity compares the tables beyond inet and UNIX: packet and
// netlink sockets with rows, and the tables this kernel may have no
// sock_diag module for (SCTP, DCCP, vsock, TIPC, XDP), where both must
// print the same empty table and the same stderr.
func TestSSTablesParity(t *testing.T) {
	p := buildPopulation(t)
	addLinkSockets(t, p)
	cases := [][]string{
		{"-0"}, {"-0", "-a", "-n"}, {"-0", "-e"}, {"-0", "-p"}, {"-0", "-m"}, {"-0", "-eO"},
		{"-A", "p_raw", "-a"}, {"-A", "packet_dgram", "-a"}, {"-f", "link"},
		{"-f", "netlink", "-a"}, {"-A", "netlink", "-p"}, {"-A", "netlink", "-a"}, {"-f", "netlink", "-n"},
		{"-f", "netlink", "-e"}, {"-f", "netlink", "-m"},
		{"-A", "packet,netlink"}, {"-A", "packet,netlink", "-a"}, {"-a"}, {"-an"}, {"-l"},
		{"-S"}, {"-S", "-a"}, {"--vsock", "-a"}, {"--tipc"}, {"--xdp"}, {"-d"}, {"-d", "-a"},
		{"-A", "sctp,dccp", "-a"}, {"-f", "xdp", "-a"}, {"-f", "vsock"}, {"-A", "all", "-a"},
		// Filters on packet and netlink rows, as ss's userspace filter
		// sees them: the interface index or port id is the local port.
		{"-0", "dev", "sst0"}, {"-0", "autobound"}, {"-0", "!", "autobound"},
		{"-f", "netlink", "autobound"}, {"-f", "netlink", "-a", "!", "autobound"},
		{"-A", "packet", "-a", "sport", "=", ":0"}, {"-A", "netlink", "-a", "sport", "=", ":0"},
		{"-A", "netlink", "-a", "dport", "<", ":0"}, {"-A", "packet,netlink", "-a", "sport", ">", ":0"},
		{"-A", "packet", "-a", "state", "established"},
	}
	ctx := context.Background()
	for _, args := range cases {
		full := append([]string{"-N", p.ns.Name}, args...)
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			want, wantErr := runRealBoth(t, full)
			got, gotErr, err := runOurs(ctx, full)
			if err != nil {
				t.Fatalf("sstrace ss %s: %v", strings.Join(full, " "), err)
			}
			compare(t, maskSelfMem(want), maskSelfMem(got))
			noFilter := !slices.ContainsFunc(args, func(a string) bool { return !strings.HasPrefix(a, "-") })
			if noFilter && (args[0] == "-0" || strings.Contains(strings.Join(args, " "), "netlink -a")) && strings.Count(want, "\n") < 3 {
				t.Errorf("ss listed next to nothing: the population lacks sockets:\n%s", want)
			}
			if gotErr != wantErr {
				t.Errorf("stderr: ss %q, sstrace %q", wantErr, gotErr)
			}
		})
	}
	// `--netlink` is sstrace's name for -f netlink (ss 6.1 has none).
	want, _ := runRealBoth(t, []string{"-N", p.ns.Name, "-f", "netlink", "-a"})
	got, _, err := runOurs(ctx, []string{"-N", p.ns.Name, "--netlink", "-a"})
	if err != nil {
		t.Fatal(err)
	}
	compare(t, maskSelf(want), maskSelf(got))
}

// TestSSTablesJSON checks the JSON lines of packet and netlink sockets
// against ss's text rows of the same namespace: one object per row, with
// the keys of those tables.
func TestSSTablesJSON(t *testing.T) {
	p := buildPopulation(t)
	addLinkSockets(t, p)
	for _, c := range []struct {
		args []string
		keys []string // in every line
		some []string // in some line
	}{
		{[]string{"-0", "-p"}, []string{`"family":"link"`, `"protocol":`, `"inode":`, `"cookie":`, `"owners":[{"comm":`},
			[]string{`"netid":"p_raw"`, `"netid":"p_dgr"`, `"iface":"sst0"`, `"protocol":3,`}},
		{[]string{"-f", "netlink", "-a"}, []string{`"netid":"nl"`, `"family":"netlink"`, `"portid":`, `"state":"CLOSE"`},
			[]string{`"dst_portid":`, `"groups":17,`, `"portid":0,`}},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			full := append([]string{"-N", p.ns.Name, "-H"}, c.args...)
			out, _, err := runOurs(context.Background(), append(full, "--json"))
			if err != nil {
				t.Fatal(err)
			}
			text, _ := runRealBoth(t, full)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if rows := strings.Count(text, "\n"); len(lines) != rows || rows < 3 {
				t.Fatalf("%d JSON lines for %d ss rows:\n%s", len(lines), rows, out)
			}
			for _, l := range lines {
				for _, k := range c.keys {
					if !strings.Contains(l, k) {
						t.Errorf("line lacks %s: %s", k, l)
					}
				}
			}
			for _, want := range c.some {
				if !strings.Contains(out, want) {
					t.Errorf("no line has %s:\n%s", want, out)
				}
			}
		})
	}
}
