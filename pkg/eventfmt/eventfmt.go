// Package eventfmt renders tracer events: one JSON object per line (the
// stable machine form of `sstrace trace --json`) and the human table of
// `sstrace trace`, modelled on libbpf-tools' tcpstates.
//
// Both append to a caller-owned buffer and allocate nothing per event, so
// that printing keeps up with full-speed connection churn.
//
// JSON keys, in this order (docs/JSON.md): time (RFC 3339, UTC,
// nanoseconds), cookie, netns, family ("inet"/"inet6"), saddr, sport,
// daddr, dport, oldstate, newstate (kernel names without TCP_), pid, comm,
// uid (the socket's owner, pkg/owner; 0 and "" when unknown, never the
// unrelated task of a softirq), context ("process" or "softirq"), in_state_ms
// (time spent in oldstate; absent when unknown), then, in process context
// only, the task that ran the transition: task_pid, task_tid, task_uid,
// task_comm, task_cgroup; then hook, cookie_source ("helper", "field",
// "deferred", "resolved", "none") and cpu; on a transition to CLOSE also
// bytes_sent, bytes_received, retrans, rtt_us, unread, err (errno name, ""
// for none) and peer_fin.
package eventfmt

import (
	"golang.org/x/sys/unix"
	"net/netip"
	"strconv"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// JSON renders events as JSON lines. It caches the formatted minute of the
// timestamp: formatting a full time is the largest part of an event's cost,
// and consecutive events nearly always share the minute.
type JSON struct {
	minute int64  // Unix minute the prefix is for
	prefix []byte // `{"time":"2006-01-02T15:04:`
	// addrs caches formatted addresses: a host's connections share a few
	// addresses, and formatting an IPv6 one costs more than the rest of
	// the line.
	addrs [8]cachedAddr
	next  int
	// The namespace and comm of the previous event, already formatted:
	// runs of events share them.
	netns     uint64
	netnsText []byte
	comm      string
	commText  []byte
}

type cachedAddr struct {
	addr netip.Addr
	text []byte
}

// appendAddr appends a's text form, from the cache when it is there.
func (j *JSON) appendAddr(b []byte, a netip.Addr) []byte {
	for i := range j.addrs {
		if c := &j.addrs[i]; c.text != nil && c.addr == a {
			return append(b, c.text...)
		}
	}
	c := &j.addrs[j.next]
	j.next = (j.next + 1) % len(j.addrs)
	c.addr = a
	c.text = a.AppendTo(c.text[:0])
	return append(b, c.text...)
}

// Append appends e as one JSON object and a newline.
func (j *JSON) Append(b []byte, e *event.Event) []byte {
	ns := e.Time.UnixNano()
	minute := ns / int64(time.Minute)
	if ns < 0 || j.prefix == nil || minute != j.minute {
		j.minute = minute
		j.prefix = append(j.prefix[:0], `{"time":"`...)
		j.prefix = e.Time.UTC().AppendFormat(j.prefix, "2006-01-02T15:04:")
	}
	b = append(b, j.prefix...)
	rest := ns - minute*int64(time.Minute) // nanoseconds within the minute
	b = appendPadded(b, uint64(rest/int64(time.Second)), 2)
	b = append(b, '.')
	b = appendPadded(b, uint64(rest%int64(time.Second)), 9)
	b = append(b, `Z","cookie":`...)
	b = strconv.AppendUint(b, e.Cookie, 10)
	b = append(b, `,"netns":`...)
	if j.netnsText == nil || e.NetNS != j.netns {
		j.netns = e.NetNS
		j.netnsText = strconv.AppendUint(j.netnsText[:0], e.NetNS, 10)
	}
	b = append(b, j.netnsText...)
	b = append(b, `,"family":"`...)
	b = append(b, sock.FamilyName(e.Family)...)
	b = append(b, `","saddr":"`...)
	b = j.appendAddr(b, e.Local.Addr())
	b = append(b, `","sport":`...)
	b = strconv.AppendUint(b, uint64(e.Local.Port()), 10)
	b = append(b, `,"daddr":"`...)
	b = j.appendAddr(b, e.Peer.Addr())
	b = append(b, `","dport":`...)
	b = strconv.AppendUint(b, uint64(e.Peer.Port()), 10)
	b = append(b, `,"oldstate":"`...)
	b = append(b, e.OldState.String()...)
	b = append(b, `","newstate":"`...)
	b = append(b, e.NewState.String()...)
	b = append(b, `","pid":`...)
	b = strconv.AppendUint(b, uint64(e.Owner.PID), 10)
	b = append(b, `,"comm":`...)
	if j.commText == nil || e.Owner.Comm != j.comm {
		j.comm = e.Owner.Comm
		j.commText = AppendJSONString(j.commText[:0], e.Owner.Comm)
	}
	b = append(b, j.commText...)
	b = append(b, `,"uid":`...)
	b = strconv.AppendUint(b, uint64(e.Owner.UID), 10)
	b = append(b, `,"context":"`...)
	b = append(b, e.Context.String()...)
	b = append(b, '"')
	if e.InState > 0 {
		b = append(b, `,"in_state_ms":`...)
		b = appendMillis(b, e.InState)
	}
	if task, ok := e.Responsible(); ok {
		b = append(b, `,"task_pid":`...)
		b = strconv.AppendUint(b, uint64(task.PID), 10)
		b = append(b, `,"task_tid":`...)
		b = strconv.AppendUint(b, uint64(task.TID), 10)
		b = append(b, `,"task_uid":`...)
		b = strconv.AppendUint(b, uint64(task.UID), 10)
		b = append(b, `,"task_comm":`...)
		if task.Comm == j.comm {
			b = append(b, j.commText...) // the owner's, nearly always
		} else {
			b = AppendJSONString(b, task.Comm)
		}
		b = append(b, `,"task_cgroup":`...)
		b = strconv.AppendUint(b, e.CgroupID, 10)
	}
	b = append(b, `,"hook":"`...)
	b = append(b, e.Hook...)
	b = append(b, `","cookie_source":"`...)
	b = append(b, e.CookieSource.String()...)
	b = append(b, `","cpu":`...)
	b = strconv.AppendUint(b, uint64(e.CPU), 10)
	if e.NewState == sock.Close {
		b = AppendFinal(b, &e.Final)
		if st, ok := e.Minisocket(); ok {
			// What users look for after a close and never see in a
			// trace: the connection lives on in the kernel.
			b = append(b, `,"minisocket":true,"minisocket_state":"`...)
			b = append(b, st.String()...)
			b = append(b, '"')
		}
	}
	return append(b, "}\n"...)
}

// AppendFinal appends the counters of a transition to CLOSE as JSON
// members, each preceded by a comma: bytes_sent, bytes_received, retrans,
// rtt_us, unread, err and peer_fin.
func AppendFinal(b []byte, f *event.Final) []byte {
	b = append(b, `,"bytes_sent":`...)
	b = strconv.AppendUint(b, f.BytesAcked, 10)
	b = append(b, `,"bytes_received":`...)
	b = strconv.AppendUint(b, f.BytesReceived, 10)
	b = append(b, `,"retrans":`...)
	b = strconv.AppendUint(b, uint64(f.Retrans), 10)
	b = append(b, `,"rtt_us":`...)
	b = strconv.AppendInt(b, f.SRTT.Microseconds(), 10)
	b = append(b, `,"unread":`...)
	b = strconv.AppendUint(b, uint64(f.Unread), 10)
	b = append(b, `,"err":"`...)
	b = append(b, ErrnoName(f.Err)...)
	b = append(b, `","peer_fin":`...)
	b = strconv.AppendBool(b, f.PeerFIN)
	return b
}

// ErrnoName names a socket error as the kernel's errno symbol
// ("ECONNRESET"), "" for 0.
func ErrnoName(errno uint16) string {
	if errno == 0 {
		return ""
	}
	if n := unix.ErrnoName(syscall.Errno(errno)); n != "" {
		return n
	}
	return "E" + strconv.Itoa(int(errno))
}

// appendMillis appends d in milliseconds with three decimals, as
// strconv.AppendFloat(b, ms, 'f', 3, 64) does, without the float
// formatting (an eighth of a line's cost): whole microseconds rounded half
// up are the same digits except where d is exactly half a microsecond
// (the float may lie below or above it) or so long that a float64 no longer
// tells nanoseconds apart; those take the float path.
func appendMillis(b []byte, d time.Duration) []byte {
	if d%time.Microsecond == 500 || d < 0 || d >= 1<<50 {
		return strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', 3, 64)
	}
	us := uint64((d + 500) / time.Microsecond)
	b = strconv.AppendUint(b, us/1000, 10)
	b = append(b, '.')
	return appendPadded(b, us%1000, 3)
}

// appendPadded appends v in decimal, zero-padded to width digits.
func appendPadded(b []byte, v uint64, width int) []byte {
	var d [20]byte
	i := len(d)
	for v > 0 || i > len(d)-width {
		i--
		d[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, d[i:]...)
}

// AppendJSONString appends s as a JSON string: the one quoter of
// sstrace's hand-built JSON (events here, the daemon's reply frames). What
// it quotes is chosen by others (a comm by any process, output text by the
// kernel), so quotes, control characters and DEL are escaped and invalid
// UTF-8 becomes U+FFFD.
func AppendJSONString[T string | []byte](b []byte, s T) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		// At most UTFMax bytes: the conversion stays on the stack.
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// AppendEscaped appends s for a terminal: a name others chose (a process
// may call itself "x\n\x1b[31mZ") must not break the line or send escape
// sequences to whoever reads the output. The escapes are Go's
// (strconv.Quote without the quotes, and " kept): printable characters
// stay, a backslash becomes \\, \n \t \r \a \b \f \v read as such, other
// control bytes and invalid UTF-8 become \xHH, other non-printable
// characters (C1 controls, bidirectional overrides) \uHHHH or \UHHHHHHHH.
// Human forms only: JSON has its own quoting (AppendJSONString), and
// `sstrace ss -p` prints names raw, byte for byte as ss does.
func AppendEscaped[T string | []byte](b []byte, s T) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\\':
				b = append(b, '\\', '\\')
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\a':
				b = append(b, '\\', 'a')
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\f':
				b = append(b, '\\', 'f')
			case c == '\v':
				b = append(b, '\\', 'v')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		case !strconv.IsPrint(r):
			digits := 4
			b = append(b, '\\', 'u')
			if r > 0xffff {
				b[len(b)-1], digits = 'U', 8
			}
			for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
				b = append(b, hex[(r>>shift)&0xf])
			}
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

// Text renders the human table. It keeps no state per socket: the time
// in the old state comes with the event (pkg/owner computes it).
type Text struct {
	// Extended adds the socket's cookie and network namespace inode
	// (trace -e), the keys that join a line with ss -e, history and
	// JSON output.
	Extended bool
}

// NewText returns a Text renderer.
func NewText() *Text { return &Text{} }

// TextHeader is the table's header line.
const TextHeader = "TIME            PID     COMM             LADDR                                   RADDR                                   OLDSTATE    -> NEWSTATE    MS\n"

// textHeaderExtended is the header with Extended's columns.
const textHeaderExtended = "TIME            PID     COMM             LADDR                                   RADDR                                   OLDSTATE    -> NEWSTATE    MS         COOKIE               NETNS\n"

// Header is t's header line.
func (t *Text) Header() string {
	if t.Extended {
		return textHeaderExtended
	}
	return TextHeader
}

// Append appends one line for e. PID and COMM are the socket's owner
// (pkg/owner), "-" when unknown: never the unrelated task a softirq
// transition ran on. COMM is escaped (AppendEscaped).
func (t *Text) Append(b []byte, e *event.Event) []byte {
	b = e.Time.Local().AppendFormat(b, "15:04:05.000000")
	b = append(b, ' ', ' ')
	if !e.Owner.Known() {
		b = pad(b, "-", 8)
		b = pad(b, "-", 17)
	} else {
		start := len(b)
		b = padFrom(strconv.AppendUint(b, uint64(e.Owner.PID), 10), start, 8) // no string per line
		start = len(b)
		b = padFrom(AppendEscaped(b, e.Owner.Comm), start, 17)
	}
	start := len(b)
	b = padFrom(e.Local.AppendTo(b), start, 40) // [v6]:port or v4:port
	start = len(b)
	b = padFrom(e.Peer.AppendTo(b), start, 40)
	b = pad(b, e.OldState.String(), 12)
	b = append(b, "-> "...)
	b = pad(b, e.NewState.String(), 12)
	start = len(b)
	b = appendMillis(b, e.InState)
	if t.Extended {
		b = padFrom(b, start, 10)
		start = len(b)
		b = padFrom(strconv.AppendUint(b, e.Cookie, 10), start, 20)
		b = strconv.AppendUint(b, e.NetNS, 10)
	}
	switch st, ok := e.Minisocket(); {
	case ok && st == sock.TimeWait:
		b = append(b, "  (TIME_WAIT follows)"...)
	case ok:
		b = append(b, "  (orphaned FIN_WAIT2 follows)"...)
	}
	return append(b, '\n')
}

// pad appends s, padded with spaces to width, and at least one space.
func pad(b []byte, s string, width int) []byte {
	start := len(b)
	return padFrom(append(b, s...), start, width)
}

// padFrom pads the field that starts at b[start] to width, with at least
// one space after it.
func padFrom(b []byte, start, width int) []byte {
	if len(b)-start >= width {
		return append(b, ' ')
	}
	for len(b)-start < width {
		b = append(b, ' ')
	}
	return b
}
