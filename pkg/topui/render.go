package topui

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/sstrace/sstrace/pkg/eventfmt"
	"github.com/sstrace/sstrace/pkg/topview"
)

// Frame is what one screen shows besides the snapshot: the view's state
// and the terminal's size. Render is a pure function of it, so a frame can
// be timed and tested without a terminal.
type Frame struct {
	Snap  *topview.Snapshot
	Trend *topview.Trend
	// Source names where the figures come from ("daemon /run/...").
	Source string
	// Scope names the namespaces shown.
	Scope  string
	Filter string
	Sort   topview.SortKey
	Paused bool
	// Footer is the last line: the keys, the filter being typed, or a
	// message.
	Footer        string
	Width, Height int
}

var (
	titleStyle  = lipgloss.NewStyle().Reverse(true)
	headStyle   = lipgloss.NewStyle().Bold(true)
	pausedStyle = lipgloss.NewStyle().Reverse(true).Bold(true)
)

// sparkGlyphs draw a sparkline, lowest to highest.
var sparkGlyphs = []rune("▁▂▃▄▅▆▇█")

// Sparkline draws the last width values of v scaled between their
// minimum and maximum (a flat series is the lowest glyph throughout).
func Sparkline(v []int, width int) string {
	if len(v) > width {
		v = v[len(v)-width:]
	}
	if len(v) == 0 {
		return ""
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	var b strings.Builder
	for _, x := range v {
		i := 0
		if hi > lo {
			i = (x - lo) * (len(sparkGlyphs) - 1) / (hi - lo)
		}
		b.WriteRune(sparkGlyphs[i])
	}
	return b.String()
}

// name is a process or peer name as a terminal may show it, cut to width.
func name(s string, pid uint32, width int) string {
	out := string(eventfmt.AppendEscaped(nil, s))
	if out == "" {
		out = "-"
	}
	if pid != 0 {
		out += "[" + strconv.FormatUint(uint64(pid), 10) + "]"
	}
	return cut(out, width)
}

// cut shortens s to width cells, marking the cut.
func cut(s string, width int) string {
	if lipgloss.Width(s) <= width {
		return s
	}
	r := []rune(s)
	for len(r) > 0 && lipgloss.Width(string(r))+1 > width {
		r = r[:len(r)-1]
	}
	return string(r) + "…"
}

func signed(n int) string {
	if n > 0 {
		return "+" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}

// Age prints a duration in milliseconds as the view does: 850ms, 12.3s,
// 4m05s, 2h03m.
func Age(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	switch {
	case d < time.Second:
		return fmt.Sprintf("%.0fms", ms)
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// lifetime prints a connection's lifetime with the precision short ones
// need.
func lifetime(ms float64) string {
	if ms < 10 {
		return fmt.Sprintf("%.3fms", ms)
	}
	return Age(ms)
}

func rate(r float64) string {
	if r >= 100 || r == float64(int64(r)) {
		return strconv.FormatFloat(r, 'f', 0, 64)
	}
	return strconv.FormatFloat(r, 'f', 1, 64)
}

// statesPanel lists every state with its count, change and trend.
func statesPanel(f *Frame, width int) []string {
	spark := max(width-30, 4)
	lines := []string{headStyle.Render(fmt.Sprintf("%-11s %7s %6s  %s", "STATE", "SOCKETS", "Δ", "TREND"))}
	for _, st := range topview.TrendStates {
		l := st.SSLabel()
		n := 0
		if f.Snap != nil {
			n = f.Snap.States[l]
		}
		line := fmt.Sprintf("%-11s %7d %6s  ", l, n, signed(f.Trend.Delta(l)))
		lines = append(lines, line+Sparkline(f.Trend.Series(l), spark))
	}
	return lines
}

// closeWaitPanel lists the CLOSE-WAIT sockets by owner, worst first.
func closeWaitPanel(f *Frame, width, rows int) []string {
	lines := []string{headStyle.Render(cut(fmt.Sprintf("%-24s %7s %8s  %s", "CLOSE-WAIT BY OWNER", "SOCKETS", "OLDEST", "PORTS"), width))}
	var groups []topview.CloseWaitGroup
	if f.Snap != nil {
		groups = f.Snap.CloseWait
	}
	if len(groups) == 0 {
		return append(lines, "(none)")
	}
	for i, g := range groups {
		if i == rows-1 && len(groups) > rows {
			lines = append(lines, fmt.Sprintf("... %d more owners", len(groups)-i))
			break
		}
		ports := make([]string, len(g.Ports))
		for j, p := range g.Ports {
			ports[j] = strconv.Itoa(int(p))
		}
		lines = append(lines, cut(fmt.Sprintf("%-24s %7d %8s  %s", name(g.Comm, g.PID, 24), g.Sockets, Age(g.OldestMs), strings.Join(ports, ",")), width))
	}
	return lines
}

// countsPanel lists the top owners or peers in the frame's order.
func countsPanel(title string, rows []topview.Count, by topview.SortKey, width, n int) []string {
	nameWidth := max(width-26, 8)
	lines := []string{headStyle.Render(fmt.Sprintf("%-*s %7s %7s %7s", nameWidth, title, "NEW/s", "NEW", "FAILED"))}
	sorted := append([]topview.Count(nil), rows...)
	topview.SortCounts(sorted, by)
	for i, c := range sorted {
		if i == n {
			break
		}
		lines = append(lines, fmt.Sprintf("%-*s %7s %7d %7d", nameWidth, name(c.Name, c.PID, nameWidth), rate(c.NewPerSec), c.New, c.Failed))
	}
	if len(sorted) == 0 {
		lines = append(lines, "(none)")
	}
	return lines
}

// recentPanel lists the latest short-lived connections, newest first.
func recentPanel(f *Frame, width, n int) []string {
	lines := []string{headStyle.Render(cut(fmt.Sprintf("%-12s %-20s %-22s %-22s %-15s %10s", "CLOSED", "OWNER", "LOCAL", "PEER", "OUTCOME", "LIFETIME"), width))}
	var recent []topview.Recent
	if f.Snap != nil {
		recent = f.Snap.Recent
	}
	for i, r := range recent {
		if i == n {
			break
		}
		outcome := r.OutcomeText()
		if r.Gap {
			outcome += "!"
		}
		lines = append(lines, cut(fmt.Sprintf("%-12s %-20s %-22s %-22s %-15s %10s",
			r.Closed.Local().Format("15:04:05.000"), name(r.Comm, r.PID, 20), cut(r.Local, 22), cut(r.Peer, 22), outcome, lifetime(r.LifetimeMs)), width))
	}
	if len(recent) == 0 {
		lines = append(lines, "(none yet)")
	}
	return lines
}

// side joins two panels side by side, the left one padded to leftWidth.
func side(left, right []string, leftWidth int) []string {
	l := lipgloss.NewStyle().Width(leftWidth).Render(strings.Join(left, "\n"))
	return strings.Split(lipgloss.JoinHorizontal(lipgloss.Top, l, "  ", strings.Join(right, "\n")), "\n")
}

// Render draws one frame: a title line, the rates, the states and
// CLOSE-WAIT panels side by side, the top owners and peers side by side,
// the latest short-lived connections in what height is left, and the
// footer on the last line. Lines are cut to the width; panels that do not
// fit the height are left out from the bottom up.
func Render(f *Frame) string {
	w, h := max(f.Width, 40), max(f.Height, 8)
	var lines []string
	when := "waiting for the first refresh"
	if f.Snap != nil {
		when = f.Snap.Time.Local().Format("15:04:05")
	}
	title, paused := fmt.Sprintf(" sstrace top · %s · %s · sort: %s · %s ", f.Source, f.Scope, f.Sort, when), ""
	if f.Paused {
		paused = " PAUSED " // first, where a narrow terminal still shows it
	}
	lines = append(lines, pausedStyle.Render(paused)+titleStyle.Render(cut(title, w-len(paused))))
	filter := f.Filter
	if filter == "" {
		filter = "(none)"
	}
	if s := f.Snap; s != nil {
		win := time.Duration(s.WindowMs) * time.Millisecond
		summary := fmt.Sprintf("new %s/s   closed %s/s   live %d   filter: %s   tops over %s",
			rate(s.NewPerSec), rate(s.ClosedPerSec), s.Live, filter, win)
		if s.Dropped > 0 {
			summary += fmt.Sprintf("   dropped %d updates (the view fell behind: rates undercount)", s.Dropped)
		}
		lines = append(lines, cut(summary, w))
	} else {
		lines = append(lines, cut("filter: "+filter, w))
	}
	lines = append(lines, "")
	body := h - len(lines) - 1 // the footer

	leftWidth := min(60, w/2)
	states := statesPanel(f, leftWidth)
	if body >= len(states) {
		lines = append(lines, side(states, closeWaitPanel(f, w-leftWidth-2, len(states)-1), leftWidth)...)
		body -= len(states)
	}
	if n := min(8, (body-4)/2); n >= 1 {
		var owners, peers []topview.Count
		if f.Snap != nil {
			owners, peers = f.Snap.Owners, f.Snap.Peers
		}
		lines = append(lines, "")
		lines = append(lines, side(countsPanel("TOP OWNERS", owners, f.Sort, leftWidth, n),
			countsPanel("TOP PEERS", peers, f.Sort, w-leftWidth-2, n), leftWidth)...)
		body -= n + 2
	}
	if body >= 3 {
		lines = append(lines, "")
		lines = append(lines, recentPanel(f, w, body-2)...)
	}
	for len(lines) < h-1 {
		lines = append(lines, "")
	}
	lines = append(lines[:h-1], cut(f.Footer, w))
	for i, l := range lines {
		if lipgloss.Width(l) > w {
			lines[i] = lipgloss.NewStyle().MaxWidth(w).Render(l)
		}
	}
	return strings.Join(lines, "\n")
}
