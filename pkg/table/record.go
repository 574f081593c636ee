package table

import (
	"net/netip"
	"slices"
	"unsafe"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// record is what the table keeps per connection. It is compact on purpose
// (a closed loopback connection with its ten transitions is kept for up to
// --retain): times are monotonic nanoseconds, transitions 16 bytes each,
// and the tasks that ran transitions are stored once per connection.
type record struct {
	cookie uint64
	netns  uint64
	local  netip.AddrPort
	peer   netip.AddrPort
	owner  event.Owner
	final  event.Final
	inode  uint64
	// opened, fullClosed, gone: monotonic ns (0: not yet).
	opened     int64
	fullClosed int64
	gone       int64
	// dumped is when the dump that last set the state began (monotonic
	// ns; 0: no dump did): an event older than it is reflected already.
	dumped int64
	trans  []ctrans
	tasks  []event.Task
	uid    uint32
	family uint8
	state  sock.State
	// seedState is the state a running seed's dump saw (0: no seed
	// running, or an event has continued from it).
	seedState sock.State
	minisock  bool
	gap       bool
	// by is the Side in one byte: with the flags above it fits the word
	// uid leaves, which kept the record within its allocation size class
	// (288 bytes) when the owner grew by its cgroup id.
	by      sideCode
	origin  Origin
	outcome Outcome
}

// sideCode is a Side as a record keeps it.
type sideCode uint8

// sides indexes the Sides by sideCode.
var sides = [...]Side{SideNone, SideLocal, SidePeer}

func codeOf(s Side) sideCode {
	for i, x := range sides {
		if x == s {
			return sideCode(i)
		}
	}
	return 0
}

// side is c's Side.
func (c sideCode) side() Side { return sides[c%sideCode(len(sides))] }

// ctrans is a compact Transition.
type ctrans struct {
	mono int64
	old  sock.State
	new  sock.State
	ctx  event.Context
	// task is an index into record.tasks plus one; 0 in softirq context.
	task uint8
}

// changedSince reports whether the record saw a transition at or after mono.
func (r *record) changedSince(mono int64) bool {
	if n := len(r.trans); n > 0 && r.trans[n-1].mono >= mono {
		return true
	}
	return r.opened >= mono || r.gone >= mono && r.gone != 0
}

// addTransition adds e to the history, in time order: an event older than
// the newest one kept (one the dump had already reflected, applied late) is
// inserted where it belongs.
func (r *record) addTransition(e *event.Event) {
	tr := ctrans{mono: int64(e.Mono), old: e.OldState, new: e.NewState, ctx: e.Context}
	if task, ok := e.Responsible(); ok {
		tr.task = r.taskIndex(task)
	}
	if r.trans == nil {
		// Most connections make ten transitions.
		r.trans = make([]ctrans, 0, 10)
	}
	i := len(r.trans)
	for i > 0 && r.trans[i-1].mono > tr.mono {
		i--
	}
	r.trans = slices.Insert(r.trans, i, tr)
}

// taskIndex returns task's index (plus one) in r.tasks, adding it; 0 once
// 255 distinct tasks are stored (then the transition names none).
func (r *record) taskIndex(task event.Task) uint8 {
	for i := range r.tasks {
		if r.tasks[i] == task {
			return uint8(i + 1)
		}
	}
	if len(r.tasks) >= 255 {
		return 0
	}
	r.tasks = append(r.tasks, task)
	return uint8(len(r.tasks))
}

// compact trims the history's spare capacity once the connection is gone.
func (r *record) compact() {
	if cap(r.trans) > len(r.trans) {
		r.trans = append([]ctrans(nil), r.trans...)
	}
	if cap(r.tasks) > len(r.tasks) {
		r.tasks = append([]event.Task(nil), r.tasks...)
	}
}

// closedFirst names the side that closed first, from the history.
func (r *record) closedFirst() Side {
	for _, tr := range r.trans {
		switch {
		case tr.new == sock.FinWait1:
			return SideLocal
		case tr.new == sock.CloseWait:
			return SidePeer
		}
	}
	return SideNone
}

// stateAt is the record's state at monotonic time m.
func (r *record) stateAt(m int64) (sock.State, bool) {
	if m < r.opened || (r.gone != 0 && m >= r.gone) {
		return 0, false
	}
	var st sock.State
	if r.origin == OriginBeforeStart || r.origin == OriginUnknown {
		switch {
		case len(r.trans) > 0:
			st = r.trans[0].old
		default:
			// Fix (tests): also when it was retired without an event
			// (gone from a dump): it was in its state until gone.
			st = r.state
		}
	}
	for _, tr := range r.trans {
		if tr.mono > m {
			break
		}
		st = tr.new
	}
	if st == sock.Close && r.fullClosed != 0 && m >= r.fullClosed {
		if r.minisock || (r.gone > r.fullClosed) {
			if r.minisock {
				return r.state, true
			}
			return sock.TimeWait, true
		}
		return 0, false
	}
	return st, st != 0
}

// recordSize is the fixed part of a record.
const recordSize = int64(unsafe.Sizeof(record{}))

// size estimates the memory a record holds (allocator rounding aside).
func (r *record) size() int64 {
	n := recordSize + int64(cap(r.trans))*int64(unsafe.Sizeof(ctrans{})) +
		int64(cap(r.tasks))*int64(unsafe.Sizeof(event.Task{}))
	return n
}

// listener reports a listening socket: one that began with listen(), one
// the seed found listening, or one whose last transition left LISTEN.
func (r *record) listener() bool {
	if r.origin == OriginListen || r.state == sock.Listen {
		return true
	}
	n := len(r.trans)
	return n > 0 && r.trans[n-1].old == sock.Listen && r.trans[n-1].new == sock.Close
}
