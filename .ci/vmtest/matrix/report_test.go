package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestReport(t *testing.T) {
	hooks := []string{"tp_btf", "kprobe"}
	good := parseRun([]byte(`@@VMTEST {"event":"begin","hook":"tp_btf"}@@
--- PASS: TestE2EA (0.10s)
PASS
@@VMTEST {"event":"end","hook":"tp_btf","result":"pass","exit":0,"seconds":2.5}@@
@@VMTEST {"event":"end","hook":"kprobe","result":"unavailable","reason":"kprobe_events missing"}@@
@@VMTEST {"event":"done"}@@
`), hooks)
	host := &row{label: "host", release: "6.18", boot: &bootResult{Duration: 3 * time.Second}, run: good}

	var b strings.Builder
	if !report(&b, []*row{host}, hooks, time.Minute) {
		t.Errorf("an all pass/n/a matrix must pass:\n%s", b.String())
	}
	out := b.String()
	for _, want := range []string{"pass 1 (2.5s)", "n/a: kprobe_events missing", "vmtest PASS", "vmtest: 1 passed, 0 failed, 1 skipped\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("report misses %q:\n%s", want, out)
		}
	}

	dead := &row{label: "6.1 (bookworm)", release: "6.1.0-56-cloud-amd64",
		boot: &bootResult{Duration: 8 * time.Minute, TimedOut: true, Err: errors.New("timed out after 8m0s"),
			Console: []byte("Booting\nKernel panic - not syncing: Attempted to kill init!\n")},
		run: parseRun([]byte("Booting\nKernel panic - not syncing: Attempted to kill init!\n"), hooks)}
	broken := &row{label: "5.10 (bullseye)", err: errors.New("no 5.10 cloud kernel could be downloaded")}
	b.Reset()
	if report(&b, []*row{host, dead, broken}, hooks, time.Minute) {
		t.Error("a timed-out VM and a missing kernel must fail the matrix")
	}
	out = b.String()
	for _, want := range []string{"timed out after 8m0s", "Kernel panic - not syncing", "no 5.10 cloud kernel",
		"vmtest FAIL", "vmtest: 1 passed, 4 failed, 1 skipped\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("report misses %q:\n%s", want, out)
		}
	}
}

func TestPrintableDropsEscapes(t *testing.T) {
	in := "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r"
	if got := printable(in); got != "SeaBIOS (version 1.16.2)" {
		t.Errorf("printable(%q) = %q", in, got)
	}
}
