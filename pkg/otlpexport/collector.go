package otlpexport

import "github.com/prometheus/client_golang/prometheus"

// descs are the exporter's own metrics, read from its counters at scrape
// time (and so pushed with the rest):
//
//	sstrace_otlp_records_exported_total           counter  flow-log records the collector accepted
//	sstrace_otlp_records_dropped_total{reason}    counter  records dropped: queue_full (the exporter did not keep up), export_failed (the collector refused them or did not answer within the retry window)
//	sstrace_otlp_metric_exports_total             counter  metric pushes the collector accepted
//	sstrace_otlp_export_errors_total{signal}      counter  failed requests, each attempt: logs or metrics
type descs struct {
	exported, dropped, metricExports, errors *prometheus.Desc
}

func newDescs() descs {
	return descs{
		exported:      prometheus.NewDesc("sstrace_otlp_records_exported_total", "Flow-log records (closed connections) the OTLP collector accepted.", nil, nil),
		dropped:       prometheus.NewDesc("sstrace_otlp_records_dropped_total", "Flow-log records dropped: queue_full (the exporter did not keep up), export_failed (the collector refused them or did not answer in time).", []string{"reason"}, nil),
		metricExports: prometheus.NewDesc("sstrace_otlp_metric_exports_total", "Metric pushes the OTLP collector accepted.", nil, nil),
		errors:        prometheus.NewDesc("sstrace_otlp_export_errors_total", "Failed OTLP requests (each attempt), by signal.", []string{"signal"}, nil),
	}
}

// Collector returns a prometheus.Collector of the exporter's counters, to
// register beside the table's.
func (e *Exporter) Collector() prometheus.Collector { return collector{e} }

type collector struct{ e *Exporter }

// Describe sends the four descriptions.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	d := c.e.descs
	ch <- d.exported
	ch <- d.dropped
	ch <- d.metricExports
	ch <- d.errors
}

// Collect reads the counters.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	d, st := c.e.descs, c.e.Stats()
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	counter(d.exported, st.RecordsExported)
	counter(d.dropped, st.DroppedQueueFull, DropQueueFull)
	counter(d.dropped, st.DroppedExportFailed, DropExportFailed)
	counter(d.metricExports, st.MetricExports)
	counter(d.errors, c.e.logErrors.Load(), SignalLogs)
	counter(d.errors, c.e.metricErrors.Load(), SignalMetrics)
}
