package procs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// recordSize is the size of one struct sock_file on the wire; the generated
// ProcsSockFile has the same layout because bpf2go derives it from the C.
const recordSize = int(unsafe.Sizeof(ProcsSockFile{}))

// Field offsets inside a record, taken from the generated struct so that a
// change to the C layout moves them too.
const (
	offIno  = int(unsafe.Offsetof(ProcsSockFile{}.Ino))
	offPid  = int(unsafe.Offsetof(ProcsSockFile{}.Pid))
	offFd   = int(unsafe.Offsetof(ProcsSockFile{}.Fd))
	offComm = int(unsafe.Offsetof(ProcsSockFile{}.Comm))
)

// iterProgram is the loaded iter/task_file program and its link; each
// Open of the link runs a fresh pass over every task.
type iterProgram struct {
	objs ProcsObjects
	link *link.Iter
}

// loadIter loads and attaches the program. Loading costs tens of
// milliseconds (mostly decoding the kernel's BTF for CO-RE), which is why a
// Scanner keeps it across scans.
func loadIter(cache *btf.Cache) (*iterProgram, error) {
	if err := checkPidNS(); err != nil {
		return nil, err
	}
	p := &iterProgram{}
	if err := LoadProcsObjects(&p.objs, &ebpf.CollectionOptions{Cache: cache}); err != nil {
		return nil, fmt.Errorf("load iter/task_file program: %w", err)
	}
	it, err := link.AttachIter(link.IterOptions{Program: p.objs.DumpSockFiles})
	if err != nil {
		p.objs.Close()
		return nil, fmt.Errorf("attach iter/task_file: %w", err)
	}
	p.link = it
	return p, nil
}

// scan runs one pass of the iterator and decodes its output.
func (p *iterProgram) scan(ctx context.Context) ([]entry, error) {
	rd, err := p.link.Open()
	if err != nil {
		return nil, fmt.Errorf("open iterator: %w", err)
	}
	defer rd.Close()
	raw, err := readAll(ctx, rd)
	if err != nil {
		return nil, fmt.Errorf("read iterator: %w", err)
	}
	return decode(raw)
}

func (p *iterProgram) close() error {
	return errors.Join(p.link.Close(), p.objs.Close())
}

// readAll drains the iterator. Each read(2) runs the program over as many
// files as fit the kernel's seq_file buffer, so a large user buffer keeps the
// number of system calls low; ctx is checked between reads.
func readAll(ctx context.Context, rd io.Reader) ([]byte, error) {
	buf := make([]byte, 0, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// decode turns the iterator's byte stream into entries. The comm of a
// process is the same for all its descriptors, so it is converted to a
// string once per process.
func decode(raw []byte) ([]entry, error) {
	if len(raw)%recordSize != 0 {
		return nil, fmt.Errorf("iterator output is %d bytes, not a multiple of the %d-byte record", len(raw), recordSize)
	}
	ents := make([]entry, 0, len(raw)/recordSize)
	var lastPid int32 = -1
	var lastRaw [16]byte
	var comm string
	for off := 0; off < len(raw); off += recordSize {
		r := raw[off : off+recordSize]
		pid := int32(binary.LittleEndian.Uint32(r[offPid:]))
		cb := r[offComm : offComm+len(lastRaw)]
		if pid != lastPid || !bytes.Equal(cb, lastRaw[:]) {
			lastPid = pid
			copy(lastRaw[:], cb)
			comm = ssComm(cb)
		}
		ents = append(ents, entry{
			ino:  binary.LittleEndian.Uint64(r[offIno:]),
			pid:  pid,
			fd:   int32(binary.LittleEndian.Uint32(r[offFd:])),
			comm: comm,
		})
	}
	return ents, nil
}

// initPidNSInode is the inode number of the initial pid namespace
// (PROC_PID_INIT_INO in include/linux/proc_ns.h): fixed by the kernel, the
// same on every boot.
const initPidNSInode = 0xEFFFFFFC

// checkPidNS refuses the BPF path outside the initial pid namespace. The
// kernel runs the iterator over the tasks of the reader's namespace but the
// program reports global pids, while ss (and the user) see the pids of their
// own namespace.
func checkPidNS() error {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return fmt.Errorf("stat /proc/self/ns/pid: %w", err)
	}
	if st.Ino != initPidNSInode {
		return fmt.Errorf("running in a nested pid namespace (inode %d): the iterator's global pids would not match /proc", st.Ino)
	}
	return nil
}
