// Package metrics defines kproxy's Prometheus metrics on a registry of its
// own (no global state), named as the contract says.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every kproxy metric. Its methods are safe on a nil
// *Metrics and record nothing then, so components run without
// observability (benchmarks do) with no nil checks of their own. The fields
// are nil on a nil *Metrics: record through the methods; use a field only
// on a Metrics from New.
type Metrics struct {
	Registry *prometheus.Registry

	Requests         *prometheus.CounterVec   // route, method, code, cache
	RequestDuration  *prometheus.HistogramVec // route, cache
	UpstreamRequests *prometheus.CounterVec   // route, code
	UpstreamDuration *prometheus.HistogramVec // route
	Coalesced        *prometheus.CounterVec   // route
	CacheItems       prometheus.GaugeFunc
	CacheBytes       prometheus.GaugeFunc
	CacheEvictions   prometheus.Counter
	BreakerState     prometheus.Gauge
	RateLimitWait    prometheus.Histogram
	UpstreamRetries  *prometheus.CounterVec // reason
	BatchItems       *prometheus.CounterVec // status
	AutoBatched      prometheus.Counter
	// UpstreamBudget is the configured upstream rate (requests/s) by kind
	// ("read", "write"), set once at startup, so dashboards can draw the
	// upstream rate against it.
	UpstreamBudget *prometheus.GaugeVec
	// WSConnections is kproxy_ws_connections: open WebSocket pass-through
	// connections (package wsproxy).
	WSConnections prometheus.Gauge
	// RedisUp is kproxy_redis_up (1 while Redis answers, else 0); nil
	// until EnableRedis registers it (only with redis.url set).
	RedisUp prometheus.Gauge
}

// EnableRedis registers the shared tier's metrics (kproxy_redis_up).
// Call it once, before serving.
func (m *Metrics) EnableRedis() {
	m.RedisUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kproxy_redis_up", Help: "1 while Redis (the shared tier) answers, 0 while kproxy serves without it.",
	})
	m.Registry.MustRegister(m.RedisUp)
}

// DiskStats is what the disk tier's metrics read at each scrape.
type DiskStats struct {
	Up                                        bool
	Items                                     int
	Bytes                                     int64
	Hits, Corrupt, Evictions, Writes, Dropped uint64
}

// EnableDisk registers the history tier's metrics (kproxy_disk_*), read
// from stats at each scrape; stats must be cheap and safe for concurrent
// use. Call it once, before serving. A nil *Metrics registers nothing.
func (m *Metrics) EnableDisk(stats func() DiskStats) {
	if m == nil {
		return
	}
	gauge := func(name, help string, v func(DiskStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return v(stats()) })
	}
	counter := func(name, help string, v func(DiskStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(stats())) })
	}
	m.Registry.MustRegister(
		gauge("kproxy_disk_up", "1 while the disk tier (cache.disk.path) is in use, 0 while it is off or down.",
			func(s DiskStats) float64 { return map[bool]float64{true: 1}[s.Up] }),
		gauge("kproxy_disk_items", "Entries held by the disk tier.", func(s DiskStats) float64 { return float64(s.Items) }),
		gauge("kproxy_disk_bytes", "Bytes held by the disk tier, counted against cache.disk.max_bytes.", func(s DiskStats) float64 { return float64(s.Bytes) }),
		counter("kproxy_disk_hits_total", "Answers read from the disk tier after a memory miss.", func(s DiskStats) uint64 { return s.Hits }),
		counter("kproxy_disk_corrupt_total", "Damaged or truncated disk records found, dropped and never served.", func(s DiskStats) uint64 { return s.Corrupt }),
		counter("kproxy_disk_evictions_total", "Disk entries removed to stay within cache.disk.max_bytes.", func(s DiskStats) uint64 { return s.Evictions }),
		counter("kproxy_disk_writes_total", "Entries written to the disk tier.", func(s DiskStats) uint64 { return s.Writes }),
		counter("kproxy_disk_dropped_total", "Disk writes dropped (queue full, disk down or full, entry over the bound).", func(s DiskStats) uint64 { return s.Dropped }),
	)
}

// LiveMetrics are the push feed's metrics (live.enabled).
type LiveMetrics struct {
	// Connected is kproxy_live_connected: 1 while the feed's WebSocket to
	// Kalshi is up, else 0.
	Connected prometheus.Gauge
	// Messages is kproxy_live_messages_total{type}: frames received, by
	// message type (ticker, market_lifecycle_v2, subscribed, ok, error, ...;
	// "invalid" for frames that are not JSON messages, "unknown" for types
	// kproxy does not know, "rejected" for ticker messages with values out of
	// range).
	Messages *prometheus.CounterVec
}

// EnableLive registers the push feed's metrics and returns them. Call it
// once, before serving.
func (m *Metrics) EnableLive() *LiveMetrics {
	l := &LiveMetrics{
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kproxy_live_connected", Help: "1 while the live feed's WebSocket to Kalshi is connected, else 0.",
		}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_live_messages_total", Help: "Messages received on the live feed, by type (invalid: not a JSON message; unknown: a type kproxy ignores; rejected: values out of range).",
		}, []string{"type"}),
	}
	m.Registry.MustRegister(l.Connected, l.Messages)
	return l
}

// CacheStats reports the cache's size for the gauges.
type CacheStats func() (items int, bytes int64)

// New registers every metric on a new registry.
func New(stats CacheStats) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	fast := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		Registry: reg,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_requests_total", Help: "Requests answered, by route template, method, status code and cache outcome.",
		}, []string{"route", "method", "code", "cache"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kproxy_request_duration_seconds", Help: "Time to answer a request, by route template and cache outcome.", Buckets: fast,
		}, []string{"route", "cache"}),
		UpstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_upstream_requests_total", Help: "Upstream attempts, by route template and status code (error for transport failures).",
		}, []string{"route", "code"}),
		UpstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kproxy_upstream_duration_seconds", Help: "Upstream attempt latency until response headers, by route template.", Buckets: fast,
		}, []string{"route"}),
		Coalesced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_coalesced_total", Help: "Requests that waited on another request's upstream fetch instead of making their own.",
		}, []string{"route"}),
		CacheItems: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kproxy_cache_items", Help: "Entries in the cache.",
		}, func() float64 { n, _ := stats(); return float64(n) }),
		CacheBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kproxy_cache_bytes", Help: "Bytes held by the cache.",
		}, func() float64 { _, b := stats(); return float64(b) }),
		CacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kproxy_cache_evictions_total", Help: "Entries evicted to stay within cache.max_bytes.",
		}),
		BreakerState: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kproxy_breaker_state", Help: "Upstream circuit breaker: 0 closed, 1 half-open, 2 open.",
		}),
		RateLimitWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kproxy_ratelimit_wait_seconds", Help: "Time upstream calls waited for a rate-limit token.", Buckets: fast,
		}),
		UpstreamRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_upstream_retries_total", Help: "Upstream retries, by reason (429, 502, 503, 504, connection).",
		}, []string{"reason"}),
		BatchItems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kproxy_batch_items_total", Help: "Batch items answered, by status code.",
		}, []string{"status"}),
		AutoBatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kproxy_autobatch_markets_total", Help: "Single-market misses fetched upstream as part of a combined /markets?tickers= call.",
		}),
		UpstreamBudget: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kproxy_upstream_budget_per_second", Help: "Configured upstream rate budget in requests/s, by kind (read, write): upstream.read_rate and upstream.write_rate.",
		}, []string{"kind"}),
		WSConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kproxy_ws_connections", Help: "Open WebSocket pass-through connections on /trade-api/ws/v2.",
		}),
	}
	reg.MustRegister(m.Requests, m.RequestDuration, m.UpstreamRequests, m.UpstreamDuration, m.Coalesced,
		m.CacheItems, m.CacheBytes, m.CacheEvictions, m.BreakerState, m.RateLimitWait, m.UpstreamRetries,
		m.BatchItems, m.AutoBatched, m.UpstreamBudget, m.WSConnections)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// Traffic returns a gatherer of the request, upstream, cache and breaker
// metrics only, without the Go runtime and process collectors (which read
// /proc): the status page reads it every second. The metrics are the same
// instances as in Registry.
func (m *Metrics) Traffic() prometheus.Gatherer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Requests, m.RequestDuration, m.UpstreamRequests, m.Coalesced,
		m.CacheItems, m.CacheBytes, m.CacheEvictions, m.BreakerState)
	return reg
}

// Request records one answered request of route (a template, or "other")
// with its cache outcome (X-Cache words, BYPASS, or "" for kproxy's own
// routes).
func (m *Metrics) Request(route, method string, status int, cache string, d time.Duration) {
	if m == nil {
		return
	}
	m.Requests.WithLabelValues(route, method, Code(status), cache).Inc()
	m.RequestDuration.WithLabelValues(route, cache).Observe(d.Seconds())
}

// Upstream records one upstream attempt of route ("" counts as "other"):
// its status, or "error" when err is set, and how long it took.
func (m *Metrics) Upstream(route string, status int, err error, d time.Duration) {
	if m == nil {
		return
	}
	if route == "" {
		route = "other"
	}
	code := "error"
	if err == nil {
		code = Code(status)
	}
	m.UpstreamRequests.WithLabelValues(route, code).Inc()
	m.UpstreamDuration.WithLabelValues(route).Observe(d.Seconds())
}

// Coalesce records a request of route that waited on another's fetch.
func (m *Metrics) Coalesce(route string) {
	if m != nil {
		m.Coalesced.WithLabelValues(route).Inc()
	}
}

// Retry records an upstream retry for reason (a status, or "connection").
func (m *Metrics) Retry(reason string) {
	if m != nil {
		m.UpstreamRetries.WithLabelValues(reason).Inc()
	}
}

// RateWait records a wait for a rate-limit token.
func (m *Metrics) RateWait(d time.Duration) {
	if m != nil {
		m.RateLimitWait.Observe(d.Seconds())
	}
}

// AutoBatch records n single-market misses fetched in one combined call.
func (m *Metrics) AutoBatch(n int) {
	if m != nil {
		m.AutoBatched.Add(float64(n))
	}
}

// BatchItem records one answered batch item.
func (m *Metrics) BatchItem(status int) {
	if m != nil {
		m.BatchItems.WithLabelValues(Code(status)).Inc()
	}
}

// Evicted records one entry evicted from the cache.
func (m *Metrics) Evicted() {
	if m != nil {
		m.CacheEvictions.Inc()
	}
}

// SetBreaker records the breaker's state (0 closed, 1 half-open, 2 open).
func (m *Metrics) SetBreaker(state int) {
	if m != nil {
		m.BreakerState.Set(float64(state))
	}
}

// SetBudget records the configured upstream rate of kind (read, write).
func (m *Metrics) SetBudget(kind string, perSec float64) {
	if m != nil {
		m.UpstreamBudget.WithLabelValues(kind).Set(perSec)
	}
}

// codes are the label values of the statuses kproxy answers, made once.
var codes = func() (t [600]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

// Code is the label value of an HTTP status; it does not allocate for a
// status below 600.
func Code(status int) string {
	if status >= 0 && status < len(codes) {
		return codes[status]
	}
	return strconv.Itoa(status)
}
