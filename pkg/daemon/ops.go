package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/connfmt"
	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/eventfmt"
	"github.com/sstrace/sstrace/pkg/filter"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
	"github.com/sstrace/sstrace/pkg/table"
)

// run dispatches a request; the int is the exit status.
func (s *Server) run(ctx context.Context, p *Peer, req *Request, w *replyWriter) (int, error) {
	switch req.Op {
	case OpStatus:
		return s.runStatus(w, req)
	case OpSS:
		return s.runSS(ctx, p, req, w)
	case OpHistory:
		return s.runHistory(ctx, p, req, w)
	case OpCloseWait:
		return s.runCloseWait(ctx, p, req, w)
	case OpTrace:
		return s.runTrace(ctx, p, req, w)
	case OpTop:
		return s.runTop(ctx, p, req, w)
	}
	return 2, fmt.Errorf("unknown op %q", req.Op)
}

// notSeeded turns the table's ErrNotSeeded into a message for people.
func notSeeded(err error) error {
	if errors.Is(err, table.ErrNotSeeded) {
		return errors.New("the daemon's table is still being seeded: try again in a moment (`sstrace status --socket` exits 0 once it is)")
	}
	return err
}

// connFilter parses history/closewait filter words (ss's language: state
// words and an expression, plus the owner's cgroup and container) into a
// match on table connections. Without state words every state matches,
// CLOSED included: these commands are about connections, not about ss's
// default of established ones. The owner is matched as p may see it: a
// filter must not tell a caller whose container an owner it may not see
// is in.
func connFilter(p *Peer, args []string) (func(*table.Conn) bool, error) {
	return connMatcher(args, p.Owner)
}

// ConnFilter parses filter words in history's language (ss's, plus
// `cgroup PATH` and `container ID` on the owner) into a match on the
// table's connections that sees every owner, as root does: the daemon's
// own --otlp-filter. nil for no words.
func ConnFilter(args []string) (func(*table.Conn) bool, error) {
	return connMatcher(args, func(o event.Owner) event.Owner { return o })
}

// connMatcher is connFilter with the owner as visible reports it (a
// hidden owner matches no cgroup or container condition).
func connMatcher(args []string, visible func(event.Owner) event.Owner) (func(*table.Conn) bool, error) {
	if len(args) == 0 {
		return nil, nil
	}
	q, err := filter.Parse(args, filter.ParseOptions{DefaultStates: sock.AllStates, Connections: true})
	if err != nil {
		return nil, err
	}
	var row sock.Socket
	return func(c *table.Conn) bool {
		row = sock.Socket{
			Proto: sock.ProtoTCP, Family: c.Family, State: c.State, NetNS: c.NetNS,
			Local: c.Local, Peer: c.Peer, UID: c.UID, Inode: c.Inode, Cookie: c.Cookie,
		}
		var o filter.Owner
		if visible(c.Owner).Known() {
			o = filter.Owner{CgroupID: c.Owner.CgroupID, Cgroup: c.Cgroup, Container: c.Container}
		}
		return q.MatchConn(&row, o)
	}, nil
}

// visibleConn returns c as the caller may see it: for root c itself, for
// another caller a copy without what it may not see, the owner (its cgroup
// and container with it) and the tasks of its transitions. c is never
// changed: a subscription hands the same Conn to every subscriber.
func visibleConn(p *Peer, c *table.Conn) *table.Conn {
	if p.Root() {
		return c
	}
	v := *c
	v.Owner = p.Owner(c.Owner)
	if !v.Owner.Known() {
		v.Cgroup, v.Container = "", ""
	}
	v.Transitions = slices.Clone(c.Transitions)
	for i := range v.Transitions {
		v.Transitions[i].Task = p.Task(v.Transitions[i].Task)
	}
	return &v
}

// gapWarning prints the loss warning for a query that touches [from, to].
func gapWarning(w *replyWriter, gaps []table.Gap) {
	if len(gaps) == 0 {
		return
	}
	from, to := gaps[0].From, gaps[len(gaps)-1].To
	fmt.Fprintf(w.Err, "sstrace: events were lost between %s and %s: the answer may miss transitions\n",
		from.Local().Format("15:04:05.000"), to.Local().Format("15:04:05.000"))
}

// runHistory answers "history".
func (s *Server) runHistory(ctx context.Context, p *Peer, req *Request, w *replyWriter) (int, error) {
	ns, err := p.scope(req)
	if err != nil {
		return 2, err
	}
	match, err := connFilter(p, req.Args)
	if err != nil {
		return 2, err
	}
	var sub *table.Subscription
	if req.Follow {
		// Subscribe before the listing: a connection that closes in
		// between is then seen twice, never missed (printed is checked).
		sub = s.cfg.Table.Subscribe(false, true, 4096)
		defer sub.Close()
	}
	now := time.Now()
	var b []byte
	if !req.JSON && !req.NoHeader {
		b = append(b, connfmt.HistoryHeader...)
	}
	gaps := 0
	printed := make(map[uint64]bool)
	emit := func(c *table.Conn) error {
		c = visibleConn(p, c)
		if c.Gap {
			gaps++
		}
		if req.JSON {
			b, err = connfmt.AppendHistoryJSON(b, c, now)
			if err != nil {
				return err
			}
		} else {
			b = connfmt.AppendHistory(b, c, now, req.Verbose)
		}
		if len(b) > 32<<10 {
			_, err := w.Out.Write(b)
			b = b[:0]
			return err
		}
		return nil
	}
	// Streamed: a million retained connections are rendered one at a
	// time, not first copied into a slice (and not under the table's
	// lock: see table.EachConn).
	err = s.cfg.Table.EachConn(table.Query{Since: req.Since, Closed: req.Closed, NetNS: ns, Match: match}, func(c *table.Conn) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if req.Follow && !c.Live() {
			printed[c.Cookie] = true
		}
		return emit(c)
	})
	if errors.Is(err, table.ErrNotSeeded) {
		return 1, notSeeded(err)
	}
	if err != nil {
		return 1, err
	}
	if _, err := w.Out.Write(b); err != nil {
		return 1, err
	}
	b = b[:0]
	if gaps > 0 {
		fmt.Fprintf(w.Err, "sstrace: %d of these connections have a gap (marked !): events were lost while they lived, so their histories may miss transitions\n", gaps)
	}
	if !req.Follow {
		return 0, nil
	}
	w.Flush()
	return s.follow(ctx, p, req, w, sub, ns, match, printed)
}

// follow streams connections as they close, until the client leaves.
func (s *Server) follow(ctx context.Context, p *Peer, req *Request, w *replyWriter, sub *table.Subscription,
	ns uint64, match func(*table.Conn) bool, printed map[uint64]bool) (int, error) {
	return stream(ctx, w, sub, 200*time.Millisecond,
		"sstrace: %d closed connections not shown: this client did not keep up\n",
		func(b []byte, u table.Update) ([]byte, error) {
			c := u.Conn
			if c == nil || (ns != 0 && c.NetNS != ns) || (match != nil && !match(c)) {
				return b, nil
			}
			if printed[c.Cookie] {
				delete(printed, c.Cookie)
				return b, nil
			}
			if len(printed) > 0 && time.Since(c.Gone) > time.Minute {
				clear(printed) // the listing's connections are long past
			}
			c = visibleConn(p, c)
			if c.Gap {
				fmt.Fprintf(w.Err, "sstrace: connection %d has a gap: events were lost while it lived\n", c.Cookie)
			}
			if req.JSON {
				return connfmt.AppendHistoryJSON(b, c, time.Now())
			}
			return connfmt.AppendHistory(b, c, time.Now(), req.Verbose), nil
		})
}

// stream renders a subscription's updates for the client until it leaves
// (or the subscription ends): render appends an update's output, or
// nothing for an update the client does not see. Output goes out every
// interval, and at once when 32 KiB are pending; updates the subscriber
// dropped are reported on stderr with dropped (a format taking the count).
func stream(ctx context.Context, w *replyWriter, sub *table.Subscription, interval time.Duration, dropped string,
	render func(b []byte, u table.Update) ([]byte, error)) (int, error) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var b []byte
	var reported uint64
	for {
		select {
		case <-ctx.Done():
			return 0, nil
		case u, ok := <-sub.C:
			if !ok {
				return 0, nil
			}
			var err error
			if b, err = render(b, u); err != nil {
				return 1, err
			}
			if len(b) < 32<<10 {
				continue
			}
		case <-tick.C:
			if d := sub.Dropped(); d > reported {
				fmt.Fprintf(w.Err, dropped, d-reported)
				reported = d
			}
		}
		if len(b) > 0 {
			if _, err := w.Out.Write(b); err != nil {
				return 1, err
			}
			b = b[:0]
		}
		if err := w.Flush(); err != nil {
			return 1, err
		}
	}
}

// runTrace answers "trace": the table's event stream, rendered as
// `sstrace trace` renders it, until the client leaves.
func (s *Server) runTrace(ctx context.Context, p *Peer, req *Request, w *replyWriter) (int, error) {
	if s.cfg.Events == nil {
		return 1, errors.New("this daemon does not stream events")
	}
	ns, err := p.scope(req)
	if err != nil {
		return 2, err
	}
	keep, err := filter.TransitionSelector(req.Args, req.PID)
	if err != nil {
		return 2, err
	}
	var render func([]byte, *event.Event) []byte
	if req.JSON {
		var j eventfmt.JSON
		render = j.Append
	} else {
		text := &eventfmt.Text{Extended: req.Extended}
		render = text.Append
		if !req.NoHeader {
			if _, err := io.WriteString(w.Out, text.Header()); err != nil {
				return 1, err
			}
		}
	}
	return s.followEvents(ctx, p, w, ns, keep, "events", "", func(b []byte, e *event.Event) ([]byte, error) {
		return render(b, e), nil
	})
}

// followEvents streams the table's events of namespace ns (0: every one)
// that keep accepts (nil: all) to render, each as p may see it, flushed
// every 100 ms, until the client leaves: trace, and ss -E --transitions.
// What a slow client misses is counted on its stderr, as what (events,
// transitions); ready, when not "", goes to its stderr once subscribed:
// from then on nothing is missed (scripts wait for the line).
func (s *Server) followEvents(ctx context.Context, p *Peer, w *replyWriter, ns uint64, keep func(*event.Event) bool,
	what, ready string, render func(b []byte, e *event.Event) ([]byte, error)) (int, error) {
	sub := s.cfg.Events(16384)
	defer sub.Close()
	if ready != "" {
		fmt.Fprintln(w.Err, ready)
		if err := w.Flush(); err != nil {
			return 1, err
		}
	}
	return stream(ctx, w, sub, 100*time.Millisecond,
		"sstrace: %d "+what+" not shown: this client did not keep up with the daemon's stream\n",
		func(b []byte, u table.Update) ([]byte, error) {
			e := u.Event
			if e == nil || (ns != 0 && e.NetNS != ns) || (keep != nil && !keep(e)) {
				return b, nil
			}
			if !p.Root() {
				// The subscription hands the same event to every
				// subscriber: blank a copy.
				ev := *e
				e = &ev
				p.Event(e)
			}
			return render(b, e)
		})
}

// runCloseWait answers "closewait": the table's CLOSE-WAIT connections
// joined by cookie with a dump of that state (Recv-Q) and a process scan
// (who holds each socket now).
func (s *Server) runCloseWait(ctx context.Context, p *Peer, req *Request, w *replyWriter) (int, error) {
	ns, err := p.scope(req)
	if err != nil {
		return 2, err
	}
	match, err := connFilter(p, req.Args)
	if err != nil {
		return 2, err
	}
	conns, err := s.cfg.Table.Conns(table.Query{States: sock.StateSet(0).With(sock.CloseWait), NetNS: ns, Match: match})
	if err != nil {
		return 1, notSeeded(err)
	}
	rows, err := s.closeWaitRows(ctx, p, req, ns)
	if err != nil {
		return 1, err
	}
	ix, err := s.scanOwners(ctx)
	if err != nil {
		return 1, fmt.Errorf("processes: %w", err)
	}
	entries := make([]connfmt.CloseWait, 0, len(conns))
	seen := make(map[uint64]bool, len(conns))
	for i := range conns {
		c := *visibleConn(p, &conns[i])
		e := connfmt.CloseWait{Conn: c, Known: true}
		if r, ok := rows[c.Cookie]; ok {
			e.RecvQ = r.RecvQ
			e.Owners = p.Processes(ix.Lookup(r.Inode))
		} else if c.Inode != 0 {
			e.Owners = p.Processes(ix.Lookup(c.Inode))
		}
		seen[c.Cookie] = true
		entries = append(entries, e)
	}
	// Sockets the kernel has in CLOSE-WAIT and the table does not (it
	// should not happen; say what the kernel knows rather than hide it).
	for cookie, r := range rows {
		if seen[cookie] {
			continue
		}
		c := table.Conn{Cookie: cookie, NetNS: r.NetNS, Family: r.Family, Local: r.Local, Peer: r.Peer,
			State: sock.CloseWait, UID: r.UID, Inode: r.Inode, Origin: table.OriginUnknown}
		if match != nil && !match(&c) {
			continue
		}
		entries = append(entries, connfmt.CloseWait{Conn: c, RecvQ: r.RecvQ, Owners: p.Processes(ix.Lookup(r.Inode))})
	}
	groups := connfmt.GroupCloseWait(entries)
	now := time.Now()
	var b []byte
	if req.JSON {
		if b, err = connfmt.AppendCloseWaitJSON(nil, groups, now); err != nil {
			return 1, err
		}
	} else {
		b = connfmt.AppendCloseWait(nil, groups, now)
		if len(groups) == 0 {
			fmt.Fprintln(w.Err, "sstrace: no socket in CLOSE-WAIT")
		}
	}
	_, err = w.Out.Write(b)
	return 0, err
}

// closeWaitRows dumps the CLOSE-WAIT sockets of the namespaces a request
// covers (the caller's, one, or all), by cookie.
func (s *Server) closeWaitRows(ctx context.Context, p *Peer, req *Request, ns uint64) (map[uint64]*sock.Socket, error) {
	var spaces []netns.Namespace
	switch {
	case ns == p.NetNS:
		spaces = []netns.Namespace{p.NS}
	case ns != 0:
		n, err := netns.ByInode(ns)
		if err != nil {
			return nil, err
		}
		spaces = []netns.Namespace{n}
	default:
		all, err := netns.All()
		if err != nil {
			return nil, fmt.Errorf("list network namespaces: %w", err)
		}
		spaces = all
	}
	rows := make(map[uint64]*sock.Socket)
	dreq := sockdiag.Request{
		Protos:   []sock.Proto{sock.ProtoTCP},
		Families: []uint8{unix.AF_INET, unix.AF_INET6},
		States:   sock.StateSet(0).With(sock.CloseWait),
	}
	err := sockdiag.DumpEach(ctx, spaces, dreq, func(r *sock.Socket) error {
		if r.Cookie != 0 { // the request asks for CLOSE-WAIT only
			rows[r.Cookie] = sockdiag.Clone(r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}
