package topview

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Snapshot is one refresh of the live view: what the daemon streams to
// `sstrace top`, one JSON object per line.
type Snapshot struct {
	Time       time.Time `json:"time"`
	IntervalMs int64     `json:"interval_ms"`
	// WindowMs is how far back Owners and Peers count.
	WindowMs int64 `json:"window_ms"`
	// States counts the live sockets by ss's state label (ESTAB,
	// TIME-WAIT, ...); states with none are left out.
	States map[string]int `json:"states"`
	// Live is the sum of States.
	Live int `json:"live"`
	// NewPerSec and ClosedPerSec are the connections opened and closed
	// in the last complete interval, per second.
	NewPerSec    float64 `json:"new_per_sec"`
	ClosedPerSec float64 `json:"closed_per_sec"`
	// Owners and Peers are the processes and the peers opening the most
	// connections in the window (and those with the most failures).
	Owners []Count `json:"owners"`
	Peers  []Count `json:"peers"`
	// CloseWait groups the sockets in CLOSE-WAIT by owner, most first.
	CloseWait []CloseWaitGroup `json:"close_wait"`
	// Recent are the latest short-lived connections, newest first.
	Recent []Recent `json:"recent"`
	// Dropped counts the table's updates the view lost because it fell
	// behind: the per-second figures undercount by that much.
	Dropped uint64 `json:"dropped"`
}

// Count is an owner's or a peer's figures over the window.
type Count struct {
	// Name is the process name (owners) or the peer: address and port
	// of a service this host connects to, address of a client it
	// accepts from.
	Name string `json:"name"`
	// PID is the owner's process id (0 for peers and unknown owners).
	PID uint32 `json:"pid,omitempty"`
	// NewPerSec counts the connections opened in the last interval.
	NewPerSec float64 `json:"new_per_sec"`
	// New counts the connections opened in the window.
	New int `json:"new"`
	// Failed counts the connections that ended refused, timed out,
	// unreachable, reset or aborted in the window.
	Failed int `json:"failed"`
}

// CloseWaitGroup is one owner's sockets in CLOSE-WAIT: the peer closed,
// the process has not.
type CloseWaitGroup struct {
	Comm    string `json:"comm"`
	PID     uint32 `json:"pid"`
	Sockets int    `json:"sockets"`
	// OldestMs is the age of the oldest, since the peer's FIN (since the
	// table first saw it when the FIN came before).
	OldestMs float64 `json:"oldest_ms"`
	// Ports are the local ports of the sockets (at most eight).
	Ports []uint16 `json:"ports"`
}

// Recent is a short-lived connection that has closed (keys as in
// `history --json`, docs/JSON.md).
type Recent struct {
	Closed     time.Time `json:"closed"`
	PID        uint32    `json:"pid"`
	Comm       string    `json:"comm"`
	Local      string    `json:"local"`
	Peer       string    `json:"peer"`
	Origin     string    `json:"origin"`
	Outcome    string    `json:"outcome"`
	By         string    `json:"by,omitempty"`
	LifetimeMs float64   `json:"lifetime_ms"`
	Gap        bool      `json:"gap,omitempty"`
}

// OutcomeText is the outcome as `history` prints it: "refused(peer)".
func (r *Recent) OutcomeText() string {
	if r.By == "" {
		return r.Outcome
	}
	return r.Outcome + "(" + r.By + ")"
}

// AppendJSON appends s as one JSON line.
func (s *Snapshot) AppendJSON(b []byte) ([]byte, error) {
	j, err := json.Marshal(s)
	if err != nil {
		return b, err
	}
	return append(append(b, j...), '\n'), nil
}

// SortKey orders the owners and peers panels.
type SortKey int

// Sort keys, in the order the view cycles through them.
const (
	// SortNew: most connections opened in the window first.
	SortNew SortKey = iota
	// SortFailed: most failed connections first.
	SortFailed
	// SortRate: most connections opened in the last interval first.
	SortRate
	// SortName: by name.
	SortName
	numSortKeys
)

// String names the key as the view shows it.
func (k SortKey) String() string {
	switch k {
	case SortFailed:
		return "failed"
	case SortRate:
		return "new/s"
	case SortName:
		return "name"
	}
	return "new"
}

// Next is the key after k, cycling.
func (k SortKey) Next() SortKey { return (k + 1) % numSortKeys }

// SortCounts orders rows by key; ties by name, then pid, so the order is
// stable from one refresh to the next.
func SortCounts(rows []Count, by SortKey) {
	slices.SortFunc(rows, func(x, y Count) int { return compareCounts(&x, &y, by) })
}

func compareCounts(x, y *Count, by SortKey) int {
	var c int
	switch by {
	case SortNew:
		c = cmp.Or(cmp.Compare(y.New, x.New), cmp.Compare(y.Failed, x.Failed))
	case SortFailed:
		c = cmp.Or(cmp.Compare(y.Failed, x.Failed), cmp.Compare(y.New, x.New))
	case SortRate:
		c = cmp.Or(cmp.Compare(y.NewPerSec, x.NewPerSec), cmp.Compare(y.New, x.New))
	}
	return cmp.Or(c, cmp.Compare(x.Name, y.Name), cmp.Compare(x.PID, y.PID))
}

// DecodeSnapshot reads one JSON line of AppendJSON.
func DecodeSnapshot(line []byte) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(line, &s); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &s, nil
}
