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

// Handler returns an HTTP handler that serves c, with the Go runtime and
// process collectors, from a registry of its own (never the global default
// registry). A collector that fails (the tracer's counters) fails only its
// own metrics; the rest is served.
func Handler(c *Collector) http.Handler {
	return handler(c, nil)
}

// handler is Handler, logging collection errors to log when it is non-nil.
func handler(c *Collector, log *slog.Logger) http.Handler {
	reg := prometheus.NewRegistry()
	// The descriptions are fixed and distinct: registering can only fail
	// on a programming error, caught by the tests.
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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

// Serve serves c at Path on addr until ctx ends, then shuts the server down
// (waiting up to 5 s for scrapes in flight) and returns nil. It returns an
// error if addr cannot be listened on or the server fails. log may be nil.
func Serve(ctx context.Context, addr string, c *Collector, log *slog.Logger) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return serve(ctx, ln, c, log)
}

// serve is Serve on a listener it takes over (and closes).
func serve(ctx context.Context, ln net.Listener, c *Collector, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, handler(c, log))
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
