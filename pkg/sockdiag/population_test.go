package sockdiag

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// population is a set of sockets in every shape the dump must handle,
// built inside one test namespace. Everything is closed when the test ends.
type population struct {
	// estabClient4 is a live established IPv4 client: its tuple and fd
	// serve the cookie and Lookup tests.
	estabClient4   *net.TCPConn
	estabClient6   *net.TCPConn
	listener4      *net.TCPListener
	udpBound4      *net.UDPConn
	otherUIDUDP    int // fd of a UDP socket created with fsuid otherUID
	synSentPeer    netip.AddrPort
	unixListenPath string
}

// otherUID is the owner of one socket of the population, so that uid
// reporting is checked against a non-zero value.
const otherUID = 4321

// buildPopulation creates, inside ns: TCP listeners (v4, v6-only, dual
// stack), established v4/v6 pairs with unread data, CLOSE-WAIT with its
// orphaned FIN-WAIT-2 peer, TIME-WAIT, SYN-SENT to an address with nothing
// behind it, a SYN-RECV request socket, UDP bound/connected/v6, UNIX
// stream (path listener with an accepted and a pending connection),
// abstract dgram and seqpacket pair, and RAW ICMP/ICMPv6.
func buildPopulation(t *testing.T, ns *testutil.NS) *population {
	t.Helper()
	p := &population{}
	var closers []func()
	keep := func(c interface{ Close() error }) { closers = append(closers, func() { c.Close() }) }
	keepFD := func(fd int) { closers = append(closers, func() { unix.Close(fd) }) }
	t.Cleanup(func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	})
	dir := t.TempDir()

	err := ns.Do(func() error {
		// TCP listeners.
		ln4, err := listenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		keep(ln4)
		p.listener4 = ln4
		ln6, err := listenTCP("tcp6", &net.TCPAddr{IP: net.IPv6loopback})
		if err != nil {
			return err
		}
		keep(ln6)
		lnDual, err := listenTCP("tcp", &net.TCPAddr{IP: net.IPv6unspecified})
		if err != nil {
			return err
		}
		keep(lnDual)

		// Established pairs with unread data on the accepted side.
		dialAccept := func(network string, ln *net.TCPListener) (*net.TCPConn, *net.TCPConn, error) {
			to := *ln.Addr().(*net.TCPAddr)
			if to.IP.IsUnspecified() {
				to.IP = net.IPv4(127, 0, 0, 1)
			}
			c, err := net.DialTCP(network, nil, &to)
			if err != nil {
				return nil, nil, err
			}
			keep(c)
			s, err := ln.AcceptTCP()
			if err != nil {
				return nil, nil, err
			}
			keep(s)
			return c, s, nil
		}
		if p.estabClient4, _, err = dialAccept("tcp4", ln4); err != nil {
			return err
		}
		if _, err := p.estabClient4.Write(make([]byte, 1000)); err != nil {
			return err
		}
		if p.estabClient6, _, err = dialAccept("tcp6", ln6); err != nil {
			return err
		}
		if _, err := p.estabClient6.Write(make([]byte, 300)); err != nil {
			return err
		}
		// IPv4 client on the dual-stack listener: a v4-mapped peer.
		if _, _, err := dialAccept("tcp4", lnDual); err != nil {
			return err
		}

		// CLOSE-WAIT on the accepted side; the client, closed and
		// orphaned, lingers as a FIN-WAIT-2 timewait socket.
		cw, _, err := dialAccept("tcp4", ln4)
		if err != nil {
			return err
		}
		cw.Close()

		// TIME-WAIT: the client closes first, then the server.
		tc, ts, err := dialAccept("tcp4", ln4)
		if err != nil {
			return err
		}
		tc.Close()
		time.Sleep(20 * time.Millisecond)
		ts.Close()

		// SYN-SENT: a veth pair with nothing behind the far end; the
		// neighbour 10.99.98.2 never answers, the SYN never gets out.
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sdtest0"}, PeerName: "sdtest1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth pair: %w", err)
		}
		if err := netlink.AddrAdd(veth, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 99, 98, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return fmt.Errorf("address veth: %w", err)
		}
		for _, name := range []string{"sdtest0", "sdtest1"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return fmt.Errorf("up %s: %w", name, err)
			}
		}
		p.synSentPeer = netip.MustParseAddrPort("10.99.98.2:9")
		ssfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		keepFD(ssfd)
		if err := unix.Connect(ssfd, &unix.SockaddrInet4{Addr: p.synSentPeer.Addr().As4(), Port: 9}); err != unix.EINPROGRESS {
			return fmt.Errorf("syn-sent connect: %v", err)
		}

		// SYN-RECV: with TCP_DEFER_ACCEPT the listener ignores the bare
		// final ACK, so the request socket stays.
		lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		keepFD(lfd)
		if err := unix.SetsockoptInt(lfd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 30); err != nil {
			return err
		}
		if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Listen(lfd, 8); err != nil {
			return err
		}
		lsa, err := unix.Getsockname(lfd)
		if err != nil {
			return err
		}
		rc, err := net.DialTCP("tcp4", nil, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: lsa.(*unix.SockaddrInet4).Port})
		if err != nil {
			return err
		}
		keep(rc)

		// UDP: bound with queued data, connected, IPv6.
		u4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		keep(u4)
		p.udpBound4 = u4
		uc, err := net.DialUDP("udp4", nil, u4.LocalAddr().(*net.UDPAddr))
		if err != nil {
			return err
		}
		keep(uc)
		if _, err := uc.Write(make([]byte, 10)); err != nil {
			return err
		}
		u6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
		if err != nil {
			return err
		}
		keep(u6)

		// A socket owned by another uid: sockets take the creating
		// thread's fsuid, and this thread is thrown away afterwards.
		if _, _, e := unix.RawSyscall(unix.SYS_SETFSUID, otherUID, 0, 0); e != 0 {
			return fmt.Errorf("setfsuid: %w", e)
		}
		ufd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		unix.RawSyscall(unix.SYS_SETFSUID, 0, 0, 0)
		if err != nil {
			return err
		}
		keepFD(ufd)
		if err := unix.Bind(ufd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		p.otherUIDUDP = ufd

		// UNIX: path listener with one accepted and one pending
		// connection, abstract dgram, seqpacket pair.
		p.unixListenPath = filepath.Join(dir, "l.sock")
		ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.unixListenPath, Net: "unix"})
		if err != nil {
			return err
		}
		keep(ul)
		ua, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p.unixListenPath, Net: "unix"})
		if err != nil {
			return err
		}
		keep(ua)
		as, err := ul.AcceptUnix()
		if err != nil {
			return err
		}
		keep(as)
		if _, err := ua.Write(make([]byte, 77)); err != nil {
			return err
		}
		pending, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p.unixListenPath, Net: "unix"})
		if err != nil {
			return err
		}
		keep(pending)
		abs, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: fmt.Sprintf("@sstrace-sockdiag-%d", os.Getpid()), Net: "unixgram"})
		if err != nil {
			return err
		}
		keep(abs)
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		keepFD(pair[0])
		keepFD(pair[1])

		// RAW.
		r4, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		keepFD(r4)
		r6, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		if err != nil {
			return err
		}
		keepFD(r6)
		return nil
	})
	if err != nil {
		t.Fatalf("build socket population in %s: %v", ns.Name, err)
	}
	// Let the SYN-RECV handshake and the TIME-WAIT/CLOSE-WAIT FINs land.
	time.Sleep(50 * time.Millisecond)
	return p
}

// listenTCP listens on plain TCP. Go (>= 1.24) makes listeners MPTCP by
// default where the kernel has it: the fd is then an MPTCP socket whose
// SO_COOKIE is not the cookie of the TCP listener `ss -t` shows.
func listenTCP(network string, addr *net.TCPAddr) (*net.TCPListener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), network, addr.String())
	if err != nil {
		return nil, err
	}
	return l.(*net.TCPListener), nil
}

// soCookie returns the kernel's cookie for a socket via SO_COOKIE.
func soCookie(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ck uint64
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		ck, gerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt SO_COOKIE: %v", gerr)
	}
	return ck
}

// dumpAll collects a full dump of ns (every protocol, every state).
func dumpAll(t *testing.T, ns netns.Namespace, req Request) []*sock.Socket {
	t.Helper()
	if req.Protos == nil {
		req.Protos = []sock.Proto{sock.ProtoTCP, sock.ProtoUDP, sock.ProtoRAW, sock.ProtoUNIX}
	}
	if req.States == 0 {
		req.States = sock.AllStates
	}
	var rows []*sock.Socket
	err := Dump(t.Context(), ns, req, func(s *sock.Socket) error {
		rows = append(rows, Clone(s))
		return nil
	})
	if err != nil {
		t.Fatalf("Dump(%v): %v", ns, err)
	}
	return rows
}
