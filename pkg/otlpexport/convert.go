package otlpexport

import (
	"cmp"
	"context"
	"math"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	metricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
)

// runMetrics pushes the registry's metrics at once and then every
// interval until ctx ends.
func (e *Exporter) runMetrics(ctx context.Context) {
	tick := time.NewTicker(e.opts.Interval)
	defer tick.Stop()
	for {
		e.exportMetrics(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// exportMetrics gathers the registry once and sends it, without retries:
// the next push carries the same cumulative figures.
func (e *Exporter) exportMetrics(ctx context.Context) {
	// A collector that fails (the tracer's counters) fails its own
	// metrics only; Gather returns the rest, which is sent.
	mfs, err := e.opts.Gatherer.Gather()
	if err != nil {
		e.opts.Log.Debug("otlp: gather metrics", "err", err)
	}
	msg := &metricsv1.MetricsData{ResourceMetrics: []*metricsv1.ResourceMetrics{{
		Resource:     e.resource,
		ScopeMetrics: []*metricsv1.ScopeMetrics{{Scope: e.scope, Metrics: Metrics(mfs, e.start, time.Now())}},
	}}}
	if e.send(ctx, e.metricsURL, SignalMetrics, msg, false) == nil {
		e.metricExports.Add(1)
	}
}

// Metrics converts gathered Prometheus metric families to OTLP metrics,
// one each, under the same names (sstrace_sockets stays sstrace_sockets,
// sstrace_events_total keeps its _total), help as description, labels as
// attributes: counters as cumulative monotonic sums, gauges (and untyped)
// as gauges, histograms as cumulative explicit-bucket histograms (the
// Prometheus buckets, which count everything up to their bound, become
// per-bucket counts; the +Inf bucket is the last), summaries as
// summaries. start is the start time of the cumulative series (the
// daemon's, unless a metric says when it was created); now stamps points
// that carry no timestamp of their own.
func Metrics(mfs []*dto.MetricFamily, start, now time.Time) []*metricsv1.Metric {
	out := make([]*metricsv1.Metric, 0, len(mfs))
	for _, mf := range mfs {
		m := &metricsv1.Metric{Name: mf.GetName(), Description: mf.GetHelp()}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			var pts []*metricsv1.NumberDataPoint
			for _, p := range mf.GetMetric() {
				pts = append(pts, numberPoint(p, p.GetCounter().GetValue(), startOf(p.GetCounter().GetCreatedTimestamp().AsTime(), start), now))
			}
			m.Data = &metricsv1.Metric_Sum{Sum: &metricsv1.Sum{
				AggregationTemporality: metricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
				IsMonotonic:            true, DataPoints: pts,
			}}
		case dto.MetricType_GAUGE, dto.MetricType_UNTYPED:
			var pts []*metricsv1.NumberDataPoint
			for _, p := range mf.GetMetric() {
				v := p.GetGauge().GetValue()
				if p.Untyped != nil {
					v = p.GetUntyped().GetValue()
				}
				pts = append(pts, numberPoint(p, v, time.Time{}, now))
			}
			m.Data = &metricsv1.Metric_Gauge{Gauge: &metricsv1.Gauge{DataPoints: pts}}
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			var pts []*metricsv1.HistogramDataPoint
			for _, p := range mf.GetMetric() {
				pts = append(pts, histogramPoint(p, startOf(p.GetHistogram().GetCreatedTimestamp().AsTime(), start), now))
			}
			m.Data = &metricsv1.Metric_Histogram{Histogram: &metricsv1.Histogram{
				AggregationTemporality: metricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
				DataPoints:             pts,
			}}
		case dto.MetricType_SUMMARY:
			var pts []*metricsv1.SummaryDataPoint
			for _, p := range mf.GetMetric() {
				pts = append(pts, summaryPoint(p, startOf(p.GetSummary().GetCreatedTimestamp().AsTime(), start), now))
			}
			m.Data = &metricsv1.Metric_Summary{Summary: &metricsv1.Summary{DataPoints: pts}}
		default:
			continue
		}
		out = append(out, m)
	}
	return out
}

// startOf is a cumulative point's start: when the metric says it was
// created, else start.
func startOf(created, start time.Time) time.Time {
	if created.Unix() > 0 {
		return created
	}
	return start
}

// pointTime is a point's own timestamp, or now.
func pointTime(p *dto.Metric, now time.Time) uint64 {
	if p.TimestampMs != nil {
		return uint64(p.GetTimestampMs()) * uint64(time.Millisecond)
	}
	return unixNano(now)
}

// labels are a metric's labels as attributes, sorted by name.
func labels(p *dto.Metric) []*commonv1.KeyValue {
	kvs := make([]*commonv1.KeyValue, 0, len(p.GetLabel()))
	for _, l := range p.GetLabel() {
		kvs = append(kvs, &commonv1.KeyValue{Key: l.GetName(), Value: stringValue(l.GetValue())})
	}
	sortKeyValues(kvs)
	return kvs
}

// sortKeyValues sorts attributes by key.
func sortKeyValues(kvs []*commonv1.KeyValue) {
	slices.SortFunc(kvs, func(a, b *commonv1.KeyValue) int { return cmp.Compare(a.Key, b.Key) })
}

func numberPoint(p *dto.Metric, v float64, start, now time.Time) *metricsv1.NumberDataPoint {
	return &metricsv1.NumberDataPoint{
		Attributes:        labels(p),
		StartTimeUnixNano: unixNano(start),
		TimeUnixNano:      pointTime(p, now),
		Value:             &metricsv1.NumberDataPoint_AsDouble{AsDouble: v},
	}
}

func histogramPoint(p *dto.Metric, start, now time.Time) *metricsv1.HistogramDataPoint {
	h := p.GetHistogram()
	sum := h.GetSampleSum()
	pt := &metricsv1.HistogramDataPoint{
		Attributes:        labels(p),
		StartTimeUnixNano: unixNano(start),
		TimeUnixNano:      pointTime(p, now),
		Count:             h.GetSampleCount(),
		Sum:               &sum,
	}
	var below uint64 // cumulative count of the buckets so far
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), +1) {
			break // the +Inf bucket is the total, added below
		}
		pt.ExplicitBounds = append(pt.ExplicitBounds, b.GetUpperBound())
		pt.BucketCounts = append(pt.BucketCounts, b.GetCumulativeCount()-below)
		below = b.GetCumulativeCount()
	}
	pt.BucketCounts = append(pt.BucketCounts, h.GetSampleCount()-below)
	return pt
}

func summaryPoint(p *dto.Metric, start, now time.Time) *metricsv1.SummaryDataPoint {
	s := p.GetSummary()
	pt := &metricsv1.SummaryDataPoint{
		Attributes:        labels(p),
		StartTimeUnixNano: unixNano(start),
		TimeUnixNano:      pointTime(p, now),
		Count:             s.GetSampleCount(),
		Sum:               s.GetSampleSum(),
	}
	for _, q := range s.GetQuantile() {
		pt.QuantileValues = append(pt.QuantileValues, &metricsv1.SummaryDataPoint_ValueAtQuantile{
			Quantile: q.GetQuantile(), Value: q.GetValue(),
		})
	}
	return pt
}
