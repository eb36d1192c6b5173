package status

import (
	"math"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The metric names the collector reads (see package metrics).
const (
	mRequests  = "kproxy_requests_total"
	mDuration  = "kproxy_request_duration_seconds"
	mUpstream  = "kproxy_upstream_requests_total"
	mItems     = "kproxy_cache_items"
	mBytes     = "kproxy_cache_bytes"
	mEvictions = "kproxy_cache_evictions_total"
	mBreaker   = "kproxy_breaker_state"
)

// latency is one route's cumulative latency histogram since start, merged
// over the other labels: counts[i] requests took at most bounds[i]
// seconds; count is the total.
type latency struct {
	bounds, counts []float64
	count          float64
}

// read takes one sample of the registry's figures (pass-throughs, every
// upstream attempt, 429s, the cache, the breaker) and the per-route
// latency histograms from the families g gathers. Families it does not
// know are ignored; missing ones read as 0. A partial gather is used as
// far as it goes; err is set only when g gathered nothing.
func read(g prometheus.Gatherer) (sample, map[string]*latency, error) {
	var s sample
	routes := map[string]*latency{}
	mfs, err := g.Gather()
	if err != nil && len(mfs) == 0 {
		return s, routes, err
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case mRequests:
			for _, m := range mf.GetMetric() {
				v := m.GetCounter().GetValue()
				if label(m, "cache") == "BYPASS" {
					s.bypass += v
					if method := label(m, "method"); method != http.MethodGet && method != http.MethodHead {
						s.writes += v
					}
				}
				if label(m, "code") == "429" {
					s.given429 += v
				}
			}
		case mUpstream:
			for _, m := range mf.GetMetric() {
				v := m.GetCounter().GetValue()
				s.upstream += v
				if label(m, "code") == "429" {
					s.from429 += v
				}
			}
		case mDuration:
			for _, m := range mf.GetMetric() {
				rt := label(m, "route")
				if !countedRoute(rt) {
					continue
				}
				lt := routes[rt]
				if lt == nil {
					lt = &latency{}
					routes[rt] = lt
				}
				lt.add(m.GetHistogram())
			}
		case mItems:
			s.cacheItems = gauge(mf)
		case mBytes:
			s.cacheBytes = gauge(mf)
		case mEvictions:
			for _, m := range mf.GetMetric() {
				s.evictions += m.GetCounter().GetValue()
			}
		case mBreaker:
			s.breaker = gauge(mf)
		}
	}
	// A write refused by kproxy itself never went upstream; an estimate
	// above the upstream total would read as a negative read rate.
	s.writes = min(s.writes, s.upstream)
	return s, routes, nil
}

func label(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

func gauge(mf *dto.MetricFamily) float64 {
	var v float64
	for _, m := range mf.GetMetric() {
		v += m.GetGauge().GetValue()
	}
	return v
}

// add merges h (same buckets as the others of the route, as one
// HistogramVec guarantees) into the route's latency histogram.
func (st *latency) add(h *dto.Histogram) {
	bs := h.GetBucket()
	if st.bounds == nil {
		st.bounds = make([]float64, len(bs))
		st.counts = make([]float64, len(bs))
		for i, b := range bs {
			st.bounds[i] = b.GetUpperBound()
		}
	}
	if len(bs) != len(st.bounds) {
		return
	}
	for i, b := range bs {
		st.counts[i] += float64(b.GetCumulativeCount())
	}
	st.count += float64(h.GetSampleCount())
}

// quantile estimates the q-quantile (0 < q < 1) of a cumulative histogram
// the way Prometheus's histogram_quantile does: linear interpolation inside
// the bucket that holds the rank; a rank past the last finite bound gives
// that bound. ok is false when the histogram is empty.
func quantile(q float64, bounds, counts []float64, total float64) (v float64, ok bool) {
	if total <= 0 || len(bounds) == 0 {
		return 0, false
	}
	rank := q * total
	i, _ := slices.BinarySearchFunc(counts, rank, func(c, r float64) int {
		if c < r {
			return -1
		}
		return 1
	})
	if i >= len(bounds) || math.IsInf(bounds[i], 1) {
		return bounds[len(bounds)-1], true
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = bounds[i-1], counts[i-1]
	}
	in := counts[i] - below
	if in <= 0 {
		return bounds[i], true
	}
	return lo + (bounds[i]-lo)*(rank-below)/in, true
}
