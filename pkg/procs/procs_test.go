package procs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// ssUsers is what one `ss -tuxanpe` run says: the holders of every socket it
// listed (an empty slice for a socket no process holds).
type ssUsers map[uint64][]sock.Process

var (
	inoField  = regexp.MustCompile(`\bino:(\d+)`)
	usersList = regexp.MustCompile(`users:\(\((.*)\)\)`)
	userEntry = regexp.MustCompile(`"(.*?)",pid=(\d+),fd=(\d+)`)
)

// runSS runs the real ss with -p and parses the users:(...) of each socket,
// keyed by inode: the ino: field for inet sockets, the local "port" for UNIX
// sockets (ss prints their inode there).
func runSS(t *testing.T, extra ...string) ssUsers {
	t.Helper()
	if _, err := exec.LookPath("ss"); err != nil {
		testutil.Unavailable(t, "the ss binary (iproute2): %v", err)
	}
	args := append([]string{"-H", "-tuxanpe"}, extra...)
	out, err := exec.Command("ss", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ss %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	users, err := parseSS(string(out))
	if err != nil {
		t.Fatalf("parse ss %s output: %v", strings.Join(args, " "), err)
	}
	return users
}

func parseSS(out string) (ssUsers, error) {
	users := ssUsers{}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		var ino uint64
		var err error
		if strings.HasPrefix(f[0], "u_") {
			// Netid State Recv-Q Send-Q ADDR INODE PEER PEERINODE ...;
			// skip names with spaces, whose columns cannot be split.
			if ino, err = strconv.ParseUint(f[5], 10, 64); err != nil {
				continue
			}
		} else {
			m := inoField.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("no ino: in %q", line)
			}
			if ino, err = strconv.ParseUint(m[1], 10, 64); err != nil {
				return nil, err
			}
			if ino == 0 {
				continue // TIME-WAIT and request sockets: not files
			}
		}
		var ps []sock.Process
		if m := usersList.FindStringSubmatch(line); m != nil {
			for _, e := range userEntry.FindAllStringSubmatch(m[1], -1) {
				pid, _ := strconv.Atoi(e[2])
				fd, _ := strconv.Atoi(e[3])
				ps = append(ps, sock.Process{Comm: e[1], PID: pid, FD: fd})
			}
		}
		users[ino] = ps
	}
	return users, nil
}

// scanBoth runs Scan on both paths; the BPF one must really use the
// iterator (this kernel has it).
func scanBoth(t *testing.T) map[string]*Index {
	t.Helper()
	res := map[string]*Index{}
	for _, force := range []bool{false, true} {
		ix, err := Scan(context.Background(), Options{ForceProc: force})
		if err != nil {
			t.Fatalf("Scan(ForceProc=%v): %v", force, err)
		}
		want := SourceBPF
		if force {
			want = SourceProc
		}
		if ix.Source() != want {
			testutil.Unavailable(t, "Scan(ForceProc=%v) used %q (%s), want %q", force, ix.Source(), ix.Reason(), want)
		}
		res[ix.Source()] = ix
	}
	if r := res[SourceBPF].Reason(); r != "" {
		t.Errorf("BPF index has a fallback reason %q", r)
	}
	if r := res[SourceProc].Reason(); !strings.Contains(r, "ForceProc") {
		t.Errorf("forced /proc index reason = %q, want it to name ForceProc", r)
	}
	return res
}

// TestScanMatchesSS compares both paths with ss for sockets held in every
// way the holder helper arranges: dup'ed, shared with a child, in a
// multi-threaded process, and hidden in a thread with a private fd table.
func TestScanMatchesSS(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	rep := startHolder(t, "/run/netns/"+ns.Name)
	idx := scanBoth(t)
	ss := runSS(t, "-N", ns.Name)

	for name, ino := range rep.Inodes {
		want, ok := ss[ino]
		if !ok {
			t.Errorf("%s (ino %d): ss does not list it", name, ino)
			continue
		}
		for src, ix := range idx {
			if got := ix.Lookup(ino); !slices.Equal(got, want) {
				t.Errorf("%s (ino %d) from %s:\n got %v\nwant %v (ss)", name, ino, src, got, want)
			}
		}
	}

	// Check that the comparison covered the cases it is meant to, from the
	// kernel's side: the listener is held twice by each of two processes,
	// and the hidden socket by no process ss can see.
	listen := ss[rep.Inodes["listen"]]
	var pids []int
	for _, p := range listen {
		pids = append(pids, p.PID)
	}
	slices.Sort(pids)
	if wantPids := []int{rep.Holder, rep.Holder, rep.Sharer, rep.Sharer}; !slices.Equal(pids, slices.Sorted(slices.Values(wantPids))) {
		t.Errorf("ss shows the listener held by %v, want holder %d and sharer %d twice each", listen, rep.Holder, rep.Sharer)
	}
	if h := ss[rep.Inodes["hidden"]]; len(h) != 0 {
		t.Errorf("ss shows the private-table socket held by %v, want none", h)
	}
	// The O_PATH descriptor on the bound socket's node is not a socket.
	for src, ix := range idx {
		for _, p := range ix.table.procs {
			if p.PID == rep.Holder && slices.Contains(rep.FDs["opath"], p.FD) {
				t.Errorf("%s lists the O_PATH descriptor %d as a socket: %v", src, p.FD, p)
			}
		}
	}
	for _, p := range ss[rep.Inodes["udp"]] {
		if p.PID != rep.Holder || p.Comm != holderComm || !slices.Contains(rep.FDs["udp"], p.FD) {
			t.Errorf("udp socket: ss shows %v, want holder %d %q fd %v", p, rep.Holder, holderComm, rep.FDs["udp"])
		}
	}
}

// TestScanMatchesSSHostWide compares every socket ss shows in the test's
// own network namespace (where other processes come and go) with both
// paths. Only sockets whose users ss reports identically before and after
// the scans are compared, so a process starting or exiting mid-test cannot
// make it flaky.
func TestScanMatchesSSHostWide(t *testing.T) {
	testutil.RequireRoot(t)
	rep := startHolder(t, "")
	before := runSS(t)
	idx := scanBoth(t)
	after := runSS(t)

	compared, held := 0, 0
	for ino, want := range before {
		if again, ok := after[ino]; !ok || !slices.Equal(again, want) {
			continue
		}
		compared++
		if len(want) > 0 {
			held++
		}
		for src, ix := range idx {
			if got := ix.Lookup(ino); !slices.Equal(got, want) {
				t.Errorf("ino %d from %s:\n got %v\nwant %v (ss)", ino, src, got, want)
			}
		}
	}
	if _, ok := before[rep.Inodes["listen"]]; !ok {
		t.Errorf("ss did not list the holder's listener (ino %d)", rep.Inodes["listen"])
	}
	if held < len(rep.Inodes)-1 {
		t.Errorf("only %d of %d compared sockets had holders; the holder alone has %d", held, compared, len(rep.Inodes)-1)
	}
	t.Logf("compared %d sockets (%d held by processes); bpf index %d entries, proc index %d entries",
		compared, held, idx[SourceBPF].Len(), idx[SourceProc].Len())
}

// The BPF and /proc paths must agree on the whole host, not only on what ss
// shows in one namespace: sockets of every namespace are indexed. Each path
// runs twice; a socket whose holders changed between a path's two scans is
// churn from other processes and is not compared.
func TestPathsAgree(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	// Every socket a holder reports is held by it, except "hidden" (held
	// only by a thread with a private fd table, invisible to ss too).
	visible := 0
	for _, rep := range []holderReport{startHolder(t, "/run/netns/"+ns.Name), startHolder(t, "")} {
		visible += len(rep.Inodes) - 1
	}
	a, b := scanBoth(t), scanBoth(t)

	inodes := map[uint64]bool{}
	for _, ix := range []*Index{a[SourceBPF], a[SourceProc], b[SourceBPF], b[SourceProc]} {
		for _, ino := range ix.table.all() {
			inodes[ino] = true
		}
	}
	compared := 0
	for ino := range inodes {
		bpf1, bpf2 := a[SourceBPF].Lookup(ino), b[SourceBPF].Lookup(ino)
		proc1, proc2 := a[SourceProc].Lookup(ino), b[SourceProc].Lookup(ino)
		if !slices.Equal(bpf1, bpf2) || !slices.Equal(proc1, proc2) {
			continue
		}
		compared++
		if !slices.Equal(bpf1, proc1) {
			t.Errorf("ino %d: bpf %v, proc %v", ino, bpf1, proc1)
		}
	}
	if compared < visible {
		t.Errorf("only %d stable sockets compared, want at least the holders' %d", compared, visible)
	}
	t.Logf("compared %d sockets of %d seen", compared, len(inodes))
}

// A Scanner gives the same answer on every pass with one program load, and
// after Close it still answers, from /proc, saying why.
func TestScannerReuse(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	rep := startHolder(t, "/run/netns/"+ns.Name)
	ss := runSS(t, "-N", ns.Name)
	s := NewScanner(Options{})
	for pass := range 3 {
		ix, err := s.Scan(context.Background())
		if err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
		if ix.Source() != SourceBPF {
			testutil.Unavailable(t, "pass %d used %q: %s", pass, ix.Source(), ix.Reason())
		}
		for name, ino := range rep.Inodes {
			if got := ix.Lookup(ino); !slices.Equal(got, ss[ino]) {
				t.Errorf("pass %d, %s: got %v, want %v (ss)", pass, name, got, ss[ino])
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ix, err := s.Scan(context.Background())
	if err != nil {
		t.Fatalf("Scan after Close: %v", err)
	}
	if ix.Source() != SourceProc || ix.Reason() == "" {
		t.Errorf("after Close: source %q reason %q, want proc with a reason", ix.Source(), ix.Reason())
	}
	if got, want := ix.Lookup(rep.Inodes["listen"]), ss[rep.Inodes["listen"]]; !slices.Equal(got, want) {
		t.Errorf("after Close, listener: got %v, want %v", got, want)
	}
}

// In a nested pid namespace the iterator would report global pids that mean
// nothing there, so Scan must fall back to /proc and say why.
func TestScanNestedPidNS(t *testing.T) {
	testutil.RequireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=scan")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	out, err := cmd.Output()
	if err != nil {
		testutil.Unavailable(t, "run a helper in a new pid namespace: %v", err)
	}
	source, reason, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if source != SourceProc || !strings.Contains(reason, "nested pid namespace") {
		t.Errorf("in a child pid namespace: source %q, reason %q; want %q and a pid namespace reason", source, reason, SourceProc)
	}
}

func TestScanCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, force := range []bool{false, true} {
		if _, err := Scan(ctx, Options{ForceProc: force}); err != context.Canceled {
			t.Errorf("Scan(cancelled, ForceProc=%v) err = %v, want context.Canceled", force, err)
		}
	}
}

// A /proc root that does not exist is an error that names it, not a panic
// or an empty index.
func TestScanProcBadRoot(t *testing.T) {
	_, err := scanProc(context.Background(), "/nonexistent-proc-root", false)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent-proc-root") {
		t.Errorf("scanProc(bad root) err = %v, want one naming the path", err)
	}
}
