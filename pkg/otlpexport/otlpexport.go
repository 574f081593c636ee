// Package otlpexport ships the daemon's table to an OpenTelemetry collector
// over OTLP/HTTP with protobuf bodies (the collector's port 4318): one log
// record per closed connection, a flow log whose attributes are the keys of
// `sstrace history --json`, and every metric of the daemon's Prometheus
// registry (the ones /metrics serves), pushed every Options.Interval.
//
//	exp, err := otlpexport.New(tbl, otlpexport.Options{Endpoint: "http://collector:4318", Gatherer: reg})
//	reg.MustRegister(exp.Collector())
//	go exp.Run(ctx)
//
// # Back-pressure
//
// Nothing here can slow the table. Closed connections arrive through a
// table.Subscription, whose buffer of Options.Queue connections is the
// queue: the table hands a connection over without waiting, and when the
// buffer is full it drops it and the subscription counts it. The exporter
// drains the queue into batches of up to 512 records (sent at least every
// second); a batch the collector refuses for a while (a timeout, 429, 502,
// 503, 504) is retried with backoff for up to 30 s while the queue fills
// behind it, then dropped and counted. Both counts are
// sstrace_otlp_records_dropped_total{reason="queue_full"|"export_failed"}
// and show in `sstrace status`. A metrics push that fails is not retried:
// the next one carries the same cumulative figures.
//
// # Why not the OpenTelemetry SDK
//
// Every package linked into the one sstrace binary adds its init time to
// every command, `sstrace ss` included. With the SDK's log and metric
// exporters and the Prometheus bridge linked in, `sstrace ss -s` ran 84
// more package inits, 0.75 ms more of them and 2.7 ms more wall time
// (+4.9 MB of binary); the collector's service packages of
// go.opentelemetry.io/proto/otlp alone link gRPC. So the messages are built
// from the generated data types of go.opentelemetry.io/proto/otlp,
// LogsData and MetricsData, which on the wire are the collector's
// ExportLogsServiceRequest and ExportMetricsServiceRequest (the OTLP
// specification keeps them so), and POSTed with net/http: 7 more inits,
// about 0.2 ms. The metrics are converted from what the registry gathers
// (Metrics), so no metric is defined twice.
//
// A record costs about 7.6 µs of CPU (its attributes straight from
// connfmt.VisitHistory, the body line, the proto messages: 193
// allocations, 10 KB; BenchmarkRecord), so one core keeps up with some
// 130 000 closes a second; beyond what the exporter keeps up with,
// records are dropped and counted as queue_full.
package otlpexport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/sstrace/sstrace/pkg/table"
)

// Defaults for the zero fields of Options.
const (
	// DefaultInterval is how often metrics are pushed.
	DefaultInterval = 30 * time.Second
	// DefaultQueue is how many closed connections may wait for export.
	DefaultQueue = 8192
	// DefaultTimeout bounds one export request.
	DefaultTimeout = 10 * time.Second
)

// Batching and retrying of flow logs.
const (
	// batchSize is the most records one request carries.
	batchSize = 512
	// flushEvery is the longest a record waits for its batch to fill.
	flushEvery = time.Second
	// firstBackoff and maxBackoff space the retries of a failed request.
	firstBackoff = 500 * time.Millisecond
	maxBackoff   = 5 * time.Second
	// retryFor is how long a batch is retried before it is dropped.
	retryFor = 30 * time.Second
	// shutdownFlush bounds the last flush when the exporter stops.
	shutdownFlush = 2 * time.Second
)

// Drop reasons, the reason label of sstrace_otlp_records_dropped_total.
const (
	// DropQueueFull: the queue was full when the connection closed.
	DropQueueFull = "queue_full"
	// DropExportFailed: the collector refused the record's batch, or did
	// not accept it within the retry window.
	DropExportFailed = "export_failed"
)

// Signals, the signal label of sstrace_otlp_export_errors_total.
const (
	SignalLogs    = "logs"
	SignalMetrics = "metrics"
)

// Subscriber is where closed connections come from; *table.Table is one.
type Subscriber interface {
	Subscribe(events, conns bool, buf int) *table.Subscription
}

// Options configure an Exporter.
type Options struct {
	// Endpoint is the collector's base URL, http:// or https://, e.g.
	// http://localhost:4318. Records go to its path plus /v1/logs,
	// metrics to its path plus /v1/metrics (as
	// OTEL_EXPORTER_OTLP_ENDPOINT is read).
	Endpoint string
	// Headers are sent with every request (authentication, tenant).
	Headers map[string]string
	// Interval is how often metrics are pushed (DefaultInterval when 0).
	Interval time.Duration
	// Queue is how many closed connections may wait for export
	// (DefaultQueue when 0); beyond it they are dropped and counted.
	Queue int
	// Timeout bounds one request (DefaultTimeout when 0).
	Timeout time.Duration
	// Gatherer is the registry whose metrics are pushed; nil: logs only.
	Gatherer prometheus.Gatherer
	// Resource names the source of everything sent: OTLP resource
	// attributes such as service.name, service.version, host.name.
	Resource map[string]string
	// Log receives a line when exports start failing and when they
	// recover (nil: no logs).
	Log *slog.Logger
	// Keep selects the closed connections exported (--otlp-filter, in
	// history's filter language: daemon.ConnFilter); nil exports all.
	// The others are skipped, not counted as dropped.
	Keep func(*table.Conn) bool
}

// Stats are an Exporter's figures, for `sstrace status`.
type Stats struct {
	// Endpoint is the collector's base URL.
	Endpoint string
	// RecordsExported counts the flow-log records the collector accepted.
	RecordsExported uint64
	// DroppedQueueFull and DroppedExportFailed count the records dropped,
	// by reason (DropQueueFull, DropExportFailed).
	DroppedQueueFull, DroppedExportFailed uint64
	// MetricExports counts the metric pushes the collector accepted.
	MetricExports uint64
	// Errors counts failed requests of either signal (each attempt).
	Errors uint64
	// LastError is the last request's error while exports fail, "" once
	// one succeeds again.
	LastError string
}

// Exporter ships closed connections and metrics to a collector. Create it
// with New (which subscribes to the table at once, so nothing that closes
// before Run is missed) and start it with Run.
type Exporter struct {
	opts       Options
	logsURL    string
	metricsURL string
	client     *http.Client
	sub        *table.Subscription
	resource   *resourcev1.Resource
	scope      *commonv1.InstrumentationScope
	start      time.Time

	exported, failed, metricExports atomic.Uint64
	logErrors, metricErrors         atomic.Uint64

	mu      sync.Mutex
	lastErr map[string]string // by signal, while failing

	descs descs
}

// New checks opts (zero fields take their defaults) and subscribes to
// src's closed connections.
func New(src Subscriber, opts Options) (*Exporter, error) {
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Queue == 0 {
		opts.Queue = DefaultQueue
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if err := opts.Check(); err != nil {
		return nil, err
	}
	base, _ := ParseEndpoint(opts.Endpoint)
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	e := &Exporter{
		opts:       opts,
		logsURL:    base + "/v1/logs",
		metricsURL: base + "/v1/metrics",
		client:     &http.Client{Timeout: opts.Timeout},
		resource:   &resourcev1.Resource{Attributes: stringAttributes(opts.Resource)},
		scope:      &commonv1.InstrumentationScope{Name: "github.com/sstrace/sstrace/pkg/otlpexport", Version: opts.Resource["service.version"]},
		start:      time.Now(),
		lastErr:    make(map[string]string),
		descs:      newDescs(),
	}
	e.sub = src.Subscribe(false, true, opts.Queue)
	return e, nil
}

// Check says what is wrong with opts, in one line naming the daemon's flag
// (--otlp-endpoint, --otlp-interval, --otlp-queue, --otlp-timeout); the
// durations and the queue must be positive.
func (opts Options) Check() error {
	if _, err := ParseEndpoint(opts.Endpoint); err != nil {
		return err
	}
	switch {
	case opts.Interval <= 0:
		return fmt.Errorf("--otlp-interval %s: want a positive duration, e.g. 30s", opts.Interval)
	case opts.Queue <= 0:
		return fmt.Errorf("--otlp-queue %d: want a positive number of connections", opts.Queue)
	case opts.Timeout <= 0:
		return fmt.Errorf("--otlp-timeout %s: want a positive duration, e.g. 10s", opts.Timeout)
	}
	return nil
}

// ParseEndpoint checks an --otlp-endpoint and returns it without a
// trailing slash.
func ParseEndpoint(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("--otlp-endpoint %q: want the collector's OTLP/HTTP base URL, e.g. http://localhost:4318", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// ParseHeaders turns --otlp-header values (name=value) into a map.
func ParseHeaders(kvs []string) (map[string]string, error) {
	h := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !addHeader(h, k, v) {
			return nil, fmt.Errorf("--otlp-header %q: want name=value, e.g. authorization=Bearer TOKEN", kv)
		}
	}
	return h, nil
}

// addHeader adds one header, its name canonical and both trimmed, and
// reports false for a name that is not an HTTP token or a value that
// would break the request (CR, LF).
func addHeader(h map[string]string, k, v string) bool {
	k = strings.TrimSpace(k)
	if !validHeaderName(k) || strings.ContainsAny(v, "\r\n") {
		return false
	}
	h[http.CanonicalHeaderKey(k)] = strings.TrimSpace(v)
	return true
}

// validHeaderName says whether s is an HTTP token (RFC 9110).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// Run exports until ctx ends, then flushes what is queued (for up to 2 s)
// and returns. It ends the subscription.
func (e *Exporter) Run(ctx context.Context) {
	defer e.sub.Close()
	var wg sync.WaitGroup
	if e.opts.Gatherer != nil {
		wg.Go(func() { e.runMetrics(ctx) })
	}
	e.runLogs(ctx)
	wg.Wait()
}

// Stats returns the exporter's figures.
func (e *Exporter) Stats() Stats {
	st := Stats{
		Endpoint:            e.opts.Endpoint,
		RecordsExported:     e.exported.Load(),
		DroppedQueueFull:    e.sub.Dropped(),
		DroppedExportFailed: e.failed.Load(),
		MetricExports:       e.metricExports.Load(),
		Errors:              e.logErrors.Load() + e.metricErrors.Load(),
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.lastErr[SignalLogs]; err != "" {
		st.LastError = err
	} else {
		st.LastError = e.lastErr[SignalMetrics]
	}
	return st
}

// noteResult records a request's outcome for signal, logging the first
// failure of a run of them and the recovery after it.
func (e *Exporter) noteResult(signal string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	was := e.lastErr[signal]
	if err == nil {
		if was != "" {
			e.opts.Log.Info("otlp export recovered", "signal", signal)
			delete(e.lastErr, signal)
		}
		return
	}
	if signal == SignalLogs {
		e.logErrors.Add(1)
	} else {
		e.metricErrors.Add(1)
	}
	if was == "" {
		e.opts.Log.Warn("otlp export failing", "signal", signal, "err", err)
	}
	e.lastErr[signal] = err.Error()
}

// retryable marks a failure worth retrying (a timeout, a refused
// connection, 429, 502, 503, 504).
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

// isRetryable says whether err is worth retrying.
func isRetryable(err error) bool {
	var r retryable
	return errors.As(err, &r)
}
