package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// unitPath is the systemd unit shipped in deploy/.
const unitPath = "../../deploy/systemd/sstrace.service"

// unitCaps reads CapabilityBoundingSet from the unit, as setpriv takes it
// ("+bpf,+perfmon,...").
func unitCaps(t *testing.T) string {
	t.Helper()
	var caps []string
	for _, c := range unitCapNames(t) {
		caps = append(caps, "+"+strings.ToLower(c))
	}
	return strings.Join(caps, ",")
}

// unitCapNames reads CapabilityBoundingSet from the unit without the CAP_
// prefixes ("BPF", "PERFMON", ...), as podman and Kubernetes name them.
func unitCapNames(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapabilityBoundingSet="); ok {
			var caps []string
			for _, c := range strings.Fields(v) {
				caps = append(caps, strings.TrimPrefix(c, "CAP_"))
			}
			return caps
		}
	}
	t.Fatal("no CapabilityBoundingSet in the unit")
	return nil
}

// TestSystemdUnit: the unit passes systemd-analyze verify, and the daemon,
// run with only the capabilities the unit grants (setpriv, the bounding set
// emptied but for them), seeds, names the process that leaks a CLOSE-WAIT
// socket in another namespace, and answers ss -tanp there as ss does.
func TestSystemdUnit(t *testing.T) {
	testutil.RequireRoot(t)
	bin := sstraceBinary(t)
	for _, tool := range []string{"systemd-analyze", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, "%s: %v", tool, err)
		}
	}
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that ExecStart's binary exists: point it at this build.
	copyPath := filepath.Join(t.TempDir(), "sstrace.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/sstrace", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", copyPath).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// A CLOSE-WAIT leak in a fresh namespace, made before the start.
	ns := testutil.NewNS(t)
	var ln net.Listener
	var leak net.Conn
	if err := ns.Do(func() error {
		var err error
		if ln, err = testutil.ListenTCP4(); err != nil {
			return err
		}
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		if leak, err = ln.Accept(); err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer leak.Close()
	time.Sleep(50 * time.Millisecond)

	d := startDaemonWith(t, []string{"setpriv", "--inh-caps=-all", "--bounding-set=-all," + unitCaps(t), bin}, bin)
	cw := d.run(t, "closewait", "--socket", d.sock, "--all-netns")
	if !strings.Contains(cw, "(pid "+strconv.Itoa(os.Getpid())+")") {
		t.Errorf("closewait with the unit's capabilities does not name this process:\n%s", cw)
	}
	want := runReal(t, []string{"-N", ns.Name, "-tanp"})
	got := d.run(t, "ss", "--socket", d.sock, "-N", ns.Name, "-tanp")
	if w, g := sortedLines(want), sortedLines(got); strings.Join(w, "\n") != strings.Join(g, "\n") {
		t.Errorf("ss -tanp with the unit's capabilities:\nss:\n%s\ndaemon:\n%s", want, got)
	}

	// An owner seen by events is named by its cgroup and container:
	// resolving a cgroup id to its path (open_by_handle_at) is what
	// CAP_DAC_READ_SEARCH is in the set for.
	cg := testutil.NewCgroup(t, "sstrace-test.slice/docker-"+strings.Repeat("5e", 32)+".scope")
	c := startClient(t, ns, cg)
	port := c.dial(ln.Addr().String())
	var hist string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		hist = d.run(t, "history", "--socket", d.sock, "--all-netns", "--json", fmt.Sprintf("sport = :%d", port))
		if strings.Contains(hist, `"cgroup":"`+cg.Path+`"`) {
			return
		}
	}
	t.Errorf("history with the unit's capabilities does not name the client's cgroup %s:\n%s", cg.Path, hist)
}

// TestDaemonJournalLog: with stderr on the journal stream (JOURNAL_STREAM
// naming its device and inode, as systemd sets it), every daemon log line
// starts with its syslog priority and carries no time, so journald files
// it at the right level.
func TestDaemonJournalLog(t *testing.T) {
	testutil.RequireRoot(t)
	bin := sstraceBinary(t)
	dir := t.TempDir()
	stream, err := os.Create(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(stream.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sstrace.sock")
	cmd := exec.Command(bin, "daemon", "--socket", sock, "--log-level", "debug")
	cmd.Stderr = stream
	cmd.Env = append(os.Environ(), fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); exec.Command(bin, "status", "--socket", sock).Run() != nil; {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			out, _ := os.ReadFile(stream.Name())
			testutil.Unavailable(t, "sstrace daemon not up within 15 s:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("daemon: %v", err)
	}
	out, err := os.ReadFile(stream.Name())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	var info int
	for _, l := range lines {
		if len(l) < 3 || l[0] != '<' || l[2] != '>' || !strings.ContainsRune("01234567", rune(l[1])) || strings.Contains(l, "time=") {
			t.Errorf("journal line without a priority prefix, or with a time: %q", l)
		}
		if strings.HasPrefix(l, "<6>") && strings.Contains(l, "msg=listening") {
			info++
		}
	}
	if info != 1 {
		t.Errorf("no <6> \"listening\" line in:\n%s", out)
	}
}

// TestDaemonFewerCapabilities: the unit's set is the smallest. With any one
// of its capabilities taken away, the daemon either refuses to start with
// a line naming the missing capability (those it cannot work without) or
// starts and warns, naming it, what is lost.
func TestDaemonFewerCapabilities(t *testing.T) {
	testutil.RequireRoot(t)
	bin := sstraceBinary(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		testutil.Unavailable(t, "setpriv: %v", err)
	}
	caps := unitCapNames(t)
	for _, drop := range caps {
		t.Run(drop, func(t *testing.T) {
			var keep []string
			for _, c := range caps {
				if c != drop {
					keep = append(keep, "+"+strings.ToLower(c))
				}
			}
			sock := filepath.Join(t.TempDir(), "sstrace.sock")
			cmd := exec.Command("setpriv", "--inh-caps=-all", "--bounding-set=-all,"+strings.Join(keep, ","),
				bin, "daemon", "--socket", sock)
			var logb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &logb, &logb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			up := false
			for deadline := time.Now().Add(10 * time.Second); !up && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				select {
				case err := <-done:
					// Refused to start: non-zero, one line naming it.
					if err == nil || !strings.Contains(logb.String(), "needs CAP_"+drop) {
						t.Errorf("without CAP_%s the daemon exited with %v:\n%s", drop, err, logb.String())
					}
					return
				default:
				}
				up = exec.Command(bin, "status", "--socket", sock).Run() == nil
			}
			cmd.Process.Signal(unix.SIGTERM)
			<-done
			if !up {
				t.Fatalf("without CAP_%s the daemon neither started nor refused:\n%s", drop, logb.String())
			}
			if !strings.Contains(logb.String(), "level=WARN msg=\"no CAP_"+drop+":") {
				t.Errorf("without CAP_%s the daemon started without a warning naming it:\n%s", drop, logb.String())
			}
		})
	}
}
