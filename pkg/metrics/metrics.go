// Package metrics exports the socket table's figures to Prometheus.
//
// A Collector reads the table (table.Table.Stats, one call per scrape) and,
// optionally, the tracer's kernel counters when Prometheus asks: nothing is
// counted twice and nothing lives in package globals. Registry makes a
// registry of its own (the collector, plus the Go runtime and process
// collectors, plus whatever else the daemon counts); Serve runs it on an
// address, for the daemon's --metrics-addr, and pkg/otlpexport pushes the
// same registry over OTLP:
//
//	reg := metrics.Registry(metrics.NewCollector(tbl, metrics.Options{Tracer: tracerStats}))
//	g.Go(func() error { return metrics.Serve(ctx, *metricsAddr, reg, log) })
//
// # Metrics
//
// Every name starts with sstrace_. States are the kernel's names
// (ESTABLISHED, SYN_SENT, TIME_WAIT, ...; see sock.State.String).
//
//	sstrace_sockets{state}                         gauge      live TCP sockets the table tracks, by state (minisockets included; every state is present, 0 when none; request sockets are not tracked, so SYN_RECV stays 0)
//	sstrace_netns_sockets{netns}                   gauge      live TCP sockets by network namespace inode; the 64 largest namespaces, the rest summed under netns="other"
//	sstrace_netns_closewait_sockets{netns}         gauge      live CLOSE-WAIT sockets by network namespace inode (where a leak is); the 64 namespaces with most, the rest under netns="other"
//	sstrace_transitions_total{old_state,new_state} counter    state transitions applied
//	sstrace_state_duration_seconds{state}          histogram  time sockets spent in a state before leaving it (known when the transition into it was seen)
//	sstrace_connection_lifetime_seconds            histogram  lifetime of closed connections whose start was seen (connect or accept)
//	sstrace_connections_closed_total{outcome}      counter    connections by how they ended: refused, timeout, unreachable, reset, closed, aborted, unknown
//	sstrace_connections_dropped_total              counter    closed connections dropped from the table by retention
//	sstrace_retained_connections                   gauge      closed connections the table keeps for history
//	sstrace_events_total                           counter    events the table applied (or buffered during a seed)
//	sstrace_events_lost_total                      counter    events the tracer reported lost to the table (each loss triggers a reseed)
//	sstrace_reseeds_total                          counter    reseeds after the first seed
//	sstrace_corrections_total{cause}               counter    corrections by cause: timewait_expired, timewait_missing, missing_in_table, gone_from_kernel, state_mismatch, seed_mismatch
//	sstrace_table_memory_bytes                     gauge      estimated memory of the table's records and transitions
//	sstrace_seeded                                 gauge      1 once the first seed has completed, 0 before
//	sstrace_table_start_time_seconds               gauge      Unix time the first seed began: the table knows nothing before it (absent until then)
//
// With Options.Tracer set, the tracer's own counters, read from the kernel
// at scrape time (the ring buffer's loss counter is the authority on
// losses; sstrace_events_lost_total is what reached the table):
//
//	sstrace_tracer_events_submitted_total          counter    events the kernel put in the ring buffer
//	sstrace_tracer_events_received_total           counter    events delivered to the daemon
//	sstrace_tracer_events_lost_total               counter    events lost in the kernel: the ring buffer was full, or a transition the kernel skipped (recursion) that no catcher took
//	sstrace_tracer_events_caught_total             counter    transitions the kernel skipped for the main program (recursion) that its catcher recorded: delivered, not lost
//	sstrace_tracer_defer_full_total                counter    first events of new children sent unamended because the map holding them back was full
//
// Histogram buckets are table.HistogramBuckets (100 µs to one hour).
//
// # Cardinality
//
// No metric carries a port, an address, a cookie, a process or a user: the
// per-connection detail stays in `sstrace history` and the JSON output.
// state, old_state, new_state, outcome and cause take values from small fixed
// sets (at most 13 × 13 transition pairs). The namespace is the one label
// that grows with the host, so sstrace_netns_sockets has at most
// Options.MaxNetNS + 1 series (default 64 + 1): the namespaces with the most
// sockets (ties to the lower inode) each get one, and all the others are
// summed under netns="other". A namespace can therefore move between its own
// series and "other" as counts change; sum(sstrace_netns_sockets) always
// equals sum(sstrace_sockets). States are not split by namespace, which
// would multiply the two. The one exception is CLOSE-WAIT, the state of
// leaks: sstrace_netns_closewait_sockets has the same bound, over the
// namespaces that have any.
package metrics

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
)

// DefaultMaxNetNS is how many namespaces get a series of their own in
// sstrace_netns_sockets unless Options.MaxNetNS says otherwise.
const DefaultMaxNetNS = 64

// OtherNetNS is the netns label value under which the namespaces beyond
// Options.MaxNetNS are summed.
const OtherNetNS = "other"

// StatsSource is what a Collector reads at scrape time; *table.Table is one.
type StatsSource interface {
	Stats() table.Stats
}

// TracerStats are the tracer's kernel counters (pkg/tracer's Stats, copied
// here so that this package does not import the package that embeds the BPF
// object).
type TracerStats struct {
	// Submitted is the number of events the kernel put in the ring buffer.
	Submitted uint64
	// Received is the number of events delivered to the handler.
	Received uint64
	// Lost is the number of events lost in the kernel: the ring was full,
	// or the kernel skipped the transition (recursion) and no catcher
	// program took it.
	Lost uint64
	// Caught is the number of transitions the kernel skipped for the main
	// program that its catcher recorded.
	Caught uint64
	// DeferFull counts new children's first events sent unamended because
	// the map that holds them back was full.
	DeferFull uint64
}

// Options configure a Collector. The zero value is usable.
type Options struct {
	// Tracer, when set, reads the tracer's counters at scrape time (the
	// daemon wraps tracer.Tracer.Stats). nil: no sstrace_tracer_* metrics.
	// An error fails those four metrics only; the handler serves the rest.
	Tracer func() (TracerStats, error)
	// MaxNetNS is how many namespaces get a series of their own in
	// sstrace_netns_sockets (default DefaultMaxNetNS).
	MaxNetNS int
}

// Collector is a prometheus.Collector that reads a StatsSource (and the
// tracer's counters) when it is collected. Create it with NewCollector; it
// is safe for concurrent scrapes.
type Collector struct {
	src  StatsSource
	opts Options
	d    descs
}

// descs are the collector's metric descriptions; fixed, so that a registry
// can check them once.
type descs struct {
	sockets, netnsSockets, netnsCloseWait, transitions                         *prometheus.Desc
	stateDuration, lifetime                                                    *prometheus.Desc
	closed, dropped, retained, events, lost, reseeds, corrections              *prometheus.Desc
	memory, seeded, started                                                    *prometheus.Desc
	tracerSubmitted, tracerReceived, tracerLost, tracerCaught, tracerDeferFull *prometheus.Desc
}

func newDescs() descs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("sstrace_"+name, help, labels, nil)
	}
	return descs{
		sockets:        d("sockets", "Live TCP sockets the table tracks, by state (minisockets included).", "state"),
		netnsSockets:   d("netns_sockets", "Live TCP sockets by network namespace inode; namespaces beyond the largest ones are summed under netns=\"other\".", "netns"),
		netnsCloseWait: d("netns_closewait_sockets", "Live CLOSE-WAIT sockets by network namespace inode; namespaces beyond those with the most are summed under netns=\"other\".", "netns"),
		transitions:    d("transitions_total", "TCP state transitions applied to the table.", "old_state", "new_state"),
		stateDuration:  d("state_duration_seconds", "Time sockets spent in a state before leaving it.", "state"),
		lifetime:       d("connection_lifetime_seconds", "Lifetime of closed connections whose start was seen."),
		closed:         d("connections_closed_total", "Connections closed, by how they ended.", "outcome"),
		dropped:        d("connections_dropped_total", "Closed connections dropped from the table by retention."),
		retained:       d("retained_connections", "Closed connections the table keeps for history."),
		events:         d("events_total", "Events applied to the table (or buffered during a seed)."),
		lost:           d("events_lost_total", "Events the tracer reported lost to the table."),
		reseeds:        d("reseeds_total", "Reseeds of the table after the first seed."),
		corrections:    d("corrections_total", "Corrections of the table against the kernel, by cause.", "cause"),
		memory:         d("table_memory_bytes", "Estimated memory of the table's records and transitions."),
		seeded:         d("seeded", "1 once the table's first seed has completed, 0 before."),
		started:        d("table_start_time_seconds", "Unix time the table's first seed began."),

		tracerSubmitted: d("tracer_events_submitted_total", "Events the kernel put in the ring buffer."),
		tracerReceived:  d("tracer_events_received_total", "Events the tracer delivered to the daemon."),
		tracerLost:      d("tracer_events_lost_total", "Events lost in the kernel: the ring buffer was full, or the kernel skipped the transition (recursion) and no catcher took it."),
		tracerCaught:    d("tracer_events_caught_total", "Transitions the kernel skipped for the main program (recursion) that its catcher program recorded."),
		tracerDeferFull: d("tracer_defer_full_total", "First events of new children sent unamended because the map holding them back was full."),
	}
}

// knownOutcomes and knownCauses are reported from the start, at 0, so that
// rate() and increase() see their first occurrence.
var (
	knownOutcomes = []table.Outcome{
		table.OutcomeRefused, table.OutcomeTimeout, table.OutcomeUnreachable, table.OutcomeReset,
		table.OutcomeClosed, table.OutcomeAborted, table.OutcomeUnknown,
	}
	knownCauses = []string{
		table.CauseTimeWaitExpired, table.CauseTimeWaitMissing, table.CauseMissingInTable,
		table.CauseGoneFromKernel, table.CauseStateMismatch, table.CauseSeedMismatch, table.CauseSkippedTransition,
	}
)

// NewCollector returns a collector that reads src at every scrape.
func NewCollector(src StatsSource, opts Options) *Collector {
	if opts.MaxNetNS <= 0 {
		opts.MaxNetNS = DefaultMaxNetNS
	}
	return &Collector{src: src, opts: opts, d: newDescs()}
}

// Describe sends the descriptions of every metric the collector can send.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	d := c.d
	for _, x := range []*prometheus.Desc{
		d.sockets, d.netnsSockets, d.netnsCloseWait, d.transitions, d.stateDuration, d.lifetime,
		d.closed, d.dropped, d.retained, d.events, d.lost, d.reseeds, d.corrections,
		d.memory, d.seeded, d.started,
	} {
		ch <- x
	}
	if c.opts.Tracer != nil {
		ch <- d.tracerSubmitted
		ch <- d.tracerReceived
		ch <- d.tracerLost
		ch <- d.tracerCaught
		ch <- d.tracerDeferFull
	}
}

// Collect reads the table once, and the tracer's counters if configured,
// and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	d := c.d
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}

	states := make(map[string]int, sock.MaxState)
	for st := sock.Established; st <= sock.MaxState; st++ {
		states[st.String()] = 0
	}
	for st, n := range s.Live {
		states[st.String()] += n
	}
	for st, n := range states {
		gauge(d.sockets, float64(n), st)
	}
	for ns, n := range capNetNS(s.LiveByNetNS, c.opts.MaxNetNS) {
		gauge(d.netnsSockets, float64(n), ns)
	}
	for ns, n := range capNetNS(s.CloseWaitByNetNS, c.opts.MaxNetNS) {
		gauge(d.netnsCloseWait, float64(n), ns)
	}

	for k, n := range s.Transitions {
		counter(d.transitions, n, k[0].String(), k[1].String())
	}
	for st, h := range s.InState {
		ch <- constHistogram(d.stateDuration, h, st.String())
	}
	ch <- constHistogram(d.lifetime, s.Lifetimes)

	outcomes := make(map[string]uint64, len(knownOutcomes))
	for _, o := range knownOutcomes {
		outcomes[string(o)] = 0
	}
	for o, n := range s.Outcomes {
		if o == table.OutcomeOpen {
			o = table.OutcomeUnknown // never counted as closed; an empty label would vanish
		}
		outcomes[string(o)] += n
	}
	for o, n := range outcomes {
		counter(d.closed, n, o)
	}
	causes := make(map[string]uint64, len(knownCauses))
	for _, cause := range knownCauses {
		causes[cause] = 0
	}
	for cause, n := range s.Corrections {
		causes[cause] += n
	}
	for cause, n := range causes {
		counter(d.corrections, n, cause)
	}

	counter(d.dropped, s.Dropped)
	gauge(d.retained, float64(s.Retained))
	counter(d.events, s.Events)
	counter(d.lost, s.Lost)
	counter(d.reseeds, s.Reseeds)
	gauge(d.memory, float64(s.MemoryBytes))
	seeded := 0.0
	if s.Seeded {
		seeded = 1
	}
	gauge(d.seeded, seeded)
	if !s.Started.IsZero() {
		gauge(d.started, float64(s.Started.UnixNano())/float64(time.Second))
	}

	if c.opts.Tracer == nil {
		return
	}
	ts, err := c.opts.Tracer()
	if err != nil {
		for _, desc := range []*prometheus.Desc{d.tracerSubmitted, d.tracerReceived, d.tracerLost, d.tracerCaught, d.tracerDeferFull} {
			ch <- prometheus.NewInvalidMetric(desc, err)
		}
		return
	}
	counter(d.tracerSubmitted, ts.Submitted)
	counter(d.tracerReceived, ts.Received)
	counter(d.tracerLost, ts.Lost)
	counter(d.tracerCaught, ts.Caught)
	counter(d.tracerDeferFull, ts.DeferFull)
}

// constHistogram converts a table histogram (already cumulative, as
// Prometheus wants it) to a metric.
func constHistogram(desc *prometheus.Desc, h table.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		if i < len(h.Counts) {
			buckets[b] = h.Counts[i]
		}
	}
	return prometheus.MustNewConstHistogram(desc, h.Count, h.Sum, buckets, labels...)
}

// capNetNS keeps the max namespaces with the most sockets (ties to the
// lower inode, so that the choice is stable between scrapes) and sums the
// rest under OtherNetNS, which is present only when something was summed.
func capNetNS(byNS map[uint64]int, max int) map[string]int {
	type nsCount struct {
		ns uint64
		n  int
	}
	all := make([]nsCount, 0, len(byNS))
	for ns, n := range byNS {
		all = append(all, nsCount{ns, n})
	}
	slices.SortFunc(all, func(a, b nsCount) int {
		if c := cmp.Compare(b.n, a.n); c != 0 {
			return c
		}
		return cmp.Compare(a.ns, b.ns)
	})
	out := make(map[string]int, min(len(all), max+1))
	for i, x := range all {
		if i < max {
			out[strconv.FormatUint(x.ns, 10)] = x.n
		} else {
			out[OtherNetNS] += x.n
		}
	}
	return out
}
