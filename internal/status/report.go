package status

import (
	"math"
	"sort"
	"time"
)

// Windows of the "now" figures.
const (
	// rateWindow is what requests/s and the budget gauges average over:
	// short enough to show a burst against a per-second budget.
	rateWindow = 10 * time.Second
	// ratioWindow is what the "last minute" ratios cover.
	ratioWindow = time.Minute
	// maxPoints bounds each chart series sent to the page.
	maxPoints = 180
	// maxRoutes bounds the per-route table.
	maxRoutes = 100
)

// Report is the body of GET /status.json. Counts are since start; rates
// are requests/s over the last rates.window_seconds; ratios are in [0,1]
// and null when there was nothing to divide.
type Report struct {
	Version       string    `json:"version"`
	Upstream      string    `json:"upstream"`
	Started       time.Time `json:"started"`
	Now           time.Time `json:"now"`
	UptimeSeconds int64     `json:"uptime_seconds"`

	Requests    Counts      `json:"requests"`
	Rates       Rates       `json:"rates"`
	HitRatio    Ratio       `json:"hit_ratio"`
	NotUpstream NotUpstream `json:"never_reached_kalshi"`
	Budget      Budget      `json:"upstream_budget"`
	TooMany     TooMany     `json:"rate_limited"`
	Breaker     Breaker     `json:"breaker"`
	Cache       Cache       `json:"cache"`
	Routes      []Route     `json:"routes"`
	Redis       any         `json:"redis"`
	Live        any         `json:"live"`
	Series      Series      `json:"series"`
}

// Counts are answers on /trade-api/v2/* since start, by X-Cache outcome;
// Collapsed (requests that waited on another's fetch) are MISSes too.
type Counts struct {
	Total     int64 `json:"total"`
	Hit       int64 `json:"hit"`
	Stale     int64 `json:"stale"`
	Miss      int64 `json:"miss"`
	Bypass    int64 `json:"bypass"`
	Collapsed int64 `json:"collapsed"`
}

// Rates are requests/s by outcome over the last WindowSeconds.
type Rates struct {
	WindowSeconds float64 `json:"window_seconds"`
	Total         float64 `json:"total"`
	Hit           float64 `json:"hit"`
	Stale         float64 `json:"stale"`
	Miss          float64 `json:"miss"`
	Bypass        float64 `json:"bypass"`
}

// Ratio is a share over the last minute and since start.
type Ratio struct {
	LastMinute *float64 `json:"last_minute"`
	SinceStart *float64 `json:"since_start"`
}

// NotUpstream counts requests answered without a call to Kalshi of their
// own: HITs, STALEs and collapsed MISSes, and their share of all API
// answers.
type NotUpstream struct {
	Count int64 `json:"count"`
	Ratio
}

// Budget is the upstream traffic against the configured rates.
type Budget struct {
	Tier      string  `json:"tier"`
	ReadRate  float64 `json:"read_rate"`  // budget, requests/s; 0: unlimited
	WriteRate float64 `json:"write_rate"` // budget, requests/s; 0: unlimited
	// Reads and Writes are upstream attempts/s over the rate window.
	Reads  float64 `json:"reads_per_second"`
	Writes float64 `json:"writes_per_second"`
	// ReadShare and WriteShare are the used share of each budget.
	ReadShare  *float64 `json:"read_share"`
	WriteShare *float64 `json:"write_share"`
	// Total is upstream attempts since start.
	Total int64 `json:"total"`
}

// TooMany counts 429s: received from Kalshi (upstream attempts answered
// 429, retried or not) and given by kproxy (answers sent to clients).
type TooMany struct {
	FromKalshi           int64 `json:"from_kalshi"`
	ByKproxy             int64 `json:"by_kproxy"`
	FromKalshiLastMinute int64 `json:"from_kalshi_last_minute"`
	ByKproxyLastMinute   int64 `json:"by_kproxy_last_minute"`
}

// Breaker is the circuit breaker's state and its last transitions,
// oldest first.
type Breaker struct {
	State       string       `json:"state"`
	Transitions []transition `json:"transitions"`
}

// Cache is the in-process cache's size against its bound.
type Cache struct {
	Items     int64    `json:"items"`
	Bytes     int64    `json:"bytes"`
	MaxBytes  int64    `json:"max_bytes"`
	Share     *float64 `json:"share"`
	Evictions int64    `json:"evictions"`
}

// Route is one route template's figures since start.
type Route struct {
	Route    string   `json:"route"`
	Requests int64    `json:"requests"`
	HitRatio *float64 `json:"hit_ratio"`
	P50ms    *float64 `json:"p50_ms"`
	P99ms    *float64 `json:"p99_ms"`
	Upstream int64    `json:"upstream"`
}

// Series are the charts' data, oldest first: T[i] (Unix milliseconds)
// ends step i; rates are per second over the step.
type Series struct {
	StepSeconds float64    `json:"step_seconds"`
	T           []int64    `json:"t"`
	Hit         []float64  `json:"hit"`
	Stale       []float64  `json:"stale"`
	Miss        []float64  `json:"miss"`
	Bypass      []float64  `json:"bypass"`
	Reads       []float64  `json:"upstream_reads"`
	Writes      []float64  `json:"upstream_writes"`
	HitRatio    []*float64 `json:"hit_ratio"`
	From429     []float64  `json:"from_kalshi_429"`
	Given429    []float64  `json:"by_kproxy_429"`
	CacheBytes  []float64  `json:"cache_bytes"`
}

// Report builds the page's data from the samples held.
func (c *Collector) Report() Report {
	var redis, live any = "off", "off"
	if c.cfg.Redis != nil {
		redis = c.cfg.Redis.Status()
	}
	if c.cfg.Live != nil {
		live = c.cfg.Live.Status()
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	cur, _ := c.ring.last()
	now := cur.at
	if now.IsZero() {
		now = c.cfg.Now()
	}
	r := Report{
		Version:       c.cfg.Version,
		Upstream:      c.cfg.Upstream,
		Started:       c.started.UTC().Truncate(time.Second),
		Now:           now.UTC().Truncate(time.Millisecond),
		UptimeSeconds: int64(now.Sub(c.started) / time.Second),
		Redis:         redis,
		Live:          live,
	}
	r.Requests = Counts{
		Total: int64(cur.api()), Hit: int64(cur.hit), Stale: int64(cur.stale),
		Miss: int64(cur.miss), Bypass: int64(cur.bypass), Collapsed: int64(cur.collapsed),
	}

	rw := c.ring.before(now.Add(-rateWindow))
	dt := cur.at.Sub(rw.at).Seconds()
	r.Rates = Rates{
		WindowSeconds: round(dt, 1),
		Total:         perSecond(cur.api()-rw.api(), dt),
		Hit:           perSecond(cur.hit-rw.hit, dt),
		Stale:         perSecond(cur.stale-rw.stale, dt),
		Miss:          perSecond(cur.miss-rw.miss, dt),
		Bypass:        perSecond(cur.bypass-rw.bypass, dt),
	}
	reads := perSecond((cur.upstream-cur.writes)-(rw.upstream-rw.writes), dt)
	writes := perSecond(cur.writes-rw.writes, dt)
	r.Budget = Budget{
		Tier: c.cfg.Tier, ReadRate: c.cfg.ReadRate, WriteRate: c.cfg.WriteRate,
		Reads: reads, Writes: writes,
		ReadShare:  share(reads, c.cfg.ReadRate),
		WriteShare: share(writes, c.cfg.WriteRate),
		Total:      int64(cur.upstream),
	}

	mw := c.ring.before(now.Add(-ratioWindow))
	var zero sample
	r.HitRatio = Ratio{LastMinute: hitRatio(cur, mw), SinceStart: hitRatio(cur, zero)}
	r.NotUpstream = NotUpstream{
		Count: int64(notUpstream(cur)),
		Ratio: Ratio{
			LastMinute: share(notUpstream(cur)-notUpstream(mw), cur.api()-mw.api()),
			SinceStart: share(notUpstream(cur), cur.api()),
		},
	}
	r.TooMany = TooMany{
		FromKalshi: int64(cur.from429), ByKproxy: int64(cur.given429),
		FromKalshiLastMinute: int64(cur.from429 - mw.from429),
		ByKproxyLastMinute:   int64(cur.given429 - mw.given429),
	}
	r.Breaker = Breaker{State: c.breaker, Transitions: append([]transition{}, c.transitions...)}
	r.Cache = Cache{
		Items: int64(cur.cacheItems), Bytes: int64(cur.cacheBytes), MaxBytes: c.cfg.MaxBytes,
		Share: share(cur.cacheBytes, float64(c.cfg.MaxBytes)), Evictions: int64(cur.evictions),
	}
	r.Routes = routeTable(c.routes)
	r.Series = c.series()
	return r
}

// notUpstream is the answers that made no upstream call of their own.
func notUpstream(s sample) float64 { return s.hit + s.stale + s.collapsed }

// hitRatio is the share of cacheable answers (HIT, STALE, MISS) served
// from the cache (HIT, STALE) between two samples.
func hitRatio(cur, old sample) *float64 {
	served := (cur.hit + cur.stale) - (old.hit + old.stale)
	return share(served, served+cur.miss-old.miss)
}

// share is part/whole rounded to 4 decimals, nil when whole is not
// positive.
func share(part, whole float64) *float64 {
	if whole <= 0 {
		return nil
	}
	v := round(max(part, 0)/whole, 4)
	return &v
}

// perSecond is n/dt rounded to 3 decimals; 0 when dt is not positive.
func perSecond(n, dt float64) float64 {
	if dt <= 0 || n <= 0 {
		return 0
	}
	return round(n/dt, 3)
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// routeTable is the per-route table, busiest first.
func routeTable(routes map[string]*routeStats) []Route {
	out := make([]Route, 0, len(routes))
	for name, st := range routes {
		if st.requests == 0 && st.upstream == 0 {
			continue // a series created ahead of use (the hit path's)
		}
		rt := Route{
			Route: name, Requests: int64(st.requests), Upstream: int64(st.upstream),
			HitRatio: share(st.hit+st.stale, st.hit+st.stale+st.miss),
		}
		if v, ok := quantile(0.5, st.bounds, st.counts, st.count); ok {
			ms := round(v*1000, 3)
			rt.P50ms = &ms
		}
		if v, ok := quantile(0.99, st.bounds, st.counts, st.count); ok {
			ms := round(v*1000, 3)
			rt.P99ms = &ms
		}
		out = append(out, rt)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Requests != out[j].Requests {
			return out[i].Requests > out[j].Requests
		}
		return out[i].Route < out[j].Route
	})
	if len(out) > maxRoutes {
		out = out[:maxRoutes]
	}
	return out
}

// series turns the ring into at most maxPoints steps, each spanning the
// same whole number of samples, newest step ending at the newest sample.
// c.mu must be held.
func (c *Collector) series() Series {
	n := c.ring.len()
	stride := max(1, (n-1+maxPoints-1)/maxPoints)
	steps := (n - 1) / stride
	f := func() []float64 { return make([]float64, 0, steps) }
	s := Series{
		StepSeconds: round(c.cfg.Interval.Seconds()*float64(stride), 3),
		T:           make([]int64, 0, steps),
		Hit:         f(), Stale: f(), Miss: f(), Bypass: f(), Reads: f(), Writes: f(),
		HitRatio: make([]*float64, 0, steps),
		From429:  f(), Given429: f(), CacheBytes: f(),
	}
	first := n - 1 - steps*stride
	for k := 0; k < steps; k++ {
		a, b := c.ring.at(first+k*stride), c.ring.at(first+(k+1)*stride)
		dt := b.at.Sub(a.at).Seconds()
		s.T = append(s.T, b.at.UnixMilli())
		s.Hit = append(s.Hit, perSecond(b.hit-a.hit, dt))
		s.Stale = append(s.Stale, perSecond(b.stale-a.stale, dt))
		s.Miss = append(s.Miss, perSecond(b.miss-a.miss, dt))
		s.Bypass = append(s.Bypass, perSecond(b.bypass-a.bypass, dt))
		s.Reads = append(s.Reads, perSecond((b.upstream-b.writes)-(a.upstream-a.writes), dt))
		s.Writes = append(s.Writes, perSecond(b.writes-a.writes, dt))
		s.HitRatio = append(s.HitRatio, hitRatio(b, a))
		s.From429 = append(s.From429, perSecond(b.from429-a.from429, dt))
		s.Given429 = append(s.Given429, perSecond(b.given429-a.given429, dt))
		s.CacheBytes = append(s.CacheBytes, b.cacheBytes)
	}
	return s
}
