package procs

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/sstrace/sstrace/pkg/sock"
)

func TestParseSocketLink(t *testing.T) {
	for _, tc := range []struct {
		link string
		ino  uint64
		ok   bool
	}{
		{"socket:[12345]", 12345, true},
		{"socket:[0]", 0, true},
		{"socket:[18446744073709551615]", 1<<64 - 1, true},
		{"socket:[]", 0, false},
		{"socket:[12", 0, false},
		{"socket:[1x]", 0, false},
		{"pipe:[12345]", 0, false},
		{"/tmp/socket:[1]", 0, false},
		{"anon_inode:[eventfd]", 0, false},
		{"", 0, false},
	} {
		ino, ok := parseSocketLink([]byte(tc.link))
		if ino != tc.ino || ok != tc.ok {
			t.Errorf("parseSocketLink(%q) = %d, %v; want %d, %v", tc.link, ino, ok, tc.ino, tc.ok)
		}
	}
}

// The names ss prints: fscanf("%*d (%[^)])") on /proc/PID/stat stops at the
// first ')' and keeps spaces.
func TestParseStatComm(t *testing.T) {
	for _, tc := range []struct{ stat, want string }{
		{"1234 (nginx) S 1 1234 ...", "nginx"},
		{"1234 (tmux: server) S 1", "tmux: server"},
		{"1234 (a)b) S 1", "a"},
		{"1234 () S 1", ""},
		{"1234 (x(y) S 1", "x(y"},
		{"garbage", ""},
	} {
		if got := parseStatComm([]byte(tc.stat)); got != tc.want {
			t.Errorf("parseStatComm(%q) = %q, want %q", tc.stat, got, tc.want)
		}
	}
}

func TestSSComm(t *testing.T) {
	raw := func(s string) []byte { b := make([]byte, 16); copy(b, s); return b }
	for _, tc := range []struct {
		raw  []byte
		want string
	}{
		{raw("sshd"), "sshd"},
		{raw("fifteen-chars.."), "fifteen-chars.."},
		{raw("we)ird"), "we"},
		{raw(""), ""},
	} {
		if got := ssComm(tc.raw); got != tc.want {
			t.Errorf("ssComm(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

func record(ino uint64, pid, fd uint32, comm string) []byte {
	b := make([]byte, recordSize)
	binary.LittleEndian.PutUint64(b[offIno:], ino)
	binary.LittleEndian.PutUint32(b[offPid:], pid)
	binary.LittleEndian.PutUint32(b[offFd:], fd)
	copy(b[offComm:offComm+16], comm)
	return b
}

func TestDecode(t *testing.T) {
	if recordSize != 32 {
		t.Fatalf("struct sock_file is %d bytes, want 32 (u64 + 2*u32 + char[16])", recordSize)
	}
	var raw []byte
	raw = append(raw, record(7, 10, 3, "one")...)
	raw = append(raw, record(8, 10, 4, "one")...)
	raw = append(raw, record(7, 11, 5, "t)wo")...)
	got, err := decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := []entry{{ino: 7, pid: 10, fd: 3, comm: "one"}, {ino: 8, pid: 10, fd: 4, comm: "one"}, {ino: 7, pid: 11, fd: 5, comm: "t"}}
	if !slices.Equal(got, want) {
		t.Errorf("decode = %+v, want %+v", got, want)
	}

	_, err = decode(raw[:len(raw)-1])
	if err == nil || !strings.Contains(err.Error(), "multiple of the 32-byte record") {
		t.Errorf("decode of a truncated stream: err = %v, want a record-size error", err)
	}
	if got, err := decode(nil); err != nil || len(got) != 0 {
		t.Errorf("decode(nil) = %v, %v; want empty, nil", got, err)
	}
}

// build must print a socket's holders as ss does: the reverse of the order
// the walk found them in (ascending pid, then fd).
func TestBuildOrder(t *testing.T) {
	ents := []entry{
		{ino: 5, pid: 100, fd: 3, comm: "a"},
		{ino: 9, pid: 100, fd: 4, comm: "a"},
		{ino: 5, pid: 100, fd: 10, comm: "a"},
		{ino: 5, pid: 200, fd: 3, comm: "b"},
		{ino: 5, pid: 200, fd: 7, comm: "b"},
		{ino: 0, pid: 200, fd: 8, comm: "b"}, // never indexed
	}
	ix := build(ents, SourceProc, "test")
	want5 := []sock.Process{{Comm: "b", PID: 200, FD: 7}, {Comm: "b", PID: 200, FD: 3}, {Comm: "a", PID: 100, FD: 10}, {Comm: "a", PID: 100, FD: 3}}
	if got := ix.Lookup(5); !slices.Equal(got, want5) {
		t.Errorf("Lookup(5) = %v, want %v", got, want5)
	}
	if got := ix.Lookup(9); !slices.Equal(got, []sock.Process{{Comm: "a", PID: 100, FD: 4}}) {
		t.Errorf("Lookup(9) = %v", got)
	}
	for _, ino := range []uint64{0, 6, 1 << 40} {
		if got := ix.Lookup(ino); got != nil {
			t.Errorf("Lookup(%d) = %v, want nil", ino, got)
		}
	}
	if ix.Len() != 5 || ix.Inodes() != 2 || ix.Source() != SourceProc || ix.Reason() != "test" {
		t.Errorf("Len %d Inodes %d Source %q Reason %q", ix.Len(), ix.Inodes(), ix.Source(), ix.Reason())
	}
	// Appending to a result must not overwrite another socket's entries.
	for _, ino := range []uint64{5, 9} {
		_ = append(ix.Lookup(ino), sock.Process{Comm: "x"})
	}
	if !slices.Equal(ix.Lookup(5), want5) || ix.Lookup(9)[0].Comm != "a" {
		t.Error("append to a Lookup result clobbered the index")
	}
	var nilIx *Index
	if nilIx.Lookup(5) != nil {
		t.Error("nil Index Lookup must return nil")
	}
	if empty := build(nil, SourceBPF, ""); empty.Lookup(5) != nil || empty.Len() != 0 {
		t.Error("empty index must find nothing")
	}
}

// The hash table must agree with the obvious map-of-lists ss itself uses,
// whatever the inode pattern: sequential runs (how sockfs hands them out),
// strided (colliding in the low bits) and random, with shared sockets.
func TestBuildMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	patterns := map[string]func(i int) uint64{
		"sequential": func(i int) uint64 { return uint64(1000 + i) },
		"strided":    func(i int) uint64 { return uint64(1+i) << 20 },
		"random":     func(int) uint64 { return rng.Uint64()>>1 + 1 },
	}
	for name, gen := range patterns {
		t.Run(name, func(t *testing.T) {
			var inos []uint64
			for i := range 3000 {
				inos = append(inos, gen(i))
			}
			var ents []entry
			for pid := int32(1); pid <= 40; pid++ {
				for fd := int32(0); fd < 150; fd++ {
					// Mostly distinct sockets, some shared between processes.
					ino := inos[rng.IntN(len(inos))]
					ents = append(ents, entry{ino: ino, pid: pid, fd: fd, comm: fmt.Sprint("p", pid)})
				}
			}
			naive := map[uint64][]sock.Process{}
			for _, e := range ents {
				p := sock.Process{Comm: e.comm, PID: int(e.pid), FD: int(e.fd)}
				naive[e.ino] = append([]sock.Process{p}, naive[e.ino]...)
			}
			ix := build(ents, SourceBPF, "")
			if ix.Inodes() != len(naive) || ix.Len() != len(ents) {
				t.Fatalf("Inodes %d Len %d, want %d %d", ix.Inodes(), ix.Len(), len(naive), len(ents))
			}
			for ino, want := range naive {
				if got := ix.Lookup(ino); !slices.Equal(got, want) {
					t.Fatalf("Lookup(%d) = %v, want %v", ino, got, want)
				}
			}
			if got := ix.Lookup(gen(5000)); got != nil && naive[gen(5000)] == nil {
				t.Errorf("Lookup of an absent inode = %v", got)
			}
		})
	}
}

// The zero Scanner walks /proc and says so; it needs no privilege.
func TestZeroScanner(t *testing.T) {
	var s Scanner
	ix, err := s.Scan(context.Background())
	if err != nil {
		t.Fatalf("zero Scanner: %v", err)
	}
	if ix.Source() != SourceProc || !strings.Contains(ix.Reason(), "zero Scanner") {
		t.Errorf("zero Scanner: source %q reason %q", ix.Source(), ix.Reason())
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
