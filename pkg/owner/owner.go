// Package owner tells, for every transition, which process owns the socket
// and how long the socket spent in its previous state: the two facts about a
// transition that only the socket's earlier transitions know. The owner
// matters most: with it a transition that ran in softirq context (a peer's FIN, a timer,
// the handshake completing) is put on the socket's owner and never on
// whoever happened to be on the CPU.
//
// The rule, from what the kernel guarantees: a transition in process context
// runs in the task that holds the socket lock, which is a task using the
// socket (a system call, or its backlog processing at release_sock), so it
// (re)names the owner, with the task's cgroup (its container): connect()
// and listen() name it first, close() and shutdown() refresh it (fd
// passing, fork). A softirq transition keeps the owner known so far. A
// passive open starts with its listener's owner, until a process-context
// transition of the child (its close(), usually by the process that
// accept()ed it) names it precisely: accept() itself changes no state, so
// the stream cannot see it.
//
// The rule (Next, with Listeners for the children of listeners) runs in
// userspace, behind the decoder: the Tracker applies it for `sstrace trace`
// alone, and the daemon's table applies it to its own records (one map per
// socket, and the owners the seed found are simply the records'). It could
// live in the kernel (tcplife keeps such a map there), but here it costs no
// map update per transition in the kernel, and the daemon knows the owners
// of sockets older than itself from its seed, which a kernel map could not
// learn. The Tracker's memory is bounded by the live sockets: an entry goes
// at CLOSE.
package owner

import (
	"net/netip"
	"time"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// listenKey names a listening socket by what its children inherit.
type listenKey struct {
	netns uint64
	addr  netip.Addr
	port  uint16
}

// Next returns the owner of e's socket once e has run, given the owner
// known before it (the zero Owner when unknown): the task, in process
// context; for a new child still unnamed, its listener's owner; otherwise
// the owner known so far. Never the task of a softirq. This is the one rule
// both the Tracker (for `sstrace trace`) and the daemon's table apply.
func Next(prev event.Owner, e *event.Event, listeners *Listeners) event.Owner {
	switch {
	case e.Context == event.ContextProcess:
		return event.Owner{PID: e.Task.PID, UID: e.Task.UID, Comm: e.Task.Comm, CgroupID: e.CgroupID}
	case !prev.Known() && e.OldState == sock.Listen && e.NewState == sock.SynRecv:
		// A new child: its listener's process, until accept()/close()
		// says more.
		if o, ok := listeners.Lookup(e.NetNS, e.Local); ok {
			return o
		}
	}
	return prev
}

// Listeners indexes the owners of listening sockets by what their children
// inherit (namespace, local address and port). The zero value is ready.
type Listeners struct {
	m map[listenKey]event.Owner
}

func keyOf(netns uint64, local netip.AddrPort) listenKey {
	return listenKey{netns, local.Addr().Unmap(), local.Port()}
}

// Add registers the owner of a listener bound to local.
func (l *Listeners) Add(netns uint64, local netip.AddrPort, o event.Owner) {
	if !o.Known() {
		return
	}
	if l.m == nil {
		l.m = make(map[listenKey]event.Owner)
	}
	l.m[keyOf(netns, local)] = o
}

// Remove forgets the listener bound to local.
func (l *Listeners) Remove(netns uint64, local netip.AddrPort) { delete(l.m, keyOf(netns, local)) }

// Observe registers or forgets a listener from its transition e (with
// e.Owner already set): CLOSE -> LISTEN adds, LISTEN -> CLOSE removes.
func (l *Listeners) Observe(e *event.Event) {
	switch {
	case e.NewState == sock.Listen:
		l.Add(e.NetNS, e.Local, e.Owner)
	case e.OldState == sock.Listen && e.NewState == sock.Close:
		l.Remove(e.NetNS, e.Local)
	}
}

// Lookup finds the owner of the listener a child at local came from: the
// one bound to that address, else the wildcard one.
func (l *Listeners) Lookup(netns uint64, local netip.AddrPort) (event.Owner, bool) {
	if o, ok := l.m[keyOf(netns, local)]; ok {
		return o, true
	}
	for _, any := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		if o, ok := l.m[listenKey{netns, any, local.Port()}]; ok {
			return o, true
		}
	}
	return event.Owner{}, false
}

// Tracker remembers the owner of every live socket it has seen, for a
// stream without a table (`sstrace trace`). Not safe for concurrent use: it
// sits in the single event loop.
type Tracker struct {
	// byCookie holds sockets with a cookie; bySock those whose events
	// carry none (kernel address, unique while the socket lives).
	byCookie  map[uint64]entry
	bySock    map[uint64]entry
	listeners Listeners
}

// entry is what the tracker keeps per live socket.
type entry struct {
	owner event.Owner
	// since is the Mono time of the socket's last transition.
	since time.Duration
}

// New returns an empty Tracker.
func New() *Tracker {
	return &Tracker{byCookie: make(map[uint64]entry), bySock: make(map[uint64]entry)}
}

// Len is the number of live sockets the tracker remembers.
func (t *Tracker) Len() int { return len(t.byCookie) + len(t.bySock) }

// Observe fills e.Owner and e.InState and updates what the tracker knows
// from e. Call it for every event, in order.
func (t *Tracker) Observe(e *event.Event) {
	m, key := t.byCookie, e.Cookie
	if key == 0 {
		m, key = t.bySock, e.Sock
	}
	en, seen := m[key]
	if !seen && e.Cookie != 0 {
		// Its cookie was made after its first events.
		en, seen = t.bySock[e.Sock]
	}
	e.InState = 0
	if seen && en.since != 0 && e.Mono >= en.since {
		e.InState = e.Mono - en.since
	}
	e.Owner = Next(en.owner, e, &t.listeners)
	t.listeners.Observe(e)
	if e.NewState == sock.Close {
		delete(m, key)
		// A socket that had no cookie so far may carry one now: forget
		// both names.
		if e.Cookie != 0 {
			delete(t.bySock, e.Sock)
		}
		return
	}
	m[key] = entry{owner: e.Owner, since: e.Mono}
	if e.Cookie != 0 {
		delete(t.bySock, e.Sock) // promoted to its cookie
	}
}
