package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/testutil"
	"golang.org/x/sys/unix"
)

// TestTraceJSON runs `sstrace trace --json` as a user would, in a fresh
// namespace, and checks the stream: the documented keys in their order,
// the listener's transitions with this process as their owner, and the
// counters on stderr.
func TestTraceJSON(t *testing.T) {
	ns := testutil.NewNS(t)
	bin := sstraceBinary(t)
	cmd := exec.Command(bin, "trace", "--json", "--netns", ns.Name, "--duration", "2s")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	errLines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errLines <- sc.Text()
		}
		close(errLines)
	}()
	var all []string
	select {
	case l := <-errLines:
		all = append(all, l)
		if !strings.Contains(l, "tracing with hook") {
			t.Fatalf("first stderr line %q, want the attach notice", l)
		}
	case <-time.After(10 * time.Second):
		testutil.Unavailable(t, "sstrace trace did not attach in 10 s")
	}

	var port int
	if err := ns.Do(func() error {
		ln, err := testutil.ListenTCP4()
		if err != nil {
			return err
		}
		port = ln.Addr().(*net.TCPAddr).Port
		return ln.Close()
	}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sstrace trace: %v (stderr %q)", err, all)
	}
	for l := range errLines {
		all = append(all, l)
	}
	if last := all[len(all)-1]; !strings.Contains(last, "2 events received, 2 submitted, 0 lost") {
		t.Errorf("summary %q, want 2 events and no loss", last)
	}

	want := []string{"time", "cookie", "netns", "family", "saddr", "sport", "daddr", "dport",
		"oldstate", "newstate", "pid", "comm", "uid", "context"}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		keys, obj := jsonKeys(t, line)
		if len(keys) < len(want) || strings.Join(keys[:len(want)], " ") != strings.Join(want, " ") {
			t.Fatalf("keys %v, want them to start with %v", keys, want)
		}
		if _, err := time.Parse(time.RFC3339Nano, obj["time"].(string)); err != nil {
			t.Errorf("time %v: %v", obj["time"], err)
		}
		if obj["sport"].(float64) != float64(port) || obj["netns"].(float64) != float64(ns.Inode) {
			t.Errorf("event of another socket or namespace: %s", line)
		}
		if obj["pid"].(float64) != float64(os.Getpid()) || obj["context"] != "process" || obj["family"] != "inet" {
			t.Errorf("listen/close by this process expected: %s", line)
		}
		got = append(got, obj["oldstate"].(string)+">"+obj["newstate"].(string))
	}
	if strings.Join(got, " ") != "CLOSE>LISTEN LISTEN>CLOSE" {
		t.Errorf("transitions %v", got)
	}
}

// jsonKeys decodes one JSON object, keeping its key order.
func jsonKeys(t *testing.T, line string) ([]string, map[string]any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %q", line)
	}
	var keys []string
	obj := map[string]any{}
	for dec.More() {
		k, _ := dec.Token()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("bad JSON %q: %v", line, err)
		}
		keys = append(keys, k.(string))
		obj[k.(string)] = v
	}
	return keys, obj
}

// TestTraceAndStatusErrors: bad input is one line on stderr and a non-zero
// exit, before anything is loaded.
func TestTraceAndStatusErrors(t *testing.T) {
	bin := sstraceBinary(t)
	const ringRange = "must be a power of two from "
	daemonSock := filepath.Join(t.TempDir(), "d.sock") // never the default one
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"trace", "--hook", "uprobe"}, `unknown hook "uprobe"`},
		{[]string{"trace", "--ring-size", "1000"}, "--ring-size 1000: " + ringRange},
		// Was accepted: 0 as the default, 2^31 as a 2 GiB ring, 2^32
		// wrapped to 0 in the map size and failed on every hook.
		{[]string{"trace", "--duration", "1s", "--ring-size", "0"}, "--ring-size 0: " + ringRange},
		{[]string{"trace", "--duration", "1s", "--ring-size", "2147483648"}, "--ring-size 2147483648: " + ringRange},
		{[]string{"trace", "--duration", "1s", "--ring-size", "4294967296"}, "--ring-size 4294967296: " + ringRange},
		{[]string{"trace", "--ring-size", "4294967296"}, "to 1073741824 bytes ("},
		{[]string{"daemon", "--socket", daemonSock, "--ring-size", "0"}, "--ring-size 0: " + ringRange},
		{[]string{"daemon", "--socket", daemonSock, "--ring-size", "4294967296"}, "--ring-size 4294967296: " + ringRange},
		// Was: ran forever.
		{[]string{"trace", "--duration", "-1s"}, "--duration -1s: must be positive, or 0 to run until interrupted"},
		{[]string{"trace", "--netns", "/nonexistent/ns"}, "--netns /nonexistent/ns: "},
		// Were: traced nothing, exit 0.
		{[]string{"trace", "--duration", "1s", "--netns", "/proc/self/ns/mnt"}, "--netns /proc/self/ns/mnt: a mount namespace, not a network namespace"},
		{[]string{"trace", "--duration", "1s", "--netns", "/etc/passwd"}, "--netns /etc/passwd: not a namespace file"},
		{[]string{"trace", "--duration", "1s", "--netns", "0"}, "--netns 0: not a namespace inode"},
		{[]string{"trace", "--duration", "1s", "--netns", "4294967296"}, "--netns 4294967296: not a namespace inode"},
		{[]string{"trace", "--duration", "1s", "--netns", ""}, `--netns "": empty namespace name`},
		{[]string{"trace", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"trace", "extra"}, "filter: unexpected \"extra\" at word 1"}, // the tail is an ss filter
	} {
		// A command that runs instead of failing (the daemon, a
		// negative --duration) is killed.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, bin, c.args...).CombinedOutput()
		killed := ctx.Err() != nil
		cancel()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err == nil || killed || !strings.Contains(string(out), c.msg) || len(lines) != 1 {
			t.Errorf("sstrace %q: err %v, output %q; want one line with %q and a non-zero exit", c.args, err, out, c.msg)
		}
	}
}

// TestTraceNetnsNameNotFromCwd: a bare --netns NAME is /run/netns/NAME, as
// for `ip netns`, never a file of that name in the current directory (it
// was looked up there first, so a stray file shadowed a namespace).
func TestTraceNetnsNameNotFromCwd(t *testing.T) {
	bin := sstraceBinary(t)
	dir := t.TempDir()
	const name = "sstrace-stray-netns"
	// A network namespace file, so that only the lookup can reject it.
	if err := os.Symlink("/proc/self/ns/net", filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "trace", "--duration", "1s", "--netns", name)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	want := "--netns " + name + ": no network namespace of that name (/run/netns/" + name + ")"
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("trace --netns %s in a directory holding %[1]s: err %v, output %q; want %q", name, err, out, want)
	}
}

// TestTraceNetnsArg: what traceNetns makes of --netns, without loading
// anything.
func TestTraceNetnsArg(t *testing.T) {
	var warn bytes.Buffer
	if ino, err := traceNetns("", false, &warn); ino != 0 || err != nil {
		t.Errorf("no --netns: %d, %v; want 0 (all)", ino, err)
	}
	// The path's own inode. (Not the calling thread's namespace: in a
	// test binary the main thread may have been left in a test's
	// namespace, and /proc/self is the main thread.)
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	if ino, err := traceNetns("/proc/self/ns/net", true, &warn); uint64(ino) != st.Ino || err != nil {
		t.Errorf("--netns /proc/self/ns/net: %d, %v; want %d", ino, err, st.Ino)
	}
	if warn.Len() != 0 {
		t.Errorf("warnings for namespaces that exist: %q", warn.String())
	}
	// An inode no namespace has today: kept, with a warning. Far above
	// those the kernel hands out, below 2^32.
	const unknown = 4294967000
	ino, err := traceNetns(strconv.Itoa(unknown), true, &warn)
	if ino != unknown || err != nil {
		t.Errorf("--netns %d: %d, %v; want it kept", unknown, ino, err)
	}
	if w := warn.String(); !strings.HasPrefix(w, "sstrace: warning: --netns 4294967000: no network namespace with that inode") ||
		strings.Count(w, "\n") != 1 {
		t.Errorf("warning %q", w)
	}
}

// TestTraceNetnsUnknownInode: an inode no namespace has warns and traces
// all the same (exit 0, the summary printed).
func TestTraceNetnsUnknownInode(t *testing.T) {
	testutil.RequireRoot(t)
	bin := sstraceBinary(t)
	cmd := exec.Command(bin, "trace", "--duration", "1s", "--netns", "4294967000")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sstrace trace --netns 4294967000: %v (stderr %q)", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "sstrace: warning: --netns 4294967000: no network namespace with that inode") ||
		!strings.Contains(lines[len(lines)-1], "0 events received") {
		t.Errorf("stderr %q: want the warning first and an empty summary last", lines)
	}
	if !strings.HasPrefix(stdout.String(), "TIME ") || strings.Count(stdout.String(), "\n") != 1 {
		t.Errorf("stdout %q: want the header only", stdout.String())
	}
}

// TestStatusJSON: status reports every hook, in order, and picks one that
// is available.
func TestStatusJSON(t *testing.T) {
	testutil.RequireRoot(t)
	bin := sstraceBinary(t)
	out, err := exec.Command(bin, "status", "--json").Output()
	if err != nil {
		testutil.Unavailable(t, "sstrace status: %v", err)
	}
	var r struct {
		Hooks []struct {
			Name      string `json:"name"`
			Available bool   `json:"available"`
			Reason    string `json:"reason"`
			Cookies   string `json:"cookies"`
			Catcher   bool   `json:"catcher"`
		} `json:"hooks"`
		Chosen string `json:"chosen"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var names []string
	chosenAvailable := false
	for _, h := range r.Hooks {
		names = append(names, h.Name)
		if !h.Available && h.Reason == "" {
			t.Errorf("hook %s unavailable without a reason", h.Name)
		}
		chosenAvailable = chosenAvailable || (h.Available && h.Name == r.Chosen)
		// Catchers go with the BTF hooks where the kernel skips a
		// re-entered program, the kernels with the cookie helper.
		if want := h.Available && (h.Name == "tp_btf" || h.Name == "fentry") && h.Cookies == "helper"; h.Catcher != want {
			t.Errorf("hook %s (cookies via %q): catcher %v, want %v", h.Name, h.Cookies, h.Catcher, want)
		}
	}
	if strings.Join(names, " ") != "tp_btf tracepoint fentry kprobe" || !chosenAvailable {
		t.Errorf("status %s", out)
	}
}

// startTrace starts `bin trace args...` with stdout to stdout and waits
// for the attach notice; the stderr lines that follow come on the channel,
// closed at EOF.
func startTrace(t *testing.T, bin string, stdout *os.File, args ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"trace"}, args...)...)
	cmd.Stdout = stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case l := <-lines:
		if !strings.Contains(l, "tracing with hook") {
			t.Fatalf("first stderr line %q, want the attach notice", l)
		}
	case <-time.After(10 * time.Second):
		testutil.Unavailable(t, "sstrace trace did not attach in 10 s")
	}
	return cmd, lines
}

// waitExit waits at most d for cmd, then kills it. It returns the exit
// status (-1 when killed: a signal ended it), how long it took, and the
// rest of stderr.
func waitExit(t *testing.T, cmd *exec.Cmd, lines <-chan string, d time.Duration) (int, time.Duration, []string) {
	t.Helper()
	start := time.Now()
	type result struct {
		err  error
		rest []string
	}
	done := make(chan result, 1)
	go func() {
		var r result
		for l := range lines { // EOF: the process is gone
			r.rest = append(r.rest, l)
		}
		r.err = cmd.Wait()
		done <- r
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(d):
		cmd.Process.Kill()
		r = <-done
	}
	took := time.Since(start)
	if r.err == nil {
		return 0, took, r.rest
	}
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		return ee.ExitCode(), took, r.rest
	}
	t.Fatalf("wait: %v", r.err)
	return 0, 0, nil
}

// TestTraceStdoutBlocked: a trace whose stdout nobody reads still ends at
// --duration (it ran on for as long as the pipe stayed full: forever, for
// a reader that never reads). The output the writer could not get out
// within a second of no progress is counted, the summary printed, and the
// exit status is 3 (output lost).
func TestTraceStdoutBlocked(t *testing.T) {
	ns := testutil.NewNS(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // open, never read
	const duration = 2 * time.Second
	cmd, lines := startTrace(t, sstraceBinary(t), w, "--netns", ns.Name, "--duration", duration.String())
	w.Close()
	attached := time.Now()
	// 16 000 transitions, some 2.5 MB of text: more than the pipe and the
	// trace's own buffers hold.
	if err := ns.Do(func() error {
		for range 8000 {
			ln, err := noKeepAlive.Listen(context.Background(), "tcp4", "127.0.0.1:0")
			if err != nil {
				return err
			}
			ln.Close()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The duration runs from before the attach; then at most 1 s of a
	// stalled writer, and slack for a loaded machine.
	code, _, rest := waitExit(t, cmd, lines, time.Until(attached.Add(duration+5*time.Second)))
	took := time.Since(attached)
	if code == -1 {
		t.Fatalf("still running %v after the attach, with --duration %v (stderr %q)", took, duration, rest)
	}
	if code != 3 || len(rest) < 2 ||
		!strings.Contains(strings.Join(rest, "\n"), "events received") ||
		!strings.Contains(rest[len(rest)-1], "stdout was not read for 1s after the trace ended: ") ||
		!strings.Contains(rest[len(rest)-1], " bytes of output not written") {
		t.Errorf("exit %d after %v, stderr %q; want 3, the summary and the unwritten output", code, took, rest)
	}
}

// TestTraceSIGHUP: SIGHUP (a closed terminal) ends a trace as SIGINT and
// SIGTERM do: summary printed, exit 0. It used to kill it silently.
func TestTraceSIGHUP(t *testing.T) {
	testutil.RequireRoot(t)
	bin := sstraceBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd, lines := startTrace(t, bin, nil, "--duration", "60s", "-H")
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			code, took, rest := waitExit(t, cmd, lines, 10*time.Second)
			if code != 0 || len(rest) == 0 || !strings.Contains(rest[len(rest)-1], " events received, ") {
				t.Errorf("%v: exit %d after %v, stderr %q; want 0 and the summary last", sig, code, took, rest)
			}
		})
	}
}

// blockingWriter takes n bytes, then blocks until release is closed; each
// write takes at most chunk bytes and delay.
type blockingWriter struct {
	mu      sync.Mutex
	got     bytes.Buffer
	n       int
	delay   time.Duration
	release chan struct{}
}

func (w *blockingWriter) Write(b []byte) (int, error) {
	time.Sleep(w.delay)
	w.mu.Lock()
	room := w.n - w.got.Len()
	if room <= 0 {
		w.mu.Unlock()
		<-w.release
		w.mu.Lock()
		room = len(b)
	}
	n := min(room, len(b), 4096)
	w.got.Write(b[:n])
	w.mu.Unlock()
	return n, nil
}

// TestOutputPipe: the trace's writer goroutine. Everything reaches a
// writer that keeps up, or a slow one that makes progress; a writer that
// stops blocks neither swap once the context has ended nor finish beyond
// the stall time, and finish counts what was left.
func TestOutputPipe(t *testing.T) {
	fill := func(p *outputPipe, ctx context.Context, total int) (buf []byte, sent int) {
		buf = p.take()
		line := bytes.Repeat([]byte("x"), 99)
		line = append(line, '\n')
		for sent < total {
			buf = append(buf, line...)
			sent += len(line)
			if len(buf) >= outputBufferSize {
				var err error
				if buf, err = p.swap(ctx, buf); err != nil {
					t.Fatal(err)
				}
				if ctx.Err() != nil {
					return buf, sent
				}
			}
		}
		return buf, sent
	}

	// Slow but steady: all of it, however long it takes past the stall
	// time as a whole.
	w := &blockingWriter{n: 1 << 30, delay: time.Millisecond}
	p := newOutputPipe(w)
	buf, sent := fill(p, context.Background(), 600<<10)
	unwritten, err := p.finish(buf, 20*time.Millisecond)
	if unwritten != 0 || err != nil || w.got.Len() != sent {
		t.Errorf("slow writer: %d unwritten, %v; got %d of %d bytes", unwritten, err, w.got.Len(), sent)
	}

	// Stops after 100 KiB: swap waits only until ctx ends, finish only
	// for the stall time.
	w = &blockingWriter{n: 100 << 10, release: make(chan struct{})}
	defer close(w.release)
	p = newOutputPipe(w)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	buf, sent = fill(p, ctx, 4<<20)
	if ctx.Err() == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("fill returned after %v with the context live: the writer did not block?", time.Since(start))
	}
	start = time.Now()
	unwritten, err = p.finish(buf, 50*time.Millisecond)
	if took := time.Since(start); took > 2*time.Second || err != nil {
		t.Errorf("finish took %v, %v; want about the stall time", took, err)
	}
	w.mu.Lock()
	written := w.got.Len()
	w.mu.Unlock()
	if written != 100<<10 || unwritten != int64(sent-written) {
		t.Errorf("blocked writer: %d written, %d unwritten of %d", written, unwritten, sent)
	}
}

// TestTraceFilter: `trace state close-wait 'sport = :P'` shows the
// transitions into and out of CLOSE-WAIT of the sockets on port P only,
// and --pid keeps the sockets a process owns.
func TestTraceFilter(t *testing.T) {
	ns := testutil.NewNS(t)
	bin := sstraceBinary(t)
	var keepPort int
	var lns []net.Listener
	if err := ns.Do(func() error {
		for i := 0; i < 2; i++ {
			ln, err := testutil.ListenTCP4()
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	keepPort = lns[0].Addr().(*net.TCPAddr).Port
	// submitted is what the last run's summary says the kernel sent.
	var submitted int
	run := func(args ...string) []map[string]any {
		cmd := exec.Command(bin, append([]string{"trace", "--json", "--netns", ns.Name, "--duration", "1s"}, args...)...)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		if !sc.Scan() || !strings.Contains(sc.Text(), "tracing with hook") {
			testutil.Unavailable(t, "sstrace trace did not attach: %q", sc.Text())
		}
		summary := make(chan int, 1)
		go func() {
			n := -1
			for sc.Scan() {
				if _, after, ok := strings.Cut(sc.Text(), " received, "); ok {
					fmt.Sscanf(after, "%d submitted", &n)
				}
			}
			summary <- n
		}()
		// A peer close on each listener: ESTABLISHED -> CLOSE_WAIT ->
		// LAST_ACK -> CLOSE on the server sides.
		if err := ns.Do(func() error {
			for _, l := range lns {
				c, err := net.Dial("tcp4", l.Addr().String())
				if err != nil {
					return err
				}
				s, err := l.Accept()
				if err != nil {
					return err
				}
				c.Close()
				time.Sleep(20 * time.Millisecond)
				s.Close()
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("sstrace trace %v: %v", args, err)
		}
		submitted = <-summary
		var objs []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			if l == "" {
				continue
			}
			_, obj := jsonKeys(t, l)
			objs = append(objs, obj)
		}
		return objs
	}
	var got []string
	for _, o := range run("state", "close-wait", fmt.Sprintf("sport = :%d", keepPort)) {
		if int(o["sport"].(float64)) != keepPort {
			t.Errorf("event of another socket: %v", o)
		}
		got = append(got, o["oldstate"].(string)+">"+o["newstate"].(string))
	}
	if strings.Join(got, " ") != "ESTABLISHED>CLOSE_WAIT CLOSE_WAIT>LAST_ACK" {
		t.Errorf("filtered transitions %v, want into and out of CLOSE_WAIT on port %d", got, keepPort)
	}
	// The filter's port is filtered in the kernel too: the connection to
	// the other listener never crossed the ring (its 10 transitions), this
	// one's 10 did.
	if submitted != 10 {
		t.Errorf("the kernel submitted %d events with the filter on port %d, want its connection's 10", submitted, keepPort)
	}
	// The listeners are older than the trace, so their children's first
	// (softirq) transitions have no known owner; the rest are this
	// process's.
	owned := 0
	for _, o := range run() {
		if int(o["pid"].(float64)) == os.Getpid() {
			owned++
		}
	}
	mine := run("--pid", strconv.Itoa(os.Getpid()))
	if owned == 0 || len(mine) != owned {
		t.Errorf("--pid of this process: %d events, want the %d it owns", len(mine), owned)
	}
	for _, o := range mine {
		if int(o["pid"].(float64)) != os.Getpid() {
			t.Errorf("--pid kept another owner's event: %v", o)
		}
	}
	if other := run("--pid", "1"); len(other) != 0 {
		t.Errorf("--pid 1: %d events of this test's sockets", len(other))
	}
}

// TestTraceCgroup: --cgroup PATH keeps the transitions of the sockets whose
// owner is in that cgroup: a client process started in a cgroup of its own
// is traced, the test's own sockets (the server side it accepts, in
// another cgroup) are not; locally and through the daemon.
func TestTraceCgroup(t *testing.T) {
	ns := testutil.NewNS(t)
	bin := sstraceBinary(t)
	cg := testutil.NewCgroup(t, fmt.Sprintf("sstrace-test.slice/trace-%d.scope", os.Getpid()))
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = testutil.ListenTCP4()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			s, err := ln.Accept()
			if err != nil {
				return
			}
			s.Close()
		}
	}()
	client := startClient(t, ns, cg)
	d := startDaemon(t, bin)
	for _, via := range [][]string{nil, {"--socket", d.sock}} {
		args := append([]string{"trace", "--json", "--netns", ns.Name, "--duration", "1s", "--cgroup", cg.Path}, via...)
		cmd := exec.Command(bin, args...)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // attached (locally: the line on stderr; the daemon's stream at once)
		port := client.dial(ln.Addr().String())
		// Close only once the server's FIN is in: closing at once
		// raced it (a simultaneous close, FIN_WAIT1 -> CLOSING).
		client.do("eof %d", port)
		client.do("close %d", port)
		// And one of the test's own, outside the cgroup.
		if err := ns.Do(func() error {
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		var states []string
		for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			if l == "" {
				continue
			}
			_, o := jsonKeys(t, l)
			// (sport is 0 on SYN_SENT: connect() picks the port after.)
			if sp := int(o["sport"].(float64)); int(o["pid"].(float64)) != client.cmd.Process.Pid || sp != port && sp != 0 {
				t.Errorf("%v: a transition of another socket: %s", via, l)
			}
			states = append(states, o["newstate"].(string))
		}
		// The server closes at once: the client goes CLOSE_WAIT first.
		if want := []string{"SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"}; !slices.Equal(states, want) {
			t.Errorf("%v: the client's transitions: %v, want %v", via, states, want)
		}
	}
}
