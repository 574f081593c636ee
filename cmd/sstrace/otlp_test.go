package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	metricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/otlpexport/otlptest"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestDaemonOTLP runs the daemon binary with --otlp-endpoint against an
// in-process OTLP/HTTP receiver (decoding with the collector's request
// types) and real connections in a fresh namespace:
//   - every server side of a burst of connections, and a refused connect,
//     arrives as one flow-log record whose attributes are exactly its
//     `sstrace history --json` object (cookie, addresses, ports, owner
//     pid and comm, outcome, transitions);
//   - metrics arrive under /metrics' names, every counter between two
//     scrapes of /metrics taken around the push;
//   - while the receiver holds requests and then answers 503, a burst of
//     connections is applied all the same (`sstrace status` answers at once,
//     history has every connection), the records that do not fit the queue
//     are dropped and counted (status, /metrics), and once the receiver
//     recovers, new connections are exported again.
func TestDaemonOTLP(t *testing.T) {
	ns := testutil.NewNS(t)
	bin := sstraceBinary(t)
	rcv := otlptest.New(t)
	metricsAddr := freeAddr(t)
	d := startDaemon(t, bin, "--otlp-endpoint", rcv.URL, "--otlp-interval", "300ms", "--otlp-queue", "1024",
		"--otlp-timeout", "500ms", "--otlp-header", "x-scope-orgid=sstrace-test", "--metrics-addr", metricsAddr)

	srv := newEchoServer(t, ns)
	inNS := func(attrs map[string]any) bool { return uint64(num(attrs, "netns")) == ns.Inode }
	// serverSides are the records of srv's accepted connections.
	serverSides := func() map[int]map[string]any {
		out := map[int]map[string]any{}
		for _, r := range rcv.Records() {
			a := otlptest.Attributes(r.Attributes)
			if inNS(a) && num(a, "sport") == srv.port {
				out[num(a, "dport")] = a
			}
		}
		return out
	}

	// 1. Records: 200 connections and a refused connect.
	dropped := daemonOTLPStatus(t, d).RecordsDropped
	ports := srv.burst(t, 200)
	refusedPort := refuseOnce(t, ns)
	if missing := awaitExported(t, d, ports, serverSides, dropped, 10*time.Second); missing > len(ports)/2 {
		t.Fatalf("%d of %d connections dropped (counted): the test cannot check their records", missing, len(ports))
	}

	hist := map[float64]map[string]any{}
	for _, c := range jsonLines(t, d.run(t, "history", "--socket", d.sock, "--all-netns", "--closed", "--json")) {
		if uint64(num(c, "netns")) == ns.Inode {
			hist[c["cookie"].(float64)] = c
		}
	}
	got := serverSides()
	for _, p := range ports {
		a := got[p]
		if a == nil {
			continue // dropped and counted (awaitExported)
		}
		h := hist[a["cookie"].(float64)]
		if !reflect.DeepEqual(a, h) {
			t.Errorf("record\n%v\nis not its history --json object\n%v", a, h)
		}
		if num(a, "pid") != os.Getpid() || a["comm"] == "" || a["daddr"] != "127.0.0.1" ||
			a["outcome"] != "closed" || a["by"] != "peer" || a["origin"] != "accept" {
			t.Errorf("server side from port %d: %v", p, a)
		}
	}
	var refused map[string]any
	for _, r := range rcv.Records() {
		if a := otlptest.Attributes(r.Attributes); inNS(a) && num(a, "sport") == refusedPort {
			refused = a
			if r.EventName != "sstrace.connection.closed" || r.TimeUnixNano == 0 {
				t.Errorf("refused record: event %q time %d", r.EventName, r.TimeUnixNano)
			}
		}
	}
	if refused == nil || refused["outcome"] != "refused" || num(refused, "pid") != os.Getpid() || num(refused, "dport") != 1 {
		t.Errorf("refused connect's record: %v", refused)
	}
	if h := rcv.Header(); h.Get("X-Scope-Orgid") != "sstrace-test" {
		t.Errorf("--otlp-header not sent: %v", h)
	}

	// 2. Metrics: /metrics' names; counters between two scrapes around a push.
	before := scrape(t, metricsAddr)
	asked := time.Now()
	var pushed []*metricsv1.Metric
	testutil.WaitFor(t, 5*time.Second, "a metrics push", func() bool {
		pushed = rcv.MetricsAfter(asked)
		return pushed != nil
	})
	after := scrape(t, metricsAddr)
	names := map[string]bool{}
	checked := 0
	for _, m := range pushed {
		names[m.Name] = true
		var pts []*metricsv1.NumberDataPoint
		switch d := m.Data.(type) {
		case *metricsv1.Metric_Sum:
			pts = d.Sum.DataPoints
		case *metricsv1.Metric_Gauge:
			if !strings.HasPrefix(m.Name, "sstrace_") {
				continue
			}
			for _, p := range d.Gauge.DataPoints {
				if _, ok := after[seriesKey(m.Name, p.Attributes)]; !ok {
					t.Errorf("pushed gauge %s not on /metrics", seriesKey(m.Name, p.Attributes))
				}
			}
		}
		for _, p := range pts {
			k := seriesKey(m.Name, p.Attributes)
			lo, ok1 := before[k]
			hi, ok2 := after[k]
			if !ok1 || !ok2 {
				continue // a series born between the scrapes
			}
			if v := p.GetAsDouble(); v < lo || v > hi {
				t.Errorf("%s pushed %v, /metrics had %v before and %v after", k, v, lo, hi)
			}
			checked++
		}
	}
	for _, want := range []string{"sstrace_sockets", "sstrace_connections_closed_total", "sstrace_connection_lifetime_seconds",
		"sstrace_events_total", "sstrace_tracer_events_received_total", "sstrace_otlp_records_exported_total",
		"sstrace_otlp_records_dropped_total", "go_goroutines"} {
		if !names[want] {
			t.Errorf("metric %s not pushed", want)
		}
	}
	for k := range after {
		if name, _, _ := strings.Cut(k, "{"); strings.HasPrefix(name, "sstrace_") && !names[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")] {
			t.Errorf("%s on /metrics, not pushed", name)
		}
	}
	if checked < 20 {
		t.Errorf("only %d counters compared with /metrics", checked)
	}

	// 3. A stalled collector: held requests (timing out), then 503s.
	rcv.SetMode(otlptest.Hold)
	start := time.Now()
	stalledPorts := srv.burst(t, 2500) // more than the queue (1024) and a batch (512) hold
	burst := time.Since(start)
	st := daemonOTLPStatus(t, d)
	if took := time.Since(start) - burst; took > time.Second {
		t.Errorf("status took %s with the collector stalled", took)
	}
	testutil.WaitFor(t, 5*time.Second, "failed requests", func() bool { return daemonOTLPStatus(t, d).Errors > 0 })
	rcv.SetMode(otlptest.Unavailable)
	testutil.WaitFor(t, 5*time.Second, "a 503", func() bool {
		return rcv.Refused() > 0 && strings.Contains(daemonOTLPStatus(t, d).LastError, "503")
	})
	st = daemonOTLPStatus(t, d)
	if st.Dropped["queue_full"] == 0 || st.RecordsDropped < st.Dropped["queue_full"] {
		t.Errorf("stalled: %+v, want queue_full drops", st)
	}
	servers := 0
	for _, c := range jsonLines(t, d.run(t, "history", "--socket", d.sock, "--all-netns", "--closed", "--json", fmt.Sprintf("sport = :%d", srv.port))) {
		if uint64(num(c, "netns")) == ns.Inode {
			servers++
		}
	}
	if want := len(ports) + len(stalledPorts); servers != want {
		t.Errorf("history has %d server sides with the collector stalled, want %d", servers, want)
	}
	if m := scrape(t, metricsAddr); m[`sstrace_otlp_records_dropped_total{reason="queue_full"}`] < float64(st.Dropped["queue_full"]) {
		t.Errorf("/metrics: %v queue_full drops, status said %d", m[`sstrace_otlp_records_dropped_total{reason="queue_full"}`], st.Dropped["queue_full"])
	}
	t.Logf("collector stalled: %d connections in %s, status %+v", len(stalledPorts), burst, st)

	// 4. Recovery: new connections are exported. The daemon exports every
	// namespace's connections, and on a shared machine other tests may
	// close more than the exporter keeps up with: a late connection is
	// then dropped, but counted. So: bursts until one is exported whole,
	// each loss explained by the drop counter.
	rcv.SetMode(otlptest.Accept)
	testutil.WaitFor(t, 10*time.Second, "recovery", func() bool { return daemonOTLPStatus(t, d).LastError == "" })
	exportedWhole := false
	for try := 0; try < 5 && !exportedWhole; try++ {
		dropped := daemonOTLPStatus(t, d).RecordsDropped
		exportedWhole = awaitExported(t, d, srv.burst(t, 20), serverSides, dropped, 3*time.Second) == 0
	}
	if !exportedWhole {
		t.Errorf("no burst of 20 connections exported whole after the recovery")
	}
	text := d.run(t, "status", "--socket", d.sock)
	if !strings.Contains(text, "otlp:         "+rcv.URL) || !strings.Contains(text, "queue_full") {
		t.Errorf("status text has no otlp line:\n%s", text)
	}
}

// awaitExported waits up to d for the records of the server sides of the
// connections from these client ports, and returns how many did not come.
// The daemon exports every namespace's connections, and on a shared
// machine other tests may close more than the exporter keeps up with; a
// connection may then be dropped, but never silently: the drop counter
// must have risen (from dropped) by at least as many as are missing.
func awaitExported(t *testing.T, d *daemonRun, ports []int, sides func() map[int]map[string]any, dropped uint64, wait time.Duration) int {
	t.Helper()
	missing := func() int {
		got, n := sides(), 0
		for _, p := range ports {
			if got[p] == nil {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(wait)
	for missing() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	n := missing()
	if n == 0 {
		return 0
	}
	if now := daemonOTLPStatus(t, d).RecordsDropped; now-dropped < uint64(n) {
		t.Fatalf("%d of %d connections neither exported nor counted as dropped (%d drops)", n, len(ports), now-dropped)
	}
	t.Logf("%d of %d connections dropped and counted: the host closes more than the exporter keeps up with", n, len(ports))
	return n
}

// otlpStatusJSON is the otlp object of `sstrace status --json`.
type otlpStatusJSON struct {
	RecordsExported uint64            `json:"records_exported"`
	RecordsDropped  uint64            `json:"records_dropped"`
	Dropped         map[string]uint64 `json:"records_dropped_by_reason"`
	Errors          uint64            `json:"errors"`
	LastError       string            `json:"last_error"`
}

func daemonOTLPStatus(t *testing.T, d *daemonRun) otlpStatusJSON {
	t.Helper()
	var st struct {
		OTLP *otlpStatusJSON `json:"otlp"`
	}
	if err := json.Unmarshal([]byte(d.run(t, "status", "--socket", d.sock, "--json")), &st); err != nil || st.OTLP == nil {
		t.Fatalf("status --json: %v, otlp %v", err, st.OTLP)
	}
	return *st.OTLP
}

// echoServer is a listener in a namespace whose accepted connections are
// read to EOF and closed: the client closes first, so the server side
// ends in LAST-ACK -> CLOSE and leaves the table at once (the client side
// waits out TIME-WAIT).
type echoServer struct {
	ns   *testutil.NS
	addr string
	port int
}

func newEchoServer(t *testing.T, ns *testutil.NS) *echoServer {
	t.Helper()
	ln := testutil.ServeTCP4(t, ns, testutil.Drain)
	return &echoServer{ns: ns, addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port}
}

// burst makes n connections to the server (clientBurst) and returns
// their client ports once the server has closed its sides.
func (s *echoServer) burst(t *testing.T, n int) []int {
	t.Helper()
	ports := clientBurst(t, s.ns, s.addr, n, nil)
	time.Sleep(200 * time.Millisecond) // the server reads the last EOFs and closes
	return ports
}

// clientBurst makes n connections to addr from four threads in the
// namespace (a socket belongs to the namespace of the thread that makes
// it), each writing 16 bytes and closing, each after calling before (when
// set); it returns their local ports.
func clientBurst(t *testing.T, ns *testutil.NS, addr string, n int, before func()) []int {
	t.Helper()
	var mu sync.Mutex
	var ports []int
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			errc <- ns.Do(func() error {
				for i := w; i < n; i += 4 {
					if before != nil {
						before()
					}
					c, err := net.Dial("tcp4", addr)
					if err != nil {
						return err
					}
					mu.Lock()
					ports = append(ports, c.LocalAddr().(*net.TCPAddr).Port)
					mu.Unlock()
					c.Write(make([]byte, 16))
					c.Close()
				}
				return nil
			})
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	return ports
}

// refuseOnce connects from the namespace to 127.0.0.1:1, where nobody
// listens (refused), from a port it binds first, and returns that port.
func refuseOnce(t *testing.T, ns *testutil.NS) int {
	t.Helper()
	var port int
	if err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		sa, _ := unix.Getsockname(fd)
		port = sa.(*unix.SockaddrInet4).Port
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 1}); err != unix.ECONNREFUSED {
			return fmt.Errorf("connect to a closed port: %v, want ECONNREFUSED", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return port
}

// freeAddr is a 127.0.0.1 address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scrape reads /metrics into "name{labels}" -> value, as the text shows
// them (labels sorted by name, as client_golang writes them).
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range scrapeLines(t, "http://"+addr+"/metrics") {
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape: %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// seriesKey is how /metrics names a series with these attributes.
func seriesKey(name string, attrs []*commonv1.KeyValue) string {
	if len(attrs) == 0 {
		return name
	}
	var ls []string
	for _, kv := range attrs {
		ls = append(ls, kv.Key+"="+strconv.Quote(kv.Value.GetStringValue()))
	}
	sort.Strings(ls)
	return name + "{" + strings.Join(ls, ",") + "}"
}

// TestOTLPFilterFlag: --otlp-filter is read in history's language, a bad
// one is refused in one line naming the flag, and it needs an endpoint.
func TestOTLPFilterFlag(t *testing.T) {
	f := otlpFlags{endpoint: "http://127.0.0.1:4318", interval: time.Second, queue: 1, timeout: time.Second,
		filter: "dport = :5432 and container abc"}
	opts, err := f.options(noEnv)
	if err != nil || opts.Keep == nil {
		t.Fatalf("options: %+v, %v", opts, err)
	}
	f.filter = "dport = :x"
	if _, err := f.options(noEnv); err == nil || !strings.HasPrefix(err.Error(), "--otlp-filter: ") {
		t.Errorf("a bad filter: %v", err)
	}
	if _, err := (otlpFlags{filter: "dport = :80", set: []string{"--otlp-filter"}}).options(noEnv); err == nil ||
		!strings.Contains(err.Error(), "needs --otlp-endpoint") {
		t.Errorf("--otlp-filter without an endpoint: %v", err)
	}
}

// noEnv is a getenv with nothing set.
func noEnv(string) string { return "" }

// TestOTLPEnv: OTEL_EXPORTER_OTLP_ENDPOINT alone turns export on, with the
// headers, timeout and resource the variables give; the flags win over
// them.
func TestOTLPEnv(t *testing.T) {
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
		"OTEL_EXPORTER_OTLP_HEADERS":  "authorization=Bearer%20env,x-tenant=env",
		"OTEL_EXPORTER_OTLP_TIMEOUT":  "1500",
		"OTEL_SERVICE_NAME":           "edge",
	}
	getenv := func(k string) string { return env[k] }
	base := otlpFlags{interval: time.Second, queue: 1, timeout: 10 * time.Second}
	opts, err := base.options(getenv)
	if err != nil || opts == nil {
		t.Fatalf("options from the environment: %+v, %v", opts, err)
	}
	if opts.Endpoint != "http://collector:4318" || opts.Timeout != 1500*time.Millisecond ||
		opts.Headers["Authorization"] != "Bearer env" || opts.Resource["service.name"] != "edge" {
		t.Errorf("from the environment: %+v", opts)
	}
	f := base
	f.endpoint, f.timeout = "http://flag:4318", 3*time.Second
	f.headers = []string{"x-tenant=flag"}
	f.set = []string{"--otlp-header", "--otlp-timeout"}
	if opts, err = f.options(getenv); err != nil {
		t.Fatal(err)
	}
	if opts.Endpoint != "http://flag:4318" || opts.Timeout != 3*time.Second || opts.Headers["X-Tenant"] != "flag" ||
		opts.Headers["Authorization"] != "Bearer env" {
		t.Errorf("flags over the environment: %+v", opts)
	}
	env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
	if _, err := base.options(getenv); err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Errorf("grpc asked: %v", err)
	}
}
