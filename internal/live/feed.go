// Package live keeps cached market answers fresh from Kalshi's WebSocket
// push feed: one upstream connection, signed with kproxy's own key,
// subscribed to market_lifecycle_v2 and to the ticker channel for the hot
// set (the markets whose /markets/{ticker} answers are requested).
//
// A ticker message rewrites the pushed fields (yes_bid_dollars,
// yes_ask_dollars, last_price_dollars, volume_fp, open_interest_fp, the two
// sizes, and no_bid/no_ask as 1 - yes_ask/yes_bid) in every cached answer
// that holds the market: its /markets/{ticker} answer, which then stays
// fresh until live.max_age after its REST fetch (never across the market's
// next open_time or close_time), and the /markets and /events answers that
// list it, which keep their ttl but never show the old values again. A
// lifecycle message removes every cached answer that holds its market. While
// the feed is down, pushed answers are back on their ttl.
//
// Entries stay immutable: a patch builds a new entry and swaps it in.
package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/legacy"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Config configures a Feed.
type Config struct {
	// URL is the upstream WebSocket URL (ws:// or wss://); required.
	URL string
	// Signer signs the handshake with kproxy's own key; required (Kalshi
	// authenticates every WebSocket connection).
	Signer *upstream.Signer
	// Store is the store the feed keeps fresh; Feed.Store wraps it, and
	// everything that writes entries must write through that wrapper.
	// Required.
	Store cache.Store
	// Routes tells which keys hold markets and their policies (ttl, stale
	// windows, legacy fields); required.
	Routes *route.Table
	// MaxMarkets bounds the hot set; must be > 0.
	MaxMarkets int
	// MaxAge is the longest a pushed single-market answer stays fresh
	// after its REST fetch; must be > 0.
	MaxAge time.Duration

	// BackoffBase and BackoffCap bound reconnect delays: the n-th retry in
	// a row waits a random time in [d/2, d], d = min(BackoffCap,
	// BackoffBase * 2^n); the count restarts once a connection has stayed up
	// for StableAfter. Zero values mean 500ms, 30s and 10s.
	BackoffBase, BackoffCap, StableAfter time.Duration
	// FlushDelay is how long newly hot markets wait to be subscribed in one
	// command; 0 means 100ms.
	FlushDelay time.Duration
	// PingInterval is how often kproxy pings the upstream; a pong later
	// than PingInterval ends the connection. 0 means 15s.
	PingInterval time.Duration
	// HandshakeTimeout bounds the WebSocket handshake; 0 means 10s.
	HandshakeTimeout time.Duration
	// HTTPClient dials the connection; nil means a client of its own.
	HTTPClient *http.Client
	// Metrics and Logger may be nil.
	Metrics *metrics.LiveMetrics
	Logger  *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Feed is the push feed. Its methods are safe for concurrent use.
type Feed struct {
	url, path string
	signer    *upstream.Signer
	inner     cache.Store
	routes    *route.Table
	kinds     map[*route.Route]legacy.Kind
	single    *route.Route // /markets/{ticker}; nil when not a cached route
	maxHot    int
	maxAge    time.Duration
	backoff   [3]time.Duration // base, cap, stable
	flushWait time.Duration
	pingEvery time.Duration
	handshake time.Duration
	client    *http.Client
	m         *metrics.LiveMetrics
	log       *slog.Logger
	now       func() time.Time

	// hot is the hit path's read-only view of the hot set, replaced (never
	// modified) by the run loop.
	hot atomic.Pointer[map[string]*market]
	// cands carries tickers that may join the hot set to the run loop.
	cands chan string

	stripes [nStripes]stripe
	idx     index

	// healthy: connected with the lifecycle subscription confirmed; only
	// then are pushed values applied and pushed freshness given.
	healthy atomic.Bool
	status  atomic.Int32

	logged sync.Map // kinds of trouble already logged once

	statsMu sync.Mutex
	stats   Stats
	changed chan struct{} // closed and replaced on every change of stats

	start, stop sync.Once
	started     atomic.Bool
	done        chan struct{}
	finished    chan struct{}
}

// market is one hot market.
type market struct {
	ticker string
	// last is when it was last requested, in coarse ticks (for LRU).
	last atomic.Int64
	// st is its pushed state on the current subscription; nil until the
	// first ticker message (the initial snapshot) after subscribing.
	st atomic.Pointer[state]
}

// States of the feed as /readyz shows them.
const (
	statusOff int32 = iota
	statusConnecting
	statusConnected
)

var statusNames = [...]string{"off", "connecting", "connected"}

// New builds a Feed; Start connects it.
func New(cfg Config) (*Feed, error) {
	switch {
	case cfg.Signer == nil:
		return nil, errors.New("live: a signer (kproxy's own key) is required")
	case cfg.Store == nil || cfg.Routes == nil:
		return nil, errors.New("live: store and routes are required")
	case cfg.MaxMarkets <= 0:
		return nil, errors.New("live: max markets must be positive")
	case cfg.MaxAge <= 0:
		return nil, errors.New("live: max age must be positive")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, errors.New("live: the WebSocket URL must be ws(s)://host/path")
	}
	f := &Feed{
		url:       cfg.URL,
		path:      u.EscapedPath(),
		signer:    cfg.Signer,
		inner:     cfg.Store,
		routes:    cfg.Routes,
		kinds:     map[*route.Route]legacy.Kind{},
		maxHot:    cfg.MaxMarkets,
		maxAge:    cfg.MaxAge,
		backoff:   [3]time.Duration{orDefault(cfg.BackoffBase, 500*time.Millisecond), orDefault(cfg.BackoffCap, 30*time.Second), orDefault(cfg.StableAfter, 10*time.Second)},
		flushWait: orDefault(cfg.FlushDelay, 100*time.Millisecond),
		pingEvery: orDefault(cfg.PingInterval, 15*time.Second),
		handshake: orDefault(cfg.HandshakeTimeout, 10*time.Second),
		client:    cfg.HTTPClient,
		m:         cfg.Metrics,
		log:       cfg.Logger,
		now:       cfg.Now,
		cands:     make(chan string, 4096),
		changed:   make(chan struct{}),
		done:      make(chan struct{}),
		finished:  make(chan struct{}),
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.client == nil {
		f.client = &http.Client{}
	}
	for _, rt := range cfg.Routes.Routes() {
		switch k := legacy.KindOf(rt.Pattern); k {
		case legacy.Markets, legacy.Market, legacy.Events, legacy.Event:
			f.kinds[rt] = k
			if k == legacy.Market {
				f.single = rt
			}
		}
	}
	empty := map[string]*market{}
	f.hot.Store(&empty)
	return f, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Store is the wrapped store: give it to the fetch path (and to anything
// else that writes entries) in place of Config.Store.
func (f *Feed) Store() cache.Store { return store{f} }

// singlePrefix starts every /markets/{ticker} key.
const singlePrefix = route.Prefix + "markets/"

// tick is the coarse clock of the hot set's recency (about 100 ms): a
// market requested many times within one tick writes its recency once.
func tick(t time.Time) int64 { return t.UnixNano() >> 27 }

// OnRequest is fetch.Config.OnRequest: it keeps the hot set's recency. On
// a hit of a hot market it costs a map lookup and an atomic load, with no
// lock and no allocation; a request for a market not yet hot is handed to
// the run loop without waiting (dropped if the loop is far behind).
func (f *Feed) OnRequest(rt *route.Route, key string, now time.Time) {
	if rt != f.single || f.single == nil {
		return
	}
	ticker, ok := strings.CutPrefix(key, singlePrefix)
	if !ok || ticker == "" {
		return
	}
	if i := strings.IndexByte(ticker, '?'); i >= 0 {
		ticker = ticker[:i]
	}
	if m := (*f.hot.Load())[ticker]; m != nil {
		if t := tick(now); m.last.Load() != t {
			m.last.Store(t)
		}
		return
	}
	f.candidate(ticker)
}

// candidate asks the run loop to make ticker hot (it checks that its
// answer is a stored 200 first, so that unknown tickers never take a place).
func (f *Feed) candidate(ticker string) {
	select {
	case f.cands <- ticker:
	default:
	}
}

// State is the feed's state for /readyz: "connected", "connecting" or
// "off".
func (f *Feed) State() string { return statusNames[f.status.Load()] }

// Start connects the feed and keeps it connected until Close.
func (f *Feed) Start() {
	f.start.Do(func() {
		f.started.Store(true)
		f.status.Store(statusConnecting)
		go f.run()
	})
}

// Close closes the upstream connection (with a close frame) and stops the
// feed; pushed entries go back to ttl freshness. It waits for the feed's
// goroutines to end; a later Start does nothing.
func (f *Feed) Close() {
	f.stop.Do(func() { close(f.done) })
	f.start.Do(func() {}) // waits for a Start under way, forbids later ones
	if f.started.Load() {
		<-f.finished
	}
	f.status.Store(statusOff)
}

// logOnce logs msg the first time trouble of kind happens; later ones are
// only counted.
func (f *Feed) logOnce(kind, msg string, args ...any) {
	if _, seen := f.logged.LoadOrStore(kind, true); seen {
		return
	}
	f.log.Warn(msg, append(args, "kind", kind, "note", "logged once per kind; kproxy_live_messages_total counts every one")...)
}

func (f *Feed) count(typ string) {
	if f.m != nil {
		f.m.Messages.WithLabelValues(typ).Inc()
	}
}

func (f *Feed) setConnected(up bool) {
	if f.m != nil {
		if up {
			f.m.Connected.Set(1)
		} else {
			f.m.Connected.Set(0)
		}
	}
}

// Stats describes what the feed has done: counts since New, and the
// current hot set.
type Stats struct {
	// State is State().
	State string
	// Connects counts successful handshakes; Refused, handshakes that
	// failed.
	Connects, Refused int
	// Hot is the size of the hot set; Subscribed, how many of its markets
	// the ticker subscription of the current connection holds.
	Hot, Subscribed int
	// Frames counts the frames handled, Tickers the ticker messages
	// applied, Lifecycles the lifecycle messages applied; Rejected, Invalid
	// and Unknown the frames dropped, Errors the error frames received.
	Frames, Tickers, Lifecycles, Rejected, Invalid, Unknown, Errors int
}

// Stats returns a snapshot of the feed's counters.
func (f *Feed) Stats() Stats {
	f.statsMu.Lock()
	defer f.statsMu.Unlock()
	st := f.stats
	st.State = f.State()
	return st
}

// Wait blocks until cond holds for the feed's stats, or ctx ends (then it
// returns ctx's error). cond is checked at once and after every change: no
// polling. Tests and tools use it as a barrier.
func (f *Feed) Wait(ctx context.Context, cond func(Stats) bool) error {
	for {
		f.statsMu.Lock()
		st := f.stats
		ch := f.changed
		f.statsMu.Unlock()
		st.State = f.State()
		if cond(st) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("live: %w (stats %+v)", ctx.Err(), f.Stats())
		}
	}
}

// update changes the stats and wakes the waiters.
func (f *Feed) update(change func(*Stats)) {
	f.statsMu.Lock()
	defer f.statsMu.Unlock()
	change(&f.stats)
	close(f.changed)
	f.changed = make(chan struct{})
}
