package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/owner"
	"github.com/sstrace/sstrace/pkg/tracer"
)

// tracerTransitions is `ss -E --transitions`' source: this process's own
// tracer, filtered in the kernel to one network namespace, with each
// event's owner filled by an owner tracker as `sstrace trace` does.
type tracerTransitions struct {
	ns     netns.Namespace
	notify io.Writer // gets the line that says tracing has begun
}

// FollowTransitions loads the tracer, says so on notify once attached
// (from then on no transition is missed: scripts wait for the line), and
// hands every transition to emit until ctx ends.
func (s tracerTransitions) FollowTransitions(ctx context.Context, emit func(*event.Event) error) error {
	ino, err := s.ns.Inode()
	if err != nil {
		return err
	}
	t, err := tracer.Open(tracer.Options{NetNS: uint32(ino)})
	if err != nil {
		return err
	}
	defer t.Close()
	fmt.Fprintf(s.notify, "sstrace: following TCP transitions with hook %s\n", t.Hook())
	owners := owner.New()
	err = t.Run(ctx, tracer.HandlerFuncs{
		OnEvent: func(e *event.Event) error {
			owners.Observe(e)
			return emit(e)
		},
		OnLost: func(lost, total uint64) error {
			fmt.Fprintf(s.notify, "sstrace: lost %d transitions (%d in all): rows are missing\n", lost, total)
			return nil
		},
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}
