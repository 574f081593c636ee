package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"
)

// outputTail bounds how much of a failing cell's output is shown.
const (
	outputTail  = 150
	consoleTail = 40
	reasonWidth = 34
)

// report prints the matrix, the notes and the failures, and says whether
// everything passed. A row whose run had problems fails even when its
// cells look fine: an unreadable run is not a passing one.
func report(w io.Writer, rows []*row, hooks []string, wall time.Duration) bool {
	passed, failed, na := 0, 0, 0
	ok := true
	for _, r := range rows {
		for _, h := range hooks {
			switch c := cellOf(r, h); c.Outcome {
			case cellPass:
				passed++
			case cellNA:
				na++
			default:
				failed++
			}
		}
		if r.err != nil || r.run == nil || len(r.run.Problems) > 0 || (r.boot != nil && r.boot.Err != nil) {
			ok = false
		}
	}
	if failed > 0 {
		ok = false
	}

	fmt.Fprintf(w, "\n== vmtest matrix (wall time %s)\n\n", wall.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "kernel\trelease")
	for _, h := range hooks {
		fmt.Fprint(tw, "\t", h)
	}
	fmt.Fprint(tw, "\ttime\t\n")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s", r.label, orDash(r.release))
		for _, h := range hooks {
			fmt.Fprint(tw, "\t", cellText(cellOf(r, h)))
		}
		t := "-"
		if r.boot != nil {
			t = fmt.Sprintf("%.1fs", r.boot.Duration.Seconds())
		}
		fmt.Fprintf(tw, "\t%s\t\n", t)
	}
	tw.Flush()
	fmt.Fprintln(w, "\ncells: pass N = N tests passed (seconds for the hook's run); FAIL F/N = F of N tests failed; n/a = the hook is not available there (sstrace status)")

	fmt.Fprintln(w, "\n== notes")
	for _, r := range rows {
		for _, h := range hooks {
			if c := cellOf(r, h); c.Outcome == cellNA {
				fmt.Fprintf(w, "%s × %s: n/a: %s\n", r.label, h, c.Reason)
			}
		}
		for _, n := range r.notes {
			fmt.Fprintf(w, "%s: %s\n", r.label, n)
		}
	}

	var failures []string
	for _, r := range rows {
		failures = append(failures, rowFailures(r, hooks)...)
	}
	if len(failures) > 0 {
		fmt.Fprintln(w, "\n== failures")
		for _, f := range failures {
			fmt.Fprintln(w, f)
		}
	}
	verdict := "PASS"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n== vmtest %s in %s\n", verdict, wall.Round(time.Second))
	// The plain closing line: cells, with n/a counted as skipped.
	fmt.Fprintf(w, "vmtest: %d passed, %d failed, %d skipped\n", passed, failed, na)
	return ok
}

// cellOf returns the row's cell for a hook; a row that never ran fails.
func cellOf(r *row, hook string) *cell {
	switch {
	case r.err != nil:
		return &cell{Hook: hook, Outcome: cellFail, Reason: r.err.Error()}
	case r.run == nil:
		return &cell{Hook: hook, Outcome: cellFail, Reason: "did not run"}
	}
	return r.run.Cells[hook]
}

func cellText(c *cell) string {
	switch c.Outcome {
	case cellPass:
		s := fmt.Sprintf("pass %d", c.Passed)
		if c.Skipped > 0 {
			s += fmt.Sprintf("+%d skip", c.Skipped)
		}
		return fmt.Sprintf("%s (%.1fs)", s, c.Seconds)
	case cellNA:
		return "n/a: " + truncate(c.Reason, reasonWidth)
	}
	if c.Passed+c.Failed > 0 {
		return fmt.Sprintf("FAIL %d/%d (%.1fs)", c.Failed, c.Passed+c.Failed, c.Seconds)
	}
	return "FAIL"
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// rowFailures describes what went wrong in a row: preparation errors, VMs
// that did not report (with the console tail), parse problems and each
// failing cell with its test output.
func rowFailures(r *row, hooks []string) []string {
	var out []string
	if r.err != nil {
		return []string{fmt.Sprintf("--- %s: %v", r.label, r.err)}
	}
	consoleShown := false
	if r.boot != nil && r.boot.Err != nil || len(r.run.Problems) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "--- %s: the run did not report cleanly", r.label)
		if r.boot != nil && r.boot.Err != nil {
			fmt.Fprintf(&b, " (%v)", r.boot.Err)
		}
		b.WriteString("\n")
		for _, p := range r.run.Problems {
			fmt.Fprintf(&b, "    problem: %s\n", p)
		}
		if r.boot != nil {
			fmt.Fprintf(&b, "    last %d console lines:\n", consoleTail)
			for _, l := range tail(strings.Split(strings.TrimRight(string(r.boot.Console), "\n"), "\n"), consoleTail) {
				fmt.Fprintf(&b, "    | %s\n", printable(l))
			}
			consoleShown = true
		}
		out = append(out, b.String())
	}
	for _, h := range hooks {
		c := cellOf(r, h)
		if c.Outcome != cellFail {
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "--- %s × %s: FAIL: %s\n", r.label, h, c.Reason)
		if len(c.Output) > 0 {
			failing := failingOutput(c.Output)
			if len(failing) == 0 {
				failing = c.Output
			}
			lines := tail(failing, outputTail)
			if len(lines) < len(failing) {
				fmt.Fprintf(&b, "    (last %d of %d lines of the failing tests' output)\n", len(lines), len(failing))
			}
			for _, l := range lines {
				fmt.Fprintf(&b, "    | %s\n", printable(l))
			}
		} else if !consoleShown {
			fmt.Fprintf(&b, "    (no test output)\n")
		}
		out = append(out, b.String())
	}
	return out
}

func tail(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

// Firmware and terminal escape sequences (SeaBIOS clears the screen) and
// other control characters would garble the report.
var escapeRE = regexp.MustCompile("\x1b(\\[[0-9;?]*[A-Za-z]|[A-Za-z])|[\x00-\x08\x0b-\x1f\x7f]")

func printable(s string) string { return escapeRE.ReplaceAllString(s, "") }
