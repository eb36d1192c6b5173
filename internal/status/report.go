package status

import (
	"math"
	"sort"
	"strings"
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
	// maxClients bounds the busiest-clients table.
	maxClients = 10
)

// Report is the body of GET /status.json. Counts are since start; rates
// are per second over the last rates.window_seconds; ratios are in [0,1]
// (the avoided share can be negative) and null when there was nothing to
// divide. docs/status.md defines every figure.
type Report struct {
	Version       string    `json:"version"`
	Upstream      string    `json:"upstream"`
	Started       time.Time `json:"started"`
	Now           time.Time `json:"now"`
	UptimeSeconds int64     `json:"uptime_seconds"`

	Avoided       AvoidedFigures `json:"upstream_calls_avoided"`
	HitRatio      Ratio          `json:"hit_ratio"`
	StaleRatio    Ratio          `json:"stale_ratio"`
	Requests      Counts         `json:"requests"`
	PassedThrough int64          `json:"passed_through"`
	Rates         Rates          `json:"rates"`
	Budget        Budget         `json:"upstream_budget"`
	TooMany       TooMany        `json:"rate_limited"`
	Breaker       Breaker        `json:"breaker"`
	Cache         Cache          `json:"cache"`
	Routes        []Route        `json:"routes"`
	Clients       []Client       `json:"clients"`
	Advice        []string       `json:"advice"`
	Redis         any            `json:"redis"`
	Live          any            `json:"live"`
	Disk          any            `json:"disk"`
	Series        Series         `json:"series"`
}

// Counts are client requests on cached routes and batch endpoints (a
// batch counts its items) since start, by X-Cache outcome, and the
// upstream requests made for them (every attempt: fetches, retries,
// background refreshes, batch pages). Expired counts the requests that
// found only an expired copy (every STALE, and MISSes that refetched one).
type Counts struct {
	Total    int64 `json:"total"`
	Hit      int64 `json:"hit"`
	Stale    int64 `json:"stale"`
	Miss     int64 `json:"miss"`
	Expired  int64 `json:"expired"`
	Upstream int64 `json:"upstream"`
}

// Avoided is upstream calls avoided: Requests (client requests on cached
// routes and batch items) minus Upstream (the upstream requests made for
// them). Share is Count/Requests; both are negative when kproxy sent more
// upstream requests than it was asked for (retries, refreshes nobody
// read, batches that fetched many pages).
type Avoided struct {
	Requests int64    `json:"requests"`
	Upstream int64    `json:"upstream"`
	Count    int64    `json:"count"`
	Share    *float64 `json:"share"`
}

// AvoidedFigures are upstream calls avoided since start and over the last
// minute.
type AvoidedFigures struct {
	Avoided
	LastMinute Avoided `json:"last_minute"`
}

// Rates are client requests/s by outcome, the upstream requests/s made
// for them, and pass-throughs/s, over the last WindowSeconds.
type Rates struct {
	WindowSeconds float64 `json:"window_seconds"`
	Total         float64 `json:"total"`
	Hit           float64 `json:"hit"`
	Stale         float64 `json:"stale"`
	Miss          float64 `json:"miss"`
	Upstream      float64 `json:"upstream"`
	PassedThrough float64 `json:"passed_through"`
}

// Ratio is a share over the last minute and since start.
type Ratio struct {
	LastMinute *float64 `json:"last_minute"`
	SinceStart *float64 `json:"since_start"`
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
	// Total is every upstream attempt since start, pass-throughs included.
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

// Route is one route template's figures since start: the requests its
// clients sent (a batch endpoint counts its items) and every upstream
// request made for them, charged to the route the client asked for.
type Route struct {
	Route        string   `json:"route"`
	TTLSeconds   *float64 `json:"ttl_seconds"`
	Requests     int64    `json:"requests"`
	Hit          int64    `json:"hit"`
	Stale        int64    `json:"stale"`
	Miss         int64    `json:"miss"`
	Expired      int64    `json:"expired"`
	Upstream     int64    `json:"upstream"`
	Avoided      int64    `json:"avoided"`
	AvoidedShare *float64 `json:"avoided_share"`
	HitRatio     *float64 `json:"hit_ratio"`
	P50ms        *float64 `json:"p50_ms"`
	P99ms        *float64 `json:"p99_ms"`
}

// Client is one of the busiest clients: its requests on cached routes and
// the upstream requests made for them, since it entered the table.
type Client struct {
	Name     string `json:"name"`
	Requests int64  `json:"requests"`
	Upstream int64  `json:"upstream"`
}

// Series are the charts' data, oldest first: T[i] (Unix milliseconds)
// ends step i; rates are per second over the step.
type Series struct {
	StepSeconds   float64    `json:"step_seconds"`
	T             []int64    `json:"t"`
	Hit           []float64  `json:"hit"`
	Stale         []float64  `json:"stale"`
	Miss          []float64  `json:"miss"`
	PassedThrough []float64  `json:"passed_through"`
	Reads         []float64  `json:"upstream_reads"`
	Writes        []float64  `json:"upstream_writes"`
	HitRatio      []*float64 `json:"hit_ratio"`
	From429       []float64  `json:"from_kalshi_429"`
	Given429      []float64  `json:"by_kproxy_429"`
	CacheBytes    []float64  `json:"cache_bytes"`
}

// Report builds the page's data from the samples held.
func (c *Collector) Report() Report {
	var redis, live, disk any = "off", "off", "off"
	if c.cfg.Disk != nil {
		disk = c.cfg.Disk.Status()
	}
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
		Disk:          disk,
	}
	q := cur.req
	r.Requests = Counts{
		Total: q.requests(), Hit: q.hit, Stale: q.stale, Miss: q.miss,
		Expired: q.expired, Upstream: q.upstream,
	}
	r.PassedThrough = int64(cur.bypass)

	rw := c.ring.before(now.Add(-rateWindow))
	dt := cur.at.Sub(rw.at).Seconds()
	d := cur.req.minus(rw.req)
	r.Rates = Rates{
		WindowSeconds: round(dt, 1),
		Total:         perSecond(float64(d.requests()), dt),
		Hit:           perSecond(float64(d.hit), dt),
		Stale:         perSecond(float64(d.stale), dt),
		Miss:          perSecond(float64(d.miss), dt),
		Upstream:      perSecond(float64(d.upstream), dt),
		PassedThrough: perSecond(cur.bypass-rw.bypass, dt),
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
	minute := cur.req.minus(mw.req)
	r.Avoided = AvoidedFigures{Avoided: avoided(q), LastMinute: avoided(minute)}
	r.HitRatio = Ratio{LastMinute: share(float64(minute.hit), float64(minute.requests())), SinceStart: share(float64(q.hit), float64(q.requests()))}
	r.StaleRatio = Ratio{LastMinute: share(float64(minute.stale), float64(minute.requests())), SinceStart: share(float64(q.stale), float64(q.requests()))}
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
	rcur, _ := c.routeRing.last()
	r.Routes = c.routeTable(rcur.routes)
	r.Clients = make([]Client, 0, len(c.clients))
	for _, cl := range c.clients {
		r.Clients = append(r.Clients, Client{Name: cl.name, Requests: cl.requests, Upstream: cl.upstream})
	}
	r.Advice = c.advice(rcur, c.routeRing.before(now.Add(-ratioWindow)))
	r.Series = c.series()
	return r
}

// avoided is the avoided figures of counts.
func avoided(q routeCounts) Avoided {
	n := q.requests() - q.upstream
	return Avoided{Requests: q.requests(), Upstream: q.upstream, Count: n, Share: signedShare(float64(n), float64(q.requests()))}
}

// The slow-poll rule: over the last minute, a cached route (not a batch
// endpoint) with at least slowPollMinRequests requests, of which at least
// half found only an expired copy, and upstream calls of at least 80% of
// its requests (the cache saved at most a fifth of them).
const (
	slowPollMinRequests = 5
	slowPollExpired     = 0.5
	slowPollUpstream    = 0.8
)

// slowPoll reports whether the counts d of one route over the last minute
// meet the slow-poll rule.
func slowPoll(route string, d routeCounts) bool {
	n := float64(d.requests())
	return strings.HasPrefix(route, "/trade-api/") && n >= slowPollMinRequests &&
		float64(d.expired) >= slowPollExpired*n && float64(d.upstream) >= slowPollUpstream*n
}

// advice is the page's sentences, by route, from the per-route counts
// now and a minute ago.
func (c *Collector) advice(cur, old routeSample) []string {
	out := []string{}
	names := make([]string, 0, len(cur.routes))
	for name := range cur.routes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !slowPoll(name, cur.routes[name].minus(old.routes[name])) {
			continue
		}
		ttl := ""
		if v, ok := c.cfg.TTLs[name]; ok && v > 0 {
			ttl = " (" + shortDuration(v) + ")"
		}
		out = append(out, "Clients poll "+name+" slower than its ttl"+ttl+
			": the cache cannot save these calls; raise the ttl or turn on the live feed.")
	}
	return out
}

// shortDuration is d as time.Duration prints it, without zero trailing
// units ("1m", not "1m0s").
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// hitRatio is the share of client requests answered with a fresh HIT
// between two samples.
func hitRatio(cur, old sample) *float64 {
	d := cur.req.minus(old.req)
	return share(float64(d.hit), float64(d.requests()))
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

// signedShare is part/whole rounded to 4 decimals, negative when part
// is, nil when whole is not positive.
func signedShare(part, whole float64) *float64 {
	if whole <= 0 {
		return nil
	}
	v := round(part/whole, 4)
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

// routeTable is the per-route table from the Ledger's counts, busiest
// first, with each route's ttl and latencies. c.mu must be held.
func (c *Collector) routeTable(routes map[string]routeCounts) []Route {
	out := make([]Route, 0, len(routes))
	for name, q := range routes {
		if q.requests() == 0 && q.upstream == 0 {
			continue
		}
		a := avoided(q)
		rt := Route{
			Route: name, Requests: q.requests(), Hit: q.hit, Stale: q.stale, Miss: q.miss,
			Expired: q.expired, Upstream: q.upstream, Avoided: a.Count, AvoidedShare: a.Share,
			HitRatio: share(float64(q.hit), float64(q.requests())),
		}
		if v, ok := c.cfg.TTLs[name]; ok {
			s := v.Seconds()
			rt.TTLSeconds = &s
		}
		if lt := c.latencies[name]; lt != nil {
			if v, ok := quantile(0.5, lt.bounds, lt.counts, lt.count); ok {
				ms := round(v*1000, 3)
				rt.P50ms = &ms
			}
			if v, ok := quantile(0.99, lt.bounds, lt.counts, lt.count); ok {
				ms := round(v*1000, 3)
				rt.P99ms = &ms
			}
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
		Hit:         f(), Stale: f(), Miss: f(), PassedThrough: f(), Reads: f(), Writes: f(),
		HitRatio: make([]*float64, 0, steps),
		From429:  f(), Given429: f(), CacheBytes: f(),
	}
	first := n - 1 - steps*stride
	for k := 0; k < steps; k++ {
		a, b := c.ring.at(first+k*stride), c.ring.at(first+(k+1)*stride)
		dt := b.at.Sub(a.at).Seconds()
		s.T = append(s.T, b.at.UnixMilli())
		d := b.req.minus(a.req)
		s.Hit = append(s.Hit, perSecond(float64(d.hit), dt))
		s.Stale = append(s.Stale, perSecond(float64(d.stale), dt))
		s.Miss = append(s.Miss, perSecond(float64(d.miss), dt))
		s.PassedThrough = append(s.PassedThrough, perSecond(b.bypass-a.bypass, dt))
		s.Reads = append(s.Reads, perSecond((b.upstream-b.writes)-(a.upstream-a.writes), dt))
		s.Writes = append(s.Writes, perSecond(b.writes-a.writes, dt))
		s.HitRatio = append(s.HitRatio, hitRatio(b, a))
		s.From429 = append(s.From429, perSecond(b.from429-a.from429, dt))
		s.Given429 = append(s.Given429, perSecond(b.given429-a.given429, dt))
		s.CacheBytes = append(s.CacheBytes, b.cacheBytes)
	}
	return s
}
