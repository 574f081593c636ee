// Package otlptest is an OTLP/HTTP receiver for tests: an httptest server
// that decodes what an exporter sends to /v1/logs and /v1/metrics with the
// collector's own request types (go.opentelemetry.io/proto/otlp/collector),
// keeps it, and can be told to stall (hold requests, or answer 503) and to
// recover. Only tests import it: the collector types link gRPC, which the
// sstrace binary does without.
package otlptest

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	collogsv1 "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetricsv1 "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	logsv1 "go.opentelemetry.io/proto/otlp/logs/v1"
	metricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"
)

// Mode is how the receiver answers.
type Mode int

// Modes.
const (
	// Accept decodes and keeps every request, and answers 200.
	Accept Mode = iota
	// Hold keeps requests waiting, unanswered, until the mode changes
	// (or the client gives up).
	Hold
	// Unavailable answers 503 without reading.
	Unavailable
)

// Receiver is a running OTLP/HTTP receiver.
type Receiver struct {
	// URL is the base URL to export to (http://127.0.0.1:PORT).
	URL string

	t       testing.TB
	srv     *httptest.Server
	mu      sync.Mutex
	mode    Mode
	changed chan struct{} // closed when the mode changes
	logs    []*collogsv1.ExportLogsServiceRequest
	metrics []*colmetricsv1.ExportMetricsServiceRequest
	// metricsAt is when each metrics request was received.
	metricsAt []time.Time
	refused   int
	headers   http.Header
}

// New starts a receiver on 127.0.0.1, stopped at the end of the test.
func New(t testing.TB) *Receiver {
	r := &Receiver{t: t, changed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/logs", func(w http.ResponseWriter, req *http.Request) {
		m := &collogsv1.ExportLogsServiceRequest{}
		if r.receive(w, req, m) {
			r.mu.Lock()
			r.logs = append(r.logs, m)
			r.mu.Unlock()
			r.reply(w, &collogsv1.ExportLogsServiceResponse{})
		}
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, req *http.Request) {
		m := &colmetricsv1.ExportMetricsServiceRequest{}
		if r.receive(w, req, m) {
			r.mu.Lock()
			r.metrics = append(r.metrics, m)
			r.metricsAt = append(r.metricsAt, time.Now())
			r.mu.Unlock()
			r.reply(w, &colmetricsv1.ExportMetricsServiceResponse{})
		}
	})
	r.srv = httptest.NewServer(mux)
	r.URL = r.srv.URL
	t.Cleanup(func() {
		r.SetMode(Accept) // release held requests, or Close waits for them
		r.srv.Close()
	})
	return r
}

// SetMode changes how the receiver answers from now on; requests held
// under Hold are answered under the new mode.
func (r *Receiver) SetMode(m Mode) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode != m {
		r.mode = m
		close(r.changed)
		r.changed = make(chan struct{})
	}
}

// receive waits out Hold, then decodes the (gzip-compressed, protobuf)
// body into m; false when it answered the request itself.
func (r *Receiver) receive(w http.ResponseWriter, req *http.Request, m proto.Message) bool {
	for {
		r.mu.Lock()
		mode, changed := r.mode, r.changed
		if mode != Hold {
			r.headers = req.Header.Clone()
		}
		if mode == Unavailable {
			r.refused++
		}
		r.mu.Unlock()
		switch mode {
		case Unavailable:
			http.Error(w, "stalled by the test", http.StatusServiceUnavailable)
			return false
		case Hold:
			select {
			case <-changed:
				continue
			case <-req.Context().Done():
				return false
			}
		}
		break
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			r.bad(w, "gzip: %v", err)
			return false
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		r.bad(w, "read: %v", err)
		return false
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		r.bad(w, "content type %q, want application/x-protobuf", ct)
		return false
	}
	if err := proto.Unmarshal(b, m); err != nil {
		r.bad(w, "decode %s: %v", req.URL.Path, err)
		return false
	}
	return true
}

// bad fails the test (an exporter sent what no collector would take) and
// answers 400.
func (r *Receiver) bad(w http.ResponseWriter, format string, args ...any) {
	r.t.Errorf("otlp receiver: "+format, args...)
	http.Error(w, "bad request", http.StatusBadRequest)
}

func (r *Receiver) reply(w http.ResponseWriter, m proto.Message) {
	b, _ := proto.Marshal(m)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(b)
}

// Record is one received log record with the resource it came from.
type Record struct {
	Resource *resourcev1.Resource
	*logsv1.LogRecord
}

// Records returns every log record received so far.
func (r *Receiver) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Record
	for _, req := range r.logs {
		for _, rl := range req.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				for _, lr := range sl.GetLogRecords() {
					out = append(out, Record{rl.GetResource(), lr})
				}
			}
		}
	}
	return out
}

// LogRequests is the number of log requests received (and accepted).
func (r *Receiver) LogRequests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.logs)
}

// Refused is the number of requests answered 503.
func (r *Receiver) Refused() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused
}

// Header is the headers of the last request answered.
func (r *Receiver) Header() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.headers
}

// MetricsAfter returns the metrics of the first metrics request received
// after t (nil if none yet).
func (r *Receiver) MetricsAfter(t time.Time) []*metricsv1.Metric {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, req := range r.metrics {
		if r.metricsAt[i].After(t) {
			var out []*metricsv1.Metric
			for _, rm := range req.GetResourceMetrics() {
				for _, sm := range rm.GetScopeMetrics() {
					out = append(out, sm.GetMetrics()...)
				}
			}
			return out
		}
	}
	return nil
}

// MetricRequests is the number of metrics requests received.
func (r *Receiver) MetricRequests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.metrics)
}

// Attributes turns OTLP attributes into what encoding/json makes of the
// JSON object they came from (numbers as float64, arrays as []any, key-value
// lists as maps), to compare a record with `history --json`.
func Attributes(kvs []*commonv1.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = value(kv.Value)
	}
	return m
}

func value(v *commonv1.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonv1.AnyValue_StringValue:
		return x.StringValue
	case *commonv1.AnyValue_IntValue:
		return float64(x.IntValue)
	case *commonv1.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonv1.AnyValue_BoolValue:
		return x.BoolValue
	case *commonv1.AnyValue_ArrayValue:
		out := []any{}
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, value(e))
		}
		return out
	case *commonv1.AnyValue_KvlistValue:
		return Attributes(x.KvlistValue.GetValues())
	}
	return nil
}
