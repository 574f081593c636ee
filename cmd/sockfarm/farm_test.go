package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestMain lets the test binary stand in for sockfarm: re-executed with a
// worker plan it is a worker, with mainEnv it is the command itself.
func TestMain(m *testing.M) {
	if plan, ok := os.LookupEnv(workerEnv); ok {
		if err := runWorker(plan, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "sockfarm:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(mainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const mainEnv = "SOCKFARM_TEST_MAIN"

// ssStates counts the sockets of `ss -N ns -tan` by their State label: the
// real ss is the ground truth for what the farm built.
func ssStates(t *testing.T, netns string) map[string]int {
	t.Helper()
	out, err := exec.Command("ss", "-N", netns, "-tanH").Output()
	if err != nil {
		t.Fatalf("ss -N %s -tanH: %v", netns, err)
	}
	c := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			c[f[0]]++
		}
	}
	return c
}

func requireSS(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ss"); err != nil {
		testutil.Unavailable(t, "ss (iproute2) not installed")
	}
}

func TestFarmBuildsWhatSSSees(t *testing.T) {
	testutil.RequireRoot(t)
	requireSS(t)
	ns := testutil.NewNS(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o := defaultOptions()
	o.Netns = ns.Name
	o.Total = 3000
	o.ListenPct, o.EstabPct, o.CloseWaitPct, o.TimeWaitPct = 2, 58, 10, 30
	o.MaxFDs = 700 // forces several workers at a size a test can afford
	o.Batch = 50
	f, err := startFarm(o, exe, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.stop()
	if len(f.workers) < 3 {
		t.Fatalf("%d workers; the plan needs at least 3 for %d files at --max-fds %d", len(f.workers), split(o).FDs(), o.MaxFDs)
	}
	c, err := f.settle(t.Context(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"LISTEN": 60, "ESTAB": 1740, "CLOSE-WAIT": 300, "TIME-WAIT": 900}
	got := ssStates(t, ns.Name)
	for label, n := range want {
		if got[label] != n {
			t.Errorf("ss shows %d %s, want %d (all: %v)", got[label], label, n, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("ss shows states beyond the mix: %v", got)
	}
	if c.Total() != 3000 || c.Transient() != 0 {
		t.Errorf("sock_diag count %s (total %d), want 3000 settled", c, c.Total())
	}
	for _, w := range f.workers {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", w.report.PID))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) > o.MaxFDs+fdHeadroom {
			t.Errorf("worker %d holds %d files, over %d+%d", w.plan.Index, len(ents), o.MaxFDs, fdHeadroom)
		}
		if w.report.FDs != w.plan.Mix.FDs() {
			t.Errorf("worker %d reports %d sockets held, planned %d", w.plan.Index, w.report.FDs, w.plan.Mix.FDs())
		}
	}

	// The kernel expires TIME-WAIT entries after 60 s, too long to wait
	// for here; raising the target by hand exercises the same top-up.
	f.target.TimeWait += 40
	n, err := f.topUpTimeWait()
	if err != nil {
		t.Fatal(err)
	}
	if n != 40 {
		t.Errorf("top-up added %d, want 40", n)
	}
	if got := ssStates(t, ns.Name)["TIME-WAIT"]; got != 940 {
		t.Errorf("after top-up ss shows %d TIME-WAIT, want 940", got)
	}
	if n, err := f.topUpTimeWait(); err != nil || n != 0 {
		t.Errorf("second top-up with nothing missing: added %d, err %v", n, err)
	}

	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	after := ssStates(t, ns.Name)
	for _, label := range []string{"LISTEN", "ESTAB", "CLOSE-WAIT"} {
		if after[label] != 0 {
			t.Errorf("after stop ss still shows %d %s", after[label], label)
		}
	}
}

func TestFarmRefusesABusyNetns(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o := defaultOptions()
	o.Netns = ns.Name
	o.Total = 200
	f, err := startFarm(o, exe, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.stop()
	if g, err := startFarm(o, exe, os.Stderr); err == nil {
		g.stop()
		t.Fatal("second farm in the same netns started")
	} else if !strings.Contains(err.Error(), "already holds") {
		t.Errorf("err = %v, want it to say the netns already holds sockets", err)
	}
}

// TestCommandStopsWhenStdinCloses runs the command end to end: ready line
// on stdout, then a clean exit once the pipe on its stdin closes.
func TestCommandStopsWhenStdinCloses(t *testing.T) {
	testutil.RequireRoot(t)
	requireSS(t)
	ns := testutil.NewNS(t)
	cmd := exec.Command(os.Args[0], "--netns", ns.Name, "--total", "1000")
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v", err)
	}
	kv := map[string]string{}
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		kv[k] = v
	}
	if !strings.HasPrefix(line, "ready ") || kv["netns"] != ns.Name {
		t.Fatalf("ready line %q", line)
	}
	got := ssStates(t, ns.Name)
	for key, label := range map[string]string{"listen": "LISTEN", "estab": "ESTAB", "close-wait": "CLOSE-WAIT", "time-wait": "TIME-WAIT"} {
		if n, err := strconv.Atoi(kv[key]); err != nil || n != got[label] {
			t.Errorf("ready line says %s=%s, ss shows %d", key, kv[key], got[label])
		}
	}
	if kv["total"] != "1000" {
		t.Errorf("ready line total=%s, want 1000", kv["total"])
	}
	if kv["dport"] != strconv.Itoa(firstListenPort) {
		t.Errorf("ready line dport=%s", kv["dport"])
	}
	stdin.Close()
	io.Copy(io.Discard, stdout)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after stdin closed: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("still running 15 s after stdin closed")
	}
	if n := ssStates(t, ns.Name)["ESTAB"]; n != 0 {
		t.Errorf("%d ESTAB sockets left after exit", n)
	}
}

func TestCommandRejectsMissingNetns(t *testing.T) {
	cmd := exec.Command(os.Args[0], "--netns", "sockfarm-test-missing", "--total", "10")
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("exit 0 for a missing netns; output %q", out)
	}
	if !strings.Contains(string(out), `netns "sockfarm-test-missing" does not exist`) {
		t.Errorf("output %q does not name the missing netns", out)
	}
}
