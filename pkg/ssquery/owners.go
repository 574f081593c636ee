package ssquery

import (
	"context"
	"fmt"

	"github.com/sstrace/sstrace/pkg/procs"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
)

// Owners finds the processes holding sockets, for -p. ProcScan, the
// default, scans the host; a daemon that records owners as they change can
// answer from its table instead.
type Owners interface {
	// Scan returns the owners of every socket as of now. Run calls it on
	// a goroutine of its own while the Source dumps, and stops it through
	// ctx when the query ends early.
	Scan(ctx context.Context) (OwnerIndex, error)
}

// OwnerIndex answers, for one query, who holds a socket. Run calls it once
// per row shown, from one goroutine.
type OwnerIndex interface {
	// Owners returns the processes holding s, in the order ss prints
	// them in users:(...); nil when none does. Run does not modify the
	// slice.
	Owners(s *sock.Socket) []sock.Process
}

// ProcScan is the default Owners: procs.Scan, a BPF iterator over every
// task's files, or a /proc walk where the iterator cannot run. It finds
// owners by socket inode.
type ProcScan struct {
	// Options are passed to procs.Scan.
	Options procs.Options
}

// Scan runs procs.Scan.
func (p ProcScan) Scan(ctx context.Context) (OwnerIndex, error) {
	ix, err := procs.Scan(ctx, p.Options)
	if err != nil {
		return nil, err
	}
	return inodeOwners{ix}, nil
}

// inodeOwners looks owners up by inode in a procs.Index.
type inodeOwners struct{ ix *procs.Index }

func (o inodeOwners) Owners(s *sock.Socket) []sock.Process { return o.ix.Lookup(s.Inode) }

// rowSink is where Run sends the rows it prints.
type rowSink interface {
	Add(*sock.Socket)
	Close() error
}

// attribution fills in -p's processes while the socket dump runs. The
// owner scan (for ProcScan a BPF iterator over every task's files, or a
// /proc walk) and the dump are independent and each takes a good share of
// `ss -tanp`, so the scan runs on another goroutine: on a machine with two
// CPUs or more the two overlap. Rows that arrive before the scan has
// finished wait, copied, and go to the sink in their order once it has, so
// the output is the same as scanning first.
type attribution struct {
	done    chan struct{} // closed when the scan has ended
	ix      OwnerIndex
	err     error
	ready   bool           // done is closed and waiting is drained
	waiting []*sock.Socket // copies of the rows that arrived before
}

// startAttribution starts the scan; it stops early when ctx ends.
func startAttribution(ctx context.Context, owners Owners) *attribution {
	p := &attribution{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.ix, p.err = owners.Scan(ctx)
	}()
	return p
}

// add passes s to sink with its processes, or keeps a copy of it (the
// source may reuse s) while the scan still runs.
func (p *attribution) add(s *sock.Socket, sink rowSink) error {
	if !p.ready {
		select {
		case <-p.done:
		default:
			p.waiting = append(p.waiting, sockdiag.Clone(s))
			return nil
		}
		if err := p.finish(sink); err != nil {
			return err
		}
	}
	s.Procs = p.ix.Owners(s)
	sink.Add(s)
	return nil
}

// finish waits for the scan and passes the rows kept meanwhile to sink. A
// failed scan fails the query before any row is added, as it did when
// ss -p scanned first.
func (p *attribution) finish(sink rowSink) error {
	if p.ready {
		return nil
	}
	<-p.done
	if p.err != nil {
		return fmt.Errorf("processes: %w", p.err)
	}
	p.ready = true
	for _, s := range p.waiting {
		s.Procs = p.ix.Owners(s)
		sink.Add(s)
	}
	p.waiting = nil
	return nil
}
