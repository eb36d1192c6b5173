// Package status serves kproxy's status page (GET /status, an HTML page
// embedded in the binary) and its data (GET /status.json): whether the
// proxy is helping.
//
// The headline figures (requests, upstream calls avoided, hit ratio, the
// per-route rows, the busiest clients) come from a Ledger the proxy feeds
// on every request on a cached route and every upstream request; the
// rest (pass-throughs, the upstream budget, 429s, the cache, the breaker,
// latencies) from kproxy's own Prometheus registry. A collector reads
// both once a second, on its own goroutine, into fixed-size rings that
// hold the last 15 minutes. Everything it shows is aggregated by route
// template or client name: never a raw path, query, ticker, cache key,
// credential or other request header.
package status

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Part is an optional component (the Redis tier, the live feed) that
// reports its state for the page. Status is called on the request path of
// /status.json, from any goroutine; it must be cheap, safe for concurrent
// use, and return only JSON-encodable values that hold no keys, tickers,
// credentials or header values.
type Part interface {
	Status() map[string]any
}

// PartFunc adapts a function to a Part.
type PartFunc func() map[string]any

// Status calls f.
func (f PartFunc) Status() map[string]any { return f() }

// Config configures a Collector.
type Config struct {
	// Gatherer is kproxy's metric registry; required.
	Gatherer prometheus.Gatherer
	// Ledger counts requests on cached routes and the upstream requests
	// made for them; nil means New makes one (see Collector.Ledger).
	Ledger *Ledger
	// TTLs are the cached routes' ttls by route template, for the page's
	// advice; nil or a missing route means the ttl is not named.
	TTLs map[string]time.Duration
	// Version is kproxy's version; empty means "dev".
	Version string
	// Upstream is the upstream origin shown on the page.
	Upstream string
	// Tier is the configured Kalshi usage tier.
	Tier string
	// ReadRate and WriteRate are the upstream budgets in requests/s;
	// 0 means unlimited (no gauge).
	ReadRate, WriteRate float64
	// MaxBytes is the cache bound; 0 means unknown.
	MaxBytes int64
	// Breaker reports the breaker's state ("closed", "half-open",
	// "open"); nil means the kproxy_breaker_state gauge is used. It is
	// called from the collector's goroutine, never from BreakerChanged.
	Breaker func() string
	// Redis and Live are the optional features; nil shows "off".
	Redis, Live Part
	// Disk is the history tier (state, bytes against max_bytes, items,
	// hits from disk, immutable entries, corrupt records dropped); nil
	// shows "off".
	Disk Part
	// Interval is the time between samples; 0 means 1s.
	Interval time.Duration
	// Window is how much history the ring holds; 0 means 15 minutes. The
	// ring has Window/Interval+1 slots, allocated once.
	Window time.Duration
	// Now is the clock of every sample, rate and window; nil means
	// time.Now. (The sampling period itself is a real-time ticker.)
	Now func() time.Time
}

// maxTransitions is how many breaker transitions the page lists.
const maxTransitions = 10

// transition is one change of the breaker's state.
type transition struct {
	At   time.Time `json:"at"`
	From string    `json:"from"`
	To   string    `json:"to"`
}

// Collector samples the Ledger and the registry and serves the status
// page. Its methods are safe for concurrent use. Memory is bounded: a ring
// of samples sized at construction, a ring of per-route counts covering
// the last minute (one entry a route template), the latencies and the
// busiest clients of the last sample, and the last maxTransitions breaker
// transitions.
type Collector struct {
	cfg     Config
	started time.Time
	page    page

	mu          sync.Mutex
	ring        *ring[sample]
	routeRing   *ring[routeSample]
	latencies   map[string]*latency // of the newest sample
	clients     []clientRow         // of the newest sample
	breaker     string              // state at the newest sample
	transitions []transition        // oldest first, at most maxTransitions

	stop    chan struct{}
	done    chan struct{}
	running atomic.Bool // Start ran
	once    sync.Once
}

// New validates cfg and returns a Collector that has taken its first
// sample. Start begins the periodic sampling; Close ends it (one
// lifecycle: a Collector is not restarted).
func New(cfg Config) (*Collector, error) {
	if cfg.Gatherer == nil {
		return nil, errors.New("status: gatherer required")
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 15 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Ledger == nil {
		cfg.Ledger = NewLedger(0)
	}
	pg, err := buildPage()
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	c := &Collector{
		cfg:       cfg,
		page:      pg,
		started:   cfg.Now(),
		ring:      newRing[sample](int(cfg.Window/cfg.Interval) + 1),
		routeRing: newRing[routeSample](int(ratioWindow/cfg.Interval) + 1),
		latencies: map[string]*latency{},
		breaker:   "closed",
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	c.Sample()
	return c, nil
}

// Start samples every Interval in a goroutine of its own until Close, the
// lifecycle every background component of kproxy shares (New, Start,
// Close). Calls after the first do nothing.
func (c *Collector) Start() {
	if c.running.Swap(true) {
		return
	}
	go func() {
		defer close(c.done)
		t := time.NewTicker(c.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				c.Sample()
			}
		}
	}()
}

// Close stops the sampling goroutine (if Start ran) and waits for it.
// It is safe to call more than once.
func (c *Collector) Close() {
	c.once.Do(func() {
		close(c.stop)
		if !c.running.Load() {
			return
		}
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
		}
	})
}

// Ledger returns the collector's Ledger (Config.Ledger, or the one New
// made), which the proxy feeds.
func (c *Collector) Ledger() *Ledger { return c.cfg.Ledger }

// Sample reads the Ledger and the registry once and adds the reading to
// the rings. The periodic sampler calls it; tests call it with an
// injected clock.
func (c *Collector) Sample() {
	s, lat, err := read(c.cfg.Gatherer)
	if err != nil {
		return // nothing read: the previous sample stays the newest
	}
	s.at = c.cfg.Now()
	routes, total := c.cfg.Ledger.routeCounts()
	s.req = total
	clients := c.cfg.Ledger.clients(maxClients)
	state := ""
	if c.cfg.Breaker != nil {
		state = c.cfg.Breaker()
	}
	if state == "" {
		state = breakerName(s.breaker)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ring.add(s)
	c.routeRing.add(routeSample{at: s.at, routes: routes})
	c.latencies = lat
	c.clients = clients
	c.breaker = state
}

// BreakerChanged records a transition of the circuit breaker. It only
// takes the collector's own lock, so the breaker may call it while
// holding its own.
func (c *Collector) BreakerChanged(from, to string) {
	t := transition{At: c.cfg.Now(), From: from, To: to}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.transitions) == maxTransitions {
		copy(c.transitions, c.transitions[1:])
		c.transitions = c.transitions[:maxTransitions-1]
	}
	c.transitions = append(c.transitions, t)
	c.breaker = to
}

func breakerName(v float64) string {
	switch v {
	case 1:
		return "half-open"
	case 2:
		return "open"
	}
	return "closed"
}
