package tracer

import (
	"net/netip"
	"testing"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// feed runs events through a holder as Run does and returns what would be
// delivered, in order.
func feed(h *holder, in []event.Event) []event.Event {
	var out []event.Event
	for i := range in {
		e := in[i]
		if held := h.release(&e); held != nil {
			out = append(out, *held)
		}
		if firstOfChild(&e) && h.hold(&e) {
			continue
		}
		out = append(out, e)
	}
	return out
}

func TestHolderDeliversFirstEventBeforeNext(t *testing.T) {
	listener := netip.MustParseAddrPort("0.0.0.0:80")
	local := netip.MustParseAddrPort("10.0.0.1:80")
	peer := netip.MustParseAddrPort("10.0.0.2:5555")
	child := func(old, new sock.State, l, p netip.AddrPort, cookie uint64, src event.CookieSource) event.Event {
		return event.Event{Sock: 0xa0, OldState: old, NewState: new, Local: l, Peer: p, Cookie: cookie, CookieSource: src}
	}
	other := event.Event{Sock: 0xb0, OldState: sock.Close, NewState: sock.SynSent}
	in := []event.Event{
		child(sock.Listen, sock.SynRecv, listener, netip.AddrPort{}, 7, event.CookieHelper),
		other,
		child(sock.SynRecv, sock.Established, local, peer, 42, event.CookieHelper),
	}
	out := feed(newHolder(), in)
	if len(out) != 3 {
		t.Fatalf("delivered %d events, want 3: %+v", len(out), out)
	}
	if out[0].Sock != 0xb0 {
		t.Errorf("first delivered %#x, want the other socket's event (held child waits)", out[0].Sock)
	}
	first := out[1]
	if first.OldState != sock.Listen || first.NewState != sock.SynRecv {
		t.Errorf("second delivered %v -> %v, want the child's LISTEN -> SYN_RECV", first.OldState, first.NewState)
	}
	if first.Local != local || first.Peer != peer || first.Cookie != 42 || first.CookieSource != event.CookieDeferred {
		t.Errorf("held event = %v %v cookie %d (%v), want the next event's ends and cookie, deferred", first.Local, first.Peer, first.Cookie, first.CookieSource)
	}
	if out[2].NewState != sock.Established {
		t.Errorf("third delivered %v, want ESTABLISHED", out[2].NewState)
	}

	// Without a cookie, the held event has none either.
	out = feed(newHolder(), []event.Event{
		child(sock.Listen, sock.SynRecv, listener, netip.AddrPort{}, 0, event.CookieNone),
		child(sock.SynRecv, sock.Close, local, peer, 0, event.CookieNone),
	})
	if len(out) != 2 || out[0].CookieSource != event.CookieNone {
		t.Errorf("no cookie: got %+v", out)
	}
}

func TestHolderDropsStaleAndBounds(t *testing.T) {
	h := newHolder()
	first := event.Event{Sock: 1, OldState: sock.Listen, NewState: sock.SynRecv}
	// The child's later events were lost and its address reused by a
	// connecting socket: the stale event goes, the new one passes.
	out := feed(h, []event.Event{first, {Sock: 1, OldState: sock.Close, NewState: sock.SynSent}})
	if len(out) != 1 || out[0].NewState != sock.SynSent || len(h.index) != 0 {
		t.Fatalf("stale held event: delivered %+v, %d still held", out, len(h.index))
	}
	// Full: first events pass as they are, counted.
	for i := range maxHeld + 3 {
		e := first
		e.Sock = uint64(i + 10)
		if !h.hold(&e) {
			out = append(out, e)
		}
	}
	if got := h.full.Load(); got != 3 {
		t.Errorf("full = %d, want 3", got)
	}
	// Slots are reused: releasing and holding again does not grow.
	n := len(h.held)
	for i := range 100 {
		e := event.Event{Sock: uint64(i + 10), OldState: sock.SynRecv, NewState: sock.Established}
		if h.release(&e) == nil {
			t.Fatalf("socket %d: nothing held", i+10)
		}
		f := first
		f.Sock = uint64(1<<40 + i)
		h.hold(&f)
	}
	if len(h.held) != n {
		t.Errorf("held slots grew from %d to %d", n, len(h.held))
	}
}

func BenchmarkHolder(b *testing.B) {
	h := newHolder()
	first := event.Event{OldState: sock.Listen, NewState: sock.SynRecv}
	next := event.Event{OldState: sock.SynRecv, NewState: sock.Established}
	b.ReportAllocs()
	for i := range b.N {
		first.Sock = uint64(i)
		next.Sock = uint64(i)
		h.hold(&first)
		h.release(&next)
	}
}
