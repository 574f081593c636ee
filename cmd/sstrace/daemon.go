package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/cgroup2"
	"github.com/sstrace/sstrace/pkg/daemon"
	"github.com/sstrace/sstrace/pkg/keeper"
	"github.com/sstrace/sstrace/pkg/logging"
	"github.com/sstrace/sstrace/pkg/metrics"
	"github.com/sstrace/sstrace/pkg/otlpexport"
	"github.com/sstrace/sstrace/pkg/table"
	"github.com/sstrace/sstrace/pkg/tracer"
)

type daemonFlags struct {
	socket         string
	group          string
	retain         time.Duration
	retainMax      int
	metricsAddr    string
	hook           string
	ringSize       int
	reconcileEvery time.Duration
	logFormat      string
	logLevel       string
	otlp           otlpFlags
}

// otlpFlags are the --otlp-* flags.
type otlpFlags struct {
	endpoint string
	headers  []string
	interval time.Duration
	queue    int
	timeout  time.Duration
	filter   string
	// set lists the --otlp-* flags given, which need --otlp-endpoint.
	set []string
}

func newDaemonCmd() *cobra.Command {
	var f daemonFlags
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Keep a table of every TCP socket with its history, and answer queries on a Unix socket",
		Long: `daemon attaches the tracer, seeds a table of every TCP socket of every network
namespace from sock_diag (events that race the dump are applied after it, by
cookie and time), keeps it exact with the event stream, and answers
` + "`sstrace ss --socket`, `sstrace history`, `sstrace closewait`, `sstrace status --socket`" + `
and ` + "`sstrace trace --socket`" + ` on a Unix socket. Closed connections are kept
for --retain (and at most --retain-max). Logs go to stderr (log/slog); when stderr is the journal
(systemd), each line carries its priority for journald and no time.
With --otlp-endpoint it also pushes, over OTLP/HTTP, one log record per
closed connection (the fields of ` + "`sstrace history --json`" + ` as attributes) and its
metrics to an OpenTelemetry collector; a slow collector costs dropped,
counted records, never a slower table. OTEL_EXPORTER_OTLP_ENDPOINT and the
other OpenTelemetry variables are read too; the flags win.
SIGINT or SIGTERM stop it: programs detached, socket removed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, name := range []string{"otlp-header", "otlp-interval", "otlp-queue", "otlp-timeout", "otlp-filter"} {
				if cmd.Flags().Changed(name) {
					f.otlp.set = append(f.otlp.set, "--"+name)
				}
			}
			return runDaemon(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.socket, "socket", daemon.DefaultSocket, "Unix socket to answer on")
	fl.StringVar(&f.group, "socket-group", "", "group (name or gid) allowed to connect besides root; non-root members see only their own namespace and processes")
	fl.DurationVar(&f.retain, "retain", table.DefaultRetain, "keep closed connections this long")
	fl.IntVar(&f.retainMax, "retain-max", table.DefaultRetainMax, "keep at most this many closed connections")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9477)")
	fl.StringVar(&f.hook, "hook", "auto", "kernel hook: auto, tp_btf, tracepoint, fentry or kprobe")
	fl.IntVar(&f.ringSize, "ring-size", 8<<20, "ring buffer size in bytes: a power of two from the page size to 1 GiB")
	fl.DurationVar(&f.reconcileEvery, "reconcile-every", 5*time.Second, "how often expired TIME-WAIT sockets are looked for")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fl.StringVar(&f.otlp.endpoint, "otlp-endpoint", "", "push flow logs and metrics to this OpenTelemetry collector's OTLP/HTTP base URL (e.g. http://localhost:4318)")
	fl.StringArrayVar(&f.otlp.headers, "otlp-header", nil, "name=value header sent with every OTLP request (repeatable)")
	fl.DurationVar(&f.otlp.interval, "otlp-interval", otlpexport.DefaultInterval, "how often metrics are pushed over OTLP")
	fl.IntVar(&f.otlp.queue, "otlp-queue", otlpexport.DefaultQueue, "closed connections that may wait for OTLP export; beyond it they are dropped and counted")
	fl.DurationVar(&f.otlp.timeout, "otlp-timeout", otlpexport.DefaultTimeout, "time limit of one OTLP request")
	fl.StringVar(&f.otlp.filter, "otlp-filter", "", "export only the closed connections this filter keeps (history's language: 'dport = :5432', '! dst 127.0.0.0/8', 'container ID', ...)")
	_ = cmd.RegisterFlagCompletionFunc("hook", completeHooks)
	_ = cmd.RegisterFlagCompletionFunc("log-format", completeWords("text", "json"))
	_ = cmd.RegisterFlagCompletionFunc("log-level", completeWords("debug", "info", "warn", "error"))
	return cmd
}

// parseGroup turns --socket-group into a gid (-1: none).
func parseGroup(s string) (int, error) {
	if s == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("--socket-group %q: %w", s, err)
	}
	return strconv.Atoi(g.Gid)
}

func runDaemon(ctx context.Context, f daemonFlags) error {
	log, err := logging.New(os.Stderr, f.logFormat, f.logLevel, logging.ToJournal(os.Stderr))
	if err != nil {
		return err
	}
	gid, err := parseGroup(f.group)
	if err != nil {
		return err
	}
	hook, err := tracer.ParseHook(f.hook)
	if err != nil {
		return err
	}
	if err := checkRingSize(f.ringSize); err != nil {
		return err
	}
	if f.retain <= 0 || f.retainMax <= 0 {
		return errors.New("--retain and --retain-max must be positive")
	}
	otlpOpts, err := f.otlp.options(os.Getenv)
	if err != nil {
		return err
	}
	warnings, err := daemon.CheckCapabilities()
	if err != nil {
		return err
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := table.Options{Retain: f.retain, RetainMax: f.retainMax}
	if names, err := cgroup2.NewNames(0); err == nil {
		opts.Cgroups = names
		defer names.Close()
		if err := names.ResolveErr(); err != nil && !errors.Is(err, unix.EPERM) {
			// (EPERM is CAP_DAC_READ_SEARCH missing: said above.)
			log.Warn("cgroups of owners seen by events will not be named, only those of sockets found at a seed", "err", err)
		}
	} else {
		log.Warn("owners' cgroups and containers will not be named", "err", err)
	}
	tr, tbl, err := tracedTable(hook, f.ringSize, opts)
	if err != nil {
		return err
	}
	defer tr.Close()
	method, note := tr.CookieMethod()
	log.Info("tracer attached", "hook", tr.Hook(), "cookies", method, "note", note)
	version := buildInfo().Short()

	// One registry for /metrics and OTLP, the exporter's own counters in it.
	reg := metrics.Registry(metrics.NewCollector(tbl, metrics.Options{Tracer: func() (metrics.TracerStats, error) {
		st, err := tr.Stats()
		return metrics.TracerStats{Submitted: st.Submitted, Received: st.Received, Lost: st.Lost + st.Missed, Caught: st.Caught, DeferFull: st.DeferFull}, err
	}}))
	var exp *otlpexport.Exporter
	if otlpOpts != nil {
		// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME add to, or
		// override, sstrace's own names.
		res := otlpResource(version)
		maps.Copy(res, otlpOpts.Resource)
		otlpOpts.Resource = res
		otlpOpts.Gatherer = reg
		otlpOpts.Log = log
		if exp, err = otlpexport.New(tbl, *otlpOpts); err != nil {
			return err
		}
		reg.MustRegister(exp.Collector())
	}

	kernel := tracer.KernelRelease()
	rate := newEventRate()
	srv, err := daemon.Listen(daemon.Config{
		Path:  f.socket,
		Group: gid,
		Table: tbl,
		Status: func() daemon.Status {
			st, _ := tr.Stats()
			return daemon.Status{
				Hook: string(tr.Hook()), Kernel: kernel, Cookies: string(method), PID: os.Getpid(), Version: version,
				EventsPerSecond: rate.observe(st.Received), Caught: st.Caught, OTLP: otlpStatus(exp),
			}
		},
		Events: func(buf int) *table.Subscription { return tbl.Subscribe(true, false, buf) },
		Logger: log,
	})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx); err != nil {
			log.Error("server", "err", err)
		}
	}()
	defer func() {
		srv.Close()
		wg.Wait()
	}()
	log.Info("listening", "socket", srv.Path())

	if f.metricsAddr != "" {
		wg.Go(func() {
			if err := metrics.Serve(ctx, f.metricsAddr, reg, log); err != nil {
				log.Error("metrics", "err", err)
			}
		})
	}
	if exp != nil {
		wg.Go(func() { exp.Run(ctx) })
		log.Info("exporting over OTLP", "endpoint", otlpOpts.Endpoint, "interval", otlpOpts.Interval, "queue", otlpOpts.Queue)
	}

	err = keeper.Run(ctx, tr, tbl, keeper.Options{ReconcileEvery: f.reconcileEvery, Log: log})
	log.Info("stopping")
	return err
}

// options checks the --otlp-* flags, over the OpenTelemetry environment
// variables read through getenv (OTEL_EXPORTER_OTLP_ENDPOINT and the rest:
// otlpexport.ReadEnv), which they override: nil without an endpoint from
// either.
func (f otlpFlags) options(getenv func(string) string) (*otlpexport.Options, error) {
	env, err := otlpexport.ReadEnv(getenv)
	if err != nil {
		return nil, err
	}
	endpoint := f.endpoint
	if endpoint == "" {
		endpoint = env.Endpoint
	}
	if endpoint == "" {
		if len(f.set) > 0 {
			return nil, fmt.Errorf("%s needs --otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)", f.set[0])
		}
		return nil, nil
	}
	headers, err := otlpexport.ParseHeaders(f.headers)
	if err != nil {
		return nil, err
	}
	for k, v := range env.Headers {
		if _, ok := headers[k]; !ok {
			headers[k] = v
		}
	}
	timeout := f.timeout
	if env.Timeout > 0 && !slices.Contains(f.set, "--otlp-timeout") {
		timeout = env.Timeout
	}
	opts := &otlpexport.Options{Endpoint: endpoint, Headers: headers, Interval: f.interval, Queue: f.queue, Timeout: timeout,
		Resource: env.Resource}
	if f.filter != "" {
		if opts.Keep, err = daemon.ConnFilter([]string{f.filter}); err != nil {
			return nil, fmt.Errorf("--otlp-filter: %w", err)
		}
	}
	return opts, opts.Check()
}

// otlpResource names this daemon in what it exports.
func otlpResource(version string) map[string]string {
	r := map[string]string{"service.name": "sstrace", "service.version": version}
	if host, err := os.Hostname(); err == nil {
		r["host.name"] = host
	}
	return r
}

// otlpStatus is the exporter's part of `sstrace status` (nil without one).
func otlpStatus(exp *otlpexport.Exporter) *daemon.OTLPStatus {
	if exp == nil {
		return nil
	}
	st := exp.Stats()
	return &daemon.OTLPStatus{
		Endpoint: st.Endpoint, RecordsExported: st.RecordsExported,
		RecordsDropped: st.DroppedQueueFull + st.DroppedExportFailed,
		DroppedByReason: map[string]uint64{
			otlpexport.DropQueueFull: st.DroppedQueueFull, otlpexport.DropExportFailed: st.DroppedExportFailed,
		},
		MetricExports: st.MetricExports, Errors: st.Errors, LastError: st.LastError,
	}
}

// tracedTable attaches the tracer and makes the table its events will keep
// (keeper.Run feeds and seeds it): the daemon's start, and `top`'s
// without a daemon. Without the cookie helper, the table resolves the
// cookies events lack through sock_diag.
func tracedTable(hook tracer.Hook, ringSize int, opts table.Options) (*tracer.Tracer, *table.Table, error) {
	tr, err := tracer.Open(tracer.Options{Hook: hook, RingBufferSize: ringSize})
	if err != nil {
		return nil, nil, err
	}
	if method, _ := tr.CookieMethod(); method != tracer.CookieMethodHelper {
		opts.Resolve = keeper.Resolver()
	}
	return tr, table.New(opts), nil
}

// eventRate turns the received counter into a rate over the last status
// request (or the last few seconds).
type eventRate struct {
	mu   sync.Mutex
	last uint64
	at   time.Time
	rate float64
}

func newEventRate() *eventRate { return &eventRate{at: time.Now()} }

func (r *eventRate) observe(received uint64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if d := now.Sub(r.at); d >= time.Second {
		r.rate = float64(received-r.last) / d.Seconds()
		r.last, r.at = received, now
	}
	return r.rate
}
