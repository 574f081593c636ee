package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The agent's marker framing (see .ci/vmtest/agent).
const (
	markerPrefix = "@@VMTEST "
	markerSuffix = "@@"
)

// marker mirrors the agent's marker payload.
type marker struct {
	Event   string  `json:"event"`
	Kernel  string  `json:"kernel"`
	Hook    string  `json:"hook"`
	Result  string  `json:"result"`
	Reason  string  `json:"reason"`
	Exit    *int    `json:"exit"`
	Seconds float64 `json:"seconds"`
	Output  string  `json:"output"`
	Uptime  float64 `json:"uptime"`
}

// Cell outcomes.
const (
	cellPass = "pass"
	cellFail = "FAIL"
	cellNA   = "n/a"
)

// cell is one kernel × hook result.
type cell struct {
	Hook    string
	Outcome string // cellPass, cellFail or cellNA
	Reason  string // why FAIL or n/a
	Passed  int    // top-level tests
	Failed  int
	Skipped int
	Seconds float64
	// FailedTests names the top-level tests that reported --- FAIL.
	FailedTests []string
	// Output is the test binary's output for a hook that ran.
	Output []string

	begun, ended bool
	summary      string // the final "PASS" or "FAIL" line of the test binary
}

// run is everything one agent run (a VM's console or the host) reported.
type run struct {
	Kernel  string // uname -r as the agent saw it
	Started bool   // the agent's start marker was seen
	Status  string // sstrace status --json output
	Done    bool
	// StartUptime and DoneUptime are the guest's seconds since boot when
	// the agent started and finished: boot time and test time.
	StartUptime, DoneUptime float64
	Cells                   map[string]*cell
	Problems                []string // anything that makes the run unreadable
}

var testResultRE = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+)s\)`)

// parseRun reads a console (or host) log. It never guesses: a hook without
// an end marker, an unreadable marker or a missing done marker is reported
// as a problem or a failed cell, and a cell only passes when the agent said
// pass, the binary exited 0, printed its PASS line, and ran at least one
// test, none of which failed.
func parseRun(log []byte, hooks []string) *run {
	r := &run{Cells: map[string]*cell{}}
	wanted := map[string]bool{}
	for _, h := range hooks {
		wanted[h] = true
	}
	var cur *cell
	for n, line := range strings.Split(string(log), "\n") {
		line = strings.TrimRight(line, "\r")
		i := strings.Index(line, markerPrefix)
		if i < 0 {
			if cur != nil {
				cur.addOutput(line)
			}
			continue
		}
		// Output printed without a final newline ends up before the marker.
		if i > 0 && cur != nil {
			cur.addOutput(line[:i])
		}
		payload := strings.TrimSpace(line[i+len(markerPrefix):])
		if !strings.HasSuffix(payload, markerSuffix) {
			r.problem("line %d: marker without closing %q: %q", n+1, markerSuffix, line)
			continue
		}
		var m marker
		if err := json.Unmarshal([]byte(strings.TrimSuffix(payload, markerSuffix)), &m); err != nil {
			r.problem("line %d: unreadable marker %q: %v", n+1, line, err)
			continue
		}
		switch m.Event {
		case "start":
			r.Kernel = m.Kernel
			r.Started = true
			r.Started = true
			r.StartUptime = m.Uptime
		case "status":
			r.Status = m.Output
		case "begin":
			if cur != nil {
				r.problem("line %d: hook %s began while %s was running", n+1, m.Hook, cur.Hook)
			}
			c, err := r.newCell(m.Hook, wanted)
			if err != nil {
				r.problem("line %d: %v", n+1, err)
				cur = nil
				continue
			}
			c.begun = true
			cur = c
		case "end":
			c := r.Cells[m.Hook]
			if c != nil && c.begun && !c.ended {
				if cur != c {
					r.problem("line %d: end of %s inside another hook's output", n+1, m.Hook)
				}
			} else {
				var err error
				if c, err = r.newCell(m.Hook, wanted); err != nil {
					r.problem("line %d: %v", n+1, err)
					continue
				}
			}
			c.finish(m)
			cur = nil
		case "done":
			r.Done = true
			r.DoneUptime = m.Uptime
		case "error":
			r.problem("agent error: %s", m.Reason)
		default:
			r.problem("line %d: unknown marker event %q", n+1, m.Event)
		}
	}
	for _, h := range hooks {
		c := r.Cells[h]
		switch {
		case c == nil:
			r.Cells[h] = &cell{Hook: h, Outcome: cellFail, Reason: "no result reported"}
		case c.begun && !c.ended:
			c.Outcome, c.Reason = cellFail, "test run did not finish"
			c.count()
		}
	}
	if !r.Done {
		r.problem("no done marker: the run stopped before reporting every hook")
	}
	return r
}

func (r *run) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

func (r *run) newCell(hook string, wanted map[string]bool) (*cell, error) {
	if !wanted[hook] {
		return nil, fmt.Errorf("result for hook %q, which was not asked for", hook)
	}
	if r.Cells[hook] != nil {
		return nil, fmt.Errorf("hook %s reported twice", hook)
	}
	c := &cell{Hook: hook}
	r.Cells[hook] = c
	return c, nil
}

func (c *cell) addOutput(line string) {
	c.Output = append(c.Output, line)
}

// count reads the test results out of the output.
func (c *cell) count() {
	c.Passed, c.Failed, c.Skipped, c.FailedTests, c.summary = 0, 0, 0, nil, ""
	for _, l := range c.Output {
		if m := testResultRE.FindStringSubmatch(l); m != nil {
			switch m[1] {
			case "PASS":
				c.Passed++
			case "FAIL":
				c.Failed++
				c.FailedTests = append(c.FailedTests, m[2])
			case "SKIP":
				c.Skipped++
			}
			continue
		}
		// Exactly at the start of a line: t.Log output is indented.
		if t := strings.TrimRight(l, " \t"); t == "PASS" || t == "FAIL" {
			c.summary = t
		}
	}
}

func (c *cell) finish(m marker) {
	c.ended = true
	c.Seconds = m.Seconds
	switch m.Result {
	case "unavailable":
		if c.begun {
			c.Outcome, c.Reason = cellFail, "reported unavailable after its tests ran"
			return
		}
		c.Outcome, c.Reason = cellNA, m.Reason
		return
	case "pass", "fail":
	default:
		c.Outcome, c.Reason = cellFail, fmt.Sprintf("unknown result %q", m.Result)
		return
	}
	if !c.begun {
		c.Outcome, c.Reason = cellFail, m.Reason
		if m.Result == "pass" {
			c.Reason = "reported pass without running"
		}
		return
	}
	c.count()
	var why []string
	if m.Exit == nil {
		why = append(why, "no exit status")
	} else if *m.Exit != 0 {
		why = append(why, "exit status "+strconv.Itoa(*m.Exit))
	}
	if m.Result != "pass" && m.Reason != "" && (m.Exit == nil || *m.Exit == 0) {
		why = append(why, m.Reason)
	}
	if c.Failed > 0 {
		why = append(why, fmt.Sprintf("%d test(s) failed: %s", c.Failed, strings.Join(c.FailedTests, " ")))
	}
	switch {
	case c.summary == "":
		why = append(why, "no PASS/FAIL line from the test binary")
	case c.summary == "FAIL" && c.Failed == 0:
		why = append(why, "test binary printed FAIL")
	}
	if c.Passed == 0 && c.Failed == 0 {
		why = append(why, "no tests ran")
	}
	if len(why) == 0 && m.Result == "pass" && c.summary == "PASS" {
		c.Outcome = cellPass
		return
	}
	if len(why) == 0 {
		why = append(why, "agent reported "+m.Result)
	}
	c.Outcome, c.Reason = cellFail, strings.Join(why, "; ")
}

// failingOutput keeps the output that explains a failure: the lines of
// every top-level test that failed or never finished (from its "=== RUN"
// to its result and its subtests' results), and whatever was printed
// outside any test (a panic, a timeout's goroutine dump). Passing tests'
// lines are dropped.
func failingOutput(lines []string) []string {
	type block struct {
		lines  []string
		passed bool
	}
	var blocks []*block
	var cur *block      // the test whose lines are being collected
	var finished *block // the last test that printed its result
	outside := &block{}
	blocks = append(blocks, outside)
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "=== RUN   ") && !strings.Contains(strings.TrimPrefix(l, "=== RUN   "), "/"):
			cur = &block{}
			blocks = append(blocks, cur)
			finished = nil
			cur.lines = append(cur.lines, l)
		case testResultRE.MatchString(l):
			if cur == nil {
				cur = &block{}
				blocks = append(blocks, cur)
			}
			cur.lines = append(cur.lines, l)
			cur.passed = !strings.HasPrefix(l, "--- FAIL")
			finished, cur = cur, nil
		case cur != nil:
			cur.lines = append(cur.lines, l)
		case finished != nil && strings.HasPrefix(l, " "):
			// Subtest results and logs indented under a finished test.
			finished.lines = append(finished.lines, l)
		default:
			finished = nil
			if t := strings.TrimRight(l, " \t"); t != "PASS" && t != "FAIL" && t != "" {
				outside.lines = append(outside.lines, l)
			}
		}
	}
	var out []string
	for _, b := range blocks {
		if !b.passed {
			out = append(out, b.lines...)
		}
	}
	return out
}
