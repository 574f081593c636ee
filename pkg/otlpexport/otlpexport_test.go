package otlpexport_test

import (
	"context"
	"encoding/json"
	"math"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	metricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/connfmt"
	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/metrics"
	"github.com/sstrace/sstrace/pkg/otlpexport"
	"github.com/sstrace/sstrace/pkg/otlpexport/otlptest"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// churn drives synthetic connections through a seeded table: client
// connections that the peer closes first (so that no TIME-WAIT keeps them
// in the table: they close for good at once), with a lifetime of a whole
// number of milliseconds every other time, so that a float key's JSON
// sometimes has no fraction.
type churn struct {
	tbl   *table.Table
	wall0 time.Time
	mono  time.Duration
}

func newChurn(t testing.TB) *churn {
	tbl := table.New(table.Options{})
	tbl.BeginSeed()
	tbl.Seed(nil, nil)
	tbl.EndSeed()
	return &churn{tbl: tbl, wall0: time.Now(), mono: 10 * time.Second}
}

var owner = event.Task{PID: 4321, TID: 4321, UID: 1000, Comm: "curl"}

// conn runs one connection with this cookie through the table.
func (c *churn) conn(cookie uint64) {
	apply := func(old, nw sock.State, ctx event.Context, after time.Duration, fin event.Final) {
		c.mono += after
		e := &event.Event{
			Time: c.wall0.Add(c.mono), Mono: c.mono, Cookie: cookie, Sock: 0xffff0000 + cookie, NetNS: 4026531840,
			Family: unix.AF_INET, Local: netip.MustParseAddrPort("10.0.0.1:40000"),
			Peer:     netip.MustParseAddrPort("10.0.0.9:443"),
			OldState: old, NewState: nw, Context: ctx, Final: fin,
		}
		if ctx == event.ContextProcess {
			e.Task = owner
		}
		c.tbl.Apply(e)
	}
	lifetime := 3 * time.Millisecond
	if cookie%2 == 1 {
		lifetime += 1234 * time.Nanosecond
	}
	apply(sock.Close, sock.SynSent, event.ContextProcess, time.Millisecond, event.Final{})
	apply(sock.SynSent, sock.Established, event.ContextSoftirq, lifetime/3, event.Final{})
	apply(sock.Established, sock.CloseWait, event.ContextSoftirq, lifetime/3, event.Final{})
	apply(sock.CloseWait, sock.LastAck, event.ContextProcess, 0, event.Final{})
	apply(sock.LastAck, sock.Close, event.ContextSoftirq, lifetime-2*(lifetime/3), event.Final{PeerFIN: true, BytesAcked: 100, BytesReceived: 2000})
}

// run starts an exporter on a fresh churn's table; stopped at the end.
func run(t *testing.T, opts otlpexport.Options) (*churn, *otlpexport.Exporter) {
	t.Helper()
	c := newChurn(t)
	opts.Resource = map[string]string{"service.name": "sstrace", "service.version": "test"}
	exp, err := otlpexport.New(c.tbl, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { exp.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return c, exp
}

// TestFlowLogRecords: every closed connection arrives as one record whose
// attributes are its `history --json` object, key for key and in its
// order, typed as the JSON is (lifetime_ms always a double, also when it is
// a whole number), stamped with its close time, and with the history line
// as body; the resource and the headers are sent.
func TestFlowLogRecords(t *testing.T) {
	rcv := otlptest.New(t)
	c, exp := run(t, otlpexport.Options{Endpoint: rcv.URL + "/", Headers: map[string]string{"X-Tenant": "t1"}})
	const n = 40
	for cookie := uint64(1); cookie <= n; cookie++ {
		c.conn(cookie)
	}
	testutil.WaitFor(t, 5*time.Second, "40 records", func() bool { return len(rcv.Records()) >= n })

	want := map[uint64]*table.Conn{}
	c.tbl.EachConn(table.Query{}, func(conn *table.Conn) error {
		cc := *conn
		want[conn.Cookie] = &cc
		return nil
	})
	recs := rcv.Records()
	if len(recs) != n {
		t.Fatalf("%d records, want %d", len(recs), n)
	}
	for _, r := range recs {
		got := otlptest.Attributes(r.Attributes)
		cookie := uint64(got["cookie"].(float64))
		conn := want[cookie]
		if conn == nil {
			t.Fatalf("record for unknown cookie %d", cookie)
		}
		j, _ := connfmt.AppendHistoryJSON(nil, conn, time.Now())
		var wantJSON map[string]any
		if err := json.Unmarshal(j, &wantJSON); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, wantJSON) {
			t.Errorf("cookie %d: attributes\n%v\nwant the history JSON\n%v", cookie, got, wantJSON)
		}
		var keys []string
		for _, kv := range r.Attributes {
			keys = append(keys, kv.Key)
		}
		if wantKeys := jsonKeyOrder(t, j); !reflect.DeepEqual(keys, wantKeys) {
			t.Errorf("attribute order %v, want the JSON's %v", keys, wantKeys)
		}
		for _, kv := range r.Attributes {
			switch kv.Key {
			case "lifetime_ms":
				if _, ok := kv.Value.Value.(*commonv1.AnyValue_DoubleValue); !ok {
					t.Errorf("cookie %d: lifetime_ms is %T, want a double", cookie, kv.Value.Value)
				}
			case "sport", "bytes_received":
				if _, ok := kv.Value.Value.(*commonv1.AnyValue_IntValue); !ok {
					t.Errorf("cookie %d: %s is %T, want an int", cookie, kv.Key, kv.Value.Value)
				}
			}
		}
		if got["pid"] != float64(owner.PID) || got["comm"] != owner.Comm || got["outcome"] != "closed" || got["by"] != "peer" {
			t.Errorf("cookie %d: owner/outcome %v %v %v %v", cookie, got["pid"], got["comm"], got["outcome"], got["by"])
		}
		if r.TimeUnixNano != uint64(conn.FullClosed.UnixNano()) || r.EventName != otlpexport.EventName {
			t.Errorf("cookie %d: time %d event %q, want %d %q", cookie, r.TimeUnixNano, r.EventName, conn.FullClosed.UnixNano(), otlpexport.EventName)
		}
		if body := r.Body.GetStringValue(); !strings.HasPrefix(body, "4321    curl") || !strings.HasSuffix(body, "closed(peer)") {
			t.Errorf("cookie %d: body %q, want the history line", cookie, body)
		}
		if res := otlptest.Attributes(r.Resource.GetAttributes()); res["service.name"] != "sstrace" {
			t.Errorf("resource %v", res)
		}
	}
	if h := rcv.Header(); h.Get("X-Tenant") != "t1" || h.Get("Content-Encoding") != "gzip" {
		t.Errorf("headers %v", h)
	}
	if st := exp.Stats(); st.RecordsExported != n || st.DroppedQueueFull+st.DroppedExportFailed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// jsonKeyOrder is the top-level keys of a JSON object in order.
func jsonKeyOrder(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.Token()
	var keys []string
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// TestMetricsMatchRegistry: a push carries every series of the registry
// /metrics serves, under the same names and with the same values
// (counters as monotonic sums, histograms' cumulative buckets as
// per-bucket counts).
func TestMetricsMatchRegistry(t *testing.T) {
	rcv := otlptest.New(t)
	c := newChurn(t)
	for cookie := uint64(1); cookie <= 5; cookie++ {
		c.conn(cookie)
	}
	reg := metrics.Registry(metrics.NewCollector(c.tbl, metrics.Options{}))
	exp, err := otlpexport.New(c.tbl, otlpexport.Options{Endpoint: rcv.URL, Gatherer: reg, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(exp.Collector())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { exp.Run(ctx) })
	defer wg.Wait()
	defer cancel()

	var got []*metricsv1.Metric
	testutil.WaitFor(t, 5*time.Second, "a metrics push", func() bool {
		got = rcv.MetricsAfter(time.Time{})
		return got != nil
	})
	want := flatten(t, reg)
	have := flattenOTLP(t, got)
	for k, v := range want {
		if strings.HasPrefix(k, "go_") || strings.HasPrefix(k, "process_") || strings.HasPrefix(k, "sstrace_otlp_") {
			if _, ok := have[k]; !ok {
				t.Errorf("%s missing from the push", k)
			}
			continue // moves between gather and push
		}
		if hv, ok := have[k]; !ok || hv != v {
			t.Errorf("%s = %v (present %v), /metrics has %v", k, hv, ok, v)
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			t.Errorf("%s pushed, not in the registry", k)
		}
	}
	for _, k := range []string{`sstrace_connections_closed_total{outcome=closed}`, `sstrace_connection_lifetime_seconds_count{}`} {
		if have[k] != 5 {
			t.Errorf("%s = %v, want 5", k, have[k])
		}
	}
}

// flatten gathers reg into "name{l=v,...}" -> value (histograms as _count,
// _sum and _bucket{le=...} cumulative, summaries as _count, _sum and
// {quantile=...}).
func flatten(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			key := func(suffix string, extra ...string) string {
				all := append(append([]string{}, ls...), extra...)
				sort.Strings(all)
				return mf.GetName() + suffix + "{" + strings.Join(all, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key("")] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key("")] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				out[key("_count")] = float64(h.GetSampleCount())
				out[key("_sum")] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					out[key("_bucket", "le="+fmtBound(b.GetUpperBound()))] = float64(b.GetCumulativeCount())
				}
				out[key("_bucket", "le=+Inf")] = float64(h.GetSampleCount()) // implied by client_golang
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				out[key("_count")] = float64(s.GetSampleCount())
				out[key("_sum")] = s.GetSampleSum()
				for _, q := range s.GetQuantile() {
					out[key("", "quantile="+fmtBound(q.GetQuantile()))] = q.GetValue()
				}
			default:
				t.Fatalf("%s: unexpected type %s", mf.GetName(), mf.GetType())
			}
		}
	}
	return out
}

// flattenOTLP is flatten for the pushed metrics, checking their kinds.
func flattenOTLP(t *testing.T, ms []*metricsv1.Metric) map[string]float64 {
	out := map[string]float64{}
	for _, m := range ms {
		key := func(attrs []*commonv1.KeyValue, suffix string, extra ...string) string {
			var ls []string
			for _, kv := range attrs {
				ls = append(ls, kv.Key+"="+kv.Value.GetStringValue())
			}
			ls = append(ls, extra...)
			sort.Strings(ls)
			return m.Name + suffix + "{" + strings.Join(ls, ",") + "}"
		}
		switch d := m.Data.(type) {
		case *metricsv1.Metric_Sum:
			if !d.Sum.IsMonotonic || d.Sum.AggregationTemporality != metricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
				t.Errorf("%s: a counter must be a cumulative monotonic sum", m.Name)
			}
			for _, p := range d.Sum.DataPoints {
				if p.StartTimeUnixNano == 0 || p.StartTimeUnixNano > p.TimeUnixNano {
					t.Errorf("%s: start %d, time %d", m.Name, p.StartTimeUnixNano, p.TimeUnixNano)
				}
				out[key(p.Attributes, "")] = p.GetAsDouble()
			}
		case *metricsv1.Metric_Gauge:
			for _, p := range d.Gauge.DataPoints {
				out[key(p.Attributes, "")] = p.GetAsDouble()
			}
		case *metricsv1.Metric_Histogram:
			for _, p := range d.Histogram.DataPoints {
				out[key(p.Attributes, "_count")] = float64(p.Count)
				out[key(p.Attributes, "_sum")] = p.GetSum()
				if len(p.BucketCounts) != len(p.ExplicitBounds)+1 {
					t.Errorf("%s: %d counts for %d bounds", m.Name, len(p.BucketCounts), len(p.ExplicitBounds))
					continue
				}
				var cum uint64
				for i, n := range p.BucketCounts {
					cum += n
					le := math.Inf(+1)
					if i < len(p.ExplicitBounds) {
						le = p.ExplicitBounds[i]
					}
					out[key(p.Attributes, "_bucket", "le="+fmtBound(le))] = float64(cum)
				}
			}
		case *metricsv1.Metric_Summary:
			for _, p := range d.Summary.DataPoints {
				out[key(p.Attributes, "_count")] = float64(p.Count)
				out[key(p.Attributes, "_sum")] = p.Sum
				for _, q := range p.QuantileValues {
					out[key(p.Attributes, "", "quantile="+fmtBound(q.Quantile))] = q.Value
				}
			}
		default:
			t.Errorf("%s: unexpected data %T", m.Name, m.Data)
		}
	}
	return out
}

func fmtBound(f float64) string {
	b, _ := json.Marshal(f)
	if math.IsInf(f, +1) {
		return "+Inf"
	}
	return string(b)
}

// TestStalledCollector: while the collector holds requests (they time
// out) and then answers 503, the table applies closes at full speed (the
// exporter never makes it wait), the queue overflows into counted drops;
// once the collector recovers, the records closed after that are exported,
// and every record is either exported or counted as dropped.
func TestStalledCollector(t *testing.T) {
	rcv := otlptest.New(t)
	rcv.SetMode(otlptest.Hold)
	c, exp := run(t, otlpexport.Options{Endpoint: rcv.URL, Queue: 64, Timeout: 300 * time.Millisecond})

	const stalled = 2000
	start := time.Now()
	for cookie := uint64(1); cookie <= stalled; cookie++ {
		c.conn(cookie)
	}
	took := time.Since(start)
	if took > 2*time.Second { // about 10 ms here; a table that waited for the exporter would take seconds
		t.Errorf("%d connections took %s to apply with the collector stalled", stalled, took)
	}
	testutil.WaitFor(t, 5*time.Second, "a timed-out request", func() bool { return exp.Stats().Errors > 0 })
	rcv.SetMode(otlptest.Unavailable)
	testutil.WaitFor(t, 5*time.Second, "a 503", func() bool { return rcv.Refused() > 0 && exp.Stats().Errors >= 2 })
	st := exp.Stats()
	if st.DroppedQueueFull == 0 || st.Errors < 2 || !strings.Contains(st.LastError, "503") {
		t.Errorf("stalled: %+v, want queue_full drops, two errors, the last a 503", st)
	}
	if st.RecordsExported != 0 {
		t.Errorf("stalled: %d records exported", st.RecordsExported)
	}

	rcv.SetMode(otlptest.Accept)
	// Every stalled record exported or counted as dropped: the queue has
	// drained, so the next ones fit in it (sent sooner, they could find
	// it still full of stalled ones and be dropped, rightly).
	testutil.WaitFor(t, 15*time.Second, "the stalled records accounted for", func() bool {
		st := exp.Stats()
		return st.RecordsExported > 0 && st.RecordsExported+st.DroppedQueueFull+st.DroppedExportFailed == stalled
	})
	const after = 50 // fewer than the queue holds
	for cookie := uint64(stalled + 1); cookie <= stalled+after; cookie++ {
		c.conn(cookie)
	}
	seen := func() int {
		n := 0
		for _, r := range rcv.Records() {
			if cookie := otlptest.Attributes(r.Attributes)["cookie"].(float64); cookie > stalled {
				n++
			}
		}
		return n
	}
	testutil.WaitFor(t, 5*time.Second, "the records after the recovery", func() bool { return seen() == after })
	st = exp.Stats()
	if total := st.RecordsExported + st.DroppedQueueFull + st.DroppedExportFailed; total != stalled+after {
		t.Errorf("exported %d + dropped %d + %d = %d, want %d", st.RecordsExported, st.DroppedQueueFull, st.DroppedExportFailed, total, stalled+after)
	}
	if st.LastError != "" {
		t.Errorf("recovered, yet last error %q", st.LastError)
	}
	t.Logf("%d connections applied in %s with the collector stalled; then %+v", stalled, took, st)
}

// TestOptions: bad values are refused in one line naming the flag.
func TestOptions(t *testing.T) {
	ok := otlpexport.Options{Endpoint: "http://localhost:4318", Interval: time.Second, Queue: 1, Timeout: time.Second}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		change func(*otlpexport.Options)
		want   string
	}{
		{func(o *otlpexport.Options) { o.Endpoint = "localhost:4318" }, "--otlp-endpoint"},
		{func(o *otlpexport.Options) { o.Endpoint = "ftp://x" }, "--otlp-endpoint"},
		{func(o *otlpexport.Options) { o.Endpoint = "http://" }, "--otlp-endpoint"},
		{func(o *otlpexport.Options) { o.Endpoint = "http://x:4318/?a=b" }, "--otlp-endpoint"},
		{func(o *otlpexport.Options) { o.Interval = 0 }, "--otlp-interval"},
		{func(o *otlpexport.Options) { o.Queue = -1 }, "--otlp-queue"},
		{func(o *otlpexport.Options) { o.Timeout = -time.Second }, "--otlp-timeout"},
	} {
		o := ok
		tc.change(&o)
		err := o.Check()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: %v, want one line starting %s", o, err, tc.want)
		}
	}
	h, err := otlpexport.ParseHeaders([]string{"authorization=Bearer a=b", "x-scope-orgid = 7"})
	if err != nil || h["Authorization"] != "Bearer a=b" || h["X-Scope-Orgid"] != "7" {
		t.Errorf("headers %v, %v", h, err)
	}
	for _, bad := range []string{"novalue", "=v", "a b=c", "k=v\r\nX: y"} {
		if _, err := otlpexport.ParseHeaders([]string{bad}); err == nil || !strings.HasPrefix(err.Error(), "--otlp-header") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestKeep: with Options.Keep only the connections it selects are
// exported; the others are neither sent nor counted as dropped.
func TestKeep(t *testing.T) {
	rcv := otlptest.New(t)
	c, exp := run(t, otlpexport.Options{Endpoint: rcv.URL, Keep: func(c *table.Conn) bool { return c.Cookie%2 == 0 }})
	const n = 40
	for cookie := uint64(1); cookie <= n; cookie++ {
		c.conn(cookie)
	}
	testutil.WaitFor(t, 5*time.Second, "the kept records", func() bool { return exp.Stats().RecordsExported == n/2 })
	for _, r := range rcv.Records() {
		if cookie := otlptest.Attributes(r.Attributes)["cookie"].(float64); int(cookie)%2 != 0 {
			t.Errorf("record of connection %v exported, Keep said no", cookie)
		}
	}
	if st := exp.Stats(); st.DroppedQueueFull+st.DroppedExportFailed != 0 {
		t.Errorf("%+v: skipped records counted as dropped", st)
	}
}
