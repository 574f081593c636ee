package table

import "slices"

// HistogramBuckets are the upper bounds (seconds) of the histograms the
// table keeps: from 100 µs (loopback) to an hour (long-lived connections).
var HistogramBuckets = []float64{0.0001, 0.001, 0.01, 0.1, 1, 10, 60, 600, 3600}

// Histogram is a cumulative-bucket histogram in Prometheus' shape.
type Histogram struct {
	// Bounds are the buckets' upper bounds; Counts[i] counts the
	// observations <= Bounds[i] (cumulative).
	Bounds []float64
	Counts []uint64
	Sum    float64
	Count  uint64
}

func newHistogram() Histogram {
	return Histogram{Bounds: HistogramBuckets, Counts: make([]uint64, len(HistogramBuckets))}
}

func (h *Histogram) observe(v float64) {
	h.Sum += v
	h.Count++
	for i := len(h.Bounds) - 1; i >= 0 && v <= h.Bounds[i]; i-- {
		h.Counts[i]++
	}
}

func (h Histogram) clone() Histogram {
	h.Counts = slices.Clone(h.Counts)
	return h
}
