// Package topui is the screen of `sstrace top`: a bubbletea model that
// shows topview snapshots and takes the keys (sort, pause, filter, quit).
// It draws and reacts; the figures come from pkg/topview (in the daemon,
// or in-process without one) through the messages the caller sends.
package topui

import (
	"errors"
	"strings"

	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/sstrace/sstrace/pkg/topview"
)

// The messages a source sends carry the generation of the filter they
// were computed for (see Config.SetFilter): a message of a source that a
// new filter replaced may still be on its way, and is dropped.

// SnapshotMsg delivers a refresh.
type SnapshotMsg struct {
	Snap *topview.Snapshot
	Gen  int
}

// SourceErrorMsg reports that the figures stopped: the view quits and
// Model.Err returns the error (the daemon went away, the tracer failed).
type SourceErrorMsg struct {
	Err error
	Gen int
}

// FilterErrorMsg reports that the source refused a filter the view had
// accepted: it is shown, and the view keeps going.
type FilterErrorMsg struct {
	Err error
	Gen int
}

// Config sets up a Model.
type Config struct {
	// Source and Scope label the title line.
	Source, Scope string
	// Filter is the filter in force at the start (ss's language).
	Filter string
	// SetFilter checks and applies a new filter (the words as typed,
	// split on blanks), whose source tags its messages with gen; an
	// error is shown in the view and the old filter stays. It runs in
	// Update: it must not wait for the program (a source blocked sending
	// to it, say). The first source has generation 0.
	SetFilter func(words []string, gen int) error
	// TrendLength is how many refreshes the sparklines cover (default 60).
	TrendLength int
}

// Model is the live view's state. Make it with New.
type Model struct {
	cfg    Config
	snap   *topview.Snapshot
	trend  *topview.Trend
	filter string
	sort   topview.SortKey
	paused bool
	// frozen is what a paused view keeps showing.
	frozen *topview.Snapshot
	// gen is the generation of the source in force.
	gen    int
	input  textinput.Model
	typing bool
	msg    string
	err    error
	w, h   int
}

// helpLine is the footer when nothing else is to be said.
const helpLine = "s sort · p pause · / filter (ss syntax; empty: none) · q quit"

// New returns the view's model.
func New(cfg Config) *Model {
	if cfg.TrendLength <= 0 {
		cfg.TrendLength = 60
	}
	in := textinput.New()
	in.Prompt = "filter: "
	in.Placeholder = "dport = :443 or sport = :8080"
	in.CharLimit = 4096
	return &Model{cfg: cfg, trend: topview.NewTrend(cfg.TrendLength), filter: cfg.Filter, input: in, w: 120, h: 40}
}

// Err is why the view ended on its own (nil after q or a signal).
func (m *Model) Err() error { return m.err }

// Init starts nothing: the caller sends the snapshots.
func (m *Model) Init() tea.Cmd { return nil }

// Update takes a key, a resize, a snapshot or a source's error.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.w, m.h = msg.Width, msg.Height
	case SnapshotMsg:
		if msg.Gen != m.gen {
			break
		}
		m.snap = msg.Snap
		if !m.paused {
			// A paused view's sparklines stand still too.
			m.trend.Add(msg.Snap)
		}
	case SourceErrorMsg:
		if msg.Gen != m.gen {
			break
		}
		m.err = msg.Err
		if m.err == nil {
			m.err = errors.New("the figures stopped")
		}
		return m, tea.Quit
	case FilterErrorMsg:
		if msg.Gen == m.gen {
			m.msg = msg.Err.Error()
		}
	case tea.KeyMsg:
		if m.typing {
			return m.typed(msg)
		}
		switch msg.String() {
		case "q", "ctrl+c":
			return m, tea.Quit
		case "s":
			m.sort = m.sort.Next()
		case "p", " ":
			m.paused = !m.paused
			m.frozen = m.snap
		case "/":
			m.typing = true
			m.msg = ""
			m.input.SetValue(m.filter)
			m.input.CursorEnd()
			return m, m.input.Focus()
		}
	}
	return m, nil
}

// typed handles a key while the filter is being typed: Enter applies it,
// Esc gives up, anything else edits.
func (m *Model) typed(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "ctrl+c":
		return m, tea.Quit
	case "esc":
		m.typing = false
		m.msg = ""
		m.input.Blur()
		return m, nil
	case "enter":
		text := strings.TrimSpace(m.input.Value())
		if m.cfg.SetFilter != nil {
			if err := m.cfg.SetFilter(strings.Fields(text), m.gen+1); err != nil {
				// The bad filter stays in the input for fixing.
				m.msg = err.Error()
				return m, nil
			}
		}
		m.gen++
		m.filter = text
		m.typing = false
		m.msg = ""
		m.input.Blur()
		m.trend.Reset() // other sockets: their history starts now
		m.snap, m.frozen = nil, nil
		return m, nil
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(k)
	return m, cmd
}

// View draws the frame.
func (m *Model) View() string {
	snap := m.snap
	if m.paused {
		snap = m.frozen
	}
	footer := helpLine
	switch {
	case m.typing && m.msg != "":
		footer = m.input.View() + "   " + m.msg
	case m.typing:
		footer = m.input.View() + "   (Enter applies, Esc cancels)"
	case m.msg != "":
		footer = m.msg
	}
	return Render(&Frame{
		Snap: snap, Trend: m.trend, Source: m.cfg.Source, Scope: m.cfg.Scope, Filter: m.filter,
		Sort: m.sort, Paused: m.paused, Footer: footer, Width: m.w, Height: m.h,
	})
}
