// Package app assembles kproxy's components from a configuration: store,
// breaker, upstream client, fetch path, HTTP server and batch endpoints.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/kproxy/kproxy/batch"
	"github.com/kproxy/kproxy/breaker"
	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/clock"
	"github.com/kproxy/kproxy/internal/cluster"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/disk"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/legacy"
	"github.com/kproxy/kproxy/internal/live"
	"github.com/kproxy/kproxy/internal/logging"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/status"
	"github.com/kproxy/kproxy/internal/upstream"
	"github.com/kproxy/kproxy/internal/wsproxy"
	"github.com/kproxy/kproxy/proxy"
)

// Options adjust how an App is built; the zero value is production.
type Options struct {
	// LogOutput receives the logs; nil means io.Discard.
	LogOutput io.Writer
	// NoMetrics leaves metrics out (benchmarks measure their cost).
	NoMetrics bool
	// Transport overrides the upstream transport (tests).
	Transport http.RoundTripper
	// RetryBase and RetryCap override the retry backoff (tests).
	RetryBase, RetryCap time.Duration
	// BodyTimeout overrides how long a passed-through body may take to
	// arrive (tests; 0: proxy.BodyTimeout).
	BodyTimeout time.Duration
	// Version is shown by the status page; empty means "dev".
	Version string
	// Clock decides freshness (fetch path, Age and Cache-Status, shared
	// entries, live pushes) and dates the status page's samples; nil means
	// real time. Deadlines, backoff and rate limits stay on the wall clock.
	Clock clock.Clock
}

// App is a configured kproxy. Build it with New, serve with Serve, and
// release it with Close.
type App struct {
	Config   *config.Config
	Store    *cache.Memory
	Breaker  *breaker.Breaker
	Upstream *upstream.Client
	Fetcher  *fetch.Fetcher
	Server   *proxy.Server
	Metrics  *metrics.Metrics
	Logger   *slog.Logger
	// Status is the status page's collector; nil when status.enabled is
	// false or metrics are off.
	Status *status.Collector
	// Live is the push feed; nil unless live.enabled.
	Live *live.Feed
	// Cluster links this replica to the others through Redis; nil without
	// redis.url.
	Cluster *cluster.Cluster
	// WS is the WebSocket pass-through on /trade-api/ws/v2.
	WS *wsproxy.Proxy
	// Disk is the history tier (cache.disk.path); never nil after New: off
	// without a path, down when the directory cannot be used.
	Disk *disk.Store

	opts   Options
	access slog.Handler // nil without log.access
	origin *url.URL
	routes *route.Table
	signer *upstream.Signer // nil without an API key
	// read and write are the upstream budgets (requests per second).
	read, write float64
	// fetchTimeout bounds one shared fetch: a wait for a token, then
	// every attempt with its backoff.
	fetchTimeout time.Duration
	// ledger is the status page's, fed by the proxy, the batch endpoints
	// and every upstream attempt; nil (nothing counted) with the page off.
	ledger *status.Ledger
	// shared is the view of the cache the proxy answers from: the cluster's
	// two-level store with Redis, else the memory store. The fetch path
	// writes through the live feed's wrapper of the memory store when the
	// feed is on (newLive).
	shared cache.Store

	// closers release what New built, run by Close in reverse build order.
	closers   []func()
	closeOnce sync.Once
	// abandoned is set when shared fetches outlived the shutdown timeout:
	// the stores they write to are then left open.
	abandoned bool
}

// New builds an App from a validated configuration, in build order: logs,
// metrics, memory store, breaker, cluster, upstream client, live feed,
// disk history tier, fetch path, WebSocket pass-through, HTTP server with the batch
// endpoints, status page. Background work (live feed, status collector)
// starts last, once everything it refers to exists. On error, what was
// built is closed again.
func New(cfg *config.Config, opts Options) (*App, error) {
	a := &App{Config: cfg, opts: opts}
	steps := []func() error{
		a.newLogging, a.newParsed, a.newMetrics, a.newStore, a.newBreaker,
		a.newCluster, a.newUpstream, a.newLive, a.newDisk, a.newFetcher, a.newWS,
		a.newServer, a.newStatus,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			a.Close()
			return nil, err
		}
	}
	if a.Live != nil {
		a.Live.Start()
	}
	if a.Status != nil {
		a.Status.Start()
	}
	return a, nil
}

// onClose registers fn to run at Close, before everything built earlier.
func (a *App) onClose(fn func()) { a.closers = append(a.closers, fn) }

func (a *App) newLogging() error {
	cfg := a.Config
	out := a.opts.LogOutput
	if out == nil {
		out = io.Discard
	}
	a.Logger = logging.New(out, cfg.Log.Level, cfg.Log.Format)
	if !cfg.Log.Access {
		return nil
	}
	buf := logging.NewBuffered(out, 200*time.Millisecond)
	a.onClose(func() { buf.Close() })
	a.access = logging.New(buf, "info", cfg.Log.Format).Handler()
	if cfg.Log.Format == "json" {
		a.access = logging.NewAccessHandler(buf)
	}
	return nil
}

// newParsed reads what the later steps share from the configuration.
func (a *App) newParsed() error {
	cfg := a.Config
	var err error
	if a.origin, err = cfg.UpstreamURL(); err != nil {
		return fmt.Errorf("config: upstream.url: %w", err)
	}
	if a.routes, err = route.NewTable(cfg.Cache.Specs(cfg.Compat.LegacyFields)); err != nil {
		return fmt.Errorf("config: cache.routes: %w", err)
	}
	if cfg.Upstream.APIKeyID != "" {
		if a.signer, err = upstream.LoadSigner(cfg.Upstream.APIKeyID, cfg.Upstream.PrivateKeyFile); err != nil {
			return err
		}
	}
	a.read, a.write = cfg.Upstream.Rates()
	retryCap := a.opts.RetryCap
	if retryCap <= 0 {
		retryCap = 2 * time.Second
	}
	timeout := time.Duration(cfg.Upstream.Timeout)
	a.fetchTimeout = time.Duration(cfg.Upstream.MaxWait) + time.Duration(cfg.Upstream.MaxRetries+1)*(timeout+retryCap)
	return nil
}

func (a *App) newMetrics() error {
	if a.opts.NoMetrics {
		return nil
	}
	// The store is built next; nothing scrapes before New returns.
	a.Metrics = metrics.New(func() (int, int64) { st := a.Store.Stats(); return st.Items, st.Bytes })
	a.Metrics.SetBudget("read", a.read)
	a.Metrics.SetBudget("write", a.write)
	if a.Config.Status.Enabled {
		a.ledger = status.NewLedger(0)
	}
	return nil
}

func (a *App) newStore() error {
	m := a.Metrics
	var err error
	a.Store, err = cache.NewMemory(cache.Config{
		MaxBytes: int64(a.Config.Cache.MaxBytes),
		OnEvict:  func() { m.Evicted() },
	})
	if err != nil {
		return err
	}
	a.shared = a.Store
	a.onClose(func() {
		if !a.abandoned {
			a.Store.Close()
		}
	})
	return nil
}

func (a *App) newBreaker() error {
	cfg, m := a.Config, a.Metrics
	a.Breaker = breaker.New(breaker.Config{
		ConsecutiveFailures: cfg.Breaker.ConsecutiveFailures,
		OpenTimeout:         time.Duration(cfg.Breaker.OpenTimeout),
		HalfOpenRequests:    cfg.Breaker.HalfOpenRequests,
		OnStateChange: func(from, to breaker.State) {
			a.Logger.Warn("upstream circuit breaker changed state", "from", from.String(), "to", to.String())
			m.SetBreaker(int(to))
			// Built later (newStatus); the breaker only changes state
			// once requests flow, after New.
			if a.Status != nil {
				a.Status.BreakerChanged(from.String(), to.String())
			}
		},
	})
	return nil
}

// ledgerAttempt is the upstream client's OnAttempt that counts every
// attempt in ledger, charged to the route its client asked for; nil when
// ledger is. (The ledger leaves out pass-throughs: they charge no cached
// route.)
func ledgerAttempt(ledger *status.Ledger) func(*upstream.Call, int, error) {
	if ledger == nil {
		return nil
	}
	return func(c *upstream.Call, _ int, _ error) { ledger.Upstream(c.ChargedTo(), c.Client) }
}

// routeTTLs are the cached routes' ttls by template, for the status
// page's advice.
func routeTTLs(routes *route.Table) map[string]time.Duration {
	ttls := map[string]time.Duration{}
	for _, rt := range routes.Routes() {
		ttls[rt.Pattern] = rt.TTL
	}
	return ttls
}

// newCluster links the App to the other replicas through Redis (issue 9,
// docs/replicas.md) when redis.url is set. It does not fail when Redis is
// down: the cluster reconnects by itself.
func (a *App) newCluster() error {
	cfg, m := a.Config, a.Metrics
	if cfg.Redis.URL == "" {
		return nil
	}
	if m != nil {
		m.EnableRedis()
	}
	var err error
	a.Cluster, err = cluster.New(cluster.Config{
		URL:          cfg.Redis.URL,
		Prefix:       cfg.Redis.KeyPrefix,
		Timeout:      time.Duration(cfg.Redis.Timeout),
		L1:           a.Store,
		FetchTimeout: a.fetchTimeout,
		Logger:       a.Logger,
		Now:          clock.NowFunc(a.opts.Clock),
		OnState: func(up bool) {
			if m != nil {
				m.RedisUp.Set(map[bool]float64{true: 1}[up])
			}
		},
	})
	if err != nil {
		return err
	}
	a.onClose(func() {
		if !a.abandoned {
			a.Cluster.Close()
		}
	})
	a.shared = a.Cluster.Store()
	return nil
}

func (a *App) newUpstream() error {
	cfg := a.Config
	var (
		readLim, writeLim upstream.Limiter
		penalty429        time.Duration
	)
	if a.Cluster != nil {
		readLim, writeLim = a.Cluster.Limiter("read", a.read), a.Cluster.Limiter("write", a.write)
		// Kalshi sends no Retry-After: an upstream 429 slows every
		// replica for a second.
		penalty429 = time.Second
	}
	var err error
	a.Upstream, err = upstream.New(upstream.Config{
		OnAttempt:    ledgerAttempt(a.ledger),
		ReadLimiter:  readLim,
		WriteLimiter: writeLim,
		Penalty429:   penalty429,
		Origin:       a.origin,
		Timeout:      time.Duration(cfg.Upstream.Timeout),
		MaxRetries:   cfg.Upstream.MaxRetries,
		ReadRate:     a.read,
		WriteRate:    a.write,
		MaxWait:      time.Duration(cfg.Upstream.MaxWait),
		Breaker:      a.Breaker,
		Signer:       a.signer,
		Tier:         cfg.Upstream.Tier,
		Metrics:      a.Metrics,
		Transport:    a.opts.Transport,
		RetryBase:    a.opts.RetryBase,
		RetryCap:     a.opts.RetryCap,
		// Fair shares of the budget (docs/fairness.md).
		FairShare:    cfg.Upstream.FairShare,
		FairMaxQueue: cfg.Upstream.FairMaxQueue,
	})
	return err
}

// newLive builds the push feed when live.enabled (docs/live.md): the
// fetch path then stores through the feed's wrapper and tells it of every
// request (newFetcher). It is started at the end of New.
func (a *App) newLive() error {
	cfg := a.Config
	if !cfg.Live.Enabled {
		return nil
	}
	u, err := cfg.WSURL()
	if err != nil {
		return fmt.Errorf("config: upstream.ws_url: %w", err)
	}
	var lm *metrics.LiveMetrics
	if a.Metrics != nil {
		lm = a.Metrics.EnableLive()
	}
	a.Live, err = live.New(live.Config{
		URL:        u.String(),
		Signer:     a.signer,
		Store:      a.Store,
		Routes:     a.routes,
		MaxMarkets: cfg.Live.MaxMarkets,
		MaxAge:     time.Duration(cfg.Live.MaxAge),
		Metrics:    lm,
		Logger:     a.Logger,
		Now:        clock.NowFunc(a.opts.Clock),
	})
	if err != nil {
		return err
	}
	a.onClose(a.Live.Close)
	return nil
}

func (a *App) newFetcher() error {
	cfg := a.Config
	var (
		store     cache.Store = a.Store
		onRequest func(*route.Route, string, time.Time)
		shared    fetch.Shared
	)
	if a.Live != nil {
		store, onRequest = a.Live.Store(), a.Live.OnRequest
	}
	if a.Cluster != nil {
		shared = a.Cluster
	}
	var diskTier fetch.Disk
	if a.Disk.Stats().State == disk.StateUp {
		diskTier = a.Disk // the fetch path gets the tier only when it is up at start
	}
	var err error
	a.Fetcher, err = fetch.New(fetch.Config{
		Store:       store,
		OnRequest:   onRequest,
		Shared:      shared,
		Disk:        diskTier,
		Offline:     cfg.Upstream.Offline,
		Upstream:    a.Upstream,
		Timeout:     a.fetchTimeout,
		NegativeTTL: time.Duration(cfg.Cache.NegativeTTL),
		StaleWait:   time.Duration(cfg.Cache.StaleWait),
		AutoWindow:  time.Duration(cfg.Batch.AutoWindow),
		Transform:   legacyTransform(a.routes),
		Metrics:     a.Metrics,
		Logger:      a.Logger,
		Now:         clock.NowFunc(a.opts.Clock),
		AfterFunc:   clock.AfterFuncOf(a.opts.Clock),
	})
	if err != nil {
		return err
	}
	a.onClose(a.waitFetches)
	return nil
}

// injectedNow is the clock of Options.Clock, or nil in production: a
// component that already holds a wall-clock reading (the proxy has each
// request's arrival time) then reads no clock of its own on a hit.
func (a *App) injectedNow() func() time.Time {
	if a.opts.Clock == nil {
		return nil
	}
	return a.opts.Clock.Now
}

// newDisk opens the history tier (docs/history.md) and registers its
// metrics. An unusable directory is not an error: the store is down, says
// why once (log line, /readyz, kproxy_disk_up) and kproxy serves without
// it. Closed after the fetches it may still receive have ended: what is
// queued reaches the disk and the directory is released.
func (a *App) newDisk() error {
	cfg := a.Config
	var err error
	a.Disk, err = disk.Open(disk.Config{
		Path:     cfg.Cache.Disk.Path,
		MaxBytes: int64(cfg.Cache.Disk.MaxBytes),
		Logger:   a.Logger,
		Now:      clock.NowFunc(a.opts.Clock),
	})
	if err != nil {
		return fmt.Errorf("config: cache.disk: %w", err)
	}
	a.onClose(func() {
		if err := a.Disk.Close(); err != nil {
			a.Logger.Warn("closing the disk cache failed", "err", err)
		}
	})
	a.Metrics.EnableDisk(func() metrics.DiskStats {
		st := a.Disk.Stats()
		return metrics.DiskStats{Up: st.State == disk.StateUp, Items: st.Items, Bytes: st.Bytes,
			Hits: st.Hits, Corrupt: st.Corrupt, Evictions: st.Evictions, Writes: st.Writes, Dropped: st.Dropped}
	})
	return nil
}

// diskPart is the status page's disk tier section.
func (a *App) diskPart() status.Part {
	return status.PartFunc(func() map[string]any {
		st := a.Disk.Stats()
		p := map[string]any{"state": string(st.State), "bytes": st.Bytes, "max_bytes": st.MaxBytes, "items": st.Items,
			"hits": st.Hits, "immutable": st.Immutable, "corrupt": st.Corrupt}
		if st.Reason != "" && st.State == disk.StateDown {
			p["reason"] = st.Reason
		}
		return p
	})
}

// waitFetches gives shared fetches nobody waits for any more the shutdown
// timeout to store their answers; past it, the stores are left open for
// them (the process is ending anyway).
func (a *App) waitFetches() {
	done := make(chan struct{})
	go func() {
		a.Fetcher.Close() // also cancels refreshes scheduled ahead of expiry
		close(done)
	}()
	t := time.NewTimer(time.Duration(a.Config.ShutdownTimeout))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		a.abandoned = true
		a.Logger.Warn("shared fetches still running at exit")
	}
}

func (a *App) newWS() error {
	wsURL, err := a.Config.WSURL()
	if err != nil {
		return fmt.Errorf("config: upstream.ws_url: %w", err)
	}
	a.WS, err = wsproxy.New(wsproxy.Config{
		Upstream:         wsURL,
		HandshakeTimeout: time.Duration(a.Config.Upstream.Timeout),
		Metrics:          a.Metrics,
		Logger:           a.Logger,
	})
	if err != nil {
		return err
	}
	a.onClose(a.WS.Close)
	return nil
}

// newServer builds the HTTP handler and registers the batch endpoints on it.
func (a *App) newServer() error {
	cfg := a.Config
	var redisState func() string
	if a.Cluster != nil {
		redisState = a.Cluster.State
	}
	var err error
	a.Server, err = proxy.New(proxy.Config{
		WebSocket:   a.WS,
		Fetcher:     a.Fetcher,
		Routes:      a.routes,
		Upstream:    a.Upstream,
		Store:       a.shared,
		AdminToken:  cfg.Admin.Token,
		UpstreamURL: a.origin.String(),
		RedisState:  redisState,
		LiveState:   a.liveState,
		Disk:        a.Disk,
		Offline:     a.Config.Upstream.Offline,
		Metrics:     a.Metrics,
		Ledger:      a.ledger,
		Logger:      a.Logger,
		AccessLog:   a.access,
		BodyTimeout: a.opts.BodyTimeout,
		Now:         a.injectedNow(),
	})
	if err != nil {
		return err
	}
	b, err := batch.New(batch.Config{
		Fetcher:     a.Fetcher,
		Routes:      a.routes,
		MaxItems:    cfg.Batch.MaxItems,
		Concurrency: cfg.Batch.Concurrency,
		MaxPages:    cfg.Batch.MaxPages,
		Metrics:     a.Metrics,
		Ledger:      a.ledger,
		Logger:      a.Logger,
	})
	if err != nil {
		return err
	}
	b.Register(a.Server.Handle)
	return nil
}

// newStatus builds the status page when status.enabled and metrics are on;
// its collector starts at the end of New.
func (a *App) newStatus() error {
	cfg, m := a.Config, a.Metrics
	if a.ledger == nil { // status.enabled is false or metrics are off
		return nil
	}
	// Interfaces left nil (not a nil pointer in them) show "off".
	var redisPart, livePart status.Part
	if c := a.Cluster; c != nil {
		redisPart = status.PartFunc(func() map[string]any {
			return map[string]any{"state": c.State(), "replicas": c.Alive()}
		})
	}
	if f := a.Live; f != nil {
		livePart = status.PartFunc(func() map[string]any {
			st := f.Stats()
			return map[string]any{"state": st.State, "hot_markets": st.Hot, "subscribed": st.Subscribed,
				"tickers_applied": st.Tickers, "lifecycles_applied": st.Lifecycles}
		})
	}
	var err error
	a.Status, err = status.New(status.Config{
		Gatherer: m.Traffic(),
		Ledger:   a.ledger,
		TTLs:     routeTTLs(a.routes),
		Version:  a.opts.Version,
		Upstream: a.origin.String(),
		Tier:     cfg.Upstream.Tier,
		ReadRate: a.read, WriteRate: a.write,
		MaxBytes: int64(cfg.Cache.MaxBytes),
		Breaker:  func() string { return a.Breaker.State().String() },
		Redis:    redisPart,
		Live:     livePart,
		Now:      clock.NowFunc(a.opts.Clock),
	})
	if err != nil {
		return err
	}
	a.onClose(a.Status.Close)
	a.Status.Register(a.Server.Handle)
	return nil
}

func (a *App) liveState() string {
	if a.Live == nil {
		return "off"
	}
	return a.Live.State()
}

// legacyTransform is the legacy-field shim when some route has it on, else
// nil (no per-fetch call at all).
func legacyTransform(routes *route.Table) func(*route.Route, []byte) []byte {
	for _, rt := range routes.Routes() {
		if rt.LegacyFields {
			return legacy.Transform
		}
	}
	return nil
}

// memoryHeadroom is what the process needs besides the cache: runtime,
// buffers, bodies in flight.
const memoryHeadroom = 48 << 20

// MemoryLimit is the soft memory limit (runtime/debug.SetMemoryLimit) that
// fits cfg: the cache bound plus headroom, so the garbage collector works
// harder before the process outgrows what the operator planned for.
func MemoryLimit(cfg *config.Config) int64 {
	return int64(cfg.Cache.MaxBytes) + memoryHeadroom
}

// Serve serves on ln until ctx is done, then drains. Readiness turns 503
// "draining" at once, while kproxy goes on accepting and serving for
// drain_delay (the time a load balancer needs to see the 503 or the
// endpoint removal and stop sending); during the delay every answer closes
// its connection, so pooled clients reconnect and land elsewhere. Then the
// listener closes and in-flight requests get up to shutdown_timeout. Serve
// returns nil after a drain, or the serving error that ended it early.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	hs := a.Server.HTTPServer(ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	a.Logger.Info("kproxy listening", "addr", ln.Addr().String(), "upstream", a.Upstream.Origin().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.Server.SetDraining()
	if d := time.Duration(a.Config.DrainDelay); d > 0 {
		a.Logger.Info("draining: readiness is 503, still serving", "drain_delay", a.Config.DrainDelay.String())
		hs.SetKeepAlivesEnabled(false)
		t := time.NewTimer(d)
		select {
		case err := <-errc:
			t.Stop()
			return err
		case <-t.C:
		}
	}
	a.Logger.Info("draining: listener closed, finishing in-flight requests", "timeout", a.Config.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(a.Config.ShutdownTimeout))
	defer cancel()
	// Hijacked WebSocket connections are not http.Server's: they get a
	// 1001 close frame now and up to the same timeout to close.
	wsDone := make(chan struct{})
	go func() {
		a.WS.Shutdown(sctx)
		close(wsDone)
	}()
	err := a.Server.Shutdown(sctx, hs)
	<-wsDone
	if errors.Is(err, context.DeadlineExceeded) {
		a.Logger.Warn("shutdown timeout reached; closing remaining connections")
		hs.Close()
		err = nil
	}
	<-errc
	return err
}

// Close stops every component New built, in reverse build order: the
// status collector, the WebSocket pass-through (connections cut), the
// fetch path (shared fetches get up to shutdown_timeout to store their
// answers), the live feed, the cluster, the store, and last the access log,
// flushed. It is idempotent and safe to call after a failed step of New.
// Call it after Serve has returned.
func (a *App) Close() {
	a.closeOnce.Do(func() {
		for i := len(a.closers) - 1; i >= 0; i-- {
			a.closers[i]()
		}
	})
}
