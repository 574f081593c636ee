package daemon

import (
	"context"
	"errors"

	"github.com/sstrace/sstrace/pkg/filter"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
	"github.com/sstrace/sstrace/pkg/topview"
)

// runTop answers "top": a topview.Snapshot of the caller's scope (its own
// namespace, one, or all), narrowed by the filter in Args, as one JSON
// line every second until the client leaves. The aggregation runs here,
// next to the table: the client only draws.
func (s *Server) runTop(ctx context.Context, p *Peer, req *Request, w *replyWriter) (int, error) {
	ns, err := p.scope(req)
	if err != nil {
		return 2, err
	}
	match, err := TopFilter(req.Args)
	if err != nil {
		return 2, err
	}
	opts := topview.Options{NetNS: ns, Match: match}
	if !p.Root() {
		opts.Owner = p.Owner
	}
	var b []byte
	err = topview.Run(ctx, s.cfg.Table, opts, func(snap *topview.Snapshot) error {
		if b, err = snap.AppendJSON(b[:0]); err != nil {
			return err
		}
		if _, err := w.Out.Write(b); err != nil {
			return err
		}
		return w.Flush()
	})
	if errors.Is(err, table.ErrNotSeeded) {
		return 1, notSeeded(err)
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// TopFilter parses the words of a top filter (ss's language; without state
// words every state matches) into a match on rows; nil for no words. The
// client checks a filter with it before asking, so that a typo is shown in
// its view instead of ending the stream.
func TopFilter(args []string) (func(*sock.Socket) bool, error) {
	if len(args) == 0 {
		return nil, nil
	}
	q, err := filter.Parse(args, filter.ParseOptions{DefaultStates: sock.AllStates})
	if err != nil {
		return nil, err
	}
	return q.Match, nil
}
