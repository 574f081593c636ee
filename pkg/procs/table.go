package procs

import (
	"math/bits"

	"github.com/sstrace/sstrace/pkg/sock"
)

// inodeTable maps socket inodes to their holders. It is an open-addressing
// hash table with linear probing over flat arrays rather than a Go map:
// it is built once per scan with up to a few hundred thousand entries and
// never changes, and flat arrays build several times faster than map
// inserts and leave the garbage collector almost nothing to trace.
//
// Inode 0 marks an empty slot; sockfs never hands out inode 0
// (get_next_ino skips it), and Lookup(0) must find nothing anyway, because
// TIME-WAIT and request sockets report inode 0.
type inodeTable struct {
	keys  []uint64
	spans []span // spans[i] locates keys[i]'s holders in procs
	// procs holds every entry grouped by inode, each group in ss's order.
	procs  []sock.Process
	shift  uint8 // 64 - log2(len(keys)), for the multiplicative hash
	inodes int
}

type span struct{ start, end uint32 }

// slot returns the slot where ino is or would go.
func (t *inodeTable) slot(ino uint64) int {
	mask := len(t.keys) - 1
	// Fibonacci hashing: sockfs inodes are sequential, the multiply spreads
	// them over the high bits.
	i := int((ino * 0x9E3779B97F4A7C15) >> t.shift)
	for t.keys[i] != ino && t.keys[i] != 0 {
		i = (i + 1) & mask
	}
	return i
}

// newInodeTable indexes ents, given in discovery order. ss keeps one list
// per inode and prepends each entry it finds, so it prints a socket's
// holders in the reverse of discovery order. Both scan paths discover in
// ss's order (processes by ascending pid, as /proc lists them and as the
// kernel's task iterator walks them; descriptors by ascending fd), so
// reversing each inode's entries reproduces ss exactly.
//
// Two passes: the first chains each entry to the previous one of the same
// inode, the second lays each chain out contiguously, newest first.
func newInodeTable(ents []entry) inodeTable {
	// At most half full, so probe sequences stay short.
	size := 1 << max(4, bits.Len(uint(len(ents)))+1)
	t := inodeTable{
		keys:  make([]uint64, size),
		spans: make([]span, size),
		procs: make([]sock.Process, 0, len(ents)),
		shift: uint8(64 - bits.TrailingZeros(uint(size))),
	}
	// First pass: spans[i].start is the newest entry of the inode (+1, so
	// that 0 means none), spans[i].end the chain length; next links back.
	next := make([]uint32, len(ents))
	for i := range ents {
		ino := ents[i].ino
		if ino == 0 {
			continue
		}
		s := t.slot(ino)
		if t.keys[s] == 0 {
			t.keys[s] = ino
			t.inodes++
		}
		next[i] = t.spans[s].start
		t.spans[s].start = uint32(i + 1)
		t.spans[s].end++
	}
	// Second pass, in slot order (sequential over the table).
	for s, ino := range t.keys {
		if ino == 0 {
			continue
		}
		start := uint32(len(t.procs))
		for j := t.spans[s].start; j != 0; j = next[j-1] {
			e := &ents[j-1]
			t.procs = append(t.procs, sock.Process{Comm: e.comm, PID: int(e.pid), FD: int(e.fd), TID: int(e.tid)})
		}
		t.spans[s] = span{start: start, end: uint32(len(t.procs))}
	}
	return t
}

// lookup returns ino's holders, capped so that an append cannot reach the
// next inode's entries.
func (t *inodeTable) lookup(ino uint64) []sock.Process {
	if ino == 0 || len(t.keys) == 0 {
		return nil
	}
	s := t.slot(ino)
	if t.keys[s] == 0 {
		return nil
	}
	sp := t.spans[s]
	return t.procs[sp.start:sp.end:sp.end]
}

// all returns every inode in the table, in no particular order.
func (t *inodeTable) all() []uint64 {
	out := make([]uint64, 0, t.inodes)
	for _, ino := range t.keys {
		if ino != 0 {
			out = append(out, ino)
		}
	}
	return out
}
