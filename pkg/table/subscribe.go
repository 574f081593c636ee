package table

import (
	"sync/atomic"

	"github.com/sstrace/sstrace/pkg/event"
)

// Update is what a Subscription delivers: an event as the table applied it
// (Owner filled), or a connection that has just closed for good.
type Update struct {
	Event *event.Event
	Conn  *Conn
}

// Subscription receives updates from the table. A subscriber that does not
// keep up loses updates rather than slowing the table: Dropped counts them.
type Subscription struct {
	// C delivers the updates.
	C       chan Update
	events  bool
	conns   bool
	dropped atomic.Uint64
	t       *Table
}

// Subscribe returns a subscription to events (the trace stream) and/or
// closed connections (history --follow), buffered for buf updates.
func (t *Table) Subscribe(events, conns bool, buf int) *Subscription {
	s := &Subscription{C: make(chan Update, buf), events: events, conns: conns, t: t}
	t.mu.Lock()
	t.subs[s] = struct{}{}
	t.mu.Unlock()
	return s
}

// Dropped is the number of updates lost because the subscriber was slow.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription; C is closed.
func (s *Subscription) Close() {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	if _, ok := s.t.subs[s]; ok {
		delete(s.t.subs, s)
		close(s.C)
	}
}

// publish hands an update to every subscriber (under the table's lock).
func (t *Table) publish(e *event.Event, r *record) {
	if len(t.subs) == 0 {
		return
	}
	var u Update
	for s := range t.subs {
		switch {
		case e != nil && s.events:
			if u.Event == nil {
				ec := *e
				u = Update{Event: &ec}
			}
		case r != nil && s.conns:
			if u.Conn == nil {
				c := t.view(r)
				u = Update{Conn: &c}
			}
		default:
			continue
		}
		select {
		case s.C <- u:
		default:
			s.dropped.Add(1)
		}
	}
}
