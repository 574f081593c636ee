package owner

import (
	"net/netip"
	"testing"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

func ev(cookie uint64, ctx event.Context, pid uint32, comm string, old, new sock.State, local, peer string) *event.Event {
	return &event.Event{
		Cookie: cookie, Sock: cookie + 1000, NetNS: 7, Context: ctx,
		Task:     event.Task{PID: pid, UID: pid + 1, Comm: comm},
		CgroupID: uint64(pid) * 10, // each task in a cgroup of its own
		OldState: old, NewState: new,
		Local: netip.MustParseAddrPort(local), Peer: netip.MustParseAddrPort(peer),
	}
}

func TestSoftirqNeverBlamesTheCPUsTask(t *testing.T) {
	tr := New()
	p, s := event.ContextProcess, event.ContextSoftirq
	steps := []struct {
		e    *event.Event
		want uint32
	}{
		// The server listens.
		{ev(1, p, 100, "server", sock.Close, sock.Listen, "0.0.0.0:80", "0.0.0.0:0"), 100},
		// The client connects: its own process.
		{ev(2, p, 200, "client", sock.Close, sock.SynSent, "127.0.0.1:0", "127.0.0.1:80"), 200},
		// The child appears in softirq, running in the client's
		// connect(): the listener's process, not the client.
		{ev(3, s, 200, "client", sock.Listen, sock.SynRecv, "127.0.0.1:80", "127.0.0.1:5000"), 100},
		{ev(3, s, 200, "client", sock.SynRecv, sock.Established, "127.0.0.1:80", "127.0.0.1:5000"), 100},
		{ev(2, s, 999, "other", sock.SynSent, sock.Established, "127.0.0.1:5000", "127.0.0.1:80"), 200},
		// A worker that accepted the child closes it: precise now.
		{ev(3, p, 300, "worker", sock.Established, sock.FinWait1, "127.0.0.1:80", "127.0.0.1:5000"), 300},
		// The client gets the FIN in the worker's close(): still the client.
		{ev(2, s, 300, "worker", sock.Established, sock.CloseWait, "127.0.0.1:5000", "127.0.0.1:80"), 200},
		{ev(3, s, 200, "client", sock.FinWait1, sock.FinWait2, "127.0.0.1:80", "127.0.0.1:5000"), 300},
		{ev(2, p, 200, "client", sock.CloseWait, sock.LastAck, "127.0.0.1:5000", "127.0.0.1:80"), 200},
		{ev(3, s, 200, "client", sock.FinWait2, sock.Close, "127.0.0.1:80", "127.0.0.1:5000"), 300},
		{ev(2, s, 1, "init", sock.LastAck, sock.Close, "127.0.0.1:5000", "127.0.0.1:80"), 200},
		// A socket nobody saw in process context: unknown, not the CPU's task.
		{ev(9, s, 444, "bystander", sock.Established, sock.CloseWait, "10.0.0.1:1", "10.0.0.2:2"), 0},
	}
	for i, st := range steps {
		tr.Observe(st.e)
		if st.e.Owner.PID != st.want {
			t.Errorf("step %d (%s->%s): owner %d, want %d", i, st.e.OldState, st.e.NewState, st.e.Owner.PID, st.want)
		}
		// The owner's cgroup goes with the owner: never the CPU's task's.
		if st.e.Owner.CgroupID != uint64(st.want)*10 {
			t.Errorf("step %d (%s->%s): owner's cgroup %d, want %d", i, st.e.OldState, st.e.NewState, st.e.Owner.CgroupID, st.want*10)
		}
	}
	// Closed sockets are forgotten; the listener and the bystander stay.
	if tr.Len() != 2 {
		t.Errorf("%d sockets kept after the connection closed, want 2 (listener, bystander)", tr.Len())
	}
}

func TestSeededListenerAndSpecificAddress(t *testing.T) {
	tr := New()
	// Listeners the daemon's seed found (it registers them as the table does).
	tr.listeners.Add(7, netip.MustParseAddrPort("[::]:443"), event.Owner{PID: 50, Comm: "nginx"})
	tr.listeners.Add(7, netip.MustParseAddrPort("127.0.0.2:443"), event.Owner{PID: 60, Comm: "local"})
	e := ev(3, event.ContextSoftirq, 1, "x", sock.Listen, sock.SynRecv, "[::ffff:10.1.1.1]:443", "[::ffff:10.1.1.2]:9")
	tr.Observe(e)
	if e.Owner.PID != 50 {
		t.Errorf("dual-stack child: owner %d, want the wildcard listener's 50", e.Owner.PID)
	}
	e = ev(4, event.ContextSoftirq, 1, "x", sock.Listen, sock.SynRecv, "127.0.0.2:443", "127.0.0.1:9")
	tr.Observe(e)
	if e.Owner.PID != 60 {
		t.Errorf("child of the address-bound listener: owner %d, want 60", e.Owner.PID)
	}
	// Another namespace's listener on the same port is not ours.
	e = ev(5, event.ContextSoftirq, 1, "x", sock.Listen, sock.SynRecv, "127.0.0.2:443", "127.0.0.1:9")
	e.NetNS = 8
	tr.Observe(e)
	if e.Owner.Known() {
		t.Errorf("child in another namespace got owner %+v", e.Owner)
	}
}

func TestCookielessSocketPromoted(t *testing.T) {
	tr := New()
	e := ev(0, event.ContextProcess, 10, "a", sock.Close, sock.SynSent, "1.1.1.1:1", "2.2.2.2:2")
	e.Sock = 77
	tr.Observe(e)
	e = ev(0, event.ContextSoftirq, 99, "b", sock.SynSent, sock.Established, "1.1.1.1:1", "2.2.2.2:2")
	e.Sock = 77
	tr.Observe(e)
	if e.Owner.PID != 10 {
		t.Fatalf("cookie-less socket: owner %d, want 10", e.Owner.PID)
	}
	e = ev(0, event.ContextSoftirq, 99, "b", sock.Established, sock.Close, "1.1.1.1:1", "2.2.2.2:2")
	e.Sock = 77
	tr.Observe(e)
	if tr.Len() != 0 {
		t.Errorf("%d entries left after CLOSE", tr.Len())
	}
}

func TestInState(t *testing.T) {
	tr := New()
	e := ev(1, event.ContextProcess, 1, "a", sock.Close, sock.SynSent, "1.1.1.1:1", "2.2.2.2:2")
	e.Mono = 1000
	tr.Observe(e)
	if e.InState != 0 {
		t.Errorf("first transition: in state %v, want 0 (unknown)", e.InState)
	}
	e = ev(1, event.ContextSoftirq, 1, "a", sock.SynSent, sock.Established, "1.1.1.1:1", "2.2.2.2:2")
	e.Mono = 1500
	tr.Observe(e)
	if e.InState != 500 {
		t.Errorf("in state %v, want 500ns", e.InState)
	}
}
