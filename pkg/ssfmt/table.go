package ssfmt

import (
	"io"
	"net/netip"
	"slices"
	"strconv"

	"github.com/sstrace/sstrace/pkg/sock"
)

// Options are ss's display switches. The zero value prints what plain `ss`
// prints for the columns the caller enables.
type Options struct {
	// ShowNetid enables the Netid column. ss shows it when more than one
	// socket table (tcp, udp, raw, u_str, u_dgr, u_seq, ...) is queried.
	ShowNetid bool
	// ShowState enables the State column. ss hides it when exactly one
	// state is queried.
	ShowState bool

	NoHeader  bool // -H
	Numeric   bool // -n: no service names
	Resolve   bool // -r: host names
	Processes bool // -p: users:(...)
	Timers    bool // -o (also implied by -e in ss)
	Extended  bool // -e
	Memory    bool // -m
	Info      bool // -i
	OneLine   bool // -O
	// TOS is --tos: tos:, tclass: and class_id: of inet sockets.
	TOS bool
	// Cgroup is --cgroup: the cgroup path of inet sockets.
	Cgroup bool
	// InetSockopt is --inet-sockopt: the inet options the kernel reports.
	InetSockopt bool
	// Threads is -T: users:(...) entries name the thread (tid=N).
	Threads bool

	// Width is the terminal width ss would read from TIOCGWINSZ; 0 means
	// stdout is not a terminal, where ss sizes every column to its widest
	// field and adds no padding.
	Width int

	// Ephemeral is the local port range (net.ipv4.ip_local_port_range of
	// the socket's namespace). ss never looks up service names for ports
	// inside it. The zero value stands for ss's fallback, 1024-4999, used
	// when the sysctl cannot be read.
	Ephemeral PortRange

	// Names resolves names; nil resolves nothing (everything numeric,
	// interfaces as "ifN", cgroups as "unreachable:ID").
	Names Names
}

// PortRange is an inclusive port range.
type PortRange struct{ Min, Max uint16 }

// Names is how ss turns numbers into names while printing. Every method
// reports false when it has no name, and the renderer then falls back to
// what ss prints in that case.
type Names interface {
	// Service is getservbyport(port, proto) with proto "tcp" or "udp".
	Service(port uint16, proto string) (string, bool)
	// Protocol is getprotobynumber, used for the "port" of raw sockets.
	Protocol(num uint8) (string, bool)
	// Host is gethostbyaddr, used with -r.
	Host(addr netip.Addr) (string, bool)
	// Iface maps an interface index to its name in the socket's namespace.
	Iface(index uint32) (string, bool)
	// Cgroup maps a cgroup v2 id to its path ("/" for the root).
	Cgroup(id uint64) (string, bool)
}

// Column identifiers, in ss's order. colExt holds everything after the
// peer port (users, timers, details, memory, tcp_info): ss titles it
// "Process" and the truly last column is an always-empty one.
const (
	colNetid = iota
	colState
	colRecvQ
	colSendQ
	colAddr
	colServ
	colRAddr
	colRServ
	colExt
	colProc
	colMax
)

type align uint8

const (
	alignLeft align = iota
	alignCenter
	alignRight
)

type column struct {
	align    align
	header   string
	ldelim   string
	disabled bool
	width    int
	maxLen   int
}

// Buffer accounting of ss: fields are stored as tokens (2-byte length,
// data padded to even length) in 1 MiB chunks whose first 16 bytes are a
// header, and the buffer is rendered, and freed, whenever a row ends with 5
// or more chunks allocated. The batch boundaries decide which rows share
// column widths, so they are simulated byte for byte.
const (
	chunkSize      = 1 << 20
	chunkHeader    = 16
	chunkData      = chunkSize - chunkHeader
	chunksMax      = 5
	tokenLenHeader = 2
	tokenMaxLen    = 1<<16 - 1
)

// Table renders rows the way ss does. Create it with NewTable, Add rows,
// then Close it to print what is still buffered.
type Table struct {
	w    io.Writer
	opts Options
	cols [colMax]column
	cur  int

	// The batch's fields (ss's tokens) sit back to back in one byte
	// buffer, reused from batch to batch: ends[i] is where field i ends,
	// and the field being written is buf[start:]. Formatting appends to
	// buf directly, so a row costs no allocation.
	buf   []byte
	ends  []int32 // a batch holds at most chunksMax MiB
	start int

	// lines collects rendered lines until linesFlush bytes are ready
	// for w: appending to a slice is cheaper than a buffered writer's
	// call per delimiter, padding and field.
	lines []byte

	// chunk simulation
	haveHead   bool
	chunks     int
	used       int // bytes used in the tail chunk's data area
	curAtStart bool

	err error
}

// NewTable starts a table on w and buffers the header (unless NoHeader).
func NewTable(w io.Writer, opts Options) *Table {
	t := &Table{w: w, opts: opts, lines: make([]byte, 0, linesFlush)}
	t.cols = [colMax]column{
		{alignLeft, "Netid", "", false, 0, 0},
		{alignLeft, "State", " ", false, 0, 0},
		{alignLeft, "Recv-Q", " ", false, 0, 0},
		{alignLeft, "Send-Q", " ", false, 0, 0},
		{alignRight, "Local Address:", " ", false, 0, 0},
		{alignLeft, "Port", "", false, 0, 0},
		{alignRight, "Peer Address:", " ", false, 0, 0},
		{alignLeft, "Port", "", false, 0, 0},
		{alignLeft, "Process", "", false, 0, 0},
		{alignLeft, "", "", false, 0, 0},
	}
	t.cols[colNetid].disabled = !opts.ShowNetid
	t.cols[colState].disabled = !opts.ShowState
	if !opts.NoHeader {
		for t.cur != colMax-1 {
			if !t.cols[t.cur].disabled {
				t.out(t.cols[t.cur].header)
			}
			t.fieldNext()
		}
	}
	return t
}

// Close renders whatever is buffered and writes it out.
func (t *Table) Close() error {
	t.render()
	t.write()
	return t.err
}

// Render prints the rows added so far and writes them out, as ss renders
// after each socket of -E; the table takes more rows afterwards, and the
// column widths keep growing with the widest field seen, as in ss.
func (t *Table) Render() error {
	t.render()
	t.write()
	return t.err
}

// out appends s to the current field, as ss's out() does.
func (t *Table) out(s string) {
	mark := len(t.buf)
	t.buf = append(t.buf, s...)
	t.commit(mark)
}

// commit accounts for the bytes appended to buf since mark as one ss out()
// call: dropped when the column is disabled, cut where ss's token or chunk
// would cut them, moving the field to a new chunk when it does not fit.
func (t *Table) commit(mark int) {
	if t.cols[t.cur].disabled {
		t.buf = t.buf[:mark]
		return
	}
	if !t.haveHead {
		t.newChunk(0)
		t.haveHead = true
	}
	n, had := len(t.buf)-mark, mark-t.start
	for {
		avail := chunkData - t.used
		if n < avail || t.curAtStart {
			n = min(n, avail, tokenMaxLen-had)
			t.used += n
			t.buf = t.buf[:mark+n]
			return
		}
		// The token moves, whole, to a fresh chunk and is written again.
		t.newChunk(had)
	}
}

func (t *Table) newChunk(carry int) {
	t.chunks++
	t.used = tokenLenHeader + carry
	t.curAtStart = true
}

// flush ends the current field (ss's field_flush).
func (t *Table) flush() {
	c := &t.cols[t.cur]
	if c.disabled {
		return
	}
	if !t.haveHead {
		t.newChunk(0)
		t.haveHead = true
	}
	n := len(t.buf) - t.start
	pad := n % 2
	if n > c.maxLen {
		c.maxLen = n
	}
	t.ends = append(t.ends, int32(len(t.buf)))
	t.start = len(t.buf)
	if d := chunkData - t.used - pad; d >= 0 && d < tokenLenHeader {
		t.newChunk(0)
		return
	}
	t.used += pad + tokenLenHeader
	t.curAtStart = false
}

// fieldNext moves to the next field; at the end of a row it renders the
// batch when ss would.
func (t *Table) fieldNext() {
	if t.cur == colMax-1 && t.chunks >= chunksMax {
		t.render()
		return
	}
	t.flush()
	if t.cur == colMax-1 {
		t.cur = 0
	} else {
		t.cur++
	}
}

func (t *Table) fieldSet(id int) {
	for t.cur != id {
		t.fieldNext()
	}
}

// calcWidths is ss's render_calc_width.
func (t *Table) calcWidths() {
	screen := t.opts.Width
	compact := screen <= 0
	if compact {
		screen = int(^uint(0) >> 1)
	}
	first := true
	for i := range t.cols {
		c := &t.cols[i]
		if c.disabled {
			continue
		}
		if !first && c.maxLen != 0 {
			c.width = c.maxLen + len(c.ldelim)
		} else {
			c.width = c.maxLen
		}
		c.width = min(c.width, screen)
		if c.width != 0 {
			first = false
		}
	}
	if compact {
		return
	}
	eol := -1
	length, lineCols := 0, 0
	for i := 0; i < colMax; i++ {
		if t.cols[i].width == 0 {
			continue
		}
		lineCols++
		length += t.cols[i].width
		last := true
		for j := i + 1; j < colMax; j++ {
			if t.cols[j].width != 0 {
				last = false
				break
			}
		}
		if !last && length < screen {
			continue
		}
		if length != screen {
			if length > screen {
				length -= t.cols[i].width
				i--
				lineCols--
			}
			pad := screen - length
			spacing, rem := 0, 0
			if lineCols > 0 {
				spacing, rem = pad/lineCols, pad%lineCols
			}
			for j := i; j > eol; j-- {
				if t.cols[j].width == 0 {
					continue
				}
				t.cols[j].width += spacing
				if rem > 0 {
					t.cols[j].width++
					rem--
				}
			}
		}
		eol = i
		length, lineCols = 0, 0
	}
}

// render prints the buffered batch (ss's render) and frees it.
func (t *Table) render() {
	if !t.haveHead {
		return
	}
	t.calcWidths()
	f := 0
	for f < colMax-1 && t.cols[f].width == 0 {
		f++
	}
	lineStarted := false
	from := 0
	for i := 0; i <= len(t.ends); i++ {
		// The last token is the unfinished current field.
		to := len(t.buf)
		if i < len(t.ends) {
			to = int(t.ends[i])
		}
		tok := t.buf[from:to]
		from = to
		c := &t.cols[f]
		printed := 0
		if lineStarted {
			t.lines = append(t.lines, c.ldelim...)
			printed = len(c.ldelim)
		}
		lineStarted = true
		if c.width != 0 && c.align != alignLeft {
			s := c.width - len(tok) - printed
			if c.align == alignCenter {
				s = (s + 1) / 2
			}
			if s > 0 {
				t.lines = appendSpaces(t.lines, s)
				printed += s
			}
		}
		t.lines = append(t.lines, tok...)
		printed += len(tok)
		if c.width != 0 && c.align != alignRight {
			s := c.width - printed
			if c.align == alignCenter {
				s /= 2
			}
			if s > 0 {
				t.lines = appendSpaces(t.lines, s)
			}
		}
		for {
			if f == colMax-1 {
				t.lines = append(t.lines, '\n')
				if len(t.lines) >= linesFlush {
					t.write()
				}
				f = 0
				lineStarted = false
			} else {
				f++
			}
			if !t.cols[f].disabled {
				break
			}
		}
	}
	if lineStarted {
		t.lines = append(t.lines, '\n')
	}
	t.buf = t.buf[:0]
	t.ends = t.ends[:0]
	t.start = 0
	t.haveHead = false
	t.chunks = 0
	t.used = 0
	t.cur = 0
}

// linesFlush is how much rendered output collects before it is written.
const linesFlush = 64 << 10

// write hands the rendered lines to the writer, keeping its first error.
func (t *Table) write() {
	if len(t.lines) > 0 && t.err == nil {
		_, t.err = t.w.Write(t.lines)
	}
	t.lines = t.lines[:0]
}

func appendSpaces(b []byte, n int) []byte {
	const blank = "                                                                "
	for n > 0 {
		k := min(n, len(blank))
		b = append(b, blank[:k]...)
		n -= k
	}
	return b
}

// rowReserve is the room Add makes in buf before a row: more than any
// ordinary row needs, so the formatting appends do not grow it piecemeal.
const rowReserve = 16 << 10

// reserve makes room for a row. Past 1 MiB it grows buf straight to a
// whole batch (about chunksMax MiB) instead of doubling: each doubling
// copies the batch and touches fresh pages.
func (t *Table) reserve() {
	if cap(t.buf)-len(t.buf) >= rowReserve {
		return
	}
	n := max(2*cap(t.buf), 4*rowReserve)
	if n > 1<<20 {
		n = max(n, chunksMax*chunkData+rowReserve)
	}
	t.buf = slices.Grow(t.buf, n-len(t.buf))
}

// Add renders one socket row.
func (t *Table) Add(s *sock.Socket) {
	t.reserve()
	t.fieldSet(colNetid)
	t.out(Netid(s))
	t.fieldSet(colState)
	t.out(s.State.SSLabel())
	t.fieldSet(colRecvQ)
	mark := len(t.buf)
	t.buf = appendLeftPad6(t.buf, int32(s.RecvQ))
	t.commit(mark)
	t.fieldSet(colSendQ)
	mark = len(t.buf)
	t.buf = appendLeftPad6(t.buf, int32(s.SendQ))
	t.commit(mark)
	t.fieldSet(colAddr)
	switch s.Proto {
	case sock.ProtoUNIX:
		t.unixRow(s)
	case sock.ProtoPacket:
		t.packetRow(s)
	case sock.ProtoNetlink:
		t.netlinkRow(s)
	default:
		t.inetRow(s)
	}
}

// appendLeftPad6 is printf("%-6d").
func appendLeftPad6(b []byte, v int32) []byte {
	mark := len(b)
	b = strconv.AppendInt(b, int64(v), 10)
	for len(b)-mark < 6 {
		b = append(b, ' ')
	}
	return b
}
