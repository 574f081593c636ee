// Package procs answers `ss -p`: which processes hold each socket, as
// users:(("comm",pid=N,fd=N),...).
//
// ss builds that answer by listing every /proc/PID/fd directory and reading
// every link in it, which costs seconds on a host with a hundred thousand
// sockets. Scan gets the same answer from a BPF iter/task_file program that
// walks every process's descriptor table in the kernel in one pass
// (bpf/procs.bpf.c) and falls back to the /proc walk when the kernel cannot
// run it. Both paths produce the same Index, entry for entry and in ss's
// order; Source and Reason tell which one ran and why.
//
// Usage:
//
//	ix, err := procs.Scan(ctx, procs.Options{})
//	if err != nil { ... }
//	for i := range rows {
//		rows[i].Procs = ix.Lookup(rows[i].Inode)
//	}
//
// The tests compare both paths with the real ss (root; they skip otherwise,
// and fail under CI=true); the benchmark reports the bpf/proc ratio:
//
//	go test ./pkg/procs
//	go test ./pkg/procs -run '^$' -bench Scan -v
//	SSTRACE_PROCS_BENCH_SOCKETS=16000 SSTRACE_PROCS_BENCH_HELPERS=8 \
//	    go test ./pkg/procs -run '^$' -bench Scan -benchtime 3x -v
//
// On the 2-CPU test VM with 144 000 sockets: one-shot BPF scan about 0.2 s,
// this package's /proc walk about 1.4 s, `ss -xanp` about 30 s.
package procs

import (
	"bytes"
	"context"
	"fmt"

	"github.com/cilium/ebpf/btf"

	"github.com/sstrace/sstrace/pkg/sock"
)

// Sources reported by Index.Source.
const (
	// SourceBPF means the index came from the iter/task_file program.
	SourceBPF = "bpf-iter"
	// SourceProc means the index came from walking /proc/PID/fd.
	SourceProc = "proc"
)

// Options selects how Scan works.
type Options struct {
	// ForceProc skips the BPF iterator and walks /proc, as ss does. Useful
	// to compare the two paths and as an escape hatch.
	ForceProc bool
	// Threads lists every thread holding a socket, not only every
	// process (ss -T): each entry carries its thread id, and the comm is
	// the thread's. Threads share their process's descriptors, so a
	// socket gets one entry per thread. It walks /proc, as ss does.
	Threads bool
	// BTFCache, when set, is shared with the other BPF loads of the
	// process. Decoding the kernel's BTF for CO-RE is most of the cost of
	// loading the program (tens of milliseconds); a shared cache pays it
	// once. Nil means a private cache per load.
	BTFCache *btf.Cache
}

// Index maps a socket inode to the processes holding it, in the order ss
// prints them in users:(...). It is immutable once Scan returns and safe for
// concurrent use.
type Index struct {
	table  inodeTable
	source string
	reason string
}

// Lookup returns the processes holding the socket with this inode, in ss's
// order: the reverse of the order a /proc walk finds them in, that is
// highest pid first and, within a process, highest fd first. It returns nil
// for an inode no process holds (TIME-WAIT and request sockets have inode 0
// and are never held). The caller must not modify the slice; appending to it
// is safe.
func (ix *Index) Lookup(inode uint64) []sock.Process {
	if ix == nil {
		return nil
	}
	return ix.table.lookup(inode)
}

// Source returns how the index was built: SourceBPF or SourceProc.
func (ix *Index) Source() string { return ix.source }

// Reason says why the /proc walk was used ("forced by Options.ForceProc" or
// the error that kept the BPF iterator from running); it is empty when the
// BPF iterator built the index.
func (ix *Index) Reason() string { return ix.reason }

// Len returns how many (socket, process, fd) entries the index holds.
func (ix *Index) Len() int { return len(ix.table.procs) }

// Inodes returns the number of distinct sockets the index knows.
func (ix *Index) Inodes() int { return ix.table.inodes }

// Scan builds the index of every socket held by a process on the host. It
// uses the BPF iterator unless opts.ForceProc is set or the iterator cannot
// run (no BTF, no iterator support, no privilege, a nested pid namespace); in
// those cases it walks /proc and records why in Index.Reason. It fails only
// when the /proc walk itself fails or ctx is cancelled. For repeated scans,
// a Scanner avoids loading the BPF program each time.
func Scan(ctx context.Context, opts Options) (*Index, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := NewScanner(opts)
	defer s.Close()
	return s.Scan(ctx)
}

// Scanner builds indexes repeatedly with the BPF program loaded once, for a
// long-running process such as the daemon. NewScanner makes one; the zero
// value only walks /proc. A Scanner is not safe for concurrent Scans.
type Scanner struct {
	iter   *iterProgram // nil when the /proc walk is used
	reason string       // why iter is nil
	proc   string       // the /proc root
	// threads walks every thread's descriptors (Options.Threads).
	threads bool
}

// NewScanner prepares scans as Scan describes. It does not fail: when the
// BPF iterator cannot be loaded, the Scanner walks /proc and its indexes
// carry the reason.
func NewScanner(opts Options) *Scanner {
	s := &Scanner{proc: "/proc", reason: "forced by Options.ForceProc", threads: opts.Threads}
	if opts.Threads {
		s.reason = "threads (Options.Threads) are listed from /proc"
	}
	if opts.ForceProc || opts.Threads {
		return s
	}
	it, err := loadIter(opts.BTFCache)
	if err != nil {
		s.reason = fmt.Sprintf("bpf iterator unavailable: %v", err)
		return s
	}
	s.iter, s.reason = it, ""
	return s
}

// Scan builds a fresh index. If the iterator fails mid-way (it should not),
// this scan falls back to /proc and says why; later scans try the iterator
// again.
func (s *Scanner) Scan(ctx context.Context) (*Index, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	reason := s.reason
	if s.iter != nil {
		ents, err := s.iter.scan(ctx)
		if err == nil {
			return build(ents, SourceBPF, ""), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		reason = fmt.Sprintf("bpf iterator failed: %v", err)
	}
	root := s.proc
	if root == "" {
		root, reason = "/proc", "no BPF program loaded (zero Scanner)"
	}
	ents, err := scanProc(ctx, root, s.threads)
	if err != nil {
		return nil, err
	}
	return build(ents, SourceProc, reason), nil
}

// Close releases the BPF program, if one was loaded.
func (s *Scanner) Close() error {
	if s.iter == nil {
		return nil
	}
	err := s.iter.close()
	s.iter, s.reason = nil, "scanner closed"
	return err
}

// entry is one socket descriptor as either path finds it.
type entry struct {
	ino  uint64
	pid  int32
	fd   int32
	comm string
	tid  int32 // 0 unless threads are listed
}

// build indexes the entries, given in the order they were found.
func build(ents []entry, source, reason string) *Index {
	return &Index{table: newInodeTable(ents), source: source, reason: reason}
}

// ssComm turns a raw task comm into the name ss prints. ss reads it from
// /proc/PID/stat with fscanf("%*d (%[^)])"), which stops at the first ')'
// in the name; the kernel's comm is NUL-padded.
func ssComm(raw []byte) string {
	if i := bytes.IndexByte(raw, 0); i >= 0 {
		raw = raw[:i]
	}
	if i := bytes.IndexByte(raw, ')'); i >= 0 {
		raw = raw[:i]
	}
	return string(raw)
}
