package ssfmt

import (
	"io"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// benchRows builds n TCP rows shaped like the bench-ss population
// (cmd/sockfarm): loopback listeners, clients on 127.16.0.0/12, a Recv-Q on
// every seventh row, and one holding process per socket.
func benchRows(n int) []sock.Socket {
	rows := make([]sock.Socket, n)
	for i := range rows {
		client := netip.AddrFrom4([4]byte{127, 16 + byte(i>>16&0x0f), byte(i >> 8), byte(i)})
		server := netip.AddrFrom4([4]byte{127, 0, 0, 1})
		st := sock.Established
		if i%10 == 0 {
			st = sock.TimeWait
		}
		s := sock.Socket{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: st,
			Local: netip.AddrPortFrom(client, uint16(30000+i%30000)),
			Peer:  netip.AddrPortFrom(server, uint16(1024+i%1000)),
			Inode: uint64(100000 + i)}
		if i%7 == 0 {
			s.RecvQ = 1234
		}
		s.Procs = []sock.Process{{Comm: "sockfarm", PID: 4000 + i%4, FD: 3 + i%17000}}
		rows[i] = s
	}
	return rows
}

func benchTable(b *testing.B, opts Options) {
	rows := benchRows(100000)
	b.ReportAllocs()
	for b.Loop() {
		t := NewTable(io.Discard, opts)
		for i := range rows {
			t.Add(&rows[i])
		}
		if err := t.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTableTan renders 100 000 rows as `ss -tan` does.
func BenchmarkTableTan(b *testing.B) {
	benchTable(b, Options{ShowState: true, Numeric: true})
}

// BenchmarkTableTanp renders 100 000 rows as `ss -tanp` does.
func BenchmarkTableTanp(b *testing.B) {
	benchTable(b, Options{ShowState: true, Numeric: true, Processes: true})
}

// TestAddAllocs guards the allocation-free row path of the common columns.
func TestAddAllocs(t *testing.T) {
	rows := benchRows(1000)
	tab := NewTable(io.Discard, Options{ShowState: true, Numeric: true, Processes: true})
	allocs := testing.AllocsPerRun(5, func() {
		for i := range rows {
			tab.Add(&rows[i])
		}
	})
	// Buffers grow now and then (and are reused after each batch); a
	// string per field would cost about ten allocations per row.
	if perRow := allocs / float64(len(rows)); perRow > 0.1 {
		t.Errorf("Add allocates %.2f times per row, want about 0", perRow)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
}
