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
	"time"

	"github.com/kproxy/kproxy/batch"
	"github.com/kproxy/kproxy/breaker"
	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/cluster"
	"github.com/kproxy/kproxy/internal/config"
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
}

// App is a configured kproxy.
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

	accessBuf *logging.Buffered
}

// New builds an App from a validated configuration.
func New(cfg *config.Config, opts Options) (*App, error) {
	out := opts.LogOutput
	if out == nil {
		out = io.Discard
	}
	a := &App{Config: cfg}
	a.Logger = logging.New(out, cfg.Log.Level, cfg.Log.Format)
	var access slog.Handler
	if cfg.Log.Access {
		a.accessBuf = logging.NewBuffered(out, 200*time.Millisecond)
		access = logging.New(a.accessBuf, "info", cfg.Log.Format).Handler()
		if cfg.Log.Format == "json" {
			access = logging.NewAccessHandler(a.accessBuf)
		}
	}

	origin, err := cfg.UpstreamURL()
	if err != nil {
		return nil, fmt.Errorf("config: upstream.url: %w", err)
	}
	routes, err := route.NewTable(cfg.Cache.Specs(cfg.Compat.LegacyFields))
	if err != nil {
		return nil, fmt.Errorf("config: cache.routes: %w", err)
	}
	var m *metrics.Metrics
	a.Store, err = cache.NewMemory(cache.Config{
		MaxBytes: int64(cfg.Cache.MaxBytes),
		OnEvict:  func() { m.Evicted() },
	})
	if err != nil {
		return nil, err
	}
	if !opts.NoMetrics {
		m = metrics.New(func() (int, int64) { st := a.Store.Stats(); return st.Items, st.Bytes })
	}
	a.Metrics = m

	a.Breaker = breaker.New(breaker.Config{
		ConsecutiveFailures: cfg.Breaker.ConsecutiveFailures,
		OpenTimeout:         time.Duration(cfg.Breaker.OpenTimeout),
		HalfOpenRequests:    cfg.Breaker.HalfOpenRequests,
		OnStateChange: func(from, to breaker.State) {
			a.Logger.Warn("upstream circuit breaker changed state", "from", from.String(), "to", to.String())
			m.SetBreaker(int(to))
			if a.Status != nil {
				a.Status.BreakerChanged(from.String(), to.String())
			}
		},
	})
	var signer *upstream.Signer
	if cfg.Upstream.APIKeyID != "" {
		if signer, err = upstream.LoadSigner(cfg.Upstream.APIKeyID, cfg.Upstream.PrivateKeyFile); err != nil {
			return nil, err
		}
	}
	read, write := cfg.Upstream.Rates()
	m.SetBudget("read", read)
	m.SetBudget("write", write)
	timeout := time.Duration(cfg.Upstream.Timeout)
	retryCap := opts.RetryCap
	if retryCap <= 0 {
		retryCap = 2 * time.Second
	}
	// A shared fetch may wait for a token, then make every attempt with
	// its backoff.
	fetchTimeout := time.Duration(cfg.Upstream.MaxWait) + time.Duration(cfg.Upstream.MaxRetries+1)*(timeout+retryCap)
	var (
		store             cache.Store = a.Store
		shared            fetch.Shared
		readLim, writeLim upstream.Limiter
		penalty429        time.Duration
		redisState        func() string
	)
	if cfg.Redis.URL != "" {
		if err := a.newCluster(cfg, fetchTimeout, read, write); err != nil {
			return nil, err
		}
		store, shared, redisState = a.Cluster.Store(), a.Cluster, a.Cluster.State
		readLim, writeLim = a.Cluster.Limiter("read", read), a.Cluster.Limiter("write", write)
		// Kalshi sends no Retry-After: an upstream 429 slows every
		// replica for a second.
		penalty429 = time.Second
	}
	// The status page's ledger, fed by the proxy, the batch endpoints and
	// every upstream attempt; nil (nothing counted) with the page off.
	var ledger *status.Ledger
	if cfg.Status.Enabled && m != nil {
		ledger = status.NewLedger(0)
	}
	a.Upstream, err = upstream.New(upstream.Config{
		OnAttempt:    ledgerAttempt(ledger),
		ReadLimiter:  readLim,
		WriteLimiter: writeLim,
		Penalty429:   penalty429,
		Origin:       origin,
		Timeout:      timeout,
		MaxRetries:   cfg.Upstream.MaxRetries,
		ReadRate:     read,
		WriteRate:    write,
		MaxWait:      time.Duration(cfg.Upstream.MaxWait),
		Breaker:      a.Breaker,
		Signer:       signer,
		Tier:         cfg.Upstream.Tier,
		Metrics:      m,
		Transport:    opts.Transport,
		RetryBase:    opts.RetryBase,
		RetryCap:     opts.RetryCap,
		// Fair shares of the budget (docs/fairness.md).
		FairShare:    cfg.Upstream.FairShare,
		FairMaxQueue: cfg.Upstream.FairMaxQueue,
	})
	if err != nil {
		return nil, err
	}
	fetchStore, onRequest, err := a.newLive(cfg, routes, signer)
	if err != nil {
		return nil, err
	}
	a.Fetcher, err = fetch.New(fetch.Config{
		Store:       fetchStore,
		OnRequest:   onRequest,
		Shared:      shared,
		Upstream:    a.Upstream,
		Timeout:     fetchTimeout,
		NegativeTTL: time.Duration(cfg.Cache.NegativeTTL),
		StaleWait:   time.Duration(cfg.Cache.StaleWait),
		AutoWindow:  time.Duration(cfg.Batch.AutoWindow),
		Transform:   legacyTransform(routes),
		Metrics:     m,
		Logger:      a.Logger,
	})
	if err != nil {
		return nil, err
	}
	wsURL, err := cfg.WSURL()
	if err != nil {
		return nil, fmt.Errorf("config: upstream.ws_url: %w", err)
	}
	a.WS, err = wsproxy.New(wsproxy.Config{
		Upstream:         wsURL,
		HandshakeTimeout: timeout,
		Metrics:          m,
		Logger:           a.Logger,
	})
	if err != nil {
		return nil, err
	}
	a.Server, err = proxy.New(proxy.Config{
		WebSocket:   a.WS,
		Fetcher:     a.Fetcher,
		Routes:      routes,
		Upstream:    a.Upstream,
		Store:       store,
		AdminToken:  cfg.Admin.Token,
		UpstreamURL: origin.String(),
		RedisState:  redisState,
		LiveState:   a.liveState,
		Metrics:     m,
		Ledger:      ledger,
		Logger:      a.Logger,
		AccessLog:   access,
		BodyTimeout: opts.BodyTimeout,
	})
	if err != nil {
		return nil, err
	}
	b, err := batch.New(batch.Config{
		Fetcher:     a.Fetcher,
		Routes:      routes,
		MaxItems:    cfg.Batch.MaxItems,
		Concurrency: cfg.Batch.Concurrency,
		MaxPages:    cfg.Batch.MaxPages,
		Metrics:     m,
		Ledger:      ledger,
		Logger:      a.Logger,
	})
	if err != nil {
		return nil, err
	}
	b.Register(a.Server.Handle)
	if ledger != nil {
		// Interfaces left nil (not a nil pointer in them) show "off".
		var redisPart, livePart status.Part
		if a.Cluster != nil {
			redisPart = status.PartFunc(func() map[string]any {
				return map[string]any{"state": a.Cluster.State(), "replicas": a.Cluster.Alive()}
			})
		}
		if a.Live != nil {
			livePart = status.PartFunc(func() map[string]any {
				st := a.Live.Stats()
				return map[string]any{"state": st.State, "hot_markets": st.Hot, "subscribed": st.Subscribed,
					"tickers_applied": st.Tickers, "lifecycles_applied": st.Lifecycles}
			})
		}
		a.Status, err = status.New(status.Config{
			Gatherer: m.Traffic(),
			Ledger:   ledger,
			TTLs:     routeTTLs(routes),
			Version:  opts.Version,
			Upstream: origin.String(),
			Tier:     cfg.Upstream.Tier,
			ReadRate: read, WriteRate: write,
			MaxBytes: int64(cfg.Cache.MaxBytes),
			Breaker:  func() string { return a.Breaker.State().String() },
			Redis:    redisPart,
			Live:     livePart,
		})
		if err != nil {
			return nil, err
		}
		a.Status.Start(context.Background())
		a.Status.Register(a.Server.Handle)
	}
	if a.Live != nil {
		a.Live.Start()
	}
	return a, nil
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
// docs/replicas.md). It does not fail when Redis is down: the cluster
// reconnects by itself.
func (a *App) newCluster(cfg *config.Config, fetchTimeout time.Duration, read, write float64) error {
	m := a.Metrics
	if m != nil {
		m.EnableRedis()
	}
	var err error
	a.Cluster, err = cluster.New(cluster.Config{
		URL:          cfg.Redis.URL,
		Prefix:       cfg.Redis.KeyPrefix,
		Timeout:      time.Duration(cfg.Redis.Timeout),
		L1:           a.Store,
		FetchTimeout: fetchTimeout,
		Logger:       a.Logger,
		OnState: func(up bool) {
			if m != nil {
				m.RedisUp.Set(map[bool]float64{true: 1}[up])
			}
		},
	})
	return err
}

// newLive builds the push feed when live.enabled (docs/live.md): the
// fetch path then stores through the feed's wrapper and tells it of every
// request. Without it, the store and no request hook.
func (a *App) newLive(cfg *config.Config, routes *route.Table, signer *upstream.Signer) (cache.Store, func(*route.Route, string, time.Time), error) {
	if !cfg.Live.Enabled {
		return a.Store, nil, nil
	}
	u, err := cfg.WSURL()
	if err != nil {
		return nil, nil, fmt.Errorf("config: upstream.ws_url: %w", err)
	}
	var lm *metrics.LiveMetrics
	if a.Metrics != nil {
		lm = a.Metrics.EnableLive()
	}
	a.Live, err = live.New(live.Config{
		URL:        u.String(),
		Signer:     signer,
		Store:      a.Store,
		Routes:     routes,
		MaxMarkets: cfg.Live.MaxMarkets,
		MaxAge:     time.Duration(cfg.Live.MaxAge),
		Metrics:    lm,
		Logger:     a.Logger,
	})
	if err != nil {
		return nil, nil, err
	}
	return a.Live.Store(), a.Live.OnRequest, nil
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

// Close releases the App's resources and flushes the access log.
func (a *App) Close() {
	if a.WS != nil {
		a.WS.Close()
	}
	if a.Live != nil {
		a.Live.Close()
	}
	if a.Status != nil {
		a.Status.Close()
	}
	// Shared fetches nobody waits for any more may still be storing their
	// answers; give them the shutdown timeout, then leave the store open
	// for them (the process is ending anyway).
	done := make(chan struct{})
	go func() {
		a.Fetcher.Wait()
		close(done)
	}()
	select {
	case <-done:
		if a.Cluster != nil {
			a.Cluster.Close()
		}
		a.Store.Close()
	case <-time.After(time.Duration(a.Config.ShutdownTimeout)):
		a.Logger.Warn("shared fetches still running at exit")
	}
	if a.accessBuf != nil {
		a.accessBuf.Close()
	}
}
