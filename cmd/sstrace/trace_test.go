package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/testutil"
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
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
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
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"trace", "--hook", "uprobe"}, `unknown hook "uprobe"`},
		{[]string{"trace", "--ring-size", "1000"}, "ring buffer size 1000: must be a power of two"},
		{[]string{"trace", "--netns", "/nonexistent/ns"}, `--netns "/nonexistent/ns"`},
		{[]string{"trace", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"trace", "extra"}, "unknown command"},
	} {
		out, err := exec.Command(bin, c.args...).CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err == nil || !strings.Contains(string(out), c.msg) || len(lines) != 1 {
			t.Errorf("sstrace %v: err %v, output %q; want one line with %q and a non-zero exit", c.args, err, out, c.msg)
		}
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
	}
	if strings.Join(names, " ") != "tp_btf tracepoint fentry kprobe" || !chosenAvailable {
		t.Errorf("status %s", out)
	}
}
