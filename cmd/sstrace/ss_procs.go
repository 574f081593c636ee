package main

import (
	"context"
	"fmt"

	"github.com/sstrace/sstrace/pkg/procs"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
)

// rowSink is where `sstrace ss` sends the rows it prints.
type rowSink interface {
	Add(*sock.Socket)
	Close() error
}

// procAttribution fills in ss -p's processes while the socket dump runs.
// The process scan (a BPF iterator over every task's files, or a /proc
// walk) and the kernel's socket dump are independent and each takes a
// good share of `ss -tanp`, so the scan runs on another goroutine: on a
// machine with two CPUs or more the two overlap. Rows that arrive before
// the scan has finished wait, copied, and go to the sink in their order
// once it has, so the output is the same as scanning first.
type procAttribution struct {
	done    chan struct{} // closed when the scan has ended
	ix      *procs.Index
	err     error
	ready   bool           // done is closed and waiting is drained
	waiting []*sock.Socket // copies of the rows that arrived before
}

// startProcAttribution starts the scan; it stops early when ctx ends.
func startProcAttribution(ctx context.Context) *procAttribution {
	p := &procAttribution{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.ix, p.err = procs.Scan(ctx, procs.Options{})
	}()
	return p
}

// add passes s to sink with its processes, or keeps a copy of it (the dump
// reuses s) while the scan still runs.
func (p *procAttribution) add(s *sock.Socket, sink rowSink) error {
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
	s.Procs = p.ix.Lookup(s.Inode)
	sink.Add(s)
	return nil
}

// finish waits for the scan and passes the rows kept meanwhile to sink. A
// failed scan fails the command before any row is added, as it did when
// ss -p scanned first.
func (p *procAttribution) finish(sink rowSink) error {
	if p.ready {
		return nil
	}
	<-p.done
	if p.err != nil {
		return fmt.Errorf("processes: %w", p.err)
	}
	p.ready = true
	for _, s := range p.waiting {
		s.Procs = p.ix.Lookup(s.Inode)
		sink.Add(s)
	}
	p.waiting = nil
	return nil
}
