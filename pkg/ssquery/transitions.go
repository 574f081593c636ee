package ssquery

import (
	"context"
	"errors"
	"fmt"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/filter"
	"github.com/sstrace/sstrace/pkg/sock"
)

// TransitionFollower is what `-E --transitions` reads: every TCP state
// transition of the listed namespace, with the socket's owner where the
// tracer knows it, until ctx ends. The caller's tracer implements it
// (cmd/sstrace), so that this package loads no BPF itself.
type TransitionFollower interface {
	// FollowTransitions calls emit with each transition, in order, and
	// returns when ctx ends (nil) or the tracer fails.
	FollowTransitions(ctx context.Context, emit func(*event.Event) error) error
}

// followTransitions is -E --transitions, sstrace's extension of ss -E: a
// row for every TCP socket each time it changes state, in the state it
// enters, for the states ss -E cannot show (it only sees sockets as they
// are destroyed). Unlike -E, the state set applies: `state close-wait`
// prints each socket as it enters CLOSE-WAIT. A FIN-WAIT-2 or CLOSING
// socket that goes to CLOSE and leaves a TIME-WAIT minisocket is shown in
// TIME-WAIT, as ss lists it next; one that leaves an orphaned FIN-WAIT-2
// minisocket prints nothing new (it was FIN-WAIT-2 already). A minisocket's
// own changes (a FIN-WAIT-2 one turning TIME-WAIT, its expiry) run no
// tracepoint and print nothing.
//
// Rows carry what a transition knows: addresses, state, namespace, cookie,
// and under -p the owner the tracer recorded (fd -1: no descriptor is
// known); queues, timers and TCP internals print as zero.
func followTransitions(ctx context.Context, src TransitionFollower, sel *Selection, q *filter.Query,
	owners bool, sink eventSink) error {
	if src == nil {
		return errors.New("ss: -E --transitions follows live transitions: it does not apply to a moment past (--at)")
	}
	if !sel.hasTable(TCP) {
		return &UsageError{Err: errors.New("ss: -E --transitions follows TCP sockets: add -t (or drop the table options)")}
	}
	// One row, filled per transition: the sink renders it at Add.
	var row sock.Socket
	var owner [1]sock.Process
	err := src.FollowTransitions(ctx, func(e *event.Event) error {
		s := &row
		transitionRow(s, owner[:0], e, owners)
		if s.State == e.OldState {
			// An orphaned FIN-WAIT-2 socket handed to its minisocket:
			// ss lists the same state before and after.
			return nil
		}
		if !sel.hasFamily(int(s.Family)) || !q.Match(s) {
			return nil
		}
		sink.Add(s)
		return sink.Render()
	})
	if err != nil {
		return fmt.Errorf("ss: -E --transitions: %w", err)
	}
	return nil
}

// transitionRow fills s with the ss row of the socket e leaves behind;
// procs (empty, with room for one) holds its owner under -p.
func transitionRow(s *sock.Socket, procs []sock.Process, e *event.Event, owners bool) {
	*s = sock.Socket{
		Proto:  sock.ProtoTCP,
		Family: e.Family,
		State:  e.NewState,
		NetNS:  e.NetNS,
		Local:  e.Local,
		Peer:   e.Peer,
		Cookie: e.Cookie,
		UID:    e.Owner.UID,
	}
	if st, ok := e.Minisocket(); ok {
		s.State = st
		return // a minisocket has no owner
	}
	if owners && e.Owner.Known() && e.NewState != sock.Close {
		s.Procs = append(procs, sock.Process{Comm: e.Owner.Comm, PID: int(e.Owner.PID), FD: -1})
	}
}
