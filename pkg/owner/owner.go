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
// (re)names the owner: connect() and listen() name it first, close() and
// shutdown() refresh it (fd passing, fork). A softirq transition keeps the
// owner known so far. A passive open starts with its listener's owner, until
// a process-context transition of the child (its close(), usually by the
// process that accept()ed it) names it precisely: accept() itself changes no
// state, so the stream cannot see it.
//
// The tracker lives in userspace, behind the decoder, and is the same code
// for `sstrace trace` alone and for the daemon's table. It could live in the
// kernel (tcplife keeps such a map there), but here it costs no map update
// per transition in the kernel, and the daemon can seed it with the owners
// of sockets that existed before it started (Set), which a kernel map could
// not learn. Memory is bounded by the live sockets: an entry goes at CLOSE.
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

// Tracker remembers the owner of every live socket it has seen. Not safe
// for concurrent use: it sits in the single event loop.
type Tracker struct {
	// byCookie holds owners of sockets with a cookie; bySock those whose
	// events carry none (kernel address, unique while the socket lives).
	byCookie  map[uint64]entry
	bySock    map[uint64]entry
	listeners map[listenKey]event.Owner
}

// entry is what the tracker keeps per live socket.
type entry struct {
	owner event.Owner
	// since is the Mono time of the socket's last transition.
	since time.Duration
}

// New returns an empty Tracker.
func New() *Tracker {
	return &Tracker{
		byCookie:  make(map[uint64]entry),
		bySock:    make(map[uint64]entry),
		listeners: make(map[listenKey]event.Owner),
	}
}

// Len is the number of live sockets the tracker remembers.
func (t *Tracker) Len() int { return len(t.byCookie) + len(t.bySock) }

// Set records the owner of the socket with this cookie, learned elsewhere
// (a process scan at start). A listener is also registered under its local
// address, for its children.
func (t *Tracker) Set(cookie uint64, netns uint64, state sock.State, local netip.AddrPort, o event.Owner) {
	if cookie == 0 || !o.Known() {
		return
	}
	en := t.byCookie[cookie]
	en.owner = o
	t.byCookie[cookie] = en
	if state == sock.Listen {
		t.listeners[listenKey{netns, local.Addr().Unmap(), local.Port()}] = o
	}
}

// Lookup returns the owner recorded for a cookie.
func (t *Tracker) Lookup(cookie uint64) (event.Owner, bool) {
	en, ok := t.byCookie[cookie]
	return en.owner, ok && en.owner.Known()
}

// Prune forgets the sockets with a cookie for which live returns false.
// Cookie-less entries are kept (they go at their CLOSE).
func (t *Tracker) Prune(live func(cookie uint64) bool) {
	for c := range t.byCookie {
		if !live(c) {
			delete(t.byCookie, c)
		}
	}
}

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
	o, known := en.owner, en.owner.Known()
	switch {
	case e.Context == event.ContextProcess:
		o = event.Owner{PID: e.Task.PID, UID: e.Task.UID, Comm: e.Task.Comm}
		known = true
	case !known && e.OldState == sock.Listen && e.NewState == sock.SynRecv:
		// A new child: its listener's process, until accept()/close()
		// says more.
		o, known = t.listener(e.NetNS, e.Local)
	}
	if known {
		e.Owner = o
	} else {
		e.Owner = event.Owner{}
	}

	lk := listenKey{e.NetNS, e.Local.Addr().Unmap(), e.Local.Port()}
	switch {
	case e.NewState == sock.Close:
		delete(m, key)
		if e.OldState == sock.Listen {
			delete(t.listeners, lk)
		}
		// A socket that had no cookie so far may carry one now, or the
		// other way round: forget both names.
		if e.Cookie != 0 {
			delete(t.bySock, e.Sock)
		}
	default:
		m[key] = entry{owner: o, since: e.Mono}
		if e.Cookie != 0 {
			delete(t.bySock, e.Sock) // promoted to its cookie
		}
		if known && e.NewState == sock.Listen {
			t.listeners[lk] = o
		}
	}
}

// listener finds the owner of the listener a child at local came from: the
// one bound to that address, else the wildcard one.
func (t *Tracker) listener(netns uint64, local netip.AddrPort) (event.Owner, bool) {
	a := local.Addr().Unmap()
	if o, ok := t.listeners[listenKey{netns, a, local.Port()}]; ok {
		return o, true
	}
	for _, any := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		if o, ok := t.listeners[listenKey{netns, any, local.Port()}]; ok {
			return o, true
		}
	}
	return event.Owner{}, false
}
