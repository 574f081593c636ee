package connfmt

import (
	"encoding/json"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/sstrace/sstrace/pkg/eventfmt"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
)

// CloseWait is one socket in CLOSE-WAIT: the peer has closed its side
// (its FIN arrived) and the local process has not closed the socket. Many
// of them, piling up in one process, are a descriptor leak.
type CloseWait struct {
	// Conn is the connection as the daemon's table knows it, with its
	// history; for a socket only the kernel's dump showed (Known false),
	// just its identity and addresses.
	Conn  table.Conn
	Known bool
	// RecvQ is the data received and not read (the dump's Recv-Q).
	RecvQ uint32
	// Owners are the processes holding the socket now (a process scan),
	// those the caller may see.
	Owners []sock.Process
}

// FIN returns when the peer's FIN arrived: the time of the last
// transition into CLOSE_WAIT. ok is false when the table did not see it
// (the socket was already in CLOSE-WAIT when the daemon started, or
// events were lost).
func (cw *CloseWait) FIN() (t time.Time, ok bool) {
	tr := cw.Conn.Transitions
	for i := len(tr) - 1; i >= 0; i-- {
		if tr[i].NewState == sock.CloseWait {
			return tr[i].Time, true
		}
	}
	return time.Time{}, false
}

// age is how long the socket has been in CLOSE-WAIT, or at least (when the
// FIN time is unknown) since the table first saw it.
func (cw *CloseWait) age(now time.Time) time.Duration {
	if t, ok := cw.FIN(); ok {
		return now.Sub(t)
	}
	if cw.Conn.Opened.IsZero() {
		return 0
	}
	return now.Sub(cw.Conn.Opened)
}

// began is the moment the socket's story starts, for ordering: the FIN,
// or the first sight of it.
func (cw *CloseWait) began() time.Time {
	if t, ok := cw.FIN(); ok {
		return t
	}
	return cw.Conn.Opened
}

// Group is CLOSE-WAIT sockets of one process with one peer service.
type Group struct {
	// PID and Comm are the holding process (the first owner); 0 and ""
	// when none could be seen.
	PID  int
	Comm string
	// Container is the container of the connections' owner (the table's,
	// table.Conn.Container); "" for none or unknown.
	Container string
	// Peer is the remote address. Port is the service's port: the
	// remote port of an outgoing connection, the local port of an
	// accepted one (Inbound), whose remote ports are ephemeral.
	Peer    netip.Addr
	Port    uint16
	Inbound bool
	// Sockets are the group's sockets, oldest FIN first.
	Sockets []CloseWait
}

// GroupCloseWait groups sockets by process and peer, worst group first:
// most sockets, then the oldest FIN.
func GroupCloseWait(ws []CloseWait) []Group {
	type key struct {
		pid       int
		comm      string
		container string
		peer      netip.Addr
		port      uint16
		inbound   bool
	}
	idx := make(map[key]int)
	var groups []Group
	for _, w := range ws {
		k := key{peer: w.Conn.Peer.Addr(), container: w.Conn.Container}
		if len(w.Owners) > 0 {
			k.pid, k.comm = w.Owners[0].PID, w.Owners[0].Comm
		}
		k.inbound = inbound(&w.Conn)
		if k.inbound {
			k.port = w.Conn.Local.Port()
		} else {
			k.port = w.Conn.Peer.Port()
		}
		i, ok := idx[k]
		if !ok {
			i = len(groups)
			idx[k] = i
			groups = append(groups, Group{PID: k.pid, Comm: k.comm, Container: k.container, Peer: k.peer, Port: k.port, Inbound: k.inbound})
		}
		groups[i].Sockets = append(groups[i].Sockets, w)
	}
	for i := range groups {
		s := groups[i].Sockets
		sort.SliceStable(s, func(a, b int) bool { return s[a].began().Before(s[b].began()) })
	}
	sort.SliceStable(groups, func(a, b int) bool {
		ga, gb := groups[a], groups[b]
		if len(ga.Sockets) != len(gb.Sockets) {
			return len(ga.Sockets) > len(gb.Sockets)
		}
		return ga.Sockets[0].began().Before(gb.Sockets[0].began())
	})
	return groups
}

// inbound guesses whether a connection was accepted: known from its
// origin, else the side with the lower port is taken for the service.
func inbound(c *table.Conn) bool {
	switch c.Origin {
	case table.OriginAccept:
		return true
	case table.OriginConnect:
		return false
	}
	return c.Local.Port() < c.Peer.Port()
}

// AppendCloseWait appends the human report: per group a header line, then
// one line per socket; when any socket's owner is in a container, a
// summary by container ends it (a leak in a fleet is first a question of
// which workload).
func AppendCloseWait(b []byte, groups []Group, now time.Time) []byte {
	for gi, g := range groups {
		if gi > 0 {
			b = append(b, '\n')
		}
		if g.PID != 0 {
			b = eventfmt.AppendEscaped(b, g.Comm)
			b = append(b, " (pid "...)
			b = strconv.AppendInt(b, int64(g.PID), 10)
		} else {
			b = append(b, "owner unknown"...)
		}
		if g.Container != "" {
			if g.PID != 0 {
				b = append(b, ", container "...)
			} else {
				b = append(b, " (container "...)
			}
			b = append(b, ShortContainer(g.Container)...)
		}
		if g.PID != 0 || g.Container != "" {
			b = append(b, ')')
		}
		b = append(b, ": "...)
		b = strconv.AppendInt(b, int64(len(g.Sockets)), 10)
		if len(g.Sockets) == 1 {
			b = append(b, " socket"...)
		} else {
			b = append(b, " sockets"...)
		}
		b = append(b, " in CLOSE-WAIT"...)
		if g.Inbound {
			b = append(b, " accepted on port "...)
			b = strconv.AppendUint(b, uint64(g.Port), 10)
			b = append(b, " from "...)
			b = append(b, addrText(g.Peer)...)
		} else {
			b = append(b, " to "...)
			b = netip.AddrPortFrom(g.Peer, g.Port).AppendTo(b)
		}
		oldest := &g.Sockets[0]
		if _, ok := oldest.FIN(); ok {
			b = append(b, ", oldest FIN "...)
		} else {
			b = append(b, ", oldest FIN at least "...)
		}
		b = append(b, ago(oldest.age(now))...)
		b = append(b, '\n')
		for i := range g.Sockets {
			b = appendCloseWaitLine(b, &g.Sockets[i], now)
		}
	}
	return appendByContainer(b, groups)
}

// appendByContainer appends the summary of CLOSE-WAIT sockets by the
// container of their owner, most first, with the cgroup that names it;
// nothing when no owner is in one.
func appendByContainer(b []byte, groups []Group) []byte {
	type count struct {
		container, cgroup string
		n                 int
	}
	idx := map[string]int{}
	var counts []count
	inContainer := false
	for _, g := range groups {
		inContainer = inContainer || g.Container != ""
		i, ok := idx[g.Container]
		if !ok {
			i = len(counts)
			idx[g.Container] = i
			counts = append(counts, count{container: g.Container, cgroup: g.Sockets[0].Conn.Cgroup})
		}
		counts[i].n += len(g.Sockets)
	}
	if !inContainer {
		return b
	}
	sort.SliceStable(counts, func(i, j int) bool { return counts[i].n > counts[j].n })
	b = append(b, "\nCLOSE-WAIT by container:\n"...)
	for _, c := range counts {
		b = append(b, "    "...)
		b = padLeft(b, strconv.Itoa(c.n), 6)
		b = append(b, "  "...)
		if c.container == "" {
			b = append(b, "(no container known)\n"...)
			continue
		}
		b = pad(b, ShortContainer(c.container), 13)
		b = eventfmt.AppendEscaped(b, c.cgroup)
		b = append(b, '\n')
	}
	return b
}

// appendCloseWaitLine appends one socket of a group.
func appendCloseWaitLine(b []byte, w *CloseWait, now time.Time) []byte {
	c := &w.Conn
	b = append(b, "    "...)
	b = c.Local.AppendTo(b)
	b = append(b, " -> "...)
	b = c.Peer.AppendTo(b)
	b = append(b, "  cookie "...)
	b = strconv.AppendUint(b, c.Cookie, 10)
	if len(w.Owners) > 0 {
		b = append(b, "  fd "...)
		for i, o := range w.Owners {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(o.FD), 10)
			if i > 0 || len(w.Owners) > 1 {
				b = append(b, '(')
				b = eventfmt.AppendEscaped(b, o.Comm)
				b = append(b, '/')
				b = strconv.AppendInt(b, int64(o.PID), 10)
				b = append(b, ')')
			}
		}
	}
	b = append(b, "  recv-q "...)
	b = strconv.AppendUint(b, uint64(w.RecvQ), 10)
	if t, ok := w.FIN(); ok {
		b = append(b, "  FIN "...)
		b = t.Local().AppendFormat(b, "15:04:05.000")
		b = append(b, " ("...)
		b = append(b, ago(now.Sub(t))...)
		b = append(b, ')')
	} else {
		b = append(b, "  FIN time unknown (in CLOSE-WAIT before the daemon started)"...)
	}
	b = append(b, "  began: "...)
	b = append(b, beganText(c)...)
	return append(b, '\n')
}

// beganText says how a connection began: "connect by 1234 curl at
// 15:04:05.000", or why that is unknown.
func beganText(c *table.Conn) string {
	switch c.Origin {
	case table.OriginConnect, table.OriginAccept:
		o := ownerOf(c)
		s := string(c.Origin) + " by " + taskText(o.PID, o.Comm)
		return s + " at " + c.Opened.Local().Format("15:04:05.000")
	case table.OriginBeforeStart:
		return "before the daemon started"
	}
	return "unknown (events were lost)"
}

// ago formats a duration for people, rounded to what matters.
func ago(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
	case d >= time.Hour:
		d = d.Round(time.Minute)
	case d >= time.Minute:
		d = d.Round(time.Second)
	default:
		d = d.Round(time.Millisecond)
	}
	return d.String() + " ago"
}

// CloseWaitJSON is a CLOSE-WAIT socket's JSON form (`sstrace closewait
// --json`, docs/JSON.md).
type CloseWaitJSON struct {
	// Group is the rank of the socket's group (1: the worst).
	Group int `json:"group"`
	table.SocketJSON
	// Since is when the peer's FIN arrived; null when unknown
	// (SinceUnknown), and then AgeSeconds is a lower bound.
	Since        *time.Time  `json:"since"`
	SinceUnknown bool        `json:"since_unknown,omitempty"`
	AgeSeconds   float64     `json:"age_seconds"`
	RecvQ        uint32      `json:"recvq"`
	Owners       []OwnerJSON `json:"owners"`
	// CgroupID, Cgroup and Container are the connection's owner's, as in
	// history; absent when unknown.
	CgroupID  uint64 `json:"cgroup_id,omitempty"`
	Cgroup    string `json:"cgroup,omitempty"`
	Container string `json:"container,omitempty"`
	// Origin, Opened and OpenedBy say how the connection began.
	Origin      string             `json:"origin"`
	Opened      time.Time          `json:"opened"`
	OpenedBy    *OwnerJSON         `json:"opened_by,omitempty"`
	Gap         bool               `json:"gap"`
	Transitions []table.Transition `json:"transitions"`
}

// OwnerJSON is a process holding (or having opened) a socket; FD is
// absent where unknown.
type OwnerJSON struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	FD   *int   `json:"fd,omitempty"`
}

// JSON returns w's JSON form; group is its group's rank.
func (w *CloseWait) JSON(group int, now time.Time) CloseWaitJSON {
	c := &w.Conn
	j := CloseWaitJSON{
		Group: group, SocketJSON: c.SocketJSON(),
		AgeSeconds: w.age(now).Seconds(), RecvQ: w.RecvQ,
		Owners: []OwnerJSON{}, Origin: string(c.Origin), Opened: c.Opened.UTC(),
		CgroupID: c.Owner.CgroupID, Cgroup: c.Cgroup, Container: c.Container,
		Gap: c.Gap, Transitions: c.Transitions,
	}
	if !w.Known {
		j.Origin = string(table.OriginUnknown)
	}
	if t, ok := w.FIN(); ok {
		t = t.UTC()
		j.Since = &t
	} else {
		j.SinceUnknown = true
	}
	for _, o := range w.Owners {
		fd := o.FD
		j.Owners = append(j.Owners, OwnerJSON{PID: o.PID, Comm: o.Comm, FD: &fd})
	}
	if c.Origin == table.OriginConnect || c.Origin == table.OriginAccept {
		if o := ownerOf(c); o.Known() {
			j.OpenedBy = &OwnerJSON{PID: int(o.PID), Comm: o.Comm}
		}
	}
	if j.Transitions == nil {
		j.Transitions = []table.Transition{}
	}
	return j
}

// AppendCloseWaitJSON appends one JSON line per socket, group by group,
// worst first.
func AppendCloseWaitJSON(b []byte, groups []Group, now time.Time) ([]byte, error) {
	for gi := range groups {
		for i := range groups[gi].Sockets {
			j, err := json.Marshal(groups[gi].Sockets[i].JSON(gi+1, now))
			if err != nil {
				return b, err
			}
			b = append(append(b, j...), '\n')
		}
	}
	return b, nil
}
