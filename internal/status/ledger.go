package status

import (
	"hash/maphash"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Bounds of a Ledger's memory.
const (
	// maxLedgerRoutes bounds the routes a Ledger keeps apart; it is well
	// above the size of kproxy's route table (about 30 templates plus the
	// batch endpoints). Counts on routes past it go to the totals only.
	maxLedgerRoutes = 256
	// clientShards is how many parts the client table is split over.
	clientShards = 8
	// defaultMaxClients is the client table's size when NewLedger is given 0.
	defaultMaxClients = 256
	// maxClientName is the longest client name kept, in bytes.
	maxClientName = 64
	// unnamedClient names requests whose client name is empty.
	unnamedClient = "(unnamed)"
)

// Ledger counts what clients asked of kproxy's cached routes and batch
// endpoints, and the upstream requests kproxy sent for them, both charged
// to the route the client asked for and to the client. It is the source of
// the status page's headline figures; it does not read or feed the
// Prometheus metrics.
//
// Make one with NewLedger (the zero Ledger is not ready for use). A nil
// *Ledger is valid: its methods do nothing, so a proxy built with the
// status page off can call them unconditionally.
//
// Memory is bounded: per-route counters for at most maxLedgerRoutes route
// templates, and a client table of at most the size given to NewLedger
// (rounded up to a multiple of clientShards). When a shard of the client
// table is full, a client not yet in it replaces the shard's quietest
// client (fewest requests plus upstream calls) and counts from then on:
// busy clients stay, and their counts are exact unless they were once
// replaced.
//
// Between a client's replacement and the next reading, a request by the
// replaced client that raced with it may go uncounted on the client table
// (never on the routes).
//
// All methods are safe for concurrent use. Request and Upstream on a known
// route and client take no lock and allocate nothing: a lookup in an
// immutable map (the routes', then one shard's of the client table) and
// one atomic add per counter. Only admitting a new route or client takes a
// lock, to copy that small map. The hot path should resolve its route once
// with Route and count on the RouteLedger, which skips the route lookup.
type Ledger struct {
	// routes maps route templates to their counters. It is replaced, never
	// changed: readers load it without a lock; writers (a new route) copy
	// it under mu.
	routes atomic.Pointer[map[string]*routeCounter]
	mu     sync.Mutex // serializes adding a route
	// extra counts the routes past maxLedgerRoutes.
	extra routeCounter

	seed     maphash.Seed
	perShard int
	shards   [clientShards]clientShard
}

// routeCounter is one route's counters since start.
type routeCounter struct {
	hit, stale, miss, expired, upstream atomic.Int64
}

// clientShard is one part of the client table. m is replaced, never
// changed: readers load it without a lock; writers (a new client) copy it
// under mu.
type clientShard struct {
	m  atomic.Pointer[map[string]*clientCount]
	mu sync.Mutex // serializes admitting a client
}

// clientCount is one client's counters since it entered the table. A
// replaced client's clientCount is dropped, never reused, so a late add
// from a reader that still held it cannot reach its successor.
type clientCount struct {
	requests, upstream atomic.Int64
	_                  [48]byte // keep clients counted on other cores off one cache line
}

// total is what ranks a client for replacement: its requests plus its
// upstream calls.
func (c *clientCount) total() int64 { return c.requests.Load() + c.upstream.Load() }

// NewLedger returns an empty Ledger that keeps at most maxClients clients
// (rounded up to a multiple of 8); 0 or less means 256.
func NewLedger(maxClients int) *Ledger {
	if maxClients <= 0 {
		maxClients = defaultMaxClients
	}
	l := &Ledger{seed: maphash.MakeSeed(), perShard: (maxClients + clientShards - 1) / clientShards}
	l.routes.Store(&map[string]*routeCounter{})
	for i := range l.shards {
		l.shards[i].m.Store(&map[string]*clientCount{})
	}
	return l
}

// RouteLedger is a Ledger's counters of one route, resolved once (Route)
// so that the request path counts without looking the route up. A nil
// *RouteLedger is valid and counts nothing: it is what Route returns for a
// route that is not counted, or from a nil Ledger. Safe for concurrent use.
type RouteLedger struct {
	l  *Ledger
	rc *routeCounter
}

// Route returns the counters of route template, for Request and Upstream
// calls that would name it (see Ledger.Request); nil for a route that is
// not counted. Routes resolved past maxLedgerRoutes count in the totals
// only, as with Ledger.Request.
func (l *Ledger) Route(template string) *RouteLedger {
	if l == nil {
		return nil
	}
	rc := l.route(template)
	if rc == nil {
		return nil
	}
	return &RouteLedger{l: l, rc: rc}
}

// Request is Ledger.Request on r's route.
func (r *RouteLedger) Request(client, xcache string, expired bool) {
	if r == nil {
		return
	}
	r.rc.request(xcache, expired)
	r.l.client(client, 1, 0)
}

// Upstream is Ledger.Upstream on r's route.
func (r *RouteLedger) Upstream(client string) {
	if r == nil {
		return
	}
	r.rc.upstream.Add(1)
	r.l.client(client, 0, 1)
}

// Request counts one client request on a cached route or a batch endpoint.
//
// route is the route template the client asked for
// ("/trade-api/v2/markets/{ticker}"); for a batch it is the batch
// endpoint's path ("/batch", "/batch/markets") and Request is called once
// per item, with the item's cache outcome. client is the client's name
// (its Kproxy-Client header, else a short tag of its key, else its
// address; never a raw key); empty counts as "(unnamed)". xcache is the
// answer's X-Cache value: "HIT", "STALE" or "MISS" (anything else counts
// as a MISS). expired reports that the request found only an expired copy
// of the answer: every STALE, and a MISS that went upstream because the
// copy it found was past its ttl.
//
// Routes that are not cached routes (pass-through areas such as
// "/trade-api/v2/portfolio/*", "/trade-api/v2/*", "other") are not
// counted.
func (l *Ledger) Request(route, client, xcache string, expired bool) {
	if l == nil {
		return
	}
	if rc := l.route(route); rc != nil {
		rc.request(xcache, expired)
		l.client(client, 1, 0)
	}
}

// request counts one request with X-Cache xcache.
func (rc *routeCounter) request(xcache string, expired bool) {
	switch xcache {
	case "HIT":
		rc.hit.Add(1)
	case "STALE":
		rc.stale.Add(1)
	default:
		rc.miss.Add(1)
	}
	if expired {
		rc.expired.Add(1)
	}
}

// Upstream counts one request sent upstream: every attempt (a fetch, each
// retry, a background refresh, each page of a batch, a combined
// auto-batched call). route is the route template the client asked for,
// the one its Request named (a batch item's upstream calls are charged to
// its batch endpoint; an auto-batched single market to
// "/trade-api/v2/markets/{ticker}"); client is the client whose request
// caused it. Routes that are not cached routes are not counted.
func (l *Ledger) Upstream(route, client string) {
	if l == nil {
		return
	}
	if rc := l.route(route); rc != nil {
		rc.upstream.Add(1)
		l.client(client, 0, 1)
	}
}

// route returns route's counters, creating them on first use; nil for a
// route that is not counted.
func (l *Ledger) route(route string) *routeCounter {
	if rc := (*l.routes.Load())[route]; rc != nil {
		return rc
	}
	if !countedRoute(route) {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.routes.Load()
	if rc := old[route]; rc != nil {
		return rc
	}
	if len(old) >= maxLedgerRoutes {
		return &l.extra
	}
	m := make(map[string]*routeCounter, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	rc := &routeCounter{}
	m[strings.Clone(route)] = rc
	l.routes.Store(&m)
	return rc
}

// countedRoute reports whether route names a cached route or a batch
// endpoint: the proxy's pass-through labels (a prefix followed by "/*",
// "other") and anything outside the API and the batch endpoints are not.
func countedRoute(route string) bool {
	if strings.HasSuffix(route, "/*") {
		return false
	}
	return strings.HasPrefix(route, "/trade-api/") || route == "/batch" || strings.HasPrefix(route, "/batch/")
}

// client adds to name's counters in its shard of the client table.
func (l *Ledger) client(name string, requests, upstream int64) {
	if name == "" {
		name = unnamedClient
	} else if len(name) > maxClientName {
		n := maxClientName
		for n > 0 && !utf8.RuneStart(name[n]) {
			n-- // cut at a character's start
		}
		name = name[:n]
	}
	sh := &l.shards[maphash.String(l.seed, name)%clientShards]
	c := (*sh.m.Load())[name]
	if c == nil {
		c = sh.admit(name, l.perShard)
	}
	if requests != 0 {
		c.requests.Add(requests)
	}
	if upstream != 0 {
		c.upstream.Add(upstream)
	}
}

// admit returns name's counters, entering name into the shard (in a copy
// of its map) if it is not there yet, in place of the shard's quietest
// client when the shard holds max already.
func (sh *clientShard) admit(name string, max int) *clientCount {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old := *sh.m.Load()
	if c := old[name]; c != nil {
		return c // admitted while we waited
	}
	var quiet *clientCount // the one replaced, if the shard is full
	if len(old) >= max {
		for _, cc := range old {
			if quiet == nil || cc.total() < quiet.total() {
				quiet = cc
			}
		}
	}
	m := make(map[string]*clientCount, len(old)+1)
	for n, cc := range old {
		if cc != quiet {
			m[n] = cc
		}
	}
	c := &clientCount{}
	m[strings.Clone(name)] = c
	sh.m.Store(&m)
	return c
}

// routeCounts are one route's (or all routes') counts at one moment.
type routeCounts struct {
	hit, stale, miss, expired, upstream int64
}

func (c routeCounts) requests() int64 { return c.hit + c.stale + c.miss }

func (c routeCounts) plus(o routeCounts) routeCounts {
	return routeCounts{c.hit + o.hit, c.stale + o.stale, c.miss + o.miss, c.expired + o.expired, c.upstream + o.upstream}
}

func (c routeCounts) minus(o routeCounts) routeCounts {
	return routeCounts{c.hit - o.hit, c.stale - o.stale, c.miss - o.miss, c.expired - o.expired, c.upstream - o.upstream}
}

func (rc *routeCounter) load() routeCounts {
	return routeCounts{rc.hit.Load(), rc.stale.Load(), rc.miss.Load(), rc.expired.Load(), rc.upstream.Load()}
}

// clientRow is one client's counts at one moment.
type clientRow struct {
	name               string
	requests, upstream int64
}

// routeCounts returns every route's counts, and their total (routes past
// maxLedgerRoutes included). Counters are read one by one while requests
// go on: a snapshot may be a few requests apart between counters.
func (l *Ledger) routeCounts() (map[string]routeCounts, routeCounts) {
	cur := *l.routes.Load()
	routes := make(map[string]routeCounts, len(cur))
	total := l.extra.load()
	for name, rc := range cur {
		c := rc.load()
		routes[name] = c
		total = total.plus(c)
	}
	return routes, total
}

// clients returns at most n clients, most requests first (then most
// upstream calls, then by name).
func (l *Ledger) clients(n int) []clientRow {
	var out []clientRow
	for i := range l.shards {
		for name, c := range *l.shards[i].m.Load() {
			out = append(out, clientRow{name: name, requests: c.requests.Load(), upstream: c.upstream.Load()})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.requests != b.requests {
			return a.requests > b.requests
		}
		if a.upstream != b.upstream {
			return a.upstream > b.upstream
		}
		return a.name < b.name
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
