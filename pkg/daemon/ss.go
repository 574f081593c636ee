package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/procs"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/ssflags"
	"github.com/sstrace/sstrace/pkg/ssquery"
)

// runSS answers "ss" with the shared engine (pkg/ssquery).
//
// Now (no at): a live sock_diag dump in the caller's namespace, so the
// output is what `ss` prints there, byte for byte. The whole query runs on
// a thread inside that namespace, because ss reads more than sockets from
// it (the local port range, interface names, the -s counters).
//
// At a past moment: the rows of the table as it stood then (TCP only),
// in the caller's namespace. The table keeps states, addresses, owners and
// cookies, not queues, timers or TCP internals: those print as zero, and
// -p shows the owner the table recorded, without its fd (fd=-1). A moment
// that falls in a window of lost events is answered with a warning.
func (s *Server) runSS(ctx context.Context, p *Peer, req *Request, w *replyWriter) (int, error) {
	opts, words, err := ssflags.Parse(req.Args)
	if err != nil {
		return 1, err
	}
	if opts.FilterFile != "" {
		// The client read the file (the daemon opens no file for a
		// client) and sent its text.
		opts.FilterFile = "-"
		opts.Stdin = strings.NewReader(req.Filter)
	}
	if opts.Kill {
		// The daemon closes no socket for a client: the caller's own
		// privileges must answer for that.
		return 1, errors.New("ss: -K is not served by the daemon: run sstrace ss -K yourself (it needs CAP_NET_ADMIN)")
	}
	switch {
	case opts.Events && opts.Transitions:
		// The table's event stream: no privilege of the caller's needed.
		if !req.Follow {
			return 1, errors.New("ss: -E --transitions streams: the request must say follow")
		}
		if s.cfg.Events == nil {
			return 1, errors.New("this daemon does not stream events")
		}
	case opts.Events:
		// A stream without end, from a multicast group only CAP_NET_ADMIN
		// may join: the caller's own to run.
		return 1, errors.New("ss: -E is not served by the daemon: run sstrace ss -E yourself (it needs CAP_NET_ADMIN)")
	case opts.Diag != "":
		return 1, errors.New("ss: -D is not served by the daemon (it would write the file as the daemon): run sstrace ss -D yourself")
	case opts.Threads:
		return 1, errors.New("ss: -T is not served by the daemon (its owner scan lists processes, not threads): run sstrace ss -T yourself")
	}
	if opts.NetNS != "" && !p.Root() {
		return 1, errors.New("ss: -N: only root may list another network namespace")
	}
	if req.AllNetNS && !p.Root() {
		return 1, errAllNetNS
	}
	opts.Width = req.Width
	if !req.At.IsZero() {
		return s.ssAt(ctx, p, req, w, opts, words)
	}
	if req.AllNetNS {
		return 1, errors.New("ss: all_netns is for --at only: a live query lists one namespace, as ss does (-N NAME)")
	}
	if opts.Processes {
		opts.Owners = peerOwners{s: s, p: p}
	}
	src := ssquery.LiveSource{NS: p.NS}
	if opts.NetNS != "" {
		src.NS = netns.ByName(opts.NetNS)
	}
	if opts.Transitions {
		ino := p.NetNS
		if opts.NetNS != "" {
			if ino, err = src.NS.Inode(); err != nil {
				return 1, fmt.Errorf("ss: -N %s: %w", opts.NetNS, err)
			}
		}
		opts.TransitionSource = tableTransitions{s: s, p: p, ns: ino, w: w}
	}
	err = p.NS.Do(func() error {
		return ssquery.Run(ctx, w.Out, w.Err, opts, words, src)
	})
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// ssAt answers ss for a past moment from the table's rows.
func (s *Server) ssAt(ctx context.Context, p *Peer, req *Request, w *replyWriter, opts ssquery.Options, words []string) (int, error) {
	if opts.NetNS != "" {
		return 1, errors.New("ss: -N does not apply with --at: the table has every namespace (root: all_netns)")
	}
	ns := p.NetNS
	if req.AllNetNS {
		ns = 0
	}
	rows, err := s.cfg.Table.RowsIn(req.At, ns)
	if err != nil {
		return 1, fmt.Errorf("ss: %w", notSeeded(err))
	}
	gapWarning(w, s.cfg.Table.Gaps(req.At, req.At))
	if opts.Processes {
		opts.Owners = rowOwners{p: p}
	}
	// Names (interfaces, port range) are read in the caller's namespace.
	err = p.NS.Do(func() error {
		return ssquery.Run(ctx, w.Out, w.Err, opts, words, ssquery.RowsSource(rows))
	})
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// scanOwners runs one process scan with the server's scanner (one at a
// time: a Scanner is not safe for concurrent use).
func (s *Server) scanOwners(ctx context.Context) (*procs.Index, error) {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	return s.scanner.Scan(ctx)
}

// peerOwners answers ss -p from a fresh scan of the host, showing a
// caller who is not root only its own processes.
type peerOwners struct {
	s *Server
	p *Peer
}

// Scan runs the scan.
func (o peerOwners) Scan(ctx context.Context) (ssquery.OwnerIndex, error) {
	ix, err := o.s.scanOwners(ctx)
	if err != nil {
		return nil, err
	}
	return peerIndex{ix: ix, p: o.p}, nil
}

type peerIndex struct {
	ix *procs.Index
	p  *Peer
}

func (i peerIndex) Owners(s *sock.Socket) []sock.Process {
	return i.p.Processes(i.ix.Lookup(s.Inode))
}

// rowOwners answers ss -p at a past moment: the owner the table recorded
// in the row, if the caller may see it.
type rowOwners struct{ p *Peer }

// Scan needs no scan: the rows carry their owner.
func (o rowOwners) Scan(context.Context) (ssquery.OwnerIndex, error) { return o, nil }

// Owners returns the row's recorded owner.
func (o rowOwners) Owners(s *sock.Socket) []sock.Process {
	if o.p.Root() {
		return s.Procs
	}
	// The table knows the owner's uid only as the socket's; a process
	// that is gone cannot be checked, so only a live own process shows.
	return o.p.Processes(s.Procs)
}

// tableTransitions is `ss -E --transitions` through the daemon: the
// table's event stream in one namespace, each event as the caller may see
// it (owners of other users' sockets blanked), flushed every 100 ms.
type tableTransitions struct {
	s  *Server
	p  *Peer
	ns uint64
	w  *replyWriter
}

// FollowTransitions hands every transition of the namespace to emit until
// the client leaves, once it has said on stderr that it follows them, as
// the local form says when it has attached.
func (t tableTransitions) FollowTransitions(ctx context.Context, emit func(*event.Event) error) error {
	_, err := t.s.followEvents(ctx, t.p, t.w, t.ns, nil, "transitions",
		"sstrace: following TCP transitions from the daemon's stream",
		func(b []byte, e *event.Event) ([]byte, error) { return b, emit(e) })
	return err
}
