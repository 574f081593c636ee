package filter

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// MatchTransition reports whether a state transition matches q, as
// `sstrace trace FILTER` selects them: the expression on the socket's
// addresses, ports and family, and the state words on either end of the
// transition (`state close-wait` keeps the transitions into and out of
// CLOSE-WAIT). Parse the query with DefaultStates sock.AllStates so that a
// filter without state words keeps every transition.
//
// It runs in Go on every event; only the namespace is filtered in the
// kernel (trace --netns). `cgroup PATH` matches the owner's cgroup (the
// cgroup of the process that made or accepted the socket, as the socket's
// own cgroup is); conditions that need other kernel-side details of the
// socket (mark, bound device) see zero values, as events do not carry them.
func (q *Query) MatchTransition(e *event.Event) bool {
	row := sock.Socket{
		Proto: sock.ProtoTCP, Family: e.Family, State: e.NewState, NetNS: e.NetNS,
		Local: e.Local, Peer: e.Peer, Cookie: e.Cookie, UID: e.Owner.UID,
	}
	if cg := e.Owner.CgroupID; cg != 0 {
		row.CgroupID = &cg
	}
	if q.Match(&row) {
		return true
	}
	if e.OldState == e.NewState {
		return false
	}
	row.State = e.OldState
	return q.Match(&row)
}

// TransitionSelector is `sstrace trace`'s selection, local or through the
// daemon: the ss filter in args (MatchTransition) and, when pid is not 0,
// the sockets that process owns (Event.Owner). It returns nil to keep
// everything.
//
// (trace --cgroup PATH reaches it as the filter term `cgroup PATH`: see
// WithCgroup.)
func TransitionSelector(args []string, pid int) (func(*event.Event) bool, error) {
	keep, _, err := TraceSelection(args, pid, 0)
	return keep, err
}

// TraceSelection is TransitionSelector and, from the same parse, the ports
// the kernel can filter on (Query.Ports, at most maxPorts; nil when there
// is no such list), for a trace that loads its own programs.
func TraceSelection(args []string, pid, maxPorts int) (keep func(*event.Event) bool, ports []uint16, err error) {
	if pid < 0 {
		return nil, nil, fmt.Errorf("pid %d: not a process id", pid)
	}
	if len(args) == 0 && pid == 0 {
		return nil, nil, nil
	}
	var q *Query
	if len(args) > 0 {
		if q, err = Parse(args, ParseOptions{DefaultStates: sock.AllStates}); err != nil {
			return nil, nil, err
		}
		ports, _ = q.Ports(maxPorts)
	}
	return func(e *event.Event) bool {
		if pid != 0 && e.Owner.PID != uint32(pid) {
			return false
		}
		return q == nil || q.MatchTransition(e)
	}, ports, nil
}

// WithCgroup returns the filter words args narrowed to the sockets whose
// owner is in the cgroup at path (`trace --cgroup PATH`): the state words
// first, as ss wants them, then `cgroup PATH`, and-ed with the expression
// in parentheses when there is one.
func WithCgroup(args []string, path string) []string {
	if path == "" {
		return args
	}
	i := 0
	for i+1 < len(args) && (args[i] == "state" || args[i] == "exclude") {
		i += 2
	}
	out := append([]string(nil), args[:i]...)
	if i == len(args) {
		return append(out, "cgroup", path)
	}
	out = append(out, "(")
	out = append(out, args[i:]...)
	return append(out, ")", "and", "cgroup", path)
}

// Ports returns a short list of ports one of which, at one end or the
// other, every socket the expression matches has: what trace filters in
// the kernel (tracer.Options.Ports), so that transitions the filter would
// drop never cross the ring buffer. The list may keep more than the filter
// does, never less; ok is false when there is no such list of at most max
// ports (no expression, a condition on anything but a port, a negation).
// A host condition with a port (`sport = :5432`, `dst 10.0.0.1:443`) gives
// its port; `and` keeps the shorter list of its sides, `or` the union of
// both.
func (q *Query) Ports(max int) (ports []uint16, ok bool) {
	if q == nil || q.Expr == nil {
		return nil, false
	}
	ports, ok = portsOf(q.Expr)
	if !ok || len(ports) == 0 || len(ports) > max {
		return nil, false
	}
	slices.Sort(ports)
	return slices.Compact(ports), true
}

// portsOf is Ports on one node.
func portsOf(n Node) ([]uint16, bool) {
	switch n := n.(type) {
	case HostCond:
		if n.Family == unix.AF_UNIX || n.Port < 0 || n.Port > 0xffff {
			return nil, false
		}
		return []uint16{uint16(n.Port)}, true
	case And:
		l, lok := portsOf(n.L)
		r, rok := portsOf(n.R)
		switch {
		case lok && rok:
			if len(r) < len(l) {
				return r, true
			}
			return l, true
		case lok:
			return l, true
		case rok:
			return r, true
		}
	case Or:
		l, lok := portsOf(n.L)
		r, rok := portsOf(n.R)
		if lok && rok {
			return append(slices.Clone(l), r...), true
		}
	}
	return nil, false
}
