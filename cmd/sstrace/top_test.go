package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	tea "github.com/charmbracelet/bubbletea"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/testutil"
	"github.com/sstrace/sstrace/pkg/topui"
	"github.com/sstrace/sstrace/pkg/topview"
)

// tmuxTerm is a detached tmux session of its own server (-L), 120x40,
// running a plain sh: what a person at a terminal would see, read with
// capture-pane. sh (not bash) because it does no line editing of its own:
// if top left the terminal raw, the shell's next line would not be
// echoed or ended, and the tests would see it.
type tmuxTerm struct {
	t      *testing.T
	server string
}

func newTmux(t *testing.T) *tmuxTerm {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		testutil.Unavailable(t, "tmux is not installed (make deps-test installs it)")
	}
	tm := &tmuxTerm{t: t, server: fmt.Sprintf("sstrace-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))}
	tm.run("new-session", "-d", "-s", "top", "-x", "120", "-y", "40", "env PS1='$ ' sh")
	t.Cleanup(func() { exec.Command("tmux", "-L", tm.server, "kill-server").Run() })
	return tm
}

func (tm *tmuxTerm) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", tm.server}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// line types a shell command line and Enter.
func (tm *tmuxTerm) line(s string) {
	tm.t.Helper()
	tm.run("send-keys", "-t", "top", "-l", s)
	tm.run("send-keys", "-t", "top", "Enter")
}

// keys sends keys by tmux name (q, Escape, Enter, C-u).
func (tm *tmuxTerm) keys(k ...string) {
	tm.t.Helper()
	tm.run(append([]string{"send-keys", "-t", "top"}, k...)...)
}

// text types literal text.
func (tm *tmuxTerm) text(s string) {
	tm.t.Helper()
	tm.run("send-keys", "-t", "top", "-l", s)
}

func (tm *tmuxTerm) screen() string { return tm.run("capture-pane", "-p", "-t", "top") }

// waitFor polls the screen until ok accepts it; the test fails with the
// screen after timeout.
func (tm *tmuxTerm) waitFor(what string, timeout time.Duration, ok func(string) bool) string {
	tm.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := tm.screen()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("screen never showed %s within %v:\n%s", what, timeout, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (tm *tmuxTerm) waitText(timeout time.Duration, texts ...string) string {
	tm.t.Helper()
	return tm.waitFor(strings.Join(texts, " and "), timeout, func(s string) bool {
		for _, x := range texts {
			if !strings.Contains(s, x) {
				return false
			}
		}
		return true
	})
}

// restored checks that top gave the terminal back: the alternate screen
// is left, the exit status is on the normal screen after the command,
// and the shell reads, echoes and runs the next line.
func (tm *tmuxTerm) restored(exit int) string {
	tm.t.Helper()
	s := tm.waitText(15*time.Second, fmt.Sprintf("EXIT=%d", exit))
	if alt := strings.TrimSpace(tm.run("display-message", "-p", "-t", "top", "#{alternate_on}")); alt != "0" {
		tm.t.Errorf("alternate screen still on (%s) after top exited:\n%s", alt, s)
	}
	tm.line("echo restored-$((40+2))")
	tm.waitText(5*time.Second, "restored-42\n$")
	tm.line("clear")
	return s
}

// setThreadName names the calling thread (the comm the kernel reports for
// the sockets it opens): the test's processes get names of their own.
// Only for a locked thread the Go runtime then discards (testutil.NS.Do).
func setThreadName(name string) error {
	b := append([]byte(name), 0)
	return unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0)
}

// firstRow is the first row under a panel's header, its first word.
func firstRow(screen, header string) string {
	ls := strings.Split(screen, "\n")
	for i, l := range ls {
		if strings.HasPrefix(l, header) && i+1 < len(ls) {
			if f := strings.Fields(ls[i+1]); len(f) > 0 {
				return f[0]
			}
		}
	}
	return ""
}

// topLoad is the test's traffic in its namespace: a server "leaky-srv"
// that never closes what it accepts, an "echo-srv" that reads to EOF and
// closes, and the clients "churn-client" (connections to both, two of them
// reset with SO_LINGER 0) and "refuser" (connects to a closed port).
type topLoad struct {
	t                 *testing.T
	ns                *testutil.NS
	leakPort, echo    int
	mu                sync.Mutex
	keep              []io.Closer
	closedPort        int
	refused, accepted int
}

func newTopLoad(t *testing.T, ns *testutil.NS) *topLoad {
	l := &topLoad{t: t, ns: ns}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, c := range l.keep {
			c.Close()
		}
	})
	listen := func(name string, serve func(net.Conn)) int {
		var ln net.Listener
		if err := ns.Do(func() error {
			if err := setThreadName(name); err != nil {
				return err
			}
			var err error
			ln, err = testutil.ListenTCP4()
			return err
		}); err != nil {
			testutil.Unavailable(t, "listen in a namespace: %v", err)
		}
		l.hold(ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				serve(c)
			}
		}()
		return ln.Addr().(*net.TCPAddr).Port
	}
	l.leakPort = listen("leaky-srv", func(c net.Conn) { l.hold(c) })
	l.echo = listen("echo-srv", testutil.Drain)
	// A port nobody listens on: bound once, then closed.
	if err := ns.Do(func() error {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		l.closedPort = ln.Addr().(*net.TCPAddr).Port
		return ln.Close()
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *topLoad) hold(c io.Closer) {
	l.mu.Lock()
	l.keep = append(l.keep, c)
	l.mu.Unlock()
}

// clients makes leaks CLOSE-WAIT leaks, echoes orderly connections and
// resets reset ones, as churn-client.
func (l *topLoad) clients(leaks, echoes, resets int) {
	l.t.Helper()
	err := l.ns.Do(func() error {
		if err := setThreadName("churn-client"); err != nil {
			return err
		}
		dial := func(port int) (*net.TCPConn, error) {
			c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return nil, err
			}
			return c.(*net.TCPConn), nil
		}
		for i := 0; i < leaks; i++ {
			c, err := dial(l.leakPort)
			if err != nil {
				return err
			}
			c.Close() // the server never closes its side: CLOSE-WAIT
		}
		for i := 0; i < echoes+resets; i++ {
			c, err := dial(l.echo)
			if err != nil {
				return err
			}
			c.Write([]byte("hello"))
			if i >= echoes {
				time.Sleep(10 * time.Millisecond) // the server has read, and waits
				c.SetLinger(0)                    // close sends an RST: a reset
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		l.t.Fatal(err)
	}
}

// refuse makes n connects to the closed port, as refuser.
func (l *topLoad) refuse(n int) {
	l.t.Helper()
	err := l.ns.Do(func() error {
		if err := setThreadName("refuser"); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if _, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", l.closedPort)); err == nil {
				return fmt.Errorf("connect to closed port %d succeeded", l.closedPort)
			}
		}
		return nil
	})
	if err != nil {
		l.t.Fatal(err)
	}
}

// TestTopLive drives `sstrace top` against the daemon in tmux, as a person
// would: the screen shows the test namespace's sockets (counts, owners by
// the names their threads had, CLOSE-WAIT by owner, refused and reset
// connections); s re-sorts, p freezes the screen while connections go on,
// a filter narrows every panel and a malformed one is an error on the
// screen; q, SIGTERM and the daemon's going away all end top with the
// terminal restored, with exit 0, 0 and 1.
func TestTopLive(t *testing.T) {
	tm := newTmux(t)
	ns := testutil.NewNS(t)
	bin := sstraceBinary(t)
	d := startDaemon(t, bin)
	load := newTopLoad(t, ns)
	load.clients(3, 5, 2)
	load.refuse(4)

	topCmd := fmt.Sprintf("ip netns exec %s %s top --socket %s", ns.Name, bin, d.sock)
	tm.line(topCmd + "; echo EXIT=$?")
	s := tm.waitFor("the test's connections", 15*time.Second, func(s string) bool {
		return regexp.MustCompile(`(?m)^CLOSE-WAIT\s+3\b`).MatchString(s) &&
			regexp.MustCompile(`leaky-srv\[\d+\]\s+3\s`).MatchString(s) &&
			regexp.MustCompile(`refuser\[\d+\]\s+\S+\s+4\s+4\b`).MatchString(s) &&
			strings.Contains(s, "refused(peer)") && strings.Contains(s, "reset(")
	})
	t.Logf("the screen:\n%s", s)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`sstrace top · daemon .* · netns ` + strconv.FormatUint(ns.Inode, 10) + ` · sort: new`),
		regexp.MustCompile(`(?m)^LISTEN\s+2\b`),
		regexp.MustCompile(`churn-client\[\d+\]\s+\S+\s+10\s+2\b`),                         // 3+5+2 opened, 2 reset
		regexp.MustCompile(`127\.0\.0\.1:` + strconv.Itoa(load.echo) + `\s+\S+\s+7\s+2\b`), // the echo service: 7 opened, 2 reset
		regexp.MustCompile(`127\.0\.0\.1:` + strconv.Itoa(load.closedPort) + `\s+\S+\s+4\s+4\b`),
	} {
		if !want.MatchString(s) {
			t.Errorf("screen lacks %s:\n%s", want, s)
		}
	}
	if got := firstRow(s, "TOP OWNERS"); !strings.HasPrefix(got, "churn-client[") {
		t.Errorf("by new, the first owner is %q, want churn-client:\n%s", got, s)
	}

	// s: by failed, refuser (4 refused) leads.
	tm.keys("s")
	s = tm.waitText(5*time.Second, "sort: failed")
	if got := firstRow(s, "TOP OWNERS"); !strings.HasPrefix(got, "refuser[") {
		t.Errorf("by failed, the first owner is %q, want refuser:\n%s", got, s)
	}

	// p: the screen stands still while connections go on.
	tm.keys("p")
	paused := tm.waitText(5*time.Second, "PAUSED")
	load.refuse(3)
	time.Sleep(2500 * time.Millisecond) // two refreshes
	if now := tm.screen(); now != paused {
		t.Errorf("the paused screen changed:\nthen:\n%s\nnow:\n%s", paused, now)
	}
	tm.keys("p")
	tm.waitFor("refuser's 7 connections once resumed", 10*time.Second, func(s string) bool {
		return !strings.Contains(s, "PAUSED") && regexp.MustCompile(`refuser\[\d+\]\s+\S+\s+7\s+7\b`).MatchString(s)
	})

	// /: a filter narrows every panel to the echo server's port.
	tm.keys("/")
	tm.waitText(5*time.Second, "filter: ", "Enter applies")
	tm.text(fmt.Sprintf("dport = :%d", load.echo))
	tm.keys("Enter")
	s = tm.waitFor("the narrowed view", 10*time.Second, func(s string) bool {
		// The summary line's filter, not the footer's input line.
		return strings.Contains(s, fmt.Sprintf("filter: dport = :%d   tops over", load.echo)) && strings.Contains(s, "churn-client[")
	})
	for _, gone := range []string{"leaky-srv", "refuser", "refused(peer)", "echo-srv"} {
		if strings.Contains(s, gone) {
			t.Errorf("filtered on dport %d, the screen still shows %s:\n%s", load.echo, gone, s)
		}
	}
	if !regexp.MustCompile(`churn-client\[\d+\]\s+\S+\s+7\s+2\b`).MatchString(s) || !strings.Contains(s, "CLOSE-WAIT BY OWNER") ||
		!regexp.MustCompile(`(?m)^CLOSE-WAIT\s+0\b`).MatchString(s) {
		t.Errorf("filtered on dport %d: want churn-client's 7 connections there (2 reset), no CLOSE-WAIT:\n%s", load.echo, s)
	}

	// A malformed filter: the parser's message on the screen, the old
	// filter kept, top still running.
	tm.keys("/")
	tm.waitText(5*time.Second, "Enter applies")
	tm.keys("C-u")
	tm.text("dport = :80x")
	tm.keys("Enter")
	s = tm.waitText(5*time.Second, `bad port ":80x"`)
	if !strings.Contains(s, fmt.Sprintf("filter: dport = :%d   tops over", load.echo)) {
		t.Errorf("after a bad filter the view's filter changed:\n%s", s)
	}
	tm.keys("Escape")
	tm.waitText(5*time.Second, "q quit")

	// q: exit 0, terminal restored.
	tm.keys("q")
	tm.restored(0)

	// SIGTERM: the same.
	pidFile := filepath.Join(t.TempDir(), "top.pid")
	tm.line(fmt.Sprintf("sh -c 'echo $$ > %s; exec %s' ; echo EXIT=$?", pidFile, topCmd))
	tm.waitText(15*time.Second, "sstrace top · daemon")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	tm.restored(0)

	// The daemon goes away: top says so and exits 1, terminal restored.
	tm.line(topCmd + "; echo EXIT=$?")
	tm.waitText(15*time.Second, "sstrace top · daemon")
	var st struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(d.run(t, "status", "--socket", d.sock, "--json")), &st); err != nil || st.PID == 0 {
		t.Fatalf("daemon's pid: %v %+v", err, st)
	}
	if err := unix.Kill(st.PID, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s = tm.restored(1)
	if !strings.Contains(s, "sstrace: the sstrace daemon ended the stream") {
		t.Errorf("after the daemon stopped:\n%s", s)
	}
}

// TestTopStandalone runs top without a daemon: its own tracer and table
// show the namespace's refused connects as they happen.
func TestTopStandalone(t *testing.T) {
	tm := newTmux(t)
	ns := testutil.NewNS(t)
	bin := sstraceBinary(t)
	load := newTopLoad(t, ns)
	tm.line(fmt.Sprintf("ip netns exec %s %s top --socket %s; echo EXIT=$?", ns.Name, bin, filepath.Join(t.TempDir(), "none.sock")))
	tm.waitText(30*time.Second, "own tracer, hook ", "(no daemon at ", "LISTEN            2")
	deadline := time.Now().Add(15 * time.Second)
	for {
		load.refuse(1)
		s := tm.screen()
		if regexp.MustCompile(`refuser\[\d+\]`).MatchString(s) && strings.Contains(s, "refused(peer)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refused connects never shown:\n%s", s)
		}
		time.Sleep(300 * time.Millisecond)
	}
	tm.keys("C-c")
	tm.restored(0)
}

// topPanicHelper is the test binary run as a top whose model panics on
// the key x (SSTRACE_TEST_TOP_PANIC=1): the same program and exit path
// as sstrace top, with a model that breaks.
func init() {
	if os.Getenv("SSTRACE_TEST_TOP_PANIC") != "1" {
		return
	}
	m := topui.New(topui.Config{Source: "panic test", Scope: "none"})
	_, err := showTop(panicOnX{m}, func(p *tea.Program) {
		go p.Send(topui.SnapshotMsg{Snap: &topview.Snapshot{Time: time.Now(), States: map[string]int{"ESTAB": 1}}})
	})
	if err := topExit(m, err, nil); err != nil {
		fmt.Fprintln(os.Stderr, "sstrace:", err)
		os.Exit(err.(exitError).code)
	}
	os.Exit(0)
}

// panicOnX is the view's model with a bug: x panics.
type panicOnX struct{ *topui.Model }

func (p panicOnX) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	if k, ok := msg.(tea.KeyMsg); ok && k.String() == "x" {
		panic("a bug in the model")
	}
	_, cmd := p.Model.Update(msg)
	return p, cmd
}

// TestTopPanic: a panic in the model ends top with the terminal restored,
// the panic reported and exit status 2.
func TestTopPanic(t *testing.T) {
	tm := newTmux(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tm.line(fmt.Sprintf("SSTRACE_TEST_TOP_PANIC=1 %s; echo EXIT=$?", self))
	tm.waitText(15*time.Second, "sstrace top · panic test", "q quit")
	tm.keys("x")
	s := tm.restored(2)
	for _, want := range []string{"Caught panic", "a bug in the model", "sstrace: top: internal error"} {
		if !strings.Contains(s, want) {
			t.Errorf("after the panic the screen lacks %q:\n%s", want, s)
		}
	}
}
