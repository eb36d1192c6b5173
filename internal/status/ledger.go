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
	// clientShards is how many locks the client table is split over.
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
// All methods are safe for concurrent use. Request and Upstream on a known
// route and client take one atomic add per counter and one short critical
// section on one of clientShards locks, and allocate nothing.
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

// clientShard is one lock's part of the client table.
type clientShard struct {
	mu sync.Mutex
	m  map[string]*clientCount
	_  [40]byte // keep neighbouring shards' locks off one cache line
}

// clientCount is one client's counters since it entered the table.
type clientCount struct {
	requests, upstream int64
}

// NewLedger returns an empty Ledger that keeps at most maxClients clients
// (rounded up to a multiple of 8); 0 or less means 256.
func NewLedger(maxClients int) *Ledger {
	if maxClients <= 0 {
		maxClients = defaultMaxClients
	}
	l := &Ledger{seed: maphash.MakeSeed(), perShard: (maxClients + clientShards - 1) / clientShards}
	l.routes.Store(&map[string]*routeCounter{})
	for i := range l.shards {
		l.shards[i].m = make(map[string]*clientCount, l.perShard)
	}
	return l
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
		l.client(client, 1, 0)
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
	sh.mu.Lock()
	c := sh.m[name]
	if c == nil {
		c = sh.admit(name, l.perShard)
	}
	c.requests += requests
	c.upstream += upstream
	sh.mu.Unlock()
}

// admit enters name into the shard, replacing its quietest client when the
// shard holds max already. sh.mu must be held.
func (sh *clientShard) admit(name string, max int) *clientCount {
	var c *clientCount
	if len(sh.m) >= max {
		var quiet string
		for n, cc := range sh.m {
			if c == nil || cc.requests+cc.upstream < c.requests+c.upstream {
				quiet, c = n, cc
			}
		}
		delete(sh.m, quiet)
		*c = clientCount{}
	} else {
		c = &clientCount{}
	}
	sh.m[strings.Clone(name)] = c
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
		sh := &l.shards[i]
		sh.mu.Lock()
		for name, c := range sh.m {
			out = append(out, clientRow{name: name, requests: c.requests, upstream: c.upstream})
		}
		sh.mu.Unlock()
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
