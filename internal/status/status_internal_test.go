package status

import (
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestRingKeepsTheNewestAndWraps(t *testing.T) {
	r := newRing[sample](3)
	t0 := time.Unix(1000, 0)
	if _, ok := r.last(); ok {
		t.Fatal("empty ring has a last sample")
	}
	for i := range 5 {
		r.add(sample{at: t0.Add(time.Duration(i) * time.Second), bypass: float64(i)})
	}
	if got, want := r.len(), 3; got != want {
		t.Fatalf("len = %d, want %d", got, want)
	}
	if got, want := len(r.buf), 3; got != want {
		t.Fatalf("ring grew to %d slots, want %d", got, want)
	}
	for i, want := range []float64{2, 3, 4} {
		if got := r.at(i).bypass; got != want {
			t.Errorf("at(%d).bypass = %v, want %v", i, got, want)
		}
	}
	if s, _ := r.last(); s.bypass != 4 {
		t.Errorf("last().bypass = %v, want 4", s.bypass)
	}
	// before: newest at or before t, else the oldest held.
	for _, c := range []struct {
		at   time.Duration
		want float64
	}{{3 * time.Second, 3}, {3500 * time.Millisecond, 3}, {10 * time.Second, 4}, {0, 2}} {
		if got := r.before(t0.Add(c.at)).bypass; got != c.want {
			t.Errorf("before(t0+%v).bypass = %v, want %v", c.at, got, c.want)
		}
	}
}

func TestQuantileInterpolatesLikePrometheus(t *testing.T) {
	bounds := []float64{0.001, 0.01, 0.1, 1}
	// 10 requests <= 1ms, 10 more <= 10ms, 80 more <= 100ms, none slower.
	counts := []float64{10, 20, 100, 100}
	for _, c := range []struct {
		q, want float64
	}{
		{0.05, 0.0005},              // inside the first bucket, from 0
		{0.5, 0.01 + 0.09*30.0/80},  // rank 50 is the 30th of 80 in (0.01, 0.1]
		{0.99, 0.01 + 0.09*79.0/80}, // rank 99
	} {
		got, ok := quantile(c.q, bounds, counts, 100)
		if !ok || math.Abs(got-c.want) > 1e-12 {
			t.Errorf("quantile(%v) = %v, %v; want %v", c.q, got, ok, c.want)
		}
	}
	// Past the last finite bound (in +Inf): the last bound.
	if got, _ := quantile(0.99, bounds, []float64{0, 0, 0, 50}, 100); got != 1 {
		t.Errorf("quantile in +Inf = %v, want 1", got)
	}
	if _, ok := quantile(0.5, bounds, []float64{0, 0, 0, 0}, 0); ok {
		t.Error("quantile of an empty histogram reports a value")
	}
}

func TestShareAndRate(t *testing.T) {
	if share(1, 0) != nil {
		t.Error("share(1, 0) is not nil")
	}
	if got := *share(1, 3); got != 0.3333 {
		t.Errorf("share(1, 3) = %v, want 0.3333", got)
	}
	if got := perSecond(30, 10); got != 3 {
		t.Errorf("perSecond(30, 10) = %v, want 3", got)
	}
	if got := perSecond(5, 0); got != 0 {
		t.Errorf("perSecond(5, 0) = %v, want 0", got)
	}
}

// fakeKproxy is a registry with the metrics the collector reads, named
// and labelled as package metrics does.
type fakeKproxy struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	upstream *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    prometheus.Gauge
	items    prometheus.Gauge
	breaker  prometheus.Gauge
}

func newFakeKproxy() *fakeKproxy {
	f := &fakeKproxy{
		reg:      prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: mRequests}, []string{"route", "method", "code", "cache"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: mUpstream}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: mDuration, Buckets: []float64{.001, .01, .1, 1}}, []string{"route", "cache"}),
		bytes:    prometheus.NewGauge(prometheus.GaugeOpts{Name: mBytes}),
		items:    prometheus.NewGauge(prometheus.GaugeOpts{Name: mItems}),
		breaker:  prometheus.NewGauge(prometheus.GaugeOpts{Name: mBreaker}),
	}
	f.reg.MustRegister(f.requests, f.upstream, f.duration, f.bytes, f.items, f.breaker)
	return f
}

const (
	markets    = "/trade-api/v2/markets/{ticker}"
	marketList = "/trade-api/v2/markets"
)

// serve records n answers on markets in the registry, as the proxy's
// middleware does.
func (f *fakeKproxy) serve(outcome string, n int) {
	f.requests.WithLabelValues(markets, "GET", "200", outcome).Add(float64(n))
	for range n {
		f.duration.WithLabelValues(markets, outcome).Observe(0.005)
	}
}

// clock is an injected clock that tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestCollector(t *testing.T, f *fakeKproxy, clk *clock) *Collector {
	t.Helper()
	c, err := New(Config{
		Gatherer: f.reg, Upstream: "http://127.0.0.1:1", Tier: "basic",
		ReadRate: 20, WriteRate: 10, MaxBytes: 1000, Now: clk.Now,
		Window: 10 * time.Second,
		TTLs:   map[string]time.Duration{markets: time.Second, marketList: 2 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestReportRatesAndRatios(t *testing.T) {
	f := newFakeKproxy()
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	c := newTestCollector(t, f, clk)
	l := c.Ledger()

	// Second 1: 10 misses, 5 of them collapsed onto the others' fetches.
	clk.Add(time.Second)
	f.serve("MISS", 10)
	for i := range 10 {
		l.Request(markets, "bot", "MISS", false)
		if i < 5 {
			l.Upstream(markets, "bot")
		}
	}
	c.Sample()
	// Seconds 2..10: 9 x (18 hits + 2 stale, each stale refreshed) a
	// second; 2 writes a second passed through, one 429 from Kalshi, one
	// given.
	for range 9 {
		clk.Add(time.Second)
		f.serve("HIT", 18)
		f.serve("STALE", 2)
		for range 18 {
			l.Request(markets, "bot", "HIT", false)
		}
		for range 2 {
			l.Request(markets, "bot", "STALE", true)
			l.Upstream(markets, "bot")
		}
		f.requests.WithLabelValues("/trade-api/v2/portfolio/*", "POST", "201", "BYPASS").Add(2)
		f.upstream.WithLabelValues("/trade-api/v2/portfolio/*", "201").Add(2)
		l.Request("/trade-api/v2/portfolio/*", "bot", "BYPASS", false) // not counted
		c.Sample()
	}
	f.upstream.WithLabelValues(markets, "429").Inc()
	f.requests.WithLabelValues(markets, "GET", "429", "MISS").Inc()
	l.Request(markets, "bot", "MISS", false)
	l.Upstream(markets, "bot")
	f.bytes.Set(250)
	f.items.Set(3)
	clk.Add(time.Second)
	c.Sample()

	r := c.Report()
	if r.UptimeSeconds != 11 {
		t.Errorf("uptime = %d, want 11", r.UptimeSeconds)
	}
	want := Counts{Total: 10 + 180 + 1, Hit: 162, Stale: 18, Miss: 11, Expired: 18, Upstream: 5 + 18 + 1}
	if r.Requests != want {
		t.Errorf("requests = %+v, want %+v", r.Requests, want)
	}
	if r.PassedThrough != 18 {
		t.Errorf("passed_through = %d, want 18", r.PassedThrough)
	}
	// The rate window is the last 10 s: samples at t=1 and t=11.
	if want := (Rates{WindowSeconds: 10, Total: 18.1, Hit: 16.2, Stale: 1.8, Miss: 0.1, Upstream: 1.9, PassedThrough: 1.8}); r.Rates != want {
		t.Errorf("rates = %+v, want %+v", r.Rates, want)
	}
	// Every upstream attempt over those 10 s: 18 writes, 18 refreshes and
	// the 429 (the registry saw no refreshes: only the 429 is a read).
	if r.Budget.Writes != 1.8 || r.Budget.Reads != 0.1 {
		t.Errorf("upstream rates = %v reads/s, %v writes/s; want 0.1, 1.8", r.Budget.Reads, r.Budget.Writes)
	}
	if got := *r.Budget.WriteShare; got != 0.18 {
		t.Errorf("write share = %v, want 0.18 (1.8 of 10/s)", got)
	}
	if got := *r.Budget.ReadShare; got != 0.005 {
		t.Errorf("read share = %v, want 0.005 (0.1 of 20/s)", got)
	}
	if r.Budget.Total != 18+1 {
		t.Errorf("upstream total = %d, want 19 (what the registry counted)", r.Budget.Total)
	}
	// Fresh hits only: 162 of 191.
	if got, want := *r.HitRatio.SinceStart, round(162.0/191, 4); got != want {
		t.Errorf("hit ratio since start = %v, want %v", got, want)
	}
	if got, want := *r.StaleRatio.SinceStart, round(18.0/191, 4); got != want {
		t.Errorf("stale ratio since start = %v, want %v", got, want)
	}
	// Avoided: 191 requests, 24 upstream calls.
	if a := r.Avoided.Avoided; a.Requests != 191 || a.Upstream != 24 || a.Count != 167 || *a.Share != round(167.0/191, 4) {
		t.Errorf("avoided = %+v (share %v), want 167 of 191", a, *a.Share)
	}
	if r.TooMany.FromKalshi != 1 || r.TooMany.ByKproxy != 1 || r.TooMany.FromKalshiLastMinute != 1 {
		t.Errorf("429s = %+v, want 1 from Kalshi, 1 given, both in the last minute", r.TooMany)
	}
	if r.Cache.Bytes != 250 || r.Cache.Items != 3 || *r.Cache.Share != 0.25 {
		t.Errorf("cache = %+v, want 250 bytes, 3 items, share 0.25", r.Cache)
	}
	if len(r.Routes) != 1 || r.Routes[0].Route != markets {
		t.Fatalf("routes = %+v, want markets only (pass-throughs are not a cached route)", r.Routes)
	}
	m := r.Routes[0]
	if m.Requests != 191 || m.Upstream != 24 || m.Avoided != 167 || *m.HitRatio != round(162.0/191, 4) || *m.TTLSeconds != 1 {
		t.Errorf("markets row = %+v, want 191 requests, 24 upstream calls, ttl 1 s", m)
	}
	// Every observation was 5 ms: both quantiles fall in (1 ms, 10 ms].
	if m.P50ms == nil || *m.P50ms <= 1 || *m.P50ms > 10 || *m.P99ms > 10 {
		t.Errorf("markets p50, p99 = %v, %v ms; want within (1, 10]", m.P50ms, m.P99ms)
	}
	if len(r.Clients) != 1 || r.Clients[0] != (Client{Name: "bot", Requests: 191, Upstream: 24}) {
		t.Errorf("clients = %+v, want bot with 191 requests, 24 upstream calls", r.Clients)
	}
	if r.Redis != "off" || r.Live != "off" {
		t.Errorf("redis, live = %v, %v; want off, off", r.Redis, r.Live)
	}
}

func TestRingHoldsOnlyTheWindow(t *testing.T) {
	f := newFakeKproxy()
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	c := newTestCollector(t, f, clk) // 10 s window at 1 s: 11 slots
	for range 100 {
		clk.Add(time.Second)
		c.Ledger().Request(markets, "bot", "HIT", false)
		c.Sample()
	}
	if got, want := len(c.ring.buf), 11; got != want {
		t.Fatalf("ring has %d slots, want %d", got, want)
	}
	r := c.Report()
	if got, want := len(r.Series.T), 10; got != want {
		t.Fatalf("series has %d points, want %d", got, want)
	}
	if first, last := r.Series.T[0], r.Series.T[9]; last-first != 9000 || last != clk.Now().UnixMilli() {
		t.Errorf("series spans %d..%d ms, want the last 10 s ending now", first, last)
	}
	for i, v := range r.Series.Hit {
		if v != 1 {
			t.Errorf("series hit[%d] = %v, want 1/s", i, v)
		}
	}
	// The counts since start are not bounded by the window.
	if r.Requests.Hit != 100 {
		t.Errorf("hits = %d, want 100", r.Requests.Hit)
	}
}

func TestSeriesIsDownsampledToMaxPoints(t *testing.T) {
	f := newFakeKproxy()
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	c, err := New(Config{Gatherer: f.reg, Now: clk.Now}) // 15 min at 1 s
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		clk.Add(time.Second)
		c.Ledger().Request(markets, "bot", "MISS", false)
		c.Ledger().Request(markets, "bot", "MISS", false)
		c.Sample()
	}
	s := c.Report().Series
	if len(s.T) != maxPoints || s.StepSeconds != 5 {
		t.Fatalf("series: %d points of %v s, want %d of 5 s", len(s.T), s.StepSeconds, maxPoints)
	}
	if s.Miss[0] != 2 || s.Miss[maxPoints-1] != 2 {
		t.Errorf("downsampled miss rate = %v .. %v, want 2/s", s.Miss[0], s.Miss[maxPoints-1])
	}
}

func TestBreakerTransitionsAreBounded(t *testing.T) {
	f := newFakeKproxy()
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	c := newTestCollector(t, f, clk)
	for i := range maxTransitions + 5 {
		clk.Add(time.Second)
		if i%2 == 0 {
			c.BreakerChanged("closed", "open")
		} else {
			c.BreakerChanged("open", "closed")
		}
	}
	b := c.Report().Breaker
	if len(b.Transitions) != maxTransitions {
		t.Fatalf("%d transitions kept, want %d", len(b.Transitions), maxTransitions)
	}
	if b.State != "open" || b.Transitions[maxTransitions-1].To != "open" {
		t.Errorf("state %q, last transition %+v; want open", b.State, b.Transitions[maxTransitions-1])
	}
	if got, want := b.Transitions[maxTransitions-1].At, clk.Now().UTC(); !got.Equal(want) {
		t.Errorf("last transition at %v, want %v", got, want)
	}
}

func TestPartsAreShownWhenPresent(t *testing.T) {
	f := newFakeKproxy()
	c, err := New(Config{Gatherer: f.reg, Redis: PartFunc(func() map[string]any {
		return map[string]any{"state": "up", "replicas": 3}
	})})
	if err != nil {
		t.Fatal(err)
	}
	r := c.Report()
	m, ok := r.Redis.(map[string]any)
	if !ok || m["state"] != "up" || r.Live != "off" {
		t.Errorf("redis = %v, live = %v; want the part's map and off", r.Redis, r.Live)
	}
}

func TestPageAllowsOnlyItsOwnScriptAndStyle(t *testing.T) {
	p, err := buildPage()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"default-src 'none'", "script-src 'sha256-", "style-src 'sha256-", "connect-src 'self'"} {
		if !strings.Contains(p.csp, w) {
			t.Errorf("CSP %q lacks %q", p.csp, w)
		}
	}
	// The SVG namespace is a name, not a fetch; nothing else may name
	// another origin.
	html := strings.ReplaceAll(string(p.html), `"http://www.w3.org/2000/svg"`, "")
	for _, bad := range []string{"/*STYLE*/", "/*SCRIPT*/", "http:", "https:", "//", "@import", "url(", "@font-face"} {
		if bad == "//" {
			// Comments in the script start with "// "; a scheme-relative
			// URL would be quoted.
			bad = `"//`
		}
		if strings.Contains(html, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
}

// countingGatherer reports each Gather on a channel.
type countingGatherer struct {
	prometheus.Gatherer
	calls chan struct{}
}

func (g countingGatherer) Gather() ([]*dto.MetricFamily, error) {
	select {
	case g.calls <- struct{}{}:
	default:
	}
	return g.Gatherer.Gather()
}

func TestCloseStopsTheSampler(t *testing.T) {
	g := countingGatherer{Gatherer: newFakeKproxy().reg, calls: make(chan struct{}, 1)}
	c, err := New(Config{Gatherer: g, Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	<-g.calls // New's own sample
	c.Start()
	<-g.calls // the ticker's
	<-g.calls
	c.Close()
	select {
	case <-c.done:
	default:
		t.Fatal("Close returned with the sampler still running")
	}
	c.Close() // twice is fine
}

func TestCloseWithoutStartReturnsAtOnce(t *testing.T) {
	c, err := New(Config{Gatherer: newFakeKproxy().reg})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Close without Start waited")
	}
}
