package ssquery

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestDumpInetOrder checks that dumping the two families at once gives
// the rows of dumping them one after the other, in the same order: every
// IPv4 row before the first IPv6 row, as ss prints them.
func TestDumpInetOrder(t *testing.T) {
	ns := testutil.NewNS(t)
	var lns []net.Listener
	t.Cleanup(func() {
		for _, l := range lns {
			l.Close()
		}
	})
	err := ns.Do(func() error {
		for range 20 {
			for _, a := range [][2]string{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
				l, err := net.Listen(a[0], a[1])
				if err != nil {
					return err
				}
				lns = append(lns, l)
			}
		}
		return nil
	})
	if err != nil {
		testutil.Unavailable(t, "listeners in a namespace: %v", err)
	}

	target := netns.ByName(ns.Name)
	req := sockdiag.Request{Protos: []sock.Proto{sock.ProtoTCP}, States: sock.AllStates}
	fams := []uint8{unix.AF_INET, unix.AF_INET6}
	collect := func(rows *[]sock.Socket) func(*sock.Socket) error {
		return func(s *sock.Socket) error {
			*rows = append(*rows, *s)
			return nil
		}
	}
	var got, want []sock.Socket
	if err := dumpInet(context.Background(), target, req, fams, collect(&got)); err != nil {
		t.Fatal(err)
	}
	seq := req
	seq.Families = fams
	if err := sockdiag.Dump(context.Background(), target, seq, collect(&want)); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(lns) {
		t.Fatalf("sequential dump found %d sockets, want the %d listeners", len(want), len(lns))
	}
	if len(got) != len(want) {
		t.Fatalf("dumpInet found %d sockets, sequential dump %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Cookie != want[i].Cookie || got[i].Local != want[i].Local {
			t.Errorf("row %d: dumpInet %v (cookie %x), sequential %v (cookie %x)",
				i, got[i].Local, got[i].Cookie, want[i].Local, want[i].Cookie)
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].Family == unix.AF_INET6 && got[i].Family == unix.AF_INET {
			t.Fatalf("IPv4 row %d after an IPv6 row", i)
		}
	}

	// A failing dump fails the whole call, whichever family it is.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := dumpInet(ctx, target, req, fams, collect(new([]sock.Socket))); err == nil {
		t.Error("dumpInet with a cancelled context succeeded")
	}
}
