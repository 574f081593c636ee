package filter

import (
	"errors"
	"strings"
	"testing"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

// parseCases are shared with the fuzz seed corpus.
var parseCases = []struct {
	in   string
	tree string // treeString of the expression; "" for none
}{
	{"", ""},
	// Every port operator spelling (ssfilter.y's lexer).
	{"sport = :22", "[sport = :22]"},
	{"sport == :22", "[sport = :22]"},
	{"sport eq :22", "[sport = :22]"},
	{"sport :22", "[sport = :22]"},
	{"sport 22", "[sport = 22]"},
	{"dport != :22", "Not([dport = :22])"},
	{"dport ne :22", "Not([dport = :22])"},
	{"dport neq :22", "Not([dport = :22])"},
	{"dport >= :1024", "[dport >= :1024]"},
	{"dport ge :1024", "[dport >= :1024]"},
	{"dport geq :1024", "[dport >= :1024]"},
	{"sport <= :1024", "[sport <= :1024]"},
	{"sport le :1024", "[sport <= :1024]"},
	{"sport leq :1024", "[sport <= :1024]"},
	{"sport > :1024", "Not([sport <= :1024])"},
	{"sport gt :1024", "Not([sport <= :1024])"},
	{"sport < :1024", "Not([sport >= :1024])"},
	{"sport lt :1024", "Not([sport >= :1024])"},
	// Boolean words and grouping: no precedence, left to right.
	{"sport = :1 or sport = :2 and dport = :3", "And(Or([sport = :1], [sport = :2]), [dport = :3])"},
	{"sport = :1 and sport = :2 or dport = :3", "Or(And([sport = :1], [sport = :2]), [dport = :3])"},
	{"sport = :1 | sport = :2 & dport = :3", "And(Or([sport = :1], [sport = :2]), [dport = :3])"},
	{"sport = :1 || sport = :2 && dport = :3", "And(Or([sport = :1], [sport = :2]), [dport = :3])"},
	{"sport = :1 or ( sport = :2 and dport = :3 )", "Or([sport = :1], And([sport = :2], [dport = :3]))"},
	{"sport = :1 dport = :3", "And([sport = :1], [dport = :3])"},
	{"! sport = :1 and dport = :3", "And(Not([sport = :1]), [dport = :3])"},
	{"not sport = :1 or dport = :3", "Or(Not([sport = :1]), [dport = :3])"},
	{"! ( sport = :1 or dport = :3 )", "Not(Or([sport = :1], [dport = :3]))"},
	{"! ! autobound", "Not(Not([autobound]))"},
	{"( ( autobound ) )", "[autobound]"},
	// Hosts.
	{"src 127.0.0.1", "[src 127.0.0.1]"},
	{"src = 127.0.0.1:22", "[src 127.0.0.1:22]"},
	{"dst == 10.0.0.0/8", "[dst 10.0.0.0/8]"},
	{"dst eq [::1]:443", "[dst [::1]:443]"},
	{"dst [::1/128]", "[dst [::1/128]]"},
	{"src *:22", "[src *:22]"},
	{"src :22", "[src :22]"},
	{"src *", "[src *]"},
	{"src inet:*:22", "[src inet:*:22]"},
	{"src inet6:[::1]", "[src inet6:[::1]]"},
	{"src localhost:ssh", "[src localhost:ssh]"},
	{"src 127.0.0.0/255.0.0.0", "[src 127.0.0.0/255.0.0.0]"},
	{"src unix:/tmp/*", "[src unix:/tmp/*]"},
	{"dst any", "[dst any]"},
	// Other conditions.
	{"dev lo", "[dev = lo]"},
	{"dev = 2", "[dev = 2]"},
	{"dev != eth0", "Not([dev = eth0])"},
	{"fwmark = 0x10/0x10", "[fwmark = 0x10/0x10]"},
	{"fwmark 21", "[fwmark = 21]"},
	{"fwmark != 1", "Not([fwmark = 1])"},
	{"cgroup = /test", "[cgroup = /test]"},
	{"cgroup != /test", "Not([cgroup = /test])"},
	{"autobound", "[autobound]"},
	// One argument holding several words, tabs, escapes.
	{"sport\t=\t:22", "[sport = :22]"},
	{`src unix:/tmp/a\ b`, `[src unix:/tmp/a\ b]`},
}

func TestParseTree(t *testing.T) {
	for _, c := range parseCases {
		q, err := Parse([]string{c.in}, testOpts())
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		got := ""
		if q.Expr != nil {
			got = treeString(q.Expr)
		}
		if got != c.tree {
			t.Errorf("Parse(%q) = %s, want %s", c.in, got, c.tree)
		}
		// The printed form parses back to the same tree.
		if q.Expr != nil {
			q2, err := Parse([]string{q.Expr.String()}, testOpts())
			if err != nil || treeString(q2.Expr) != got {
				t.Errorf("reparse of %q (%q): %v, %v", c.in, q.Expr.String(), err, q2)
			}
		}
	}
}

// The same filter split over many arguments or given as one gives the
// same tree: ss splits every argument on spaces and tabs.
func TestParseArgSplitting(t *testing.T) {
	a, err := Parse([]string{"(", "dport", "=", ":22", ")", "or", "src 1.2.3.4"}, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]string{"( dport = :22 ) or src 1.2.3.4"}, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if treeString(a.Expr) != treeString(b.Expr) {
		t.Errorf("%s != %s", treeString(a.Expr), treeString(b.Expr))
	}
}

func TestParseHostValues(t *testing.T) {
	cases := []struct {
		in     string
		family uint8
		port   int
		addrs  []string // "addr/bits"
	}{
		{"src 127.0.0.1", unix.AF_INET, -1, []string{"127.0.0.1/32"}},
		{"src 127.1", unix.AF_INET, -1, []string{"127.1.0.0/32"}}, // legacy: not inet_aton
		{"src 0x7f.1/16", unix.AF_INET, -1, []string{"127.1.0.0/16"}},
		{"src 010.0.0.1", unix.AF_INET, -1, []string{"8.0.0.1/32"}}, // octal part
		{"src 127/8", unix.AF_INET, -1, []string{"127.0.0.0/8"}},
		{"src 10.0.0.0/255.255.0.0", unix.AF_INET, -1, []string{"10.0.0.0/16"}},
		{"src 10.0.0.0/0x18", unix.AF_INET, -1, []string{"10.0.0.0/24"}},
		{"src 10.0.0.1:http", unix.AF_INET, 80, []string{"10.0.0.1/32"}},
		{"src [::1]:443", unix.AF_INET6, 443, []string{"::1/128"}},
		{"src [::ffff:127.0.0.0/104]", unix.AF_INET6, -1, []string{"::ffff:127.0.0.0/104"}},
		{"src [1.2.3.4]:5", unix.AF_INET, 5, []string{"1.2.3.4/32"}},
		{"src ::/0", unix.AF_INET6, -1, nil}, // no ':' after the '/': no port
		{"src 0.0.0.0/0", unix.AF_INET, -1, nil},
		{"src *", 0, -1, nil},
		{"src *:*", 0, -1, nil},
		{"src *22", 0, 22, nil}, // ss: the text after '*' is the port
		{"src :0", 0, 0, nil},
		{"src :026", 0, 22, nil}, // C octal
		{"src :0x16", 0, 22, nil},
		{"src :-1", 0, -1, nil},       // -1 means any port, in ss too
		{"src :99999", 0, 99999, nil}, // kept: matches nothing
		{"src any", 0, -1, nil},
		{"src localhost", unix.AF_INET, -1, []string{"127.0.0.1/32", "::1/128"}},
		{"src inet6:localhost", unix.AF_INET6, -1, []string{"::1/128"}},
		{"src v6host:ssh", unix.AF_INET6, 22, []string{"2001:db8::5/128"}},
		{"sport = [22]", 0, 22, nil},
		{"sport = *", 0, -1, nil},
		{"sport = :", 0, -1, nil},
		{"dport ssh", 0, 22, nil},
	}
	for _, c := range cases {
		q, err := Parse([]string{c.in}, testOpts())
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		h, ok := q.Expr.(HostCond)
		if !ok {
			t.Errorf("%q: %T, want HostCond", c.in, q.Expr)
			continue
		}
		var addrs []string
		for _, a := range h.Addrs {
			addrs = append(addrs, prefixString(a))
		}
		if h.Family != c.family || h.Port != c.port || strings.Join(addrs, ",") != strings.Join(c.addrs, ",") {
			t.Errorf("%q: family %d port %d addrs %v; want %d %d %v", c.in, h.Family, h.Port, addrs, c.family, c.port, c.addrs)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{"foo", `filter: unexpected "foo" at word 1: expected a condition`},
		{"src 1.2.3.4 and foo", `filter: unexpected "foo" at word 4: expected a condition`},
		{"127.0.0.1", `unexpected "127.0.0.1" at word 1`},
		{"dst 127.0.0.1 127.0.0.2", `unexpected "127.0.0.2" at word 3: expected "and", "or"`},
		{"sport", `unexpected end of filter at word 2: expected a port`},
		{"sport =", `unexpected end of filter at word 3: expected a port`},
		{"sport = and", `unexpected "and" at word 3: expected a port`},
		{"dport = :22 )", `unexpected ")" at word 4`},
		{"( dport = :22", `unexpected end of filter at word 5: expected "and", "or", a condition or ")" closing the "(" at word 1`},
		{"dport = :22 or", `unexpected end of filter at word 5: expected a condition`},
		{"and dport = :22", `unexpected "and" at word 1`},
		{"( )", `unexpected ")" at word 2`},
		{"dst", `unexpected end of filter at word 2`},
		{"dst != 1.2.3.4", `unexpected "!=" at word 2: expected a host`},
		{"dst foo.invalid", `bad host "foo.invalid" at word 2: an inet prefix is expected rather than "foo.invalid"`},
		{"dst ::1", `bad host "::1" at word 2: an inet prefix is expected rather than ":"`}, // the last ":" starts a port
		{"dst ::ffff:127.0.0.1", `"127.0.0.1" does not look like a port`},
		{"src ::", `an inet prefix is expected rather than ":"`},
		{"src 1.2.3.4/33", `bad host "1.2.3.4/33"`},
		{"src 1.2.3.4/", `bad host "1.2.3.4/"`},
		{"src 256.1.1.1", `bad host "256.1.1.1"`},
		{"src any/8", `bad host "any/8"`},
		{"src [::1", `bad host "[::1" at word 2: missing ']'`},
		{"src fe80::1%lo", `bad host`},
		{"src inet6:[::1] or dst 127.0.0.1", `bad host "127.0.0.1" at word 5`}, // inet6: sticks, as in ss
		{"sport = :nosuchsvc", `bad port ":nosuchsvc" at word 3: "nosuchsvc" does not look like a port`},
		{"sport = 1.2.3.4:22", `bad port`},
		{"src link:eth0", `sstrace has no link sockets`},
		{"dev = nosuch", `bad device "nosuch" at word 3`},
		{"dev = -1", `bad device "-1"`},
		{"fwmark = bad", `bad mark "bad" at word 3`},
		{"fwmark = 0x10/", `bad mark "0x10/"`},
		{"cgroup = /nosuch", `bad cgroup "/nosuch" at word 3`},
		{"dev = lo = 1", `unexpected "=" at word 4`},
	}
	for _, c := range cases {
		_, err := Parse([]string{c.in}, testOpts())
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want error %q", c.in, c.want)
			continue
		}
		var fe *Error
		if !errors.As(err, &fe) {
			t.Errorf("Parse(%q): %T is not *filter.Error", c.in, err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) error\n  %v\nwant it to contain\n  %s", c.in, err, c.want)
		}
	}
}

func TestParseStates(t *testing.T) {
	const (
		est = sock.StateSet(1 << sock.Established)
		lis = sock.StateSet(1 << sock.Listen)
		syn = sock.StateSet(1<<sock.SynRecv | 1<<sock.NewSynRecv)
		tw  = sock.StateSet(1 << sock.TimeWait)
	)
	cases := []struct {
		args []string
		def  sock.StateSet
		want sock.StateSet
		rest string
	}{
		{nil, 0, ConnStates, ""},
		{nil, sock.AllStates, sock.AllStates, ""},
		{[]string{"state", "established"}, sock.AllStates, est, ""},
		{[]string{"state", "ESTABLISHED", "state", "Listening"}, 0, est | lis, ""},
		{[]string{"state", "syn-rcv"}, 0, syn, ""},
		{[]string{"state", "unconnected"}, 0, 1 << sock.Close, ""},
		{[]string{"state", "close"}, 0, 1 << sock.Close, ""},
		{[]string{"state", "closed"}, 0, 1 << sock.Close, ""},
		{[]string{"state", "bucket"}, 0, syn | tw, ""},
		{[]string{"state", "big"}, 0, sock.AllStates &^ (syn | tw), ""},
		{[]string{"state", "connected"}, 0, sock.AllStates &^ (1<<sock.Close | lis), ""},
		{[]string{"state", "synchronized"}, 0, sock.AllStates &^ (1<<sock.Close | lis | 1<<sock.SynSent), ""},
		{[]string{"exclude", "listening"}, 0, sock.AllStates &^ lis, ""},
		{[]string{"excl", "all", "state", "time-wait"}, 0, tw, ""},
		// Words that cancel out fall back to the default, as in ss.
		{[]string{"exclude", "all"}, 0, ConnStates, ""},
		{[]string{"state", "established", "dport", "=", ":22"}, 0, est, "[dport = :22]"},
		// Only a whole argument "state" is a state word.
		{[]string{"state", "all", "dport = :22"}, 0, sock.AllStates, "[dport = :22]"},
	}
	for _, c := range cases {
		o := testOpts()
		o.DefaultStates = c.def
		q, err := Parse(c.args, o)
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		rest := ""
		if q.Expr != nil {
			rest = treeString(q.Expr)
		}
		if q.States != c.want || rest != c.rest {
			t.Errorf("%q: states %#x expr %s; want %#x %s", c.args, q.States, rest, c.want, c.rest)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"state", "listen"}, `filter: unknown state "listen" at word 2`},
		{[]string{"state"}, `filter: unexpected end of filter at word 2: expected a state name after state`},
		{[]string{"exclude", "bogus"}, `unknown state "bogus" at word 2`},
		{[]string{"state all"}, `unexpected "state" at word 1`},
	} {
		_, err := Parse(c.args, testOpts())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.args, err, c.want)
		}
	}
}

// An inet:/inet6:/unix: word, or any host word under -4/-6/-x, restricts
// the listing to that family; the last one wins, as in ss.
func TestParseFamilyPin(t *testing.T) {
	cases := []struct {
		in   string
		pref uint8
		want uint8
	}{
		{"src 127.0.0.1", 0, 0},
		{"src inet:127.0.0.1", 0, unix.AF_INET},
		{"src inet6:*:8080", 0, unix.AF_INET6},
		{"src unix:/tmp/*", 0, unix.AF_UNIX},
		{"sport = :22", unix.AF_INET6, unix.AF_INET6},
		{"autobound", unix.AF_INET6, 0},
		{"src inet:1.2.3.4 or src inet6:[::1]", 0, unix.AF_INET6},
	}
	for _, c := range cases {
		o := testOpts()
		o.Family = c.pref
		q, err := Parse([]string{c.in}, o)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if q.Family != c.want {
			t.Errorf("%q (pref %d): family %d, want %d", c.in, c.pref, q.Family, c.want)
		}
	}
	// Under -x every host word is a name pattern, ports included.
	o := testOpts()
	o.Family = unix.AF_UNIX
	q, err := Parse([]string{"src /tmp/* or sport = :22"}, o)
	if err != nil {
		t.Fatal(err)
	}
	or := q.Expr.(Or)
	if h := or.L.(HostCond); h.Family != unix.AF_UNIX || h.Pattern != "/tmp/*" {
		t.Errorf("src under -x: %+v", h)
	}
	if h := or.R.(HostCond); h.Family != unix.AF_UNIX || h.Pattern != ":22" {
		t.Errorf("sport under -x: %+v", h)
	}
	// Under -6 an IPv4 address is refused, as ss does.
	o.Family = unix.AF_INET6
	if _, err := Parse([]string{"dst 127.0.0.1"}, o); err == nil {
		t.Error("dst 127.0.0.1 under -6 parsed")
	}
}

func TestParseDevMarkValues(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Node
	}{
		{"dev lo", DevCond{Word: "lo", Index: 1}},
		{"dev 0x10", DevCond{Word: "0x10", Index: 16}},
		{"dev if7", DevCond{Word: "if7", Index: 7}},
		{"dev 0", DevCond{Word: "0", Index: 0}},
		{"fwmark 0x15", MarkCond{Word: "0x15", Mark: 0x15, Mask: 0xffffffff}},
		{"fwmark 21/0xff", MarkCond{Word: "21/0xff", Mark: 21, Mask: 0xff}},
		{"fwmark 010/-1", MarkCond{Word: "010/-1", Mark: 8, Mask: 0xffffffff}},
		{"fwmark 5junk", MarkCond{Word: "5junk", Mark: 5, Mask: 0xffffffff}}, // sscanf ignores the rest
		{"cgroup /test", CgroupCond{Word: "/test", ID: 4242}},
		{"autobound", AutoBound{Lo: 32768, Hi: 60999}},
	} {
		q, err := Parse([]string{c.in}, testOpts())
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if q.Expr != c.want {
			t.Errorf("%q = %#v, want %#v", c.in, q.Expr, c.want)
		}
	}
	// ss falls back to 1024-4999 when the range cannot be read.
	o := testOpts()
	o.LocalPortRange = func() (int, int, error) { return 0, 0, errors.New("no proc") }
	q, err := Parse([]string{"autobound"}, o)
	if err != nil || q.Expr != (AutoBound{Lo: 1024, Hi: 4999}) {
		t.Errorf("fallback range: %v %v", q, err)
	}
}

func TestParseFile(t *testing.T) {
	content := "# comment\n" +
		"0 also skipped: ss compares with the character '0'\n" +
		"dport = :22\n" +
		"\n" +
		"or\tsrc 1.2.3.4 \n" +
		"and ( foo"
	_, err := ParseReader([]string{"state", "all", "autobound"}, strings.NewReader(content), testOpts())
	if err == nil || !strings.Contains(err.Error(), `unexpected "foo" at word 12 (line 6)`) {
		t.Errorf("error %v", err)
	}
	q, err := ParseReader([]string{"autobound"}, strings.NewReader("# x\ndport = :22\nor src 1.2.3.4\n"), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if got := treeString(q.Expr); got != "Or(And([autobound], [dport = :22]), [src 1.2.3.4])" {
		t.Errorf("tree %s", got)
	}
	long := strings.Repeat("a", 1022) + "\n"
	if _, err := ParseReader(nil, strings.NewReader(long), testOpts()); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("long line: %v", err)
	}
	ok := "autobound" + strings.Repeat(" ", 1012) + "\n" // 1022 bytes with the newline
	if _, err := ParseReader(nil, strings.NewReader(ok), testOpts()); err != nil {
		t.Errorf("1022-byte line: %v", err)
	}
	if _, err := ParseFile("/nonexistent/filter", testOpts()); err == nil {
		t.Error("missing file parsed")
	}
}

func TestSplitWords(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"  a \t b  ", []string{"a", "b"}},
		{`a\ b c`, []string{"a b", "c"}},
		{`a\\b`, []string{`a\b`}},
		{`abc\`, []string{"abc"}},
		{"a\x00b c", []string{"a"}},
		{"(a)", []string{"(a)"}},
	} {
		if got := splitWords(c.in); strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("splitWords(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
