package connfmt

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
)

var t0 = time.Date(2025, 1, 2, 15, 4, 5, 0, time.Local)

func conn(cookie uint64, peer string, origin table.Origin, fin time.Duration) table.Conn {
	c := table.Conn{
		Cookie: cookie, Family: 2, Local: netip.MustParseAddrPort("10.0.0.9:40000"),
		Peer: netip.MustParseAddrPort(peer), State: sock.CloseWait, Origin: origin, Opened: t0,
		Owner: event.Owner{PID: 7, Comm: "app"},
	}
	if origin == table.OriginConnect {
		c.Transitions = []table.Transition{
			{Time: t0, OldState: sock.Close, NewState: sock.SynSent, Context: event.ContextProcess, Task: &event.Task{PID: 7, Comm: "app"}},
			{Time: t0.Add(fin), OldState: sock.Established, NewState: sock.CloseWait, Context: event.ContextSoftirq},
		}
	}
	return c
}

func TestHistoryLine(t *testing.T) {
	c := conn(1, "10.0.0.1:80", table.OriginConnect, time.Second)
	c.State, c.Outcome, c.By = sock.Close, table.OutcomeClosed, table.SidePeer
	c.FullClosed = t0.Add(1500 * time.Millisecond)
	c.Final.BytesAcked, c.Final.BytesReceived = 4096, 10240
	got := string(AppendHistory(nil, &c, t0.Add(time.Hour), true))
	lines := strings.Split(got, "\n")
	want := "7       app              10.0.0.9        40000 10.0.0.1           80       4      10    1500.00 CLOSED       closed(peer)"
	if lines[0] != want {
		t.Errorf("line:\n%q\nwant\n%q", lines[0], want)
	}
	if !strings.Contains(lines[1], "+0.000ms") || !strings.Contains(lines[1], "CLOSE       -> SYN_SENT") || !strings.HasSuffix(lines[1], "process 7 app") {
		t.Errorf("timeline: %q", lines[1])
	}
	if len(strings.Fields(HistoryHeader)) != 11 {
		t.Errorf("header columns: %q", HistoryHeader)
	}
	open := conn(2, "10.0.0.1:80", table.OriginConnect, time.Second)
	open.Gap = true
	if l := string(AppendHistory(nil, &open, t0.Add(2*time.Second), false)); !strings.HasSuffix(l, "CLOSE_WAIT   -!\n") || !strings.Contains(l, "2000.00") {
		t.Errorf("open line: %q", l)
	}
}

func TestGroupCloseWait(t *testing.T) {
	ws := []CloseWait{
		{Conn: conn(1, "10.0.0.2:443", table.OriginBeforeStart, 0), Owners: []sock.Process{{PID: 9, Comm: "old", FD: 3}}},
		{Conn: conn(2, "10.0.0.1:80", table.OriginConnect, 2*time.Second), Owners: []sock.Process{{PID: 7, Comm: "app", FD: 5}}},
		{Conn: conn(3, "10.0.0.1:80", table.OriginConnect, time.Second), Owners: []sock.Process{{PID: 7, Comm: "app", FD: 6}}},
	}
	g := GroupCloseWait(ws)
	if len(g) != 2 || len(g[0].Sockets) != 2 || g[0].Comm != "app" || g[0].Port != 80 || g[0].Sockets[0].Conn.Cookie != 3 {
		t.Fatalf("groups: %+v", g)
	}
	now := t0.Add(time.Minute)
	text := string(AppendCloseWait(nil, g, now))
	if !strings.HasPrefix(text, "app (pid 7): 2 sockets in CLOSE-WAIT to 10.0.0.1:80, oldest FIN 59s ago\n") ||
		!strings.Contains(text, "began: connect by 7 app at") ||
		!strings.Contains(text, "old (pid 9): 1 socket in CLOSE-WAIT to 10.0.0.2:443, oldest FIN at least 1m0s ago") ||
		!strings.Contains(text, "FIN time unknown") {
		t.Errorf("text:\n%s", text)
	}
	j := g[1].Sockets[0].JSON(2, now)
	if j.Since != nil || !j.SinceUnknown || j.AgeSeconds != 60 || len(j.Owners) != 1 || *j.Owners[0].FD != 3 {
		t.Errorf("json: %+v", j)
	}
}

// TestHistoryJSONMatchesConnJSON: the hand-written JSON of history is
// byte for byte what encoding/json makes of table.ConnJSON (the documented
// shape), for open and closed connections, with and without tasks, with a
// name that needs escaping.
func TestHistoryJSONMatchesConnJSON(t *testing.T) {
	open := conn(1, "10.0.0.1:80", table.OriginConnect, time.Second)
	open.Owner.Comm = "a\"b\\\x1b\n"
	closed := conn(2, "[2001:db8::1]:443", table.OriginAccept, 1500*time.Microsecond)
	closed.Family = 10
	closed.Local = netip.MustParseAddrPort("[2001:db8::2]:40000")
	closed.State, closed.Outcome, closed.By, closed.Gap = sock.Close, table.OutcomeReset, table.SidePeer, true
	closed.FullClosed = t0.Add(1234567 * time.Nanosecond)
	closed.Final = event.Final{BytesAcked: 1 << 40, BytesReceived: 3, Retrans: 2, SRTT: 1500 * time.Microsecond}
	tw := conn(3, "10.0.0.1:80", table.OriginBeforeStart, 0)
	tw.State, tw.Minisocket = sock.TimeWait, true
	contained := conn(4, "10.0.0.1:80", table.OriginConnect, time.Second)
	contained.Owner.CgroupID = 4321
	contained.Cgroup, contained.Container = "/system.slice/docker-"+containerID+".scope", containerID
	unnamed := conn(5, "10.0.0.1:80", table.OriginConnect, time.Second)
	unnamed.Owner.CgroupID = 99 // its path was never found
	now := t0.Add(90 * time.Minute)
	for _, c := range []table.Conn{open, closed, tw, contained, unnamed} {
		got, err := AppendHistoryJSON(nil, &c, now)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(c.JSON(now))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want)+"\n" {
			t.Errorf("connection %d:\n got %s\nwant %s", c.Cookie, got, want)
		}
	}
}

// containerID is a container id of the usual shape.
const containerID = "4f2a9c0e1b3d5f7a9c0e1b3d5f7a9c0e1b3d5f7a9c0e1b3d5f7a9c0e1b3d5f7a"

// TestContainers: history -v names the owner's cgroup and container;
// closewait groups by container too, says it in each group's header and
// ends with the count by container; cgroup paths, which whoever may make
// a cgroup names, are escaped.
func TestContainers(t *testing.T) {
	c := conn(1, "10.0.0.1:80", table.OriginConnect, time.Second)
	c.Owner.CgroupID = 4321
	c.Cgroup, c.Container = "/kubepods/burstable/pod1/"+containerID, containerID
	hist := strings.Split(string(AppendHistory(nil, &c, t0.Add(time.Hour), true)), "\n")
	if want := "        cgroup /kubepods/burstable/pod1/" + containerID + " container 4f2a9c0e1b3d"; hist[1] != want {
		t.Errorf("history -v cgroup line:\n%q\nwant\n%q", hist[1], want)
	}
	unnamed := conn(2, "10.0.0.1:80", table.OriginConnect, time.Second)
	unnamed.Owner.CgroupID = 99
	unnamed.Cgroup = "/x\n\x1b[31m"
	if l := strings.Split(string(AppendHistory(nil, &unnamed, t0, true)), "\n")[1]; l != `        cgroup /x\n\x1b[31m` {
		t.Errorf("escaped cgroup line: %q", l)
	}
	unnamed.Cgroup = ""
	if l := strings.Split(string(AppendHistory(nil, &unnamed, t0, true)), "\n")[1]; l != "        cgroup id 99" {
		t.Errorf("unresolved cgroup line: %q", l)
	}
	plain := conn(3, "10.0.0.1:80", table.OriginConnect, time.Second)
	if l := strings.Split(string(AppendHistory(nil, &plain, t0, true)), "\n")[1]; strings.Contains(l, "cgroup") {
		t.Errorf("no cgroup known, yet: %q", l)
	}

	other := conn(4, "10.0.0.1:80", table.OriginConnect, 2*time.Second)
	ws := []CloseWait{
		{Conn: c, Owners: []sock.Process{{PID: 7, Comm: "app", FD: 5}}},
		{Conn: other, Owners: []sock.Process{{PID: 7, Comm: "app", FD: 6}}},
		{Conn: c, Owners: []sock.Process{{PID: 7, Comm: "app", FD: 8}}},
	}
	g := GroupCloseWait(ws)
	if len(g) != 2 || g[0].Container != containerID || len(g[0].Sockets) != 2 || g[1].Container != "" {
		t.Fatalf("groups: %+v", g)
	}
	text := string(AppendCloseWait(nil, g, t0.Add(time.Minute)))
	if !strings.HasPrefix(text, "app (pid 7, container 4f2a9c0e1b3d): 2 sockets in CLOSE-WAIT to 10.0.0.1:80") ||
		!strings.Contains(text, "\napp (pid 7): 1 socket in CLOSE-WAIT") ||
		!strings.HasSuffix(text, "\nCLOSE-WAIT by container:\n         2  4f2a9c0e1b3d /kubepods/burstable/pod1/"+containerID+"\n         1  (no container known)\n") {
		t.Errorf("closewait:\n%s", text)
	}
	j := g[0].Sockets[0].JSON(1, t0)
	if j.CgroupID != 4321 || j.Cgroup != c.Cgroup || j.Container != containerID {
		t.Errorf("closewait JSON: %+v", j)
	}
	if plain := string(AppendCloseWait(nil, GroupCloseWait(ws[1:2]), t0)); strings.Contains(plain, "container") {
		t.Errorf("no container, yet:\n%s", plain)
	}
}

// evil is a process name any process can give itself: a newline and a
// terminal escape sequence.
const evil = "x\n\x1b[31mZ"

// noControl fails when text has a control byte other than the line ends.
func noControl(t *testing.T, what, text string) {
	t.Helper()
	for _, r := range text {
		if (r < 0x20 && r != '\n') || r == 0x7f {
			t.Errorf("%s: raw %U in %q", what, r, text)
		}
	}
}

// TestHumanFormsEscapeComm: history lines, their timeline and the
// CLOSE-WAIT report print process names escaped, each line still one line.
func TestHumanFormsEscapeComm(t *testing.T) {
	const escaped = `x\n\x1b[31mZ`
	c := conn(1, "10.0.0.1:80", table.OriginConnect, time.Second)
	c.Owner.Comm = evil
	c.Transitions[0].Task.Comm = evil
	hist := string(AppendHistory(nil, &c, t0.Add(time.Hour), true))
	noControl(t, "history", hist)
	lines := strings.Split(strings.TrimSuffix(hist, "\n"), "\n")
	if len(lines) != 3 || strings.Fields(lines[0])[1] != escaped || strings.Fields(lines[0])[2] != "10.0.0.9" ||
		!strings.HasSuffix(lines[1], "process 7 "+escaped) {
		t.Errorf("history -v:\n%s", hist)
	}

	ws := []CloseWait{
		{Conn: c, Owners: []sock.Process{{PID: 7, Comm: evil, FD: 5}, {PID: 8, Comm: evil, FD: 6}}},
	}
	text := string(AppendCloseWait(nil, GroupCloseWait(ws), t0.Add(time.Minute)))
	noControl(t, "closewait", text)
	if !strings.HasPrefix(text, escaped+" (pid 7): 1 socket in CLOSE-WAIT") ||
		!strings.Contains(text, "fd 5("+escaped+"/7),6("+escaped+"/8)") ||
		!strings.Contains(text, "began: connect by 7 "+escaped+" at") ||
		strings.Count(text, "\n") != 2 {
		t.Errorf("closewait:\n%s", text)
	}
}
