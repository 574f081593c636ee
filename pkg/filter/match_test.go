package filter

import (
	"testing"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

// The rows of iproute2's testsuite/tests/ss/ss1.dump, as its ssfilter.t
// describes them (ss -Htna).
var ss1 = []*sock.Socket{
	tcp(sock.Listen, "0.0.0.0:22", "0.0.0.0:0"),
	tcp(sock.Established, "10.0.0.1:22", "10.0.0.1:36266"),
	tcp(sock.Established, "10.0.0.1:36266", "10.0.0.1:22"),
	tcp(sock.Established, "10.0.0.1:22", "10.0.0.2:50312"),
}

// TestSSFilterSuite reproduces iproute2's testsuite/tests/ss/ssfilter.t.
func TestSSFilterSuite(t *testing.T) {
	cases := []struct {
		args []string
		want int // index into ss1 of the one row ss prints
	}{
		{[]string{"dport", "=", "22"}, 2},
		{[]string{"dport", "22"}, 2},
		{[]string{"( dport = 22 )"}, 2},
		{[]string{"src", "=", "0.0.0.0"}, 0},
		{[]string{"src", "0.0.0.0"}, 0},
		{[]string{"src", "0.0.0.0", "sport", "=", "22"}, 0},
		{[]string{"src", "0.0.0.0", "and", "sport", "=", "22"}, 0},
		{[]string{"src", "10.0.0.1", "and", "sport", "=", "22", "and", "dport", "=", "50312"}, 3},
		{[]string{"src 10.0.0.1 and sport = 22 and ( dport = 50312 )"}, 3},
		{[]string{"src 10.0.0.1 and ( sport = 22 and dport = 50312 )"}, 3},
		{[]string{"( src 10.0.0.1 and sport = 22 ) and dport = 50312"}, 3},
		{[]string{"( src 0.0.0.0 or src 10.0.0.1 ) and dst 10.0.0.2"}, 3},
	}
	for _, c := range cases {
		o := testOpts()
		o.DefaultStates = sock.AllStates // -a
		q, err := Parse(c.args, o)
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		for i, s := range ss1 {
			if got := q.Match(s); got != (i == c.want) {
				t.Errorf("%q: row %d (%s %s): Match %v", c.args, i, s.Local, s.Peer, got)
			}
		}
	}
}

func match(t *testing.T, opts ParseOptions, filter string, s *sock.Socket) bool {
	t.Helper()
	if opts.DefaultStates == 0 {
		opts.DefaultStates = sock.AllStates
	}
	q, err := Parse([]string{filter}, opts)
	if err != nil {
		t.Fatalf("%q: %v", filter, err)
	}
	return q.Match(s)
}

// Each expectation below was checked on ss 6.1 with the same sockets.
func TestMatchInet(t *testing.T) {
	v4 := tcp(sock.Established, "127.0.0.1:40078", "127.0.0.1:22")
	mapped := tcp(sock.Established, "[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:33478")
	v6 := tcp(sock.Established, "[::1]:443", "[::1]:34376")
	lis := tcp(sock.Listen, "127.0.0.1:22", "0.0.0.0:0")
	anyv6 := tcp(sock.Listen, "[::]:8080", "[::]:0")
	cases := []struct {
		filter string
		s      *sock.Socket
		want   bool
	}{
		{"dst 127.0.0.1", v4, true},
		{"dst 127.0.0.1", mapped, true}, // the v4-mapped rule
		{"dst 127.0.0.0/8", mapped, true},
		{"dst [::ffff:127.0.0.1]", mapped, true},
		{"dst [::ffff:127.0.0.1]", v4, false},
		{"src 0.0.0.0/0", v6, false},    // userspace yes, kernel: family differs
		{"src 0.0.0.0/0", mapped, true}, // kernel: v4-mapped passes
		{"src ::/0", v4, false},         // kernel: family differs
		{"src any", v4, true},
		{"src any", v6, true},
		{"src inet:127.0.0.1", mapped, false}, // the listing is pinned to AF_INET
		{"src inet:127.0.0.1", v4, true},
		{"dport = :0", lis, true},
		{"dport :0", v4, false},
		{"sport > :1024", v4, true},
		{"sport gt 1024", lis, false},
		{"sport > *", v4, false}, // userspace true, kernel (port 65535) false
		{"sport = *", v4, true},
		{"sport = :-1", lis, true},
		{"sport = :99999", lis, false},
		{"sport = :026", lis, true},
		{"src *:8080", anyv6, true},
		{"src [::]", anyv6, true},
		{"autobound", v4, true},
		{"autobound", lis, false},
		{"not autobound", lis, true},
		{"not autobound", v4, false},
	}
	for _, c := range cases {
		if got := match(t, testOpts(), c.filter, c.s); got != c.want {
			t.Errorf("%q on %s->%s: %v, want %v", c.filter, c.s.Local, c.s.Peer, got, c.want)
		}
	}
}

// A host name resolving to several addresses: userspace tries them all,
// but ss sends the kernel the first one for every entry.
func TestMatchMultiAddressHost(t *testing.T) {
	v6 := tcp(sock.Established, "[::1]:443", "[::1]:34376")
	v4 := tcp(sock.Established, "127.0.0.1:443", "127.0.0.1:34376")
	if match(t, testOpts(), "src localhost", v6) {
		t.Error("src localhost matched ::1, but ss's kernel filter only asks for 127.0.0.1")
	}
	if !match(t, testOpts(), "src localhost", v4) {
		t.Error("src localhost did not match 127.0.0.1")
	}
	if !match(t, testOpts(), "src multi", tcp(sock.Established, "10.0.0.1:1", "10.0.0.9:2")) {
		t.Error("first address of multi")
	}
	// The second address is dropped in the kernel, as in ss.
	if match(t, testOpts(), "src multi", tcp(sock.Established, "10.0.0.2:1", "10.0.0.9:2")) {
		t.Error("second address of multi passed the kernel filter")
	}
}

func TestMatchDevMarkCgroup(t *testing.T) {
	s := tcp(sock.Established, "127.0.0.1:40108", "127.0.0.1:22")
	s.Iface = 1
	s.Mark = u32(0x15)
	s.CgroupID = u64(4242)
	plain := tcp(sock.Established, "127.0.0.1:40078", "127.0.0.1:22")
	for _, c := range []struct {
		filter string
		s      *sock.Socket
		want   bool
	}{
		{"dev lo", s, true}, {"dev = 1", s, true}, {"dev lo", plain, false}, {"dev != lo", plain, true}, {"dev 0", plain, true},
		{"fwmark = 0x15", s, true}, {"fwmark 0x10/0x10", s, true}, {"fwmark 0x10/0x10", plain, false},
		{"fwmark = 0", plain, true}, // no mark attribute reads as 0, as in ss
		{"fwmark != 0x15", s, false},
		{"cgroup /test", s, true}, {"cgroup /test", plain, false}, {"cgroup != /test", plain, true},
	} {
		if got := match(t, testOpts(), c.filter, c.s); got != c.want {
			t.Errorf("%q on %s: %v, want %v", c.filter, c.s.Local, got, c.want)
		}
	}
}

func TestMatchStatesAndFamily(t *testing.T) {
	est := tcp(sock.Established, "127.0.0.1:1", "127.0.0.1:2")
	lis := tcp(sock.Listen, "127.0.0.1:22", "0.0.0.0:0")
	req := tcp(sock.NewSynRecv, "127.0.0.1:22", "127.0.0.1:3")
	q, err := Parse(nil, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !q.Match(est) || q.Match(lis) || q.Match(req) {
		t.Error("default states: want ESTAB only")
	}
	q, _ = Parse([]string{"state", "syn-recv"}, ParseOptions{})
	if !q.Match(req) || q.Match(est) {
		t.Error("state syn-recv must select request sockets")
	}
	o := testOpts()
	o.Family = unix.AF_INET6
	o.DefaultStates = sock.AllStates
	q, _ = Parse([]string{"sport = :22"}, o)
	if q.Match(lis) {
		t.Error("-6 with a port filter must drop IPv4 sockets")
	}
}

// UNIX rows: ss compares ports with inodes and addresses with the name
// pointer; patterns are case-insensitive fnmatch. Checked on ss 6.1.
func TestMatchUnix(t *testing.T) {
	listener := unixRow(sock.Listen, "/tmp/fx/sock1", 13929, 0)
	client := unixRow(sock.Established, "", 13930, 13931)
	server := unixRow(sock.Established, "/tmp/fx/sock1", 13931, 13930)
	auto := unixRow(sock.Close, "@3d61d", 13933, 0)
	abstract := unixRow(sock.Close, "@abstr", 13932, 0)
	all := []*sock.Socket{listener, client, server, auto, abstract}
	x := testOpts()
	x.Family = unix.AF_UNIX // ss -x
	cases := []struct {
		opts   ParseOptions
		filter string
		want   []*sock.Socket
	}{
		{x, "src /tmp/fx/*", []*sock.Socket{listener, server}},
		{x, "src /TMP/fx/*", []*sock.Socket{listener, server}},
		{x, "src *", all},
		{x, "dst *", all},
		{x, "dst unix:", all}, // the peer name is never set: "" matches ""
		{x, "dst /tmp/*", nil},
		{x, "autobound", []*sock.Socket{client, auto}},
		{x, "sport = :13930", nil}, // under -x a port is a name pattern
		{x, "src @abs?r", []*sock.Socket{abstract}},
		{x, "src @[a-b]bstr", []*sock.Socket{abstract}},
		{testOpts(), "sport = :13930", []*sock.Socket{client}}, // inode
		{testOpts(), "dport = :13931", []*sock.Socket{client}}, // peer inode
		{testOpts(), "src 0.0.0.0", []*sock.Socket{client}},    // NULL name
		{testOpts(), "dst 0.0.0.0", all},                       // NULL peer name
		{testOpts(), "src unix:*sock1", []*sock.Socket{listener, server}},
	}
	for _, c := range cases {
		o := c.opts
		o.DefaultStates = sock.AllStates
		q, err := Parse([]string{c.filter}, o)
		if err != nil {
			t.Errorf("%q: %v", c.filter, err)
			continue
		}
		for _, s := range all {
			want := false
			for _, w := range c.want {
				want = want || w == s
			}
			if got := q.Match(s); got != want {
				t.Errorf("%q on %q ino %d: %v, want %v", c.filter, s.Unix.Path, s.Inode, got, want)
			}
		}
	}
	// An inet row never matches a UNIX pattern.
	if match(t, testOpts(), "src unix:*", tcp(sock.Established, "127.0.0.1:1", "127.0.0.1:2")) {
		t.Error("inet row matched a unix: pattern")
	}
}

func TestFnmatch(t *testing.T) {
	for _, c := range []struct {
		p, n string
		want bool
	}{
		{"*", "", true}, {"", "", true}, {"", "a", false}, {"a*c", "abbbc", true}, {"a*c", "abbb", false},
		{"/tmp/*", "/tmp/a/b", true}, {"?", "", false}, {"[abc]", "B", true}, {"[!abc]", "d", true},
		{"[^abc]", "a", false}, {"[]]", "]", true}, {"[a-c]x", "Bx", true}, {"[", "[", true},
		{`\*`, "*", true}, {`\*`, "a", false}, {"[[:digit:]]*", "5x", true}, {"*a*b*c*", "xaxbxcx", true},
		{"*a*b*c*", "xaxcxbx", false},
	} {
		if got := fnmatchFold(c.p, c.n); got != c.want {
			t.Errorf("fnmatch(%q, %q) = %v, want %v", c.p, c.n, got, c.want)
		}
	}
}

func TestBytecodeShape(t *testing.T) {
	q, err := Parse([]string{"dev lo or sport = :22"}, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := q.Bytecode(unix.AF_INET); ok {
		t.Error("dev must leave the whole filter without bytecode, as in ss")
	}
	q, _ = Parse([]string{"sport = :22"}, testOpts())
	if _, ok := q.Bytecode(unix.AF_UNIX); ok {
		t.Error("no bytecode for AF_UNIX")
	}
	prog, ok := q.Bytecode(unix.AF_INET6)
	if !ok || len(prog) != 16 {
		t.Errorf("sport = :22: %x %v", prog, ok)
	}
	// The interpreter never panics on junk.
	for _, junk := range [][]byte{{}, {7}, {7, 0, 0, 0}, {2, 8, 12, 0}, {1, 4, 255, 255, 0, 0}} {
		runBytecode(junk, &kentry{})
	}
}
