package main

import (
	"strings"
	"testing"
)

// Console quirks the agent cannot prevent: CRLF line ends from the serial
// line, a kernel message in the middle of the output, a VM that dies
// half-way. Each case states what the parser must conclude.
func TestParseRunConsoleQuirks(t *testing.T) {
	const begin = `@@VMTEST {"event":"begin","hook":"tp_btf"}@@`
	const passed = "=== RUN   TestE2EX\n--- PASS: TestE2EX (0.10s)\nPASS\n"
	const endPass = `@@VMTEST {"event":"end","hook":"tp_btf","result":"pass","exit":0,"seconds":1.5}@@`
	const done = `@@VMTEST {"event":"done"}@@`
	hooks := []string{"tp_btf"}
	for _, tc := range []struct {
		name    string
		log     string
		outcome string
		reason  string // substring of the cell's reason
		problem string // substring of a run problem; "" = none expected
	}{
		{name: "clean", log: begin + "\n" + passed + endPass + "\n" + done + "\n", outcome: cellPass},
		{name: "crlf", log: strings.ReplaceAll(begin+"\n"+passed+endPass+"\n"+done+"\n", "\n", "\r\n"), outcome: cellPass},
		{name: "kernel message in the output",
			log:     begin + "\n=== RUN   TestE2EX\n[   12.3] random: crng init done\n--- PASS: TestE2EX (0.10s)\nPASS\n" + endPass + "\n" + done,
			outcome: cellPass},
		{name: "marker after output without newline",
			log:     begin + "\n=== RUN   TestE2EX\n--- PASS: TestE2EX (0.10s)\nPASS" + endPass + "\n" + done,
			outcome: cellPass},
		{name: "vm died during the tests", log: begin + "\n=== RUN   TestE2EX\n",
			outcome: cellFail, reason: "did not finish", problem: "no done marker"},
		{name: "vm died before the hook", log: `@@VMTEST {"event":"start","kernel":"k"}@@` + "\n",
			outcome: cellFail, reason: "no result", problem: "no done marker"},
		{name: "exit 0 without PASS line", log: begin + "\n--- PASS: TestE2EX (0.10s)\n" + endPass + "\n" + done,
			outcome: cellFail, reason: "no PASS/FAIL line"},
		{name: "agent says fail", log: begin + "\n" + passed +
			`@@VMTEST {"event":"end","hook":"tp_btf","result":"fail","exit":1,"reason":"exit status 1"}@@` + "\n" + done,
			outcome: cellFail, reason: "exit status 1"},
		{name: "no tests ran", log: begin + "\ntesting: warning: no tests to run\nPASS\n" + endPass + "\n" + done,
			outcome: cellFail, reason: "no tests ran"},
		{name: "pass without running", log: `@@VMTEST {"event":"end","hook":"tp_btf","result":"pass","exit":0}@@` + "\n" + done,
			outcome: cellFail, reason: "without running"},
		{name: "unavailable", log: `@@VMTEST {"event":"end","hook":"tp_btf","result":"unavailable","reason":"no BTF"}@@` + "\n" + done,
			outcome: cellNA, reason: "no BTF"},
		{name: "garbled marker", log: begin + "\n" + passed + `@@VMTEST {"event":"end","hook":"tp_b` + "\n" + done,
			outcome: cellFail, reason: "did not finish", problem: "marker without closing"},
		{name: "bad json", log: begin + "\n" + passed + `@@VMTEST {"event":"end",hook}@@` + "\n" + done,
			outcome: cellFail, reason: "did not finish", problem: "unreadable marker"},
		{name: "reported twice", log: begin + "\n" + passed + endPass + "\n" + endPass + "\n" + done,
			outcome: cellPass, problem: "reported twice"},
		{name: "unknown hook", log: `@@VMTEST {"event":"end","hook":"uprobe","result":"unavailable","reason":"x"}@@` + "\n" + done,
			outcome: cellFail, reason: "no result", problem: "not asked for"},
		{name: "agent error", log: `@@VMTEST {"event":"error","reason":"status exited 2"}@@` + "\n" + begin + "\n" + passed + endPass + "\n" + done,
			outcome: cellPass, problem: "status exited 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := parseRun([]byte(tc.log), hooks)
			c := r.Cells["tp_btf"]
			if c.Outcome != tc.outcome || !strings.Contains(c.Reason, tc.reason) {
				t.Errorf("cell = %s %q, want %s containing %q", c.Outcome, c.Reason, tc.outcome, tc.reason)
			}
			got := strings.Join(r.Problems, "\n")
			if tc.problem == "" && got != "" {
				t.Errorf("unexpected problems: %s", got)
			}
			if tc.problem != "" && !strings.Contains(got, tc.problem) {
				t.Errorf("problems %q, want one containing %q", got, tc.problem)
			}
		})
	}
}

func TestFailingOutputKeepsOutsideLines(t *testing.T) {
	out := failingOutput([]string{
		"=== RUN   TestE2EA",
		"--- PASS: TestE2EA (0.01s)",
		"=== RUN   TestE2EB",
		"=== RUN   TestE2EB/sub",
		"    b_test.go:9: bad",
		"--- FAIL: TestE2EB (0.01s)",
		"    --- FAIL: TestE2EB/sub (0.00s)",
		"=== RUN   TestE2EC",
		"panic: test timed out after 4m0s",
		"FAIL",
	})
	want := []string{
		"=== RUN   TestE2EB", "=== RUN   TestE2EB/sub", "    b_test.go:9: bad",
		"--- FAIL: TestE2EB (0.01s)", "    --- FAIL: TestE2EB/sub (0.00s)",
		"=== RUN   TestE2EC", "panic: test timed out after 4m0s", "FAIL",
	}
	if strings.Join(out, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(out, "\n"), strings.Join(want, "\n"))
	}
}
