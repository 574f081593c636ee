package filter

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

var fuzzRows = []*sock.Socket{
	tcp(sock.Established, "127.0.0.1:40078", "127.0.0.1:22"),
	tcp(sock.Listen, "[::]:8080", "[::]:0"),
	tcp(sock.Established, "[::ffff:10.0.0.1]:22", "[::ffff:10.0.0.2]:50312"),
	tcp(sock.TimeWait, "[2001:db8::1]:443", "[2001:db8::2]:1"),
	unixRow(sock.Established, "/tmp/x", 5, 6),
	unixRow(sock.Close, "", 7, 0),
	{Proto: sock.ProtoUDP, Family: unix.AF_INET, State: sock.Close},
}

// FuzzParse feeds arbitrary command tails (newline-separated arguments)
// under each preferred family. Parse must never panic; whatever it
// accepts must print back to the same tree, compile without panicking, and
// evaluate on every kind of row; its program must be ss's, byte for byte.
func FuzzParse(f *testing.F) {
	for _, c := range parseCases {
		f.Add(c.in, uint8(0))
	}
	f.Add("state\nall\nsrc 1.2.3.4", uint8(unix.AF_INET))
	f.Add("src /tmp/*", uint8(unix.AF_UNIX))
	f.Fuzz(func(t *testing.T, tail string, fam uint8) {
		switch fam % 4 {
		case 1:
			fam = unix.AF_INET
		case 2:
			fam = unix.AF_INET6
		case 3:
			fam = unix.AF_UNIX
		default:
			fam = 0
		}
		o := testOpts()
		o.Family = fam
		q, err := Parse(strings.Split(tail, "\n"), o)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if q.Expr != nil {
			got, gotOK := q.Bytecode(unix.AF_INET)
			want, wantOK := compileRef(q.Expr)
			if gotOK != wantOK || !bytes.Equal(got, want) {
				t.Fatalf("%q compiles to %v %x, ss's algorithm to %v %x", tail, gotOK, got, wantOK, want)
			}
		}
		for _, s := range fuzzRows {
			q.Match(s)
		}
		if q.Expr == nil {
			return
		}
		o.Family = fam
		q2, err := Parse([]string{q.Expr.String()}, o)
		if err != nil {
			t.Fatalf("%q printed as %q, which fails: %v", tail, q.Expr.String(), err)
		}
		if a, b := treeString(q.Expr), treeString(q2.Expr); a != b {
			t.Fatalf("%q: tree %s reparses as %s", tail, a, b)
		}
	})
}

// FuzzBytecode runs arbitrary programs through the interpreter that stands
// in for the kernel's: it must never panic or loop.
func FuzzBytecode(f *testing.F) {
	for _, c := range parseCases {
		if q, err := Parse([]string{c.in}, testOpts()); err == nil {
			if prog, ok := q.Bytecode(unix.AF_INET); ok {
				f.Add(prog)
			}
		}
	}
	f.Fuzz(func(t *testing.T, prog []byte) {
		for _, s := range fuzzRows[:4] {
			q := &Query{}
			runBytecode(prog, q.kernelEntry(s))
		}
	})
}
