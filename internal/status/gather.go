package status

import (
	"math"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The metric names the collector reads (see package metrics).
const (
	mRequests  = "kproxy_requests_total"
	mDuration  = "kproxy_request_duration_seconds"
	mUpstream  = "kproxy_upstream_requests_total"
	mCoalesced = "kproxy_coalesced_total"
	mItems     = "kproxy_cache_items"
	mBytes     = "kproxy_cache_bytes"
	mEvictions = "kproxy_cache_evictions_total"
	mBreaker   = "kproxy_breaker_state"
)

// routeStats are one route's counters since start, merged over the other
// labels.
type routeStats struct {
	requests         float64
	hit, stale, miss float64
	upstream         float64
	// buckets are the cumulative latency histogram: counts[i] requests
	// took at most bounds[i] seconds; count is the total.
	bounds, counts []float64
	count          float64
}

// shownRoute reports whether a route label belongs in the per-route table:
// the API and the batch endpoints, not kproxy's own pages and probes.
// Route labels are templates (package route), never raw paths.
func shownRoute(r string) bool {
	return strings.HasPrefix(r, "/trade-api/") || r == "/batch" || strings.HasPrefix(r, "/batch/")
}

// read takes one sample and the per-route counters from the families g
// gathers. Families it does not know are ignored; missing ones read as 0.
// A partial gather is used as far as it goes; err is set only when g
// gathered nothing.
func read(g prometheus.Gatherer) (sample, map[string]*routeStats, error) {
	var s sample
	routes := map[string]*routeStats{}
	mfs, err := g.Gather()
	if err != nil && len(mfs) == 0 {
		return s, routes, err
	}
	rs := func(name string) *routeStats {
		st := routes[name]
		if st == nil {
			st = &routeStats{}
			routes[name] = st
		}
		return st
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case mRequests:
			for _, m := range mf.GetMetric() {
				v := m.GetCounter().GetValue()
				rt, method, code, outcome := label(m, "route"), label(m, "method"), label(m, "code"), label(m, "cache")
				switch outcome {
				case "HIT":
					s.hit += v
				case "STALE":
					s.stale += v
				case "MISS":
					s.miss += v
				case "BYPASS":
					s.bypass += v
					if method != http.MethodGet && method != http.MethodHead {
						s.writes += v
					}
				}
				if code == "429" {
					s.given429 += v
				}
				if !shownRoute(rt) {
					continue
				}
				st := rs(rt)
				st.requests += v
				switch outcome {
				case "HIT":
					st.hit += v
				case "STALE":
					st.stale += v
				case "MISS":
					st.miss += v
				}
			}
		case mUpstream:
			for _, m := range mf.GetMetric() {
				v := m.GetCounter().GetValue()
				s.upstream += v
				if label(m, "code") == "429" {
					s.from429 += v
				}
				if rt := label(m, "route"); shownRoute(rt) {
					rs(rt).upstream += v
				}
			}
		case mCoalesced:
			for _, m := range mf.GetMetric() {
				s.collapsed += m.GetCounter().GetValue()
			}
		case mDuration:
			for _, m := range mf.GetMetric() {
				rt := label(m, "route")
				if !shownRoute(rt) {
					continue
				}
				rs(rt).addHistogram(m.GetHistogram())
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

// addHistogram merges h (same buckets as the others of the route, as one
// HistogramVec guarantees) into the route's latency histogram.
func (st *routeStats) addHistogram(h *dto.Histogram) {
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
