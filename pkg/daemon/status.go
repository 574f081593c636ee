package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
)

// Status is what `sstrace status --socket` reports, as JSON with these
// keys (docs/JSON.md). The daemon's Config.Status hook fills what only it
// knows (Hook, Kernel, Cookies, PID, Version, EventsPerSecond); the server
// fills the table's figures when it answers, over whatever the hook set.
type Status struct {
	// Seeded is true once the first seed has completed: before, queries
	// fail and `sstrace status` exits 1.
	Seeded bool `json:"seeded"`
	// Started is when the first seed began.
	Started time.Time `json:"started,omitzero"`
	// Hook is the kernel hook the tracer uses.
	Hook string `json:"hook"`
	// Kernel is the kernel release.
	Kernel string `json:"kernel"`
	// Cookies says how events get their socket cookies.
	Cookies string `json:"cookies,omitempty"`
	// PID is the daemon's process id.
	PID int `json:"pid,omitempty"`
	// Version is sstrace's version.
	Version string `json:"version,omitempty"`
	// Events is the number of events the table applied.
	Events uint64 `json:"events"`
	// EventsPerSecond is the recent event rate (the hook's figure).
	EventsPerSecond float64 `json:"events_per_second"`
	// Lost is the number of events the ring buffer lost.
	Lost uint64 `json:"lost"`
	// Caught is the number of transitions the kernel skipped for the
	// tracer's main program (a softirq interrupted it) that its catcher
	// program delivered: not lost (the hook's figure; tp_btf and fentry
	// on 5.12+).
	Caught uint64 `json:"caught"`
	// Reseeds is the number of re-seeds after losses.
	Reseeds uint64 `json:"reseeds"`
	// Corrections is the number of corrections reconciles and re-seeds
	// made; CorrectionsByCause splits it (table.Cause* names). Outside
	// timewait_expired it stays 0 in a healthy run.
	Corrections        uint64            `json:"corrections"`
	CorrectionsByCause map[string]uint64 `json:"corrections_by_cause"`
	// Sockets counts the kernel's TCP sockets by state (kernel names),
	// SocketsTotal all of them, NetNS the namespaces they are in.
	Sockets      map[string]int `json:"sockets"`
	SocketsTotal int            `json:"sockets_total"`
	NetNS        int            `json:"netns"`
	// Retained is the number of closed connections kept for history;
	// Dropped those retention dropped.
	Retained int    `json:"retained"`
	Dropped  uint64 `json:"dropped"`
	// Outcomes counts closed connections by outcome.
	Outcomes map[string]uint64 `json:"outcomes"`
	// MemoryBytes estimates the table's memory.
	MemoryBytes int64 `json:"memory_bytes"`
	// Clients is the number of requests being served.
	Clients int `json:"clients"`
	// OTLP is the OpenTelemetry export's figures; absent without
	// --otlp-endpoint.
	OTLP *OTLPStatus `json:"otlp,omitempty"`
}

// OTLPStatus is the OTLP exporter's part of Status (pkg/otlpexport).
type OTLPStatus struct {
	// Endpoint is the collector's base URL.
	Endpoint string `json:"endpoint"`
	// RecordsExported counts the flow-log records the collector accepted.
	RecordsExported uint64 `json:"records_exported"`
	// RecordsDropped counts the records dropped; DroppedByReason splits
	// it: queue_full, export_failed.
	RecordsDropped  uint64            `json:"records_dropped"`
	DroppedByReason map[string]uint64 `json:"records_dropped_by_reason"`
	// MetricExports counts the metric pushes the collector accepted.
	MetricExports uint64 `json:"metric_exports"`
	// Errors counts failed requests; LastError is the last one's while
	// they fail.
	Errors    uint64 `json:"errors"`
	LastError string `json:"last_error,omitempty"`
}

// fill sets the table's figures.
func (st *Status) fill(s table.Stats) {
	st.Seeded = s.Seeded
	st.Started = s.Started
	st.Events, st.Lost, st.Reseeds = s.Events, s.Lost, s.Reseeds
	st.CorrectionsByCause = make(map[string]uint64, len(s.Corrections))
	st.Corrections = 0
	for k, v := range s.Corrections {
		st.CorrectionsByCause[k] = v
		st.Corrections += v
	}
	st.Sockets = make(map[string]int, len(s.Live))
	st.SocketsTotal = 0
	for state, n := range s.Live {
		st.Sockets[state.String()] = n
		st.SocketsTotal += n
	}
	st.NetNS = len(s.LiveByNetNS)
	st.Retained, st.Dropped = s.Retained, s.Dropped
	st.Outcomes = make(map[string]uint64, len(s.Outcomes))
	for k, v := range s.Outcomes {
		st.Outcomes[string(k)] = v
	}
	st.MemoryBytes = s.MemoryBytes
}

// status builds the Status of this moment.
func (s *Server) status() Status {
	var st Status
	if s.cfg.Status != nil {
		st = s.cfg.Status()
	}
	st.fill(s.cfg.Table.Stats())
	st.Clients = len(s.sem)
	return st
}

// runStatus answers "status": exit 0 once the table is seeded, 1 before.
func (s *Server) runStatus(w *replyWriter, req *Request) (int, error) {
	st := s.status()
	if req.JSON {
		b, err := json.Marshal(st)
		if err != nil {
			return 1, err
		}
		w.Out.Write(append(b, '\n'))
	} else {
		WriteStatusText(w.Out, st)
	}
	if !st.Seeded {
		return 1, table.ErrNotSeeded
	}
	return 0, nil
}

// WriteStatusText prints st for people.
func WriteStatusText(w io.Writer, st Status) {
	seeded := "no (the table is still being seeded)"
	if st.Seeded {
		seeded = "yes, since " + st.Started.Local().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "seeded:       %s\n", seeded)
	if st.Hook != "" {
		fmt.Fprintf(w, "hook:         %s\n", st.Hook)
	}
	if st.Cookies != "" {
		fmt.Fprintf(w, "cookies:      %s\n", st.Cookies)
	}
	if st.Kernel != "" {
		fmt.Fprintf(w, "kernel:       %s\n", st.Kernel)
	}
	if st.PID != 0 {
		fmt.Fprintf(w, "pid:          %d\n", st.PID)
	}
	fmt.Fprintf(w, "events:       %d (%.1f/s)\n", st.Events, st.EventsPerSecond)
	fmt.Fprintf(w, "lost:         %d\n", st.Lost)
	if st.Caught > 0 {
		fmt.Fprintf(w, "caught:       %d (skipped by the kernel for the main program, delivered by its catcher)\n", st.Caught)
	}
	fmt.Fprintf(w, "reseeds:      %d\n", st.Reseeds)
	fmt.Fprintf(w, "corrections:  %d%s\n", st.Corrections, byCause(st.CorrectionsByCause))
	fmt.Fprintf(w, "sockets:      %d in %d network namespaces%s\n", st.SocketsTotal, st.NetNS, byState(st.Sockets))
	fmt.Fprintf(w, "retained:     %d closed connections (%d dropped by retention)\n", st.Retained, st.Dropped)
	if len(st.Outcomes) > 0 {
		fmt.Fprintf(w, "outcomes:    %s\n", byCause(st.Outcomes))
	}
	fmt.Fprintf(w, "memory:       %s (table estimate)\n", bytesText(st.MemoryBytes))
	fmt.Fprintf(w, "clients:      %d\n", st.Clients)
	if o := st.OTLP; o != nil {
		fmt.Fprintf(w, "otlp:         %s: %d records exported, %d dropped%s, %d metric pushes, %d errors\n",
			o.Endpoint, o.RecordsExported, o.RecordsDropped, byCause(o.DroppedByReason), o.MetricExports, o.Errors)
		if o.LastError != "" {
			fmt.Fprintf(w, "otlp failing: %s\n", o.LastError)
		}
	}
}

// byCause formats a count map as " (a 1, b 2)", sorted by name.
func byCause(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return ""
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// byState formats socket counts in the kernel's state order.
func byState(m map[string]int) string {
	var parts []string
	for st := sock.Established; st <= sock.MaxState; st++ {
		if n := m[st.String()]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, n))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, ", ")
}

// bytesText formats a byte count with a binary unit.
func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
