package filter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

// compileRef is ss's ssfilter_bytecompile as it stands in misc/ss.c: each
// node copies its operands' programs and patches them. It is quadratic, so
// it lives here only as the reference compile must match byte for byte.
func compileRef(n Node) ([]byte, bool) {
	prog, ok := refFragment(n)
	if !ok || len(prog) > maxProg {
		return nil, false
	}
	return prog, true
}

func refFragment(n Node) ([]byte, bool) {
	switch n := n.(type) {
	case And:
		a1, ok1 := refFragment(n.L)
		a2, ok2 := refFragment(n.R)
		if !ok1 || !ok2 {
			return nil, false
		}
		out := append(append([]byte(nil), a1...), a2...)
		// ssfilter_patch: the left program's fail exits (a "no" reaching
		// one op past its end) now jump past the right program too.
		for off := 0; off < len(a1); off += int(out[off+1]) {
			if no := int(binary.NativeEndian.Uint16(out[off+2:])); no == len(a1)-off+4 {
				if no+len(a2) > 0xffff {
					return nil, false
				}
				binary.NativeEndian.PutUint16(out[off+2:], uint16(no+len(a2)))
			}
		}
		return out, true
	case Or:
		a1, ok1 := refFragment(n.L)
		a2, ok2 := refFragment(n.R)
		if !ok1 || !ok2 || len(a2)+4 > 0xffff {
			return nil, false
		}
		out := append(append([]byte(nil), a1...), op(bcJMP, 4, uint16(len(a2)+4))...)
		return append(out, a2...), true
	case Not:
		a1, ok := refFragment(n.X)
		if !ok {
			return nil, false
		}
		return append(append([]byte(nil), a1...), op(bcJMP, 4, 8)...), true
	case HostCond, AutoBound, PortRange, MarkCond, CgroupCond:
		var c compiler
		if n, ok := n.(HostCond); ok && n.Family == unix.AF_UNIX {
			return nil, false
		}
		if !c.leaf(n) {
			return nil, false
		}
		return c.prog, true
	}
	return nil, false
}

// orChain is `dport = :1 or dport = :2 or ...`, n terms.
func orChain(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteString(" or ")
		}
		fmt.Fprintf(&b, "dport = :%d", i)
	}
	return b.String()
}

// compileCases cover every node kind, both ways of nesting, and lengths
// on both sides of the kernel's limit.
func compileCases() []string {
	cases := []string{
		"sport = :1 or ( sport = :2 and ! ( dport = :3 or autobound ) ) and fwmark 0x10/0x10",
		"! ! ( src 127.0.0.1 or dst [::1]:443 ) and ! sport > :1024",
		"( ( sport = :1 or sport = :2 ) and ( dport = :3 or dport = :4 ) ) or ! ( cgroup = /test and src multi )",
		"src localhost or src multi and dst localhost:ssh",
		"! autobound or ! autobound and ! autobound",
		"sport >= :1 and sport <= :2 or dport >= :3 and dport <= :4 or ! ( sport >= :5 or dport <= :6 )",
		orChain(3276), orChain(3277), // 16-byte terms and 4-byte jumps: the limit lies between
	}
	for _, c := range parseCases {
		cases = append(cases, c.in)
	}
	// A chain nested on both sides.
	var b strings.Builder
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&b, "sport = :%d or ( dport = :%d and ", i, i)
	}
	b.WriteString("autobound")
	b.WriteString(strings.Repeat(" )", 300))
	return append(cases, b.String())
}

func TestCompileMatchesReference(t *testing.T) {
	for _, in := range compileCases() {
		q, err := Parse([]string{in}, testOpts())
		if err != nil || q.Expr == nil {
			continue
		}
		want, wantOK := compileRef(q.Expr)
		got, gotOK := q.Bytecode(unix.AF_INET)
		if gotOK != wantOK || !bytes.Equal(got, want) {
			t.Errorf("%.80q: got %v %x\nwant %v %x", in, gotOK, got, wantOK, want)
		}
	}
}

// allocated returns the bytes f allocates, measured over a few runs (the
// allocation counters are exact, unlike timings on a shared machine).
func allocated(f func()) uint64 {
	const runs = 3
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs
}

// A 40 000-term `or` used to be compiled by copying the program at every
// level: about 15 GB allocated before the length check. Now the program
// is refused from the tree's size alone, and parsing the whole filter
// costs a small multiple of its text.
func TestCompileLargeOr(t *testing.T) {
	in := orChain(40000)
	var q *Query
	parse := func() {
		var err error
		if q, err = Parse([]string{in}, testOpts()); err != nil {
			t.Fatal(err)
		}
	}
	// Each term is a 16-byte condition and a 4-byte jump: 40 000 of them
	// are far past the kernel's 64 KiB.
	if n := allocated(parse); n > 16*uint64(len(in)) {
		t.Errorf("Parse of a %d-byte filter allocates %d bytes", len(in), n)
	}
	if _, ok := q.Bytecode(unix.AF_INET); ok || q.progErr != noProgLong {
		t.Errorf("40 000 terms: bytecode %v, reason %q; want none, %q", ok, q.progErr, noProgLong)
	}
	if n := testing.AllocsPerRun(3, func() { compile(q.Expr) }); n > 20 {
		t.Errorf("refusing the program takes %v allocations", n)
	}
	// Just under the limit the whole program is emitted, into one buffer.
	q3276, err := Parse([]string{orChain(3276)}, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	prog, ok := q3276.Bytecode(unix.AF_INET)
	if !ok || len(prog) != 3276*20-4 {
		t.Fatalf("3276 terms: %d bytes, %v", len(prog), ok)
	}
	if n := allocated(func() { compile(q3276.Expr) }); n > 1<<20 {
		t.Errorf("compiling a %d-byte program allocates %d bytes", len(prog), n)
	}
	// Match and String walk the chain without recursing, and String
	// builds its text once (concatenating per node copied it per term:
	// some 14 GB here).
	if !q.Match(tcp(sock.Established, "127.0.0.1:5000", "127.0.0.1:39999")) {
		t.Error("dport = :39999 not matched")
	}
	if q.Match(tcp(sock.Established, "127.0.0.1:5000", "127.0.0.1:40001")) {
		t.Error("dport = :40001 matched")
	}
	var s string
	if n := allocated(func() { s = q.Expr.String() }); n > 12*uint64(len(in)) {
		t.Errorf("String of a %d-byte filter allocates %d bytes", len(in), n)
	}
	if s != in {
		t.Errorf("String does not print the filter back")
	}
}

// Doubling the terms doubles the cost, within slack for slice growth:
// the compiler used to quadruple it.
func TestCompileScalesLinearly(t *testing.T) {
	cost := func(terms int) uint64 {
		in := orChain(terms)
		return allocated(func() {
			if _, err := Parse([]string{in}, testOpts()); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, n := range []int{1000, 20000} {
		a, b := cost(n), cost(2*n)
		if float64(b) > 2.5*float64(a) {
			t.Errorf("%d terms allocate %d bytes, %d terms %d", n, a, 2*n, b)
		}
	}
}

// A 2 MB `-F` file (ss's lines, each under its 1024-byte buffer) parses
// in memory proportional to its size; the file is read a line at a time.
func TestParseLargeFile(t *testing.T) {
	var b strings.Builder
	for i := 1; b.Len() < 2<<20; i++ {
		fmt.Fprintf(&b, "dport = :%d or", i%65535+1)
		if i%50 == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	b.WriteString("sport = :1\n")
	file := b.String()
	var q *Query
	n := allocated(func() {
		var err error
		if q, err = ParseReader(nil, strings.NewReader(file), testOpts()); err != nil {
			t.Fatal(err)
		}
	})
	if n > 16*uint64(len(file)) {
		t.Errorf("a %d-byte filter file allocates %d bytes", len(file), n)
	}
	if _, ok := q.Bytecode(unix.AF_INET); ok {
		t.Error("a 2 MB filter has a program")
	}
}

func TestParseFileLines(t *testing.T) {
	cases := []struct{ file, want string }{
		// Longer than the read buffer: counted, not held.
		{"autobound\n" + strings.Repeat("a", 10000) + "\n", "line 2 of filter file is too long: 10001 bytes"},
		// ss sees a line up to its first NUL.
		{"autobound\x00" + strings.Repeat("a", 10000) + "\n", ""},
		{"autobound " + strings.Repeat("a", 5000) + "\x00\n", "too long: 5010 bytes"},
		{"\x00autobound\n", "invalid line 1"},
		// ss reads lines as it parses: a syntax error before a bad line wins.
		{"autobound )\n" + strings.Repeat("a", 2000) + "\n", `unexpected ")" at word 2 (line 1)`},
		{"autobound or\n" + strings.Repeat("a", 2000), "line 2 of filter file is too long"},
		{"autobound or\n# ( \n0 (\ndport = :1", ""},
	}
	for _, c := range cases {
		_, err := ParseReader(nil, strings.NewReader(c.file), testOpts())
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%.40q: %v", c.file, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%.40q: error %v, want %q", c.file, err, c.want)
		}
	}
	_, err := ParseReader(nil, io.MultiReader(strings.NewReader("autobound or\n"), iotest.ErrReader(errors.New("disk on fire"))), testOpts())
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("read error: %v", err)
	}
}

// ss's bison parser gives up ("memory exhausted") when its stack of 10000
// entries fills; these limits were found by running ss 6.1 itself.
func TestParseNestingLimit(t *testing.T) {
	rep := func(s string, n int) string { return strings.Repeat(s+" ", n) }
	cases := []struct {
		name  string
		maxOK int
		f     func(n int) string
	}{
		{"!", 9995, func(n int) string { return rep("!", n) + "sport = :22" }},
		{"! autobound", 9997, func(n int) string { return rep("!", n) + "autobound" }},
		{"! dst", 9995, func(n int) string { return rep("!", n) + "dst 1.2.3.4" }},
		{"(", 9995, func(n int) string { return rep("(", n) + "sport = :22 " + rep(")", n) }},
		{"( autobound", 9996, func(n int) string { return rep("(", n) + "autobound " + rep(")", n) }},
		{"or (", 3331, func(n int) string { return rep("sport = :1 or (", n) + "sport = :22 " + rep(")", n) }},
		{"implicit and (", 4997, func(n int) string { return rep("sport = :1 (", n) + "sport = :22 " + rep(")", n) }},
		{"( !", 4998, func(n int) string { return rep("( !", n) + "autobound " + rep(")", n) }},
		{"( a or b", 9993, func(n int) string { return rep("(", n) + "sport = :22 or dport = :1 " + rep(")", n) }},
	}
	for _, c := range cases {
		q, err := Parse([]string{c.f(c.maxOK)}, testOpts())
		if err != nil {
			t.Errorf("%s x%d: %v", c.name, c.maxOK, err)
		} else {
			q.Match(tcp(sock.Established, "127.0.0.1:22", "127.0.0.1:1"))
			_ = q.Expr.String()
		}
		_, err = Parse([]string{c.f(c.maxOK + 1)}, testOpts())
		var fe *Error
		if !errors.As(err, &fe) || fe.What != "too deeply nested" {
			t.Errorf("%s x%d: %v, want too deeply nested", c.name, c.maxOK+1, err)
		}
	}
	// What ss reports first at the limit: a bad value (its lexer), then
	// the empty "=" bison reduces, then a syntax error.
	for _, c := range []struct{ in, want string }{
		{rep("!", 9997) + "dst bad[x", "bad host"},
		{rep("!", 9996) + "dst and", `unexpected "and"`},
		{rep("!", 9997) + "dst and", "too deeply nested"},
		{rep("!", 9997) + "dst", "too deeply nested"},
	} {
		if _, err := Parse([]string{c.in}, testOpts()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.30q: %v, want %q", c.in, err, c.want)
		}
	}
	// A 2 MB argument of "(" is refused at its 9996th word.
	_, err := Parse([]string{strings.Repeat("( ", 1<<20)}, testOpts())
	if err == nil || !strings.Contains(err.Error(), "at word 9999") {
		t.Errorf("a million \"(\": %v", err)
	}
}

// BenchmarkCompileLargeOr compiles `dport = :1 or ...`: below 3277 terms
// the program is emitted, above it refused from the tree's size; ns/op
// and B/op grow linearly with the terms either way (they used to grow
// with their square).
func BenchmarkCompileLargeOr(b *testing.B) {
	for _, n := range []int{500, 1000, 2000, 3000, 10000, 40000, 160000} {
		q, err := Parse([]string{orChain(n)}, testOpts())
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("terms=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				compile(q.Expr)
			}
		})
	}
}

// BenchmarkParseLargeOr is the whole of Parse (words, tree, program) on
// the same filters.
func BenchmarkParseLargeOr(b *testing.B) {
	for _, n := range []int{1000, 10000, 40000, 160000} {
		in := []string{orChain(n)}
		b.Run(fmt.Sprintf("terms=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(in, testOpts()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
