package topui

import (
	"fmt"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/sstrace/sstrace/pkg/topview"
)

// fullSnapshot has more of everything than a 120x40 screen shows.
func fullSnapshot() *topview.Snapshot {
	s := &topview.Snapshot{
		Time: time.Date(2026, 1, 2, 15, 4, 5, 0, time.Local), IntervalMs: 1000, WindowMs: 60000,
		States:    map[string]int{"ESTAB": 120, "TIME-WAIT": 30000, "CLOSE-WAIT": 7, "LISTEN": 3},
		Live:      30130,
		NewPerSec: 29876.5, ClosedPerSec: 29870,
	}
	for i := range 30 {
		s.Owners = append(s.Owners, topview.Count{Name: fmt.Sprintf("proc-%02d", i), PID: uint32(1000 + i), NewPerSec: float64(1000 - i), New: 60000 - i, Failed: i})
		s.Peers = append(s.Peers, topview.Count{Name: fmt.Sprintf("10.0.%d.1:443", i), NewPerSec: float64(500 - i), New: 30000 - i, Failed: 30 - i})
	}
	s.CloseWait = []topview.CloseWaitGroup{{Comm: "leaky\x1b[31m", PID: 42, Sockets: 7, OldestMs: 125000, Ports: []uint16{8080}}}
	for i := range 50 {
		s.Recent = append(s.Recent, topview.Recent{Closed: s.Time, PID: 7, Comm: "curl", Local: "127.0.0.1:40000",
			Peer: fmt.Sprintf("127.0.0.1:%d", 9000+i), Outcome: "refused", By: "peer", LifetimeMs: 0.012})
	}
	return s
}

// A frame fits the terminal, escapes names, and shows every panel.
func TestRender(t *testing.T) {
	trend := topview.NewTrend(60)
	snap := fullSnapshot()
	for i := range 5 {
		s := *snap
		s.States = map[string]int{"ESTAB": 100 + 10*i, "TIME-WAIT": 30000}
		trend.Add(&s)
	}
	for _, size := range [][2]int{{120, 40}, {80, 24}, {200, 60}, {40, 8}} {
		out := Render(&Frame{Snap: snap, Trend: trend, Source: "daemon /run/x.sock", Scope: "netns 1", Filter: "dport = :443",
			Sort: topview.SortFailed, Paused: true, Footer: helpLine, Width: size[0], Height: size[1]})
		lines := strings.Split(out, "\n")
		if len(lines) != size[1] {
			t.Errorf("%dx%d: %d lines", size[0], size[1], len(lines))
		}
		for _, l := range lines {
			if w := lipgloss.Width(l); w > size[0] {
				t.Errorf("%dx%d: a line of %d cells: %q", size[0], size[1], w, l)
			}
		}
		if !strings.Contains(out, "PAUSED") || !strings.HasPrefix(lines[len(lines)-1], "s sort") || strings.Contains(out, "\x1b[31m") {
			t.Errorf("%dx%d: title, footer or escaping:\n%s", size[0], size[1], out)
		}
		if size[1] < 40 {
			continue
		}
		for _, want := range []string{"sort: failed", "new 29876/s", "closed 29870/s", "live 30130", "filter: dport = :443",
			"ESTAB", "+10", "▁▂▄▆█", `leaky\x1b[31m[42]`, "2m05s", "proc-29[1029]", "10.0.0.1:443", "refused(peer)", "0.012ms"} {
			if !strings.Contains(out, want) {
				t.Errorf("%dx%d: no %q in\n%s", size[0], size[1], want, out)
			}
		}
		// By failed: proc-29 (29 failures) leads the owners.
		if got := firstRow(out, "TOP OWNERS"); got != "proc-29[1029]" {
			t.Errorf("first owner by failed: %q", got)
		}
	}
}

func firstRow(screen, header string) string {
	ls := strings.Split(screen, "\n")
	for i, l := range ls {
		if strings.Contains(l, header) && i+1 < len(ls) {
			return strings.Fields(ls[i+1])[0]
		}
	}
	return ""
}

// The model: keys sort, pause (the frame stands still) and open the
// filter; a filter its source refuses stays in the input with the error;
// a source that stops ends the view with its error; late messages of a
// replaced source are dropped.
func TestModelKeys(t *testing.T) {
	var applied []string
	m := New(Config{Source: "test", Scope: "all", SetFilter: func(words []string, gen int) error {
		if len(words) > 0 && words[0] == "bad" {
			return fmt.Errorf("filter: unexpected %q", words[0])
		}
		applied = append(applied, fmt.Sprint(gen, words))
		return nil
	}})
	key := func(s string) tea.Msg {
		switch s {
		case "enter":
			return tea.KeyMsg{Type: tea.KeyEnter}
		case "esc":
			return tea.KeyMsg{Type: tea.KeyEsc}
		}
		return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
	}
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	m.Update(SnapshotMsg{Snap: fullSnapshot()})
	m.Update(key("s"))
	if !strings.Contains(m.View(), "sort: failed") {
		t.Error("s did not change the sort")
	}
	m.Update(key("p"))
	before := m.View()
	later := fullSnapshot()
	later.Live = 1
	m.Update(SnapshotMsg{Snap: later})
	if m.View() != before || !strings.Contains(before, "PAUSED") {
		t.Error("the paused view changed")
	}
	m.Update(key("p"))
	if !strings.Contains(m.View(), "live 1 ") {
		t.Error("resumed view is not the latest")
	}
	m.Update(key("/"))
	m.Update(key("bad"))
	m.Update(key("enter"))
	if v := m.View(); !strings.Contains(v, `filter: unexpected "bad"`) || !strings.Contains(v, "filter: (none)") {
		t.Errorf("bad filter:\n%s", v)
	}
	m.Update(key("esc"))
	m.Update(key("/"))
	m.Update(key("dport = :80"))
	m.Update(key("enter"))
	if fmt.Sprint(applied) != "[1 [dport = :80]]" || !strings.Contains(m.View(), "waiting for the first refresh") {
		t.Errorf("applied %v:\n%s", applied, m.View())
	}
	m.Update(SnapshotMsg{Snap: fullSnapshot(), Gen: 0}) // the old source's
	if !strings.Contains(m.View(), "waiting for the first refresh") {
		t.Error("a replaced source's snapshot was shown")
	}
	if _, cmd := m.Update(SourceErrorMsg{Err: fmt.Errorf("old"), Gen: 0}); cmd != nil || m.Err() != nil {
		t.Error("a replaced source's error ended the view")
	}
	_, cmd := m.Update(SourceErrorMsg{Err: fmt.Errorf("daemon gone"), Gen: 1})
	if cmd == nil || m.Err() == nil || m.Err().Error() != "daemon gone" {
		t.Errorf("source error: cmd %v err %v", cmd, m.Err())
	}
}

func TestSparkline(t *testing.T) {
	for _, c := range []struct {
		v    []int
		w    int
		want string
	}{{nil, 5, ""}, {[]int{3, 3}, 5, "▁▁"}, {[]int{0, 7, 14}, 5, "▁▄█"}, {[]int{9, 0, 1, 2}, 3, "▁▄█"}} {
		if got := Sparkline(c.v, c.w); got != c.want {
			t.Errorf("Sparkline(%v, %d) = %q, want %q", c.v, c.w, got, c.want)
		}
	}
}

// BenchmarkRender times the drawing of a full 120x40 frame.
func BenchmarkRender(b *testing.B) {
	snap := fullSnapshot()
	trend := topview.NewTrend(60)
	for range 60 {
		trend.Add(snap)
	}
	for b.Loop() {
		Render(&Frame{Snap: snap, Trend: trend, Source: "bench", Scope: "all", Footer: helpLine, Width: 120, Height: 40})
	}
}
