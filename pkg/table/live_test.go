package table

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// CountLive counts what Stats counts, per namespace and through a match,
// and refuses before the seed like every query.
func TestCountLive(t *testing.T) {
	if _, err := New(Options{}).CountLive(0, nil); err != ErrNotSeeded {
		t.Errorf("CountLive before the seed: %v, want ErrNotSeeded", err)
	}
	srv := newSk(1, "127.0.0.1:80", "0.0.0.0:0", bystander)
	other := newSk(2, "10.0.0.1:22", "10.0.0.2:5000", bystander)
	other.netns = testNetNS + 1
	h := seeded(t, Options{}, []*sock.Socket{row(srv, sock.Listen, 10), row(other, sock.Established, 11)}, nil)
	cli := newSk(3, "127.0.0.1:4000", "127.0.0.1:80", bystander)
	acc := newSk(4, "127.0.0.1:80", "127.0.0.1:4000", bystander)
	h.run(cli, clientOpen...)
	h.run(acc, serverOpen...)
	h.run(acc, st(sock.Established, sock.CloseWait, S))

	all, err := h.tbl.CountLive(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	stats := h.tbl.Stats().Live
	for s := range all {
		if all[s] != stats[sock.State(s)] {
			t.Errorf("state %v: CountLive %d, Stats %d", sock.State(s), all[s], stats[sock.State(s)])
		}
	}
	one, _ := h.tbl.CountLive(testNetNS, nil)
	if one[sock.Established] != 1 || one[sock.CloseWait] != 1 || one[sock.Listen] != 1 {
		t.Errorf("namespace %d: %v, want one ESTAB, one CLOSE-WAIT, one LISTEN", uint64(testNetNS), one)
	}
	port80 := func(r *sock.Socket) bool { return r.Local.Port() == 80 }
	got, _ := h.tbl.CountLive(0, port80)
	if got[sock.Listen] != 1 || got[sock.CloseWait] != 1 || got[sock.Established] != 0 {
		t.Errorf("sport 80: %v, want LISTEN and CLOSE-WAIT only", got)
	}
}

// Query.Live leaves the closed connections out.
func TestEachConnLive(t *testing.T) {
	h := seeded(t, Options{}, nil, nil)
	open := newSk(1, "127.0.0.1:4000", "127.0.0.1:80", bystander)
	gone := newSk(2, "127.0.0.1:4001", "127.0.0.1:80", bystander)
	h.run(open, clientOpen...)
	h.run(gone, st(sock.Close, sock.SynSent, P), stFin(sock.SynSent, sock.Close, S, event.Final{Err: uint16(unix.ECONNREFUSED)}))
	all, _ := h.tbl.Conns(Query{})
	live, _ := h.tbl.Conns(Query{Live: true})
	if len(all) != 2 || len(live) != 1 || live[0].Cookie != 1 {
		t.Errorf("all %d, live %v; want 2 and cookie 1 only", len(all), live)
	}
}
