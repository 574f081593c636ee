package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where Serve answers.
const Path = "/metrics"

// shutdownTimeout bounds how long Serve waits for scrapes in flight once
// its context ends.
const shutdownTimeout = 5 * time.Second

// Registry returns a registry of its own (never the global default
// registry) holding c and the Go runtime and process collectors: the one
// set of metrics the daemon serves at Path and pushes over OTLP (it adds
// the exporter's counters).
func Registry(c *Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	// The descriptions are fixed and distinct: registering can only fail
	// on a programming error, caught by the tests.
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler returns an HTTP handler that serves c, with the Go runtime and
// process collectors (Registry). A collector that fails (the tracer's
// counters) fails only its own metrics; the rest is served.
func Handler(c *Collector) http.Handler {
	return handler(Registry(c), nil)
}

// handler serves reg, logging collection errors to log when it is non-nil.
func handler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	opts := promhttp.HandlerOpts{Registry: reg, ErrorHandling: promhttp.ContinueOnError}
	if log != nil {
		opts.ErrorLog = errorLog{log}
	}
	return promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, opts))
}

// errorLog adapts slog to promhttp.Logger.
type errorLog struct{ log *slog.Logger }

// Println logs a collection or encoding error of a scrape.
func (l errorLog) Println(v ...any) { l.log.Warn("metrics scrape", "error", fmt.Sprint(v...)) }

// Serve serves reg (see Registry) at Path on addr until ctx ends, then
// shuts the server down (waiting up to 5 s for scrapes in flight) and
// returns nil. It returns an error if addr cannot be listened on or the
// server fails. log may be nil.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return serve(ctx, ln, reg, log)
}

// serve is Serve on a listener it takes over (and closes).
func serve(ctx context.Context, ln net.Listener, reg *prometheus.Registry, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, handler(reg, log))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("serving metrics", "addr", ln.Addr().String(), "path", Path)
	select {
	case err := <-done:
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("metrics: shut down server on %s: %w", ln.Addr(), err)
	}
	return nil
}
