package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// unitPath is the systemd unit shipped in deploy/.
const unitPath = "../../deploy/systemd/sstrace.service"

// unitCaps reads CapabilityBoundingSet from the unit, as setpriv takes it
// ("bpf,perfmon,...").
func unitCaps(t *testing.T) string {
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
				caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
			return strings.Join(caps, ",")
		}
	}
	t.Fatal("no CapabilityBoundingSet in the unit")
	return ""
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
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		if ln, err = lc.Listen(context.Background(), "tcp4", "127.0.0.1:0"); err != nil {
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
}
