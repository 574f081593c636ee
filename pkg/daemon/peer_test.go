package daemon

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestPeerFilter: a caller who is not root sees its own processes only,
// its own namespace only, and may not ask for all of them.
func TestPeerFilter(t *testing.T) {
	p := &Peer{PID: 1, UID: 1000, NetNS: 42}
	if p.Owner(event.Owner{PID: 5, UID: 0, Comm: "sshd"}).Known() {
		t.Error("root's process shown to uid 1000")
	}
	if o := p.Owner(event.Owner{PID: 6, UID: 1000, Comm: "curl"}); o.Comm != "curl" {
		t.Error("own process hidden")
	}
	if p.Task(&event.Task{PID: 5, UID: 0}) != nil || p.Task(&event.Task{PID: 6, UID: 1000}) == nil {
		t.Error("task filter")
	}
	// pid 1 runs as root: hidden from uid 1000, shown to root.
	procs := []sock.Process{{PID: 1, Comm: "init", FD: 3}}
	if len(p.Processes(procs)) != 0 {
		t.Error("pid 1 shown to uid 1000")
	}
	if len((&Peer{UID: 0}).Processes(procs)) != 1 {
		t.Error("pid 1 hidden from root")
	}
	e := event.Event{Owner: event.Owner{PID: 5, UID: 0, Comm: "sshd"}, Task: event.Task{PID: 5, UID: 0, Comm: "sshd"}, Context: event.ContextProcess}
	p.Event(&e)
	if e.Owner.Known() || e.Task.PID != 0 || e.Context != event.ContextProcess {
		t.Errorf("event not blanked: %+v", e)
	}
	const container = "4f2a9c0e1b3d5f7a9c0e1b3d5f7a9c0e1b3d5f7a9c0e1b3d5f7a9c0e1b3d5f7a"
	c := table.Conn{Owner: event.Owner{PID: 5, UID: 0, Comm: "sshd", CgroupID: 9}, Transitions: []table.Transition{{Task: &event.Task{PID: 5}}},
		State: sock.Established, Cgroup: "/docker/" + container, Container: container}
	// A filter on the owner's container does not tell uid 1000 where
	// root's process runs.
	for who, want := range map[*Peer]bool{p: false, {UID: 0}: true} {
		match, err := connFilter(who, []string{"container", container[:12]})
		if err != nil {
			t.Fatal(err)
		}
		if got := match(&c); got != want {
			t.Errorf("uid %d: container filter on root's connection: %v, want %v", who.UID, got, want)
		}
	}
	orig := c
	c = *visibleConn(p, &orig)
	if c.Owner.Known() || c.Transitions[0].Task != nil || c.Cgroup != "" || c.Container != "" || c.Owner.CgroupID != 0 {
		t.Errorf("connection not blanked: %+v", c)
	}
	// A subscription hands the same Conn to every subscriber: the
	// original stays whole.
	if !orig.Owner.Known() || orig.Transitions[0].Task == nil || orig.Container == "" {
		t.Errorf("visibleConn changed the connection it was given: %+v", orig)
	}

	if _, err := p.scope(&Request{AllNetNS: true}); err == nil {
		t.Error("all_netns allowed to uid 1000")
	}
	if _, err := p.scope(&Request{NetNS: 7}); err == nil {
		t.Error("another namespace allowed to uid 1000")
	}
	if ns, err := p.scope(&Request{}); err != nil || ns != 42 {
		t.Errorf("own namespace: %d %v", ns, err)
	}
	root := &Peer{UID: 0, NetNS: 42}
	if ns, err := root.scope(&Request{AllNetNS: true}); err != nil || ns != 0 {
		t.Errorf("root all_netns: %d %v", ns, err)
	}
	if ns, _ := root.scope(&Request{}); ns != 42 {
		t.Errorf("root's default is its namespace, got %d", ns)
	}
}

// TestNonRootClient runs a real client as uid/gid 65534 (the socket's
// group): it is served, sees no process of root's, and all_netns is
// refused.
func TestNonRootClient(t *testing.T) {
	if os.Getenv("SSTRACE_DAEMON_TEST_CLIENT") != "" {
		t.Skip("client half")
	}
	testutil.RequireRoot(t)
	dir, err := os.MkdirTemp("", "sstrace-daemon-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	s := newSynth(t)
	path := filepath.Join(dir, "sstrace.sock")
	srv, err := Listen(Config{Path: path, Group: 65534, Table: s.tbl})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	// The test binary sits in a directory only root can enter: copy it.
	bin := filepath.Join(dir, "client.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(req Request) (string, string) {
		b, _ := json.Marshal(req)
		cmd := exec.Command(bin, "-test.run=^TestClientHelper$")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "SSTRACE_DAEMON_TEST_CLIENT="+path, "SSTRACE_DAEMON_TEST_REQ="+string(b))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client: %v\n%s", err, out)
		}
		o, e, _ := strings.Cut(string(out), "\x00RESULT\x00")
		return o, e
	}
	out, res := run(Request{Op: OpHistory, JSON: true})
	if !strings.Contains(res, `"Exit":0`) || strings.Count(out, `"cookie"`) != 4 {
		t.Fatalf("history as uid 65534: %s\n%s", res, out)
	}
	// The synthetic owner runs as uid 1000: not the caller's.
	if strings.Contains(out, `"comm":"client"`) {
		t.Errorf("uid 65534 sees uid 1000's process:\n%s", out)
	}
	_, res = run(Request{Op: OpHistory, AllNetNS: true})
	if !strings.Contains(res, "only root") {
		t.Errorf("all_netns as uid 65534: %s", res)
	}
	out, res = run(Request{Op: OpSS, Args: []string{"--tcp=true", "--all=true", "--processes=true", "--"}})
	if !strings.Contains(res, `"Exit":0`) || strings.Contains(out, "pid=1,") {
		t.Errorf("ss -tap as uid 65534: %s\n%s", res, out)
	}
}

// TestClientHelper is the client half of TestNonRootClient.
func TestClientHelper(t *testing.T) {
	path := os.Getenv("SSTRACE_DAEMON_TEST_CLIENT")
	if path == "" {
		t.Skip("run by TestNonRootClient")
	}
	var req Request
	if err := json.Unmarshal([]byte(os.Getenv("SSTRACE_DAEMON_TEST_REQ")), &req); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res, err := Do(context.Background(), path, req, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	os.Stdout.WriteString(out.String() + "\x00RESULT\x00" + string(b) + "\n")
}
