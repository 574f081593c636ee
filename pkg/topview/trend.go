package topview

import "github.com/sstrace/sstrace/pkg/sock"

// TrendStates are the states the view lists, in the order of a
// connection's life; their labels are Snapshot.States' keys.
var TrendStates = []sock.State{
	sock.Listen, sock.SynSent, sock.SynRecv, sock.Established, sock.FinWait1, sock.FinWait2,
	sock.TimeWait, sock.CloseWait, sock.LastAck, sock.Closing,
}

// Trend keeps the last snapshots' state counts, for a sparkline and a
// delta per state. The zero value is not usable: make one with NewTrend.
type Trend struct {
	n      int
	series map[string][]int
}

// NewTrend returns a Trend that keeps n refreshes.
func NewTrend(n int) *Trend { return &Trend{n: max(n, 2), series: make(map[string][]int)} }

// Add appends a snapshot's counts (a state it lacks counts 0).
func (t *Trend) Add(s *Snapshot) {
	for _, st := range TrendStates {
		l := st.SSLabel()
		v := append(t.series[l], s.States[l])
		if len(v) > t.n {
			v = v[len(v)-t.n:]
		}
		t.series[l] = v
	}
}

// Reset forgets the history (a new filter counts other sockets).
func (t *Trend) Reset() { clear(t.series) }

// Series returns the counts of a state label, oldest first (shared: do
// not change it).
func (t *Trend) Series(label string) []int { return t.series[label] }

// Delta is the change of a state label's count since the refresh before.
func (t *Trend) Delta(label string) int {
	v := t.series[label]
	if len(v) < 2 {
		return 0
	}
	return v[len(v)-1] - v[len(v)-2]
}
