package filter

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

// testOpts resolves from fixed tables so parser tests are hermetic.
func testOpts() ParseOptions {
	return ParseOptions{
		LookupHost: func(name string) ([]netip.Addr, error) {
			switch name {
			case "localhost":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
			case "v6host":
				return []netip.Addr{netip.MustParseAddr("2001:db8::5")}, nil
			case "multi":
				return []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}, nil
			}
			return nil, fmt.Errorf("no such host %q", name)
		},
		LookupPort: func(s string) (int, error) {
			switch s {
			case "ssh":
				return 22, nil
			case "http":
				return 80, nil
			case "https":
				return 443, nil
			}
			return 0, errors.New("unknown service")
		},
		LookupIface: func(name string) (uint32, error) {
			switch name {
			case "lo":
				return 1, nil
			case "eth0":
				return 2, nil
			}
			return 0, errors.New("no such device")
		},
		LookupCgroup: func(path string) (uint64, error) {
			if path == "/sys/fs/cgroup/unified/test" || path == "/test" {
				return 4242, nil
			}
			return 0, errors.New("no such cgroup")
		},
		LocalPortRange: func() (int, int, error) { return 32768, 60999, nil },
	}
}

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }

// tcp builds a TCP row; addresses decide the family.
func tcp(state sock.State, local, peer string) *sock.Socket {
	l, p := netip.MustParseAddrPort(local), netip.MustParseAddrPort(peer)
	fam := uint8(unix.AF_INET)
	if l.Addr().Is6() {
		fam = unix.AF_INET6
	}
	return &sock.Socket{Proto: sock.ProtoTCP, Family: fam, State: state, Local: l, Peer: p, Inode: 1000}
}

func unixRow(state sock.State, path string, ino, peer uint64) *sock.Socket {
	return &sock.Socket{Proto: sock.ProtoUNIX, Family: unix.AF_UNIX, State: state, Inode: ino,
		Unix: &sock.UnixInfo{Type: unix.SOCK_STREAM, Path: path, PeerInode: peer}}
}

func prefixString(p Prefix) string {
	var a netip.Addr
	if p.Family == unix.AF_INET {
		a = netip.AddrFrom4([4]byte(p.Addr[:4]))
	} else {
		a = netip.AddrFrom16(p.Addr)
	}
	return fmt.Sprintf("%s/%d", a, p.Bits)
}

// treeString shows the tree shape, for tests and their failure messages.
func treeString(n Node) string {
	switch n := n.(type) {
	case nil:
		return "<nil>"
	case And:
		return fmt.Sprintf("And(%s, %s)", treeString(n.L), treeString(n.R))
	case Or:
		return fmt.Sprintf("Or(%s, %s)", treeString(n.L), treeString(n.R))
	case Not:
		return fmt.Sprintf("Not(%s)", treeString(n.X))
	}
	return "[" + n.String() + "]"
}
