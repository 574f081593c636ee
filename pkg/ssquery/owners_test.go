package ssquery

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// recordSink keeps what it is given, as the table would print it.
type recordSink struct{ rows []sock.Socket }

func (r *recordSink) Add(s *sock.Socket) { r.rows = append(r.rows, *s) }
func (r *recordSink) Close() error       { return nil }

// listenerInode opens a TCP listener held by this test process and returns
// its socket inode.
func listenerInode(t *testing.T) uint64 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		t.Fatalf("fstat listener: %v %v", err, serr)
	}
	return st.Ino
}

// TestAttribution checks that rows handed over while the process scan
// runs come out in order, with their processes, and unaffected by the dump
// reusing its row.
func TestAttribution(t *testing.T) {
	testutil.RequireRoot(t)
	inode := listenerInode(t)

	p := startAttribution(context.Background(), ProcScan{})
	sink := &recordSink{}
	// One row value reused for every add, as sockdiag does.
	row := &sock.Socket{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: sock.Listen}
	const n = 200 // even
	for i := range n {
		*row = sock.Socket{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: sock.Listen,
			Local: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(10000+i))}
		if i%2 == 0 {
			row.Inode = inode
		}
		if err := p.add(row, sink); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.finish(sink); err != nil {
		t.Fatal(err)
	}
	// Once the scan has ended, rows go straight through.
	*row = sock.Socket{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: sock.Listen, Inode: inode,
		Local: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(10000+n))}
	if err := p.add(row, sink); err != nil {
		t.Fatal(err)
	}
	if len(sink.rows) != n+1 {
		t.Fatalf("sink got %d rows, want %d", len(sink.rows), n+1)
	}
	for i, r := range sink.rows {
		if got := r.Local.Port(); got != uint16(10000+i) {
			t.Fatalf("row %d has port %d, want %d: order or copy lost", i, got, 10000+i)
		}
		if i%2 == 1 {
			if len(r.Procs) != 0 {
				t.Errorf("row %d (inode 0) has processes %v", i, r.Procs)
			}
			continue
		}
		found := false
		for _, pr := range r.Procs {
			if pr.PID == os.Getpid() {
				found = true
			}
		}
		if !found {
			t.Errorf("row %d: processes %v do not include this test (pid %d)", i, r.Procs, os.Getpid())
		}
	}
}

// TestAttributionFailure checks that a failed scan fails every add and
// the finish, and hands no row to the sink.
func TestAttributionFailure(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the scan fails at once with the context's error
	p := startAttribution(ctx, ProcScan{})
	sink := &recordSink{}
	err := p.finish(sink)
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "processes: ") {
		t.Fatalf("finish = %v, want processes: context canceled", err)
	}
	if err := p.add(&sock.Socket{Proto: sock.ProtoTCP}, sink); err == nil {
		t.Fatal("add after a failed scan succeeded")
	}
	if len(sink.rows) != 0 {
		t.Fatalf("sink got %d rows after a failed scan", len(sink.rows))
	}
}
