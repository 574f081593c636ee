// Package connfmt renders the daemon's connections for people and
// scripts: the tcplife-like lines of `sstrace history` (one line per
// connection, with its timeline under -v) and the CLOSE-WAIT report of
// `sstrace closewait`, grouped so that a leak stands out. Process names in
// the human forms are escaped (eventfmt.AppendEscaped): any process chooses
// its own. JSON forms use the
// one vocabulary of docs/JSON.md (saddr, sport, daddr, dport, a decimal
// cookie, kernel state names).
//
// Rendering is a pure function of its inputs (the connections and "now"):
// the daemon gathers, this package prints, and tests feed it synthetic
// connections.
package connfmt

import (
	"encoding/json"
	"math"
	"net/netip"
	"strconv"
	"time"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/eventfmt"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
)

// HistoryHeader is the header of `sstrace history`'s lines.
const HistoryHeader = "PID     COMM             LADDR           LPORT RADDR           RPORT   TX_KB   RX_KB         MS STATE        OUTCOME\n"

// AppendHistory appends one line for c (and, with verbose, its timeline
// below it). now is used for an open connection's lifetime.
//
// Columns, as tcplife's: the owner's pid and comm ("-" when unknown), the
// local and remote address and port, kilobytes sent (acknowledged by the
// peer) and received, the lifetime in milliseconds (up to now while open);
// then the state (CLOSED once gone, TIME_WAIT while a minisocket lives on)
// and how it ended, with the side that closed first or sent the reset:
// "closed(local)", "reset(peer)", "refused", "-" while open. A "!" after
// the outcome marks a history with a gap (events were lost while it
// lived). Under -v a line names the owner's cgroup and container, when
// known, before the timeline.
func AppendHistory(b []byte, c *table.Conn, now time.Time, verbose bool) []byte {
	if c.Owner.Known() {
		b = pad(b, strconv.FormatUint(uint64(c.Owner.PID), 10), 8)
		b = padEscaped(b, c.Owner.Comm, 17)
	} else {
		b = pad(b, "-", 8)
		b = pad(b, "-", 17)
	}
	b = pad(b, addrText(c.Local.Addr()), 16)
	b = padLeft(b, strconv.Itoa(int(c.Local.Port())), 5)
	b = append(b, ' ')
	b = pad(b, addrText(c.Peer.Addr()), 16)
	b = padLeft(b, strconv.Itoa(int(c.Peer.Port())), 5)
	b = append(b, ' ')
	b = padLeft(b, strconv.FormatUint(c.Final.BytesAcked/1024, 10), 7)
	b = append(b, ' ')
	b = padLeft(b, strconv.FormatUint(c.Final.BytesReceived/1024, 10), 7)
	b = append(b, ' ')
	ms := float64(c.Lifetime(now)) / float64(time.Millisecond)
	b = padLeft(b, strconv.FormatFloat(ms, 'f', 2, 64), 10)
	b = append(b, ' ')
	state := c.State.String()
	if c.State == sock.Close {
		state = "CLOSED"
	}
	b = pad(b, state, 13)
	b = append(b, OutcomeText(c)...)
	if c.Gap {
		b = append(b, '!')
	}
	b = append(b, '\n')
	if verbose {
		b = appendCgroupLine(b, c)
		b = AppendTimeline(b, c)
	}
	return b
}

// ShortContainer is a container id as `docker ps` shows it: its first 12
// digits, enough to tell containers apart and to filter on (`container
// PREFIX`).
func ShortContainer(id string) string { return id[:min(len(id), 12)] }

// appendCgroupLine appends "        cgroup PATH container ID" for an owner
// whose cgroup is known (its id when its path could not be found), nothing
// otherwise. The path is escaped: whoever may make cgroups names them.
func appendCgroupLine(b []byte, c *table.Conn) []byte {
	switch {
	case c.Cgroup != "":
		b = append(b, "        cgroup "...)
		b = eventfmt.AppendEscaped(b, c.Cgroup)
	case c.Owner.CgroupID != 0:
		b = append(b, "        cgroup id "...)
		b = strconv.AppendUint(b, c.Owner.CgroupID, 10)
	default:
		return b
	}
	if c.Container != "" {
		b = append(b, " container "...)
		b = append(b, ShortContainer(c.Container)...)
	}
	return append(b, '\n')
}

// OutcomeText is the outcome column: "-" while open, else the outcome and,
// when known, the side: "closed(peer)".
func OutcomeText(c *table.Conn) string {
	if c.Outcome == table.OutcomeOpen {
		return "-"
	}
	if c.By != table.SideNone {
		return string(c.Outcome) + "(" + string(c.By) + ")"
	}
	return string(c.Outcome)
}

// AppendTimeline appends c's transitions, one indented line each: the
// offset from the first, the time, old -> new, the context and, in process
// context, the task that ran it.
func AppendTimeline(b []byte, c *table.Conn) []byte {
	if len(c.Transitions) == 0 {
		b = append(b, "        (no transition seen: "...)
		b = append(b, originText(c.Origin)...)
		return append(b, ")\n"...)
	}
	if c.Origin == table.OriginBeforeStart {
		b = append(b, "        (open before the daemon started: earlier transitions unknown)\n"...)
	}
	first := c.Transitions[0].Time
	for _, t := range c.Transitions {
		b = append(b, "    "...)
		b = padLeft(b, "+"+strconv.FormatFloat(float64(t.Time.Sub(first))/float64(time.Millisecond), 'f', 3, 64)+"ms", 14)
		b = append(b, ' ')
		b = t.Time.Local().AppendFormat(b, "15:04:05.000000")
		b = append(b, ' ', ' ')
		b = pad(b, t.OldState.String(), 12)
		b = append(b, "-> "...)
		b = pad(b, t.NewState.String(), 12)
		b = pad(b, t.Context.String(), 8)
		if t.Task != nil {
			b = strconv.AppendUint(b, uint64(t.Task.PID), 10)
			b = append(b, ' ')
			b = eventfmt.AppendEscaped(b, t.Task.Comm)
		}
		b = trimSpace(b)
		b = append(b, '\n')
	}
	if c.Gap {
		b = append(b, "        ! events were lost while this connection lived: transitions may be missing\n"...)
	}
	return b
}

// AppendHistoryJSON appends c as one JSON object and a newline, with the
// keys of table.ConnJSON in its order (VisitHistory). It writes them itself
// rather than through encoding/json, which took 20 µs a connection (every
// transition marshalled on its own, then re-validated): 20 s for the
// million connections the daemon retains by default.
func AppendHistoryJSON(b []byte, c *table.Conn, now time.Time) ([]byte, error) {
	w := jsonFields{b: append(b, '{'), first: true}
	VisitHistory(c, now, &w)
	return append(w.b, "}\n"...), nil
}

// appendJSONFloat appends f as encoding/json does.
func appendJSONFloat(b []byte, f float64) []byte {
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) || math.IsNaN(f) || math.IsInf(f, 0) {
		j, _ := json.Marshal(f) // the rare forms: let encoding/json decide
		return append(b, j...)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// originText says how a connection began, for people.
func originText(o table.Origin) string {
	switch o {
	case table.OriginConnect:
		return "connect"
	case table.OriginAccept:
		return "accept"
	case table.OriginListen:
		return "listen"
	case table.OriginBeforeStart:
		return "open before the daemon started"
	}
	return "began unseen (events were lost)"
}

// addrText is an address as ss and tcplife print it (IPv4-mapped IPv6
// addresses stay as the kernel has them).
func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return "*"
	}
	return a.String()
}

// taskText is "pid comm" (comm escaped), or "-".
func taskText(pid uint32, comm string) string {
	if pid == 0 {
		return "-"
	}
	return string(eventfmt.AppendEscaped([]byte(strconv.FormatUint(uint64(pid), 10)+" "), comm))
}

// ownerOf returns the owner at the connection's start: the task of its
// first process-context transition, else the current owner.
func ownerOf(c *table.Conn) event.Owner {
	for _, t := range c.Transitions {
		if t.Task != nil {
			return event.Owner{PID: t.Task.PID, UID: t.Task.UID, Comm: t.Task.Comm}
		}
	}
	return c.Owner
}

// pad appends s padded with spaces to width, and at least one space.
func pad(b []byte, s string, width int) []byte {
	start := len(b)
	b = append(b, s...)
	if len(b)-start >= width {
		return append(b, ' ')
	}
	for len(b)-start < width {
		b = append(b, ' ')
	}
	return b
}

// padEscaped is pad for a name others chose (a comm): escaped with
// eventfmt.AppendEscaped, so that it can neither break the line nor send
// terminal escapes.
func padEscaped(b []byte, s string, width int) []byte {
	start := len(b)
	b = eventfmt.AppendEscaped(b, s)
	if len(b)-start >= width {
		return append(b, ' ')
	}
	for len(b)-start < width {
		b = append(b, ' ')
	}
	return b
}

// padLeft appends s right-aligned in width.
func padLeft(b []byte, s string, width int) []byte {
	for i := len(s); i < width; i++ {
		b = append(b, ' ')
	}
	return append(b, s...)
}

// trimSpace drops trailing spaces.
func trimSpace(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return b
}
