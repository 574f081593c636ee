package tracer

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ringWaiter parks the reading goroutine in Go's netpoller until the ring
// buffer has data or a deadline passes.
//
// Why not the ring reader's own blocking wait (cilium/ebpf's Reader blocks
// its thread in epoll_wait): a thread blocked in a system call makes the Go
// runtime's sysmon take its P away and keep polling every 20 µs for a while
// after each such call. Under churn the reader blocks after every drain, so
// sysmon never settled: its nanosleep wakeups were a fifth of the process's
// CPU time (perf, docs/BENCHMARKS.md). Parked in the netpoller, the
// goroutine holds no thread, and an idle process sleeps for real.
//
// The ring buffer's fd is pollable (readable when data is pending); a
// duplicate of it, non-blocking, is registered with the netpoller through
// os.NewFile. The kernel wakes it when a producer asks for a wakeup.
type ringWaiter struct {
	f  *os.File
	rc syscall.RawConn
}

// newRingWaiter returns a waiter on the ring buffer map fd, or an error
// where the netpoller cannot watch it (the caller then blocks in the
// reader, as before).
func newRingWaiter(mapFD int) (*ringWaiter, error) {
	fd, err := unix.FcntlInt(uintptr(mapFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup ring buffer fd: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ring buffer fd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ringbuf")
	// Deadlines work only for files the netpoller watches.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("ring buffer fd is not pollable: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &ringWaiter{f: f, rc: rc}, nil
}

// wait returns when ready reports true (checked first, and again each time
// the fd becomes readable) or the deadline passes; os.ErrClosed once Close
// was called.
func (w *ringWaiter) wait(deadline time.Time, ready func() bool) error {
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return err
	}
	err := w.rc.Read(func(uintptr) bool { return ready() })
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// Close ends a wait at once.
func (w *ringWaiter) Close() error { return w.f.Close() }
