package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
)

const (
	nsA = 4026531840
	nsB = 4026532001
)

// Durations of the synthetic connections' states. None sits on a bucket
// bound, so the expected buckets do not depend on float rounding.
var (
	synSent   = 500 * time.Microsecond
	estab     = 2500 * time.Millisecond
	finWait1  = 50 * time.Millisecond
	finWait2  = 30 * time.Second
	refusedIn = 20 * time.Millisecond
)

// testTable returns a table seeded with a listener (nsA) and an established
// socket (nsB), then given two connections: one in nsA through the whole
// active close, ending as a TIME-WAIT minisocket (outcome closed), and one
// in nsB refused (outcome refused, retired, its lifetime observed).
func testTable(t *testing.T) *table.Table {
	t.Helper()
	tbl := table.New(table.Options{})
	tbl.BeginSeed()
	tbl.Seed([]*sock.Socket{
		{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: sock.Listen, NetNS: nsA, Cookie: 1,
			Local: netip.MustParseAddrPort("0.0.0.0:80")},
		{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: sock.Established, NetNS: nsB, Cookie: 2,
			Local: netip.MustParseAddrPort("10.0.0.1:22"), Peer: netip.MustParseAddrPort("10.0.0.2:50000")},
	}, nil)
	tbl.EndSeed()

	wall0 := time.Now()
	mono := 10 * time.Second
	apply := func(cookie, ns uint64, old, nw sock.State, after time.Duration, final event.Final) {
		mono += after
		tbl.Apply(&event.Event{
			Time: wall0.Add(mono), Mono: mono, Cookie: cookie, Sock: 0xffff0000 + cookie, NetNS: ns,
			Family: unix.AF_INET, Local: netip.MustParseAddrPort("10.0.0.1:40000"),
			Peer:     netip.MustParseAddrPort("10.0.0.9:443"),
			OldState: old, NewState: nw, Context: event.ContextSoftirq, Final: final,
		})
	}
	apply(100, nsA, sock.Close, sock.SynSent, 0, event.Final{})
	apply(100, nsA, sock.SynSent, sock.Established, synSent, event.Final{})
	apply(100, nsA, sock.Established, sock.FinWait1, estab, event.Final{})
	apply(100, nsA, sock.FinWait1, sock.FinWait2, finWait1, event.Final{})
	apply(100, nsA, sock.FinWait2, sock.Close, finWait2, event.Final{PeerFIN: true})

	apply(101, nsB, sock.Close, sock.SynSent, 0, event.Final{})
	apply(101, nsB, sock.SynSent, sock.Close, refusedIn, event.Final{Err: uint16(unix.ECONNREFUSED)})
	return tbl
}

// series flattens what a gatherer returns to "name{label=value,...}" ->
// value, labels sorted by name; histograms give _count, _sum and
// _bucket{...,le=...} (the +Inf bucket is _count).
func series(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := func(suffix string, extra ...string) string {
				var ls []string
				for _, lp := range m.GetLabel() {
					ls = append(ls, lp.GetName()+"="+lp.GetValue())
				}
				ls = append(ls, extra...)
				return mf.GetName() + suffix + "{" + strings.Join(ls, ",") + "}"
			}
			add := func(k string, v float64) {
				if _, dup := out[k]; dup {
					t.Errorf("series %s sent twice", k)
				}
				out[k] = v
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add(key(""), m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(key(""), m.GetGauge().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				add(key("_count"), float64(h.GetSampleCount()))
				add(key("_sum"), h.GetSampleSum())
				for _, b := range h.GetBucket() {
					add(key("_bucket", "le="+strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)), float64(b.GetCumulativeCount()))
				}
			default:
				t.Errorf("%s: unexpected type %v", mf.GetName(), mf.GetType())
			}
		}
	}
	return out
}

func gatherer(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("register: %v", err)
	}
	return reg
}

func TestCollect(t *testing.T) {
	c := NewCollector(testTable(t), Options{})
	got := series(t, gatherer(t, c))

	ns := func(n uint64) string { return strconv.FormatUint(n, 10) }
	want := map[string]float64{
		"sstrace_sockets{state=LISTEN}":      1,
		"sstrace_sockets{state=ESTABLISHED}": 1,
		"sstrace_sockets{state=TIME_WAIT}":   1,
		"sstrace_sockets{state=SYN_SENT}":    0,
		"sstrace_sockets{state=CLOSE}":       0,

		"sstrace_netns_sockets{netns=" + ns(nsA) + "}": 2,
		"sstrace_netns_sockets{netns=" + ns(nsB) + "}": 1,

		"sstrace_transitions_total{new_state=SYN_SENT,old_state=CLOSE}":        2,
		"sstrace_transitions_total{new_state=ESTABLISHED,old_state=SYN_SENT}":  1,
		"sstrace_transitions_total{new_state=FIN_WAIT1,old_state=ESTABLISHED}": 1,
		"sstrace_transitions_total{new_state=FIN_WAIT2,old_state=FIN_WAIT1}":   1,
		"sstrace_transitions_total{new_state=CLOSE,old_state=FIN_WAIT2}":       1,
		"sstrace_transitions_total{new_state=CLOSE,old_state=SYN_SENT}":        1,

		"sstrace_connections_closed_total{outcome=closed}":  1,
		"sstrace_connections_closed_total{outcome=refused}": 1,
		"sstrace_connections_closed_total{outcome=reset}":   0,
		"sstrace_connections_closed_total{outcome=unknown}": 0,

		"sstrace_corrections_total{cause=seed_mismatch}":    0,
		"sstrace_corrections_total{cause=timewait_expired}": 0,

		"sstrace_events_total{}":              7,
		"sstrace_events_lost_total{}":         0,
		"sstrace_reseeds_total{}":             0,
		"sstrace_retained_connections{}":      1,
		"sstrace_connections_dropped_total{}": 0,
		"sstrace_seeded{}":                    1,

		// The refused connection: its lifetime is its time in SYN_SENT.
		"sstrace_connection_lifetime_seconds_count{}":          1,
		"sstrace_connection_lifetime_seconds_sum{}":            refusedIn.Seconds(),
		"sstrace_connection_lifetime_seconds_bucket{le=0.01}":  0,
		"sstrace_connection_lifetime_seconds_bucket{le=0.1}":   1,
		"sstrace_connection_lifetime_seconds_bucket{le=3600}":  1,
		"sstrace_state_duration_seconds_count{state=SYN_SENT}": 2,
		"sstrace_state_duration_seconds_sum{state=SYN_SENT}":   sum(synSent, refusedIn),

		"sstrace_state_duration_seconds_bucket{state=SYN_SENT,le=0.0001}":  0,
		"sstrace_state_duration_seconds_bucket{state=SYN_SENT,le=0.001}":   1,
		"sstrace_state_duration_seconds_bucket{state=SYN_SENT,le=0.1}":     2,
		"sstrace_state_duration_seconds_count{state=ESTABLISHED}":          1,
		"sstrace_state_duration_seconds_bucket{state=ESTABLISHED,le=1}":    0,
		"sstrace_state_duration_seconds_bucket{state=ESTABLISHED,le=10}":   1,
		"sstrace_state_duration_seconds_sum{state=FIN_WAIT1}":              finWait1.Seconds(),
		"sstrace_state_duration_seconds_bucket{state=FIN_WAIT1,le=0.01}":   0,
		"sstrace_state_duration_seconds_bucket{state=FIN_WAIT1,le=0.1}":    1,
		"sstrace_state_duration_seconds_sum{state=FIN_WAIT2}":              finWait2.Seconds(),
		"sstrace_state_duration_seconds_bucket{state=FIN_WAIT2,le=10}":     0,
		"sstrace_state_duration_seconds_bucket{state=FIN_WAIT2,le=60}":     1,
		"sstrace_state_duration_seconds_bucket{state=ESTABLISHED,le=3600}": 1,
	}
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s missing", k)
		case g != v:
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	if v := got["sstrace_table_memory_bytes{}"]; v <= 0 {
		t.Errorf("sstrace_table_memory_bytes = %v, want > 0", v)
	}
	if v := got["sstrace_table_start_time_seconds{}"]; v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("sstrace_table_start_time_seconds = %v, want about now", v)
	}
	// Only states that were left have a duration histogram.
	for k := range got {
		if strings.HasPrefix(k, "sstrace_state_duration_seconds_count{") {
			st := strings.TrimSuffix(strings.TrimPrefix(k, "sstrace_state_duration_seconds_count{state="), "}")
			if !slices.Contains([]string{"SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2"}, st) {
				t.Errorf("unexpected %s", k)
			}
		}
	}
}

// sum adds durations' seconds in order, as the table does.
func sum(ds ...time.Duration) float64 {
	var s float64
	for _, d := range ds {
		s += d.Seconds()
	}
	return s
}

// TestNamesAndLabels pins every metric name, its type and its label names:
// the contract with dashboards (and the package doc).
func TestNamesAndLabels(t *testing.T) {
	c := NewCollector(testTable(t), Options{Tracer: func() (TracerStats, error) {
		return TracerStats{Submitted: 10, Received: 9, Lost: 1, Caught: 3, DeferFull: 2}, nil
	}})
	mfs, err := gatherer(t, c).Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		names := make([]string, 0, len(labels))
		for l := range labels {
			names = append(names, l)
		}
		sort.Strings(names)
		got = append(got, fmt.Sprintf("%s %s [%s]", mf.GetName(), strings.ToLower(mf.GetType().String()), strings.Join(names, " ")))
	}
	want := []string{
		"sstrace_connection_lifetime_seconds histogram []",
		"sstrace_connections_closed_total counter [outcome]",
		"sstrace_connections_dropped_total counter []",
		"sstrace_corrections_total counter [cause]",
		"sstrace_events_lost_total counter []",
		"sstrace_events_total counter []",
		"sstrace_netns_sockets gauge [netns]",
		"sstrace_reseeds_total counter []",
		"sstrace_retained_connections gauge []",
		"sstrace_seeded gauge []",
		"sstrace_sockets gauge [state]",
		"sstrace_state_duration_seconds histogram [state]",
		"sstrace_table_memory_bytes gauge []",
		"sstrace_table_start_time_seconds gauge []",
		"sstrace_tracer_defer_full_total counter []",
		"sstrace_tracer_events_caught_total counter []",
		"sstrace_tracer_events_lost_total counter []",
		"sstrace_tracer_events_received_total counter []",
		"sstrace_tracer_events_submitted_total counter []",
		"sstrace_transitions_total counter [new_state old_state]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sstrace_tracer_events_caught_total Transitions the kernel skipped for the main program (recursion) that its catcher program recorded.
# TYPE sstrace_tracer_events_caught_total counter
sstrace_tracer_events_caught_total 3
# HELP sstrace_tracer_events_lost_total Events lost in the kernel: the ring buffer was full, or the kernel skipped the transition (recursion) and no catcher took it.
# TYPE sstrace_tracer_events_lost_total counter
sstrace_tracer_events_lost_total 1
# HELP sstrace_tracer_events_submitted_total Events the kernel put in the ring buffer.
# TYPE sstrace_tracer_events_submitted_total counter
sstrace_tracer_events_submitted_total 10
`), "sstrace_tracer_events_caught_total", "sstrace_tracer_events_lost_total", "sstrace_tracer_events_submitted_total"); err != nil {
		t.Error(err)
	}
}

// TestLifetimeExposition checks a histogram in the text format, as a
// scraper sees it.
func TestLifetimeExposition(t *testing.T) {
	c := NewCollector(testTable(t), Options{})
	want := fmt.Sprintf(`
# HELP sstrace_connection_lifetime_seconds Lifetime of closed connections whose start was seen.
# TYPE sstrace_connection_lifetime_seconds histogram
sstrace_connection_lifetime_seconds_bucket{le="0.0001"} 0
sstrace_connection_lifetime_seconds_bucket{le="0.001"} 0
sstrace_connection_lifetime_seconds_bucket{le="0.01"} 0
sstrace_connection_lifetime_seconds_bucket{le="0.1"} 1
sstrace_connection_lifetime_seconds_bucket{le="1"} 1
sstrace_connection_lifetime_seconds_bucket{le="10"} 1
sstrace_connection_lifetime_seconds_bucket{le="60"} 1
sstrace_connection_lifetime_seconds_bucket{le="600"} 1
sstrace_connection_lifetime_seconds_bucket{le="3600"} 1
sstrace_connection_lifetime_seconds_bucket{le="+Inf"} 1
sstrace_connection_lifetime_seconds_sum %v
sstrace_connection_lifetime_seconds_count 1
`, refusedIn.Seconds())
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "sstrace_connection_lifetime_seconds"); err != nil {
		t.Error(err)
	}
}

// fakeStats is a StatsSource with figures set by hand.
type fakeStats table.Stats

func (f *fakeStats) Stats() table.Stats { return table.Stats(*f) }

// manyNamespaces returns stats with n namespaces; namespace i (inode
// 4026531840+i) has i+1 sockets, all ESTABLISHED.
func manyNamespaces(n int) *fakeStats {
	s := &fakeStats{Live: map[sock.State]int{}, LiveByNetNS: map[uint64]int{}}
	for i := range n {
		s.LiveByNetNS[uint64(nsA+i)] = i + 1
		s.Live[sock.Established] += i + 1
	}
	return s
}

func TestNetNSCardinality(t *testing.T) {
	const n = 1000
	c := NewCollector(manyNamespaces(n), Options{})
	if got := testutil.CollectAndCount(c, "sstrace_netns_sockets"); got != DefaultMaxNetNS+1 {
		t.Errorf("%d namespaces: %d sstrace_netns_sockets series, want %d", n, got, DefaultMaxNetNS+1)
	}
	got := series(t, gatherer(t, c))
	total, other := 0.0, 0.0
	for k, v := range got {
		if strings.HasPrefix(k, "sstrace_netns_sockets{") {
			total += v
		}
	}
	other = got["sstrace_netns_sockets{netns=other}"]
	// The 64 largest are namespaces 936..999 (937..1000 sockets).
	wantOther := float64((n - DefaultMaxNetNS) * (n - DefaultMaxNetNS + 1) / 2)
	if other != wantOther {
		t.Errorf(`netns="other" = %v, want %v`, other, wantOther)
	}
	if want := float64(n * (n + 1) / 2); total != want || got["sstrace_sockets{state=ESTABLISHED}"] != want {
		t.Errorf("sum over namespaces %v, ESTABLISHED %v, want both %v", total, got["sstrace_sockets{state=ESTABLISHED}"], want)
	}
	for i := n - DefaultMaxNetNS; i < n; i++ {
		k := "sstrace_netns_sockets{netns=" + strconv.Itoa(nsA+i) + "}"
		if got[k] != float64(i+1) {
			t.Errorf("%s = %v, want %d", k, got[k], i+1)
		}
	}

	// The whole collector's size does not grow with namespaces.
	small, large := testutil.CollectAndCount(NewCollector(manyNamespaces(3), Options{})), testutil.CollectAndCount(c)
	if large-small > DefaultMaxNetNS+1-3 {
		t.Errorf("3 namespaces: %d series; %d namespaces: %d series", small, n, large)
	}
	if got := testutil.CollectAndCount(NewCollector(manyNamespaces(3), Options{}), "sstrace_netns_sockets"); got != 3 {
		t.Errorf(`3 namespaces: %d series, want 3 (no "other")`, got)
	}
	if got := testutil.CollectAndCount(NewCollector(manyNamespaces(n), Options{MaxNetNS: 8}), "sstrace_netns_sockets"); got != 9 {
		t.Errorf("MaxNetNS 8: %d series, want 9", got)
	}
}

// TestNetNSTies: among equal counts the lower inodes win, so that the
// choice does not change between scrapes.
func TestNetNSTies(t *testing.T) {
	byNS := map[uint64]int{}
	for i := range 10 {
		byNS[uint64(100-i)] = 5
	}
	got := capNetNS(byNS, 3)
	want := map[string]int{"91": 5, "92": 5, "93": 5, OtherNetNS: 35}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("capNetNS = %v, want %v", got, want)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler(NewCollector(testTable(t), Options{})))
	defer srv.Close()
	code, body := get(t, srv.URL)
	if code != http.StatusOK {
		t.Fatalf("status %d:\n%s", code, body)
	}
	for _, line := range []string{
		`sstrace_sockets{state="TIME_WAIT"} 1`,
		`sstrace_transitions_total{new_state="CLOSE",old_state="FIN_WAIT2"} 1`,
		`sstrace_connections_closed_total{outcome="closed"} 1`,
		`sstrace_events_total 7`,
		`sstrace_seeded 1`,
		`# TYPE go_goroutines gauge`,
		`# TYPE process_start_time_seconds gauge`,
	} {
		if !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("scrape lacks %q", line)
		}
	}
}

// TestTracerError: a failing tracer read loses only the tracer's metrics.
func TestTracerError(t *testing.T) {
	c := NewCollector(testTable(t), Options{Tracer: func() (TracerStats, error) {
		return TracerStats{}, errors.New("read counters: bad map")
	}})
	srv := httptest.NewServer(Handler(c))
	defer srv.Close()
	code, body := get(t, srv.URL)
	if code != http.StatusOK {
		t.Fatalf("status %d:\n%s", code, body)
	}
	if !strings.Contains(body, "\nsstrace_events_total 7\n") {
		t.Error("table metrics missing")
	}
	if strings.Contains(body, "sstrace_tracer_") {
		t.Error("tracer metrics served despite the error")
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(""), "sstrace_tracer_events_lost_total"); err == nil {
		t.Error("collecting: no error")
	}
}

func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, Registry(NewCollector(testTable(t), Options{})), nil) }()

	base := "http://" + ln.Addr().String()
	if code, body := get(t, base+Path); code != http.StatusOK || !strings.Contains(body, "sstrace_seeded 1") {
		t.Errorf("GET %s: %d\n%s", Path, code, body)
	}
	if code, _ := get(t, base+"/"); code != http.StatusNotFound {
		t.Errorf("GET /: %d, want 404", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
}

func TestServeListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Serve(context.Background(), ln.Addr().String(), Registry(NewCollector(testTable(t), Options{})), nil)
	if err == nil || !strings.Contains(err.Error(), "metrics: listen on "+ln.Addr().String()) {
		t.Errorf("Serve on a busy address: %v", err)
	}
}

// TestNetNSCloseWait: CLOSE-WAIT sockets are counted by namespace, only
// there, and under the same bound as sstrace_netns_sockets (the metric has
// no series while no socket is in CLOSE-WAIT, so TestNamesAndLabels's table
// does not show it).
func TestNetNSCloseWait(t *testing.T) {
	tbl := table.New(table.Options{})
	tbl.BeginSeed()
	var rows []*sock.Socket
	for i, r := range []struct {
		ns    uint64
		state sock.State
	}{{nsA, sock.CloseWait}, {nsA, sock.CloseWait}, {nsA, sock.Established}, {nsB, sock.CloseWait}, {nsB, sock.Listen}, {nsB + 1, sock.CloseWait}} {
		rows = append(rows, &sock.Socket{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: r.state, NetNS: r.ns,
			Cookie: uint64(i + 1), Local: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+i)),
			Peer: netip.MustParseAddrPort("10.0.0.2:80")})
	}
	tbl.Seed(rows, nil)
	tbl.EndSeed()
	got := series(t, gatherer(t, NewCollector(tbl, Options{MaxNetNS: 2})))
	ns := func(n uint64) string { return strconv.FormatUint(n, 10) }
	for k, v := range map[string]float64{
		"sstrace_netns_closewait_sockets{netns=" + ns(nsA) + "}": 2,
		"sstrace_netns_closewait_sockets{netns=" + ns(nsB) + "}": 1,
		"sstrace_netns_closewait_sockets{netns=other}":           1,
		"sstrace_sockets{state=CLOSE_WAIT}":                      4,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	n := 0
	for k := range got {
		if strings.HasPrefix(k, "sstrace_netns_closewait_sockets{") {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d CLOSE-WAIT series, want 3 (two namespaces and other)", n)
	}
}
