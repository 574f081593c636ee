package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/ssquery"
	"github.com/sstrace/sstrace/pkg/table"
)

// synth builds a table in this process's network namespace, seeded with
// one socket already in CLOSE-WAIT (cookie 300) and fed events by hand:
// two connections of "client" (pid 111) to 10.0.0.1:80 that the peer
// closed (CLOSE-WAIT, cookies 100 and 101), and one refused connect
// (cookie 200).
type synth struct {
	tbl   *table.Table
	ns    uint64
	mono  time.Duration
	wall  time.Time
	start time.Time
}

func monoNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

func newSynth(t testing.TB) *synth {
	t.Helper()
	ino, err := netns.Namespace{}.Inode()
	if err != nil {
		t.Fatalf("own namespace: %v", err)
	}
	s := &synth{tbl: table.New(table.Options{}), ns: ino, mono: monoNow(), wall: time.Now()}
	s.start = s.wall
	s.tbl.BeginSeed()
	s.tbl.Seed([]*sock.Socket{{
		Proto: sock.ProtoTCP, Family: unix.AF_INET, State: sock.CloseWait, NetNS: ino,
		Local: netip.MustParseAddrPort("10.0.0.9:5000"), Peer: netip.MustParseAddrPort("10.0.0.2:443"),
		Cookie: 300, Inode: 0,
	}}, nil)
	s.tbl.EndSeed()
	client := event.Task{PID: 111, TID: 111, UID: 1000, Comm: "client"}
	for i, c := range []uint64{100, 101} {
		local := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), uint16(40000+i))
		peer := netip.MustParseAddrPort("10.0.0.1:80")
		s.apply(c, local, peer, sock.Close, sock.SynSent, event.ContextProcess, client, event.Final{})
		s.apply(c, local, peer, sock.SynSent, sock.Established, event.ContextSoftirq, event.Task{}, event.Final{})
		s.apply(c, local, peer, sock.Established, sock.CloseWait, event.ContextSoftirq, event.Task{}, event.Final{})
	}
	local := netip.MustParseAddrPort("10.0.0.9:40100")
	peer := netip.MustParseAddrPort("10.0.0.3:81")
	s.apply(200, local, peer, sock.Close, sock.SynSent, event.ContextProcess, client, event.Final{})
	s.apply(200, local, peer, sock.SynSent, sock.Close, event.ContextSoftirq, event.Task{}, event.Final{Err: uint16(unix.ECONNREFUSED)})
	return s
}

// apply feeds one event, 1 ms after the previous one.
func (s *synth) apply(cookie uint64, local, peer netip.AddrPort, old, nw sock.State, ctx event.Context, task event.Task, fin event.Final) {
	s.mono += time.Millisecond
	s.wall = s.wall.Add(time.Millisecond)
	e := event.Event{
		Time: s.wall, Mono: s.mono, Cookie: cookie, CookieSource: event.CookieHelper, Sock: cookie << 8,
		NetNS: s.ns, Family: unix.AF_INET, Local: local, Peer: peer, OldState: old, NewState: nw,
		Task: task, Context: ctx, Final: fin, Hook: event.HookTPBTF,
	}
	s.tbl.Apply(&e)
}

// serve starts a server on a socket in a temporary directory.
func serve(t *testing.T, tbl *table.Table) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "sstrace.sock")
	srv, err := Listen(Config{
		Path: path, Group: -1, Table: tbl,
		Status: func() Status { return Status{Hook: "tp_btf", Kernel: "test", EventsPerSecond: 1.5} },
		Events: func(buf int) *table.Subscription { return tbl.Subscribe(true, false, buf) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("socket file left behind: %v", err)
		}
	})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	return path
}

// ask runs one request and returns stdout, stderr and the result.
func ask(t *testing.T, path string, req Request) (string, string, Result) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Do(ctx, path, req, &out, &errb)
	if err != nil {
		t.Fatalf("%s: %v", req.Op, err)
	}
	return out.String(), errb.String(), res
}

func TestServerStatus(t *testing.T) {
	s := newSynth(t)
	path := serve(t, s.tbl)
	out, _, res := ask(t, path, Request{Op: OpStatus, JSON: true})
	if res.Exit != 0 {
		t.Fatalf("status exit %d: %s", res.Exit, res.Error)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"seeded", "events", "lost", "caught", "reseeds", "corrections", "hook", "kernel", "sockets", "retained", "memory_bytes", "events_per_second"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status JSON lacks %q: %s", k, out)
		}
	}
	if m["seeded"] != true || m["hook"] != "tp_btf" || m["events"].(float64) != 8 {
		t.Errorf("status: %s", out)
	}
	out, _, _ = ask(t, path, Request{Op: OpStatus})
	if !strings.Contains(out, "seeded:       yes") || !strings.Contains(out, "CLOSE_WAIT 3") {
		t.Errorf("status text:\n%s", out)
	}

	// Before the seed: exit 1, so that scripts can wait.
	path2 := serve(t, table.New(table.Options{}))
	_, _, res = ask(t, path2, Request{Op: OpStatus})
	if res.Exit != 1 {
		t.Errorf("unseeded status exit %d", res.Exit)
	}
}

func TestServerHistoryJSON(t *testing.T) {
	s := newSynth(t)
	path := serve(t, s.tbl)
	out, errOut, res := ask(t, path, Request{Op: OpHistory, JSON: true})
	if res.Exit != 0 {
		t.Fatalf("exit %d: %s %s", res.Exit, res.Error, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d connections, want 4:\n%s", len(lines), out)
	}
	keys := []string{"cookie", "netns", "family", "saddr", "sport", "daddr", "dport", "state", "pid", "comm",
		"opened", "closed", "outcome", "bytes_sent", "bytes_received", "retrans", "rtt_us", "gap", "transitions"}
	byCookie := map[float64]map[string]any{}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				t.Errorf("history JSON lacks %q: %s", k, l)
			}
		}
		byCookie[m["cookie"].(float64)] = m
	}
	refused := byCookie[200]
	if refused["outcome"] != "refused" || refused["state"] != "CLOSED" || refused["comm"] != "client" {
		t.Errorf("refused connect: %v", refused)
	}
	tr := refused["transitions"].([]any)
	if len(tr) != 2 || tr[0].(map[string]any)["newstate"] != "SYN_SENT" || tr[0].(map[string]any)["pid"].(float64) != 111 {
		t.Errorf("transitions: %v", tr)
	}

	// The filter language selects; "closed" is the state of the gone.
	out, _, _ = ask(t, path, Request{Op: OpHistory, JSON: true, Args: []string{"state", "closed"}})
	if n := strings.Count(out, "\n"); n != 1 || !strings.Contains(out, `"cookie":200`) {
		t.Errorf("state closed: %s", out)
	}
	out, _, _ = ask(t, path, Request{Op: OpHistory, Args: []string{"dport", "=", ":80"}, Verbose: true})
	if strings.Count(out, "10.0.0.1") != 2 || !strings.Contains(out, "SYN_SENT    -> ESTABLISHED") || !strings.HasPrefix(out, "PID ") {
		t.Errorf("dport = :80 -v:\n%s", out)
	}
	_, _, res = ask(t, path, Request{Op: OpHistory, Args: []string{"dport", "="}})
	if res.Exit == 0 || !strings.Contains(res.Error, "filter") {
		t.Errorf("bad filter: %+v", res)
	}
}

func TestServerCloseWait(t *testing.T) {
	s := newSynth(t)
	path := serve(t, s.tbl)
	out, _, res := ask(t, path, Request{Op: OpCloseWait, JSON: true})
	if res.Exit != 0 {
		t.Fatalf("exit %d: %s", res.Exit, res.Error)
	}
	var got []CloseWaitLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var j CloseWaitLine
		if err := json.Unmarshal([]byte(l), &j); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		got = append(got, j)
	}
	if len(got) != 3 {
		t.Fatalf("%d sockets, want 3:\n%s", len(got), out)
	}
	// The group of two (client -> 10.0.0.1:80) comes first.
	if got[0].Group != 1 || got[1].Group != 1 || got[2].Group != 2 || got[0].Dport != 80 || got[2].Cookie != 300 {
		t.Errorf("grouping: %+v", got)
	}
	if got[0].Since == nil || got[0].Origin != "connect" || got[0].OpenedBy == nil || got[0].OpenedBy.Comm != "client" {
		t.Errorf("known FIN: %+v", got[0])
	}
	if got[2].Since != nil || !got[2].SinceUnknown || got[2].Origin != "before-start" {
		t.Errorf("seeded socket: %+v", got[2])
	}
	for _, k := range []string{"cookie", "netns", "saddr", "sport", "daddr", "dport", "since", "age_seconds", "recvq", "owners", "transitions", "origin", "opened"} {
		if !strings.Contains(out, `"`+k+`":`) {
			t.Errorf("closewait JSON lacks %q", k)
		}
	}
	out, _, _ = ask(t, path, Request{Op: OpCloseWait})
	if !strings.HasPrefix(out, "owner unknown: 2 sockets in CLOSE-WAIT to 10.0.0.1:80") || !strings.Contains(out, "FIN time unknown") {
		t.Errorf("closewait text:\n%s", out)
	}
}

// CloseWaitLine is the part of a closewait JSON line the tests check.
type CloseWaitLine struct {
	Group        int        `json:"group"`
	Cookie       uint64     `json:"cookie"`
	Dport        uint16     `json:"dport"`
	Since        *time.Time `json:"since"`
	SinceUnknown bool       `json:"since_unknown"`
	Origin       string     `json:"origin"`
	OpenedBy     *struct {
		Comm string `json:"comm"`
	} `json:"opened_by"`
}

func TestServerSSAt(t *testing.T) {
	s := newSynth(t)
	path := serve(t, s.tbl)
	at := s.wall.Add(time.Millisecond)
	out, errOut, res := ask(t, path, Request{Op: OpSS, Args: []string{"--tcp=true", "--all=true", "--numeric=true", "--"}, At: at})
	if res.Exit != 0 {
		t.Fatalf("exit %d: %s %s", res.Exit, res.Error, errOut)
	}
	if strings.Count(out, "CLOSE-WAIT") != 3 || !strings.Contains(out, "10.0.0.1:80") || strings.Contains(out, "10.0.0.3:81") {
		t.Errorf("ss -tan at the end:\n%s", out)
	}
	// Between the refused connect's SYN and its end: SYN-SENT.
	mid := s.start.Add(7*time.Millisecond + 500*time.Microsecond)
	out, _, _ = ask(t, path, Request{Op: OpSS, Args: []string{"--tcp=true", "--all=true", "--numeric=true", "--", "dport", "=", ":81"}, At: mid})
	if !strings.Contains(out, "SYN-SENT") || !strings.Contains(out, "10.0.0.3:81") {
		t.Errorf("ss at %v:\n%s", mid, out)
	}
	// Before the seed: an error.
	_, _, res = ask(t, path, Request{Op: OpSS, Args: []string{"-t"}, At: s.start.Add(-time.Hour)})
	if res.Exit == 0 || !strings.Contains(res.Error, "seeded") {
		t.Errorf("before start: %+v", res)
	}
}

// TestServerSSLive: a live query through the daemon prints what the engine
// prints in this namespace.
func TestServerSSLive(t *testing.T) {
	s := newSynth(t)
	path := serve(t, s.tbl)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	args := []string{"--tcp=true", "--listening=true", "--numeric=true", "--"}
	var o ssquery.Options
	o.Selection.Table(ssquery.TCP)
	o.Selection.Listening()
	o.Numeric = true
	// Other programs on the host may open or close listeners between the
	// two dumps: a few tries.
	var out string
	for try := 0; ; try++ {
		var errOut string
		var res Result
		out, errOut, res = ask(t, path, Request{Op: OpSS, Args: args})
		if res.Exit != 0 {
			t.Fatalf("exit %d: %s %s", res.Exit, res.Error, errOut)
		}
		var want bytes.Buffer
		if err := ssquery.Run(context.Background(), &want, os.Stderr, o, nil, ssquery.LiveSource{}); err != nil {
			t.Fatal(err)
		}
		if out == want.String() {
			break
		}
		if try == 4 {
			t.Fatalf("daemon:\n%s\nlocal:\n%s", out, want.String())
		}
	}
	if !strings.Contains(out, ln.Addr().String()) {
		t.Errorf("listener %s missing:\n%s", ln.Addr(), out)
	}
}

// TestServerSSRefusesLocalOptions checks that the options that cannot work
// through the daemon are refused with a line that says what to run instead.
func TestServerSSRefusesLocalOptions(t *testing.T) {
	s := newSynth(t)
	path := serve(t, s.tbl)
	for _, c := range []struct{ arg, want string }{
		{"--events=true", "ss: -E is not served by the daemon: run sstrace ss -E yourself"},
		{"--diag=/tmp/x", "ss: -D is not served by the daemon"},
		{"--threads=true", "ss: -T is not served by the daemon"},
	} {
		_, _, res := ask(t, path, Request{Op: OpSS, Args: []string{"--tcp=true", c.arg, "--"}})
		if res.Exit != 1 || !strings.HasPrefix(res.Error, c.want) {
			t.Errorf("%s: exit %d, error %q; want 1 and %q", c.arg, res.Exit, res.Error, c.want)
		}
	}
}

func TestServerTraceAndLimits(t *testing.T) {
	s := newSynth(t)
	path := serve(t, s.tbl)
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := Do(ctx, path, Request{Op: OpTrace, JSON: true}, &out, os.Stderr)
		done <- err
	}()
	// Events applied after the subscription are streamed.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), `"cookie":500`) && time.Now().Before(deadline) {
		s.apply(500, netip.MustParseAddrPort("10.0.0.9:40500"), netip.MustParseAddrPort("10.0.0.5:80"),
			sock.Close, sock.SynSent, event.ContextProcess, event.Task{PID: 7, UID: 0, Comm: "x"}, event.Final{})
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("trace ended with %v", err)
	}
	if !strings.Contains(out.String(), `"newstate":"SYN_SENT"`) {
		t.Errorf("trace output: %s", out.String())
	}

	// An over-long request gets an error frame.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Write(bytes.Repeat([]byte("x"), MaxRequestBytes+10))
	var f Frame
	if err := json.NewDecoder(c).Decode(&f); err != nil || f.Exit == nil || !strings.Contains(f.Error, "longer") {
		t.Errorf("long request: %+v %v", f, err)
	}

	// A missing daemon is one clear error.
	_, err = Do(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Request{Op: OpStatus}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "no sstrace daemon at") {
		t.Errorf("missing daemon: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
