package tracer

import (
	"sync/atomic"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// maxHeld bounds the new children whose first event is held back (the
// kernel's map for them had as many entries): a child whose next event never
// comes (lost) cannot hold memory for ever.
const maxHeld = 16384

// holder holds back a new child's first event until the child's next one.
//
// That first event (LISTEN -> SYN_RECV, from inet_csk_clone_lock) fires while
// the child is still a copy of its listener: before 6.x kernels its peer
// address and port are the listener's (0.0.0.0:0), and its cookie is
// replaced just after (with the cookie helper, the one made then would be
// overwritten; without it the field holds the listener's). The child's next
// event (SYN_RECV -> ESTABLISHED, in the same softirq) has the real ends and
// cookie, so the held event is delivered just before it, with them, and
// cookie source "deferred". The order of the stream is the order the kernel
// would have given by holding it itself, which it did until the map traffic
// (an update, a lookup and a delete per connection) showed up as a quarter
// of the program's time.
//
// Events are held by value in a slice, indexed by the socket's kernel
// address: a map with 256-byte values would allocate per insert.
type holder struct {
	index map[uint64]int32 // socket address -> slot in held
	held  []event.Event
	free  []int32
	// full counts first events delivered as they were because maxHeld
	// events were already held (read by Stats while Run runs).
	full atomic.Uint64
}

func newHolder() *holder { return &holder{index: make(map[uint64]int32)} }

// firstOfChild reports whether e is a new child's first event.
func firstOfChild(e *event.Event) bool {
	return e.OldState == sock.Listen && e.NewState == sock.SynRecv
}

// hold keeps a copy of e (a child's first event) and reports true, or
// reports false when the holder is full and e must be delivered as it is.
// A held event of the same socket address is replaced: its socket was
// freed without another event, which never happens without a loss.
func (h *holder) hold(e *event.Event) bool {
	if i, ok := h.index[e.Sock]; ok {
		h.held[i] = *e
		return true
	}
	if len(h.index) >= maxHeld {
		h.full.Add(1)
		return false
	}
	var i int32
	if n := len(h.free); n > 0 {
		i = h.free[n-1]
		h.free = h.free[:n-1]
	} else {
		i = int32(len(h.held))
		h.held = append(h.held, event.Event{})
	}
	h.held[i] = *e
	h.index[e.Sock] = i
	return true
}

// release returns the held first event of e's socket, completed with e's
// addresses and cookie, or nil; e is not a child's first event (hold takes
// those, replacing a held one of the same address). The pointer is valid until the next hold.
// Any later event of the child releases it (normally SYN_RECV ->
// ESTABLISHED or -> CLOSE; a later one if those were lost: the socket is
// the same, so are its ends). An event that starts a new socket at that
// address (from CLOSE, or another child's first event) means the held
// event's socket died with its events lost: the held event is dropped.
func (h *holder) release(e *event.Event) *event.Event {
	if len(h.index) == 0 {
		return nil
	}
	i, ok := h.index[e.Sock]
	if !ok {
		return nil
	}
	delete(h.index, e.Sock)
	h.free = append(h.free, i)
	if e.OldState == sock.Close {
		return nil
	}
	held := &h.held[i]
	held.Local = e.Local
	held.Peer = e.Peer
	held.Cookie = e.Cookie
	held.CookieSource = event.CookieDeferred
	if e.CookieSource == event.CookieNone {
		held.CookieSource = event.CookieNone
	}
	return held
}
