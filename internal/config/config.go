// Package config loads kproxy's settings: built-in defaults, then the YAML
// file, then KPROXY_* environment variables, then command-line flags, and
// validates the result with errors that name the key and the bad value.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kproxy/kproxy/internal/route"
)

// Config is kproxy's whole configuration. Field comments give the zero
// value's meaning where Default does not set one.
type Config struct {
	Listen          string   `yaml:"listen"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// DrainDelay is how long readiness answers 503 while kproxy still
	// serves, after SIGTERM and before the listener closes; 0: none.
	DrainDelay Duration `yaml:"drain_delay"`
	Log        Log      `yaml:"log"`
	Upstream   Upstream `yaml:"upstream"`
	Breaker    Breaker  `yaml:"breaker"`
	Cache      Cache    `yaml:"cache"`
	Batch      Batch    `yaml:"batch"`
	Admin      Admin    `yaml:"admin"`
	Redis      Redis    `yaml:"redis"`
	Live       Live     `yaml:"live"`
	Compat     Compat   `yaml:"compat"`
	Status     Status   `yaml:"status"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error
	Format string `yaml:"format"` // json|text
	// Access turns the per-request access log on or off.
	Access bool `yaml:"access"`
}

// Upstream configures the Kalshi side.
type Upstream struct {
	URL        string   `yaml:"url"`
	Timeout    Duration `yaml:"timeout"`     // per attempt, until response headers
	MaxRetries int      `yaml:"max_retries"` // GETs only
	Tier       string   `yaml:"tier"`        // basic|advanced|premier|paragon|prime
	// ReadRate and WriteRate are requests/s; nil takes the tier's rate.
	ReadRate       *float64 `yaml:"read_rate"`
	WriteRate      *float64 `yaml:"write_rate"`
	MaxWait        Duration `yaml:"max_wait"`
	APIKeyID       string   `yaml:"api_key_id"`
	PrivateKeyFile string   `yaml:"private_key_file"`
	// WSURL is where WebSocket traffic goes; empty: derived from URL (see
	// Config.WSURL).
	WSURL string `yaml:"ws_url"`
	// FairShare serves clients (a KALSHI-ACCESS-KEY, else an address) in
	// turn while several wait for rate-limit tokens, so one client's flood
	// of misses cannot take the whole budget; false: first come, first
	// served. Default true.
	FairShare bool `yaml:"fair_share"`
	// FairMaxQueue bounds how many requests one client may have waiting
	// for a token per bucket when fair_share is on; more get 429 at once.
	// 0: no bound beyond max_wait. Default 1000.
	FairMaxQueue int `yaml:"fair_max_queue"`
	// Offline: kproxy never contacts Kalshi and answers public GETs from
	// memory and disk only. Default false. It cannot be combined with
	// live.enabled (the feed needs the upstream).
	Offline bool `yaml:"offline"`
}

// Breaker configures the circuit breaker around the upstream.
type Breaker struct {
	ConsecutiveFailures uint32   `yaml:"consecutive_failures"`
	OpenTimeout         Duration `yaml:"open_timeout"`
	HalfOpenRequests    uint32   `yaml:"half_open_requests"`
}

// Cache configures the in-memory cache.
type Cache struct {
	MaxBytes    Size     `yaml:"max_bytes"`
	NegativeTTL Duration `yaml:"negative_ttl"` // 0: 404s are not stored
	// StaleWait is the longest a request holding a stale copy waits on a
	// slow upstream before it is answered STALE; 0: wait for the fetch.
	StaleWait Duration `yaml:"stale_wait"`
	// Defaults are the stale windows of every route that sets none of its
	// own.
	Defaults Windows `yaml:"defaults"`
	// Routes is the whole public set; Default has the built-in list.
	Routes []Route `yaml:"routes"`
	// Overrides change chosen routes of Routes, matched by pattern,
	// without restating the list. A pattern not in Routes is an error.
	Overrides []Override `yaml:"overrides,omitempty"`
	// Disk is the history tier, an on-disk store below the memory cache.
	Disk Disk `yaml:"disk"`
}

// Disk configures the history tier.
type Disk struct {
	// Path is the store's directory; "" (or "off", which the environment
	// needs because an empty variable counts as unset): no disk tier.
	// Default: the user cache directory + "/kproxy" (DefaultDiskPath),
	// or "" when there is no user cache directory.
	Path string `yaml:"path"`
	// MaxBytes bounds the store (least recently used out first); must be
	// positive while Path is set. Default 1GiB.
	MaxBytes Size `yaml:"max_bytes"`
}

// DiskOff is the value of cache.disk.path that turns the disk tier off
// where an empty value cannot be given (an empty variable counts as
// unset). A directory named off is written ./off.
const DiskOff = "off"

// DefaultDiskPath is the built-in cache.disk.path: the user cache
// directory (os.UserCacheDir) + "/kproxy"; the error says why there is
// none (then the disk tier is off by default).
func DefaultDiskPath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "kproxy"), nil
}

// Windows are default stale windows; nil: the built-in default
// (stale_while_revalidate: DefaultStaleWhileRevalidate on routes that move
// with trading, else the route's ttl; stale_if_error: DefaultStaleIfError).
type Windows struct {
	StaleWhileRevalidate *Duration `yaml:"stale_while_revalidate,omitempty"`
	StaleIfError         *Duration `yaml:"stale_if_error,omitempty"`
}

// Override changes the fields it sets of the route with its pattern; nil
// fields keep the route's value.
type Override struct {
	Pattern              string    `yaml:"pattern"`
	TTL                  *Duration `yaml:"ttl"`
	StaleWhileRevalidate *Duration `yaml:"stale_while_revalidate"`
	StaleIfError         *Duration `yaml:"stale_if_error"`
	LegacyFields         *bool     `yaml:"legacy_fields"`
}

// Route is one cacheable route. A nil stale window takes cache.defaults,
// else the built-in default (see Windows); a set one, 0 included, is
// obeyed exactly.
type Route struct {
	Pattern              string    `yaml:"pattern"`
	TTL                  Duration  `yaml:"ttl"`
	StaleWhileRevalidate *Duration `yaml:"stale_while_revalidate"`
	StaleIfError         *Duration `yaml:"stale_if_error"`
	// LegacyFields overrides compat.legacy_fields for this route; nil: the
	// global setting.
	LegacyFields *bool `yaml:"legacy_fields"`
}

// Batch configures the batch endpoints.
type Batch struct {
	MaxItems    int      `yaml:"max_items"`
	Concurrency int      `yaml:"concurrency"`
	MaxPages    int      `yaml:"max_pages"`
	AutoWindow  Duration `yaml:"auto_window"` // 0: automatic batching off
}

// Admin configures the admin routes.
type Admin struct {
	Token string `yaml:"token"` // empty: admin routes answer 404
}

// Redis configures the shared tier (several replicas on one Redis).
type Redis struct {
	// URL is redis://[user:pass@]host:port[/db] or rediss://...; empty:
	// single-process cache only.
	URL string `yaml:"url"`
	// KeyPrefix starts every Redis key kproxy writes; replicas sharing it
	// act as one.
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds one Redis call; slower counts as Redis unavailable
	// for that request.
	Timeout Duration `yaml:"timeout"`
}

// Live configures push freshness from Kalshi's WebSocket feed.
type Live struct {
	// Enabled needs upstream.api_key_id and private_key_file.
	Enabled bool `yaml:"enabled"`
	// MaxMarkets bounds the hot set subscribed on the ticker channel.
	MaxMarkets int `yaml:"max_markets"`
	// MaxAge is the longest a pushed-fresh market entry is served without
	// a REST refetch.
	MaxAge Duration `yaml:"max_age"`
}

// Compat configures compatibility shims for old scripts.
type Compat struct {
	// LegacyFields adds back the integer fields Kalshi removed in March
	// 2026 to market objects, order books and trades.
	LegacyFields bool `yaml:"legacy_fields"`
}

// Status configures the status page (/status, /status.json).
type Status struct {
	Enabled bool `yaml:"enabled"`
}

// DefaultStaleIfError is the stale_if_error of a route that names none.
const DefaultStaleIfError = 10 * time.Minute

// DefaultStaleWhileRevalidate is the stale_while_revalidate of a route
// whose data moves with trading (MovesWithTrading) that names none (nor
// cache.defaults). It keeps the freshness promise: while the upstream
// answers, no such answer is served more than 1s past its route's ttl.
// Other routes (metadata) default to their ttl.
const DefaultStaleWhileRevalidate = time.Second

// MovesWithTrading reports whether the data of a route pattern changes
// with trading: everything under markets, events and live_data,
// candlesticks, and exchange/status, except historical routes. Those
// routes' stale_while_revalidate defaults to DefaultStaleWhileRevalidate.
func MovesWithTrading(pattern string) bool {
	p, ok := strings.CutPrefix(pattern, route.Prefix)
	if !ok || strings.HasPrefix(p, "historical/") {
		return false
	}
	first, _, _ := strings.Cut(p, "/")
	switch {
	case first == "markets", first == "events", first == "live_data", p == "exchange/status":
		return true
	}
	return strings.HasSuffix(p, "/candlesticks")
}

// Tiers maps Kalshi's published usage tiers to read and write requests/s
// (token budgets at the default cost of 10 tokens a request).
var Tiers = map[string][2]float64{
	"basic":    {20, 10},
	"advanced": {30, 30},
	"premier":  {100, 100},
	"paragon":  {200, 200},
	"prime":    {400, 400},
}

// Default returns the built-in configuration.
// It reads the user cache directory from the process environment for the
// default cache.disk.path.
func Default() *Config {
	diskPath, _ := DefaultDiskPath()
	return &Config{
		Listen:          ":8080",
		ShutdownTimeout: Duration(10 * time.Second),
		Log:             Log{Level: "info", Format: "json", Access: true},
		Upstream: Upstream{
			URL:          "https://external-api.kalshi.com",
			Timeout:      Duration(10 * time.Second),
			MaxRetries:   2,
			Tier:         "basic",
			MaxWait:      Duration(5 * time.Second),
			FairShare:    true,
			FairMaxQueue: 1000,
		},
		Breaker: Breaker{ConsecutiveFailures: 5, OpenTimeout: Duration(10 * time.Second), HalfOpenRequests: 1},
		Cache: Cache{
			MaxBytes: 256 << 20, StaleWait: Duration(500 * time.Millisecond), Routes: DefaultRoutes(),
			Disk: Disk{Path: diskPath, MaxBytes: 1 << 30},
		},
		Batch:  Batch{MaxItems: 100, Concurrency: 16, MaxPages: 50, AutoWindow: Duration(2 * time.Millisecond)},
		Redis:  Redis{KeyPrefix: "kproxy:", Timeout: Duration(100 * time.Millisecond)},
		Live:   Live{MaxMarkets: 1000, MaxAge: Duration(time.Minute)},
		Status: Status{Enabled: true},
	}
}

// DefaultRoutes is the built-in public route list: every public GET route of
// Kalshi's Trade API v2, with a TTL that fits how fast its data changes.
func DefaultRoutes() []Route {
	const p = route.Prefix
	s, m, h := time.Second, time.Minute, time.Hour
	r := func(pattern string, ttl time.Duration) Route {
		return Route{Pattern: p + pattern, TTL: Duration(ttl)}
	}
	return []Route{
		r("markets", 2*s),
		r("markets/{ticker}", 2*s),
		r("markets/{ticker}/orderbook", 1*s),
		r("markets/orderbooks", 1*s),
		r("markets/trades", 2*s),
		r("markets/candlesticks", 30*s),
		r("series/{series_ticker}/markets/{ticker}/candlesticks", 30*s),
		r("series/{series_ticker}/events/{ticker}/candlesticks", 30*s),
		r("events", 5*s),
		r("events/{event_ticker}", 5*s),
		r("events/{event_ticker}/metadata", 10*m),
		r("events/multivariate", 10*s),
		r("events/fee_changes", 10*m),
		r("series", 10*m),
		r("series/{series_ticker}", 10*m),
		r("series/fee_changes", 10*m),
		r("milestones", 1*m),
		r("milestones/{milestone_id}", 1*m),
		r("structured_targets", 10*m),
		r("structured_targets/{structured_target_id}", 10*m),
		r("multivariate_event_collections", 1*m),
		r("multivariate_event_collections/{collection_ticker}", 1*m),
		r("exchange/status", 2*s),
		r("exchange/schedule", 10*m),
		r("exchange/announcements", 1*m),
		r("historical/cutoff", 1*m),
		r("historical/markets", 1*h),
		r("historical/markets/{ticker}", 1*h),
		r("historical/markets/{ticker}/candlesticks", 1*h),
		r("historical/trades", 1*h),
		r("live_data/batch", 2*s),
		r("live_data/events/{event_ticker}", 2*s),
		r("live_data/milestone/{milestone_id}", 2*s),
		r("live_data/milestone/{milestone_id}/game_stats", 2*s),
		r("live_data/{type}/milestone/{milestone_id}", 2*s),
		r("live_data/weather/{city}", 1*m),
		r("live_data/weather/{city}/calibrations", 10*m),
		r("search/tags_by_categories", 10*m),
		r("search/filters_by_sport", 10*m),
		r("incentive_programs", 5*m),
	}
}

// Effective returns the routes as kproxy uses them: Routes with Overrides
// merged in by pattern (an override whose pattern is not in Routes is
// skipped here; Validate reports it).
func (c *Cache) Effective() []Route {
	out := slices.Clone(c.Routes)
	for _, o := range c.Overrides {
		i := slices.IndexFunc(out, func(r Route) bool { return r.Pattern == o.Pattern })
		if i < 0 {
			continue
		}
		r := &out[i]
		if o.TTL != nil {
			r.TTL = *o.TTL
		}
		if o.StaleWhileRevalidate != nil {
			r.StaleWhileRevalidate = o.StaleWhileRevalidate
		}
		if o.StaleIfError != nil {
			r.StaleIfError = o.StaleIfError
		}
		if o.LegacyFields != nil {
			r.LegacyFields = o.LegacyFields
		}
	}
	return out
}

// Specs converts the effective routes to route specs, filling in the stale
// windows a route does not set from Defaults, then the built-in defaults.
// legacy is compat.legacy_fields, the default of a route's LegacyFields.
func (c *Cache) Specs(legacy bool) []route.Spec {
	routes := c.Effective()
	out := make([]route.Spec, len(routes))
	for i, r := range routes {
		lf := legacy
		if r.LegacyFields != nil {
			lf = *r.LegacyFields
		}
		swr, sie := time.Duration(r.TTL), DefaultStaleIfError
		if MovesWithTrading(r.Pattern) {
			swr = DefaultStaleWhileRevalidate
		}
		if d := c.Defaults.StaleWhileRevalidate; d != nil {
			swr = time.Duration(*d)
		}
		if d := c.Defaults.StaleIfError; d != nil {
			sie = time.Duration(*d)
		}
		if r.StaleWhileRevalidate != nil {
			swr = time.Duration(*r.StaleWhileRevalidate)
		}
		if r.StaleIfError != nil {
			sie = time.Duration(*r.StaleIfError)
		}
		out[i] = route.Spec{Pattern: r.Pattern, Policy: route.Policy{
			TTL: time.Duration(r.TTL), StaleWhileRevalidate: swr, StaleIfError: sie, LegacyFields: lf,
		}}
	}
	return out
}

// Rates returns the effective read and write rates (requests/s).
func (u *Upstream) Rates() (read, write float64) {
	t := Tiers[u.Tier]
	read, write = t[0], t[1]
	if u.ReadRate != nil {
		read = *u.ReadRate
	}
	if u.WriteRate != nil {
		write = *u.WriteRate
	}
	return read, write
}

// UpstreamURL returns the parsed upstream origin (scheme and host; a
// trailing /trade-api/v2 in the configured URL is tolerated and dropped).
func (c *Config) UpstreamURL() (*url.URL, error) {
	u, err := parseServerURL(c.Upstream.URL, "http", "scheme://host[:port]")
	if err != nil {
		return nil, err
	}
	switch strings.TrimSuffix(u.Path, "/") {
	case "", strings.TrimSuffix(route.Prefix, "/"):
	default:
		return nil, errors.New("must not have a path other than /trade-api/v2")
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// parseServerURL parses raw, the URL of a server: its scheme must be scheme
// or its secure form (scheme+"s"), it must have a host, and it must have no
// user, query or fragment (form, in the error, says what it may be).
func parseServerURL(raw, scheme, form string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != scheme && u.Scheme != scheme+"s" {
		return nil, fmt.Errorf("scheme must be %s or %ss", scheme, scheme)
	}
	if u.Host == "" {
		return nil, errors.New("no host")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("must be %s only", form)
	}
	return u, nil
}

// KeyError is a configuration error naming the key and the bad value.
type KeyError struct {
	Key   string
	Value string
	Err   error
}

func (e *KeyError) Error() string {
	if errors.Is(e.Err, ErrUnknownKey) || errors.Is(e.Err, ErrUnknownVariable) {
		return "config: " + e.Err.Error() // it names the key itself
	}
	if e.Value == "" {
		return fmt.Sprintf("config: %s: %v", e.Key, e.Err)
	}
	return fmt.Sprintf("config: %s: %q: %v", e.Key, e.Value, e.Err)
}

func (e *KeyError) Unwrap() error { return e.Err }

func keyErr(key string, value any, format string, args ...any) error {
	return &KeyError{Key: key, Value: fmt.Sprint(value), Err: fmt.Errorf(format, args...)}
}

// Validate checks every key and reports the first bad one.
func (c *Config) Validate() error {
	if c.Listen == "" {
		return keyErr("listen", "", "must not be empty")
	}
	if c.ShutdownTimeout < 0 {
		return keyErr("shutdown_timeout", c.ShutdownTimeout, "must not be negative")
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		return keyErr("log.level", c.Log.Level, "must be debug, info, warn or error")
	}
	switch strings.ToLower(c.Log.Format) {
	case "json", "text":
	default:
		return keyErr("log.format", c.Log.Format, "must be json or text")
	}
	if _, err := c.UpstreamURL(); err != nil {
		return keyErr("upstream.url", c.Upstream.URL, "%v", err)
	}
	if c.Upstream.Timeout <= 0 {
		return keyErr("upstream.timeout", c.Upstream.Timeout, "must be positive")
	}
	if c.Upstream.MaxRetries < 0 || c.Upstream.MaxRetries > 10 {
		return keyErr("upstream.max_retries", c.Upstream.MaxRetries, "must be between 0 and 10")
	}
	if _, ok := Tiers[c.Upstream.Tier]; !ok {
		return keyErr("upstream.tier", c.Upstream.Tier, "must be basic, advanced, premier, paragon or prime")
	}
	if r := c.Upstream.ReadRate; r != nil && *r <= 0 {
		return keyErr("upstream.read_rate", *r, "must be positive")
	}
	if r := c.Upstream.WriteRate; r != nil && *r <= 0 {
		return keyErr("upstream.write_rate", *r, "must be positive")
	}
	if c.Upstream.MaxWait < 0 {
		return keyErr("upstream.max_wait", c.Upstream.MaxWait, "must not be negative")
	}
	if c.Upstream.FairMaxQueue < 0 {
		return keyErr("upstream.fair_max_queue", c.Upstream.FairMaxQueue, "must not be negative")
	}
	if (c.Upstream.APIKeyID == "") != (c.Upstream.PrivateKeyFile == "") {
		return keyErr("upstream.private_key_file", c.Upstream.PrivateKeyFile, "api_key_id and private_key_file must be set together")
	}
	if c.Breaker.ConsecutiveFailures == 0 {
		return keyErr("breaker.consecutive_failures", 0, "must be at least 1")
	}
	if c.Breaker.OpenTimeout <= 0 {
		return keyErr("breaker.open_timeout", c.Breaker.OpenTimeout, "must be positive")
	}
	if c.Breaker.HalfOpenRequests == 0 {
		return keyErr("breaker.half_open_requests", 0, "must be at least 1")
	}
	if c.Cache.MaxBytes <= 0 {
		return keyErr("cache.max_bytes", c.Cache.MaxBytes, "must be positive")
	}
	if c.Cache.NegativeTTL < 0 {
		return keyErr("cache.negative_ttl", c.Cache.NegativeTTL, "must not be negative")
	}
	for i, r := range c.Cache.Routes {
		k := fmt.Sprintf("cache.routes[%d]", i)
		if r.TTL <= 0 {
			return keyErr(k+".ttl", r.TTL, "must be positive")
		}
		if r.StaleWhileRevalidate != nil && *r.StaleWhileRevalidate < 0 {
			return keyErr(k+".stale_while_revalidate", *r.StaleWhileRevalidate, "must not be negative")
		}
		if r.StaleIfError != nil && *r.StaleIfError < 0 {
			return keyErr(k+".stale_if_error", *r.StaleIfError, "must not be negative")
		}
	}
	for _, w := range []struct {
		key string
		d   *Duration
	}{
		{"cache.defaults.stale_while_revalidate", c.Cache.Defaults.StaleWhileRevalidate},
		{"cache.defaults.stale_if_error", c.Cache.Defaults.StaleIfError},
	} {
		if w.d != nil && *w.d < 0 {
			return keyErr(w.key, *w.d, "must not be negative")
		}
	}
	for i, o := range c.Cache.Overrides {
		k := fmt.Sprintf("cache.overrides[%d]", i)
		if !slices.ContainsFunc(c.Cache.Routes, func(r Route) bool { return r.Pattern == o.Pattern }) {
			return keyErr(k+".pattern", o.Pattern, "no route has this pattern (kproxy check-config lists them; to add a route, list it in cache.routes)")
		}
		if o.TTL != nil && *o.TTL <= 0 {
			return keyErr(k+".ttl", *o.TTL, "must be positive")
		}
		if o.StaleWhileRevalidate != nil && *o.StaleWhileRevalidate < 0 {
			return keyErr(k+".stale_while_revalidate", *o.StaleWhileRevalidate, "must not be negative")
		}
		if o.StaleIfError != nil && *o.StaleIfError < 0 {
			return keyErr(k+".stale_if_error", *o.StaleIfError, "must not be negative")
		}
	}
	if _, err := route.NewTable(c.Cache.Specs(c.Compat.LegacyFields)); err != nil {
		return &KeyError{Key: "cache.routes", Err: err}
	}
	if c.Batch.MaxItems < 1 {
		return keyErr("batch.max_items", c.Batch.MaxItems, "must be at least 1")
	}
	if c.Batch.Concurrency < 1 {
		return keyErr("batch.concurrency", c.Batch.Concurrency, "must be at least 1")
	}
	if c.Batch.MaxPages < 1 {
		return keyErr("batch.max_pages", c.Batch.MaxPages, "must be at least 1")
	}
	if c.Batch.AutoWindow < 0 || c.Batch.AutoWindow > Duration(time.Second) {
		return keyErr("batch.auto_window", c.Batch.AutoWindow, "must be between 0 and 1s")
	}
	if c.DrainDelay < 0 {
		return keyErr("drain_delay", c.DrainDelay, "must not be negative")
	}
	if c.Cache.StaleWait < 0 {
		return keyErr("cache.stale_wait", c.Cache.StaleWait, "must not be negative")
	}
	if c.Upstream.WSURL != "" {
		if _, err := c.WSURL(); err != nil {
			return keyErr("upstream.ws_url", c.Upstream.WSURL, "%v", err)
		}
	}
	if c.Redis.URL != "" {
		if err := checkRedisURL(c.Redis.URL); err != nil {
			return keyErr("redis.url", redactURL(c.Redis.URL), "%v", err)
		}
	}
	if c.Redis.KeyPrefix == "" {
		return keyErr("redis.key_prefix", "", "must not be empty")
	}
	if c.Redis.Timeout <= 0 {
		return keyErr("redis.timeout", c.Redis.Timeout, "must be positive")
	}
	if c.Live.MaxMarkets <= 0 {
		return keyErr("live.max_markets", c.Live.MaxMarkets, "must be positive")
	}
	if c.Live.MaxAge <= 0 {
		return keyErr("live.max_age", c.Live.MaxAge, "must be positive")
	}
	if c.Cache.Disk.Path != "" && c.Cache.Disk.MaxBytes <= 0 {
		return keyErr("cache.disk.max_bytes", c.Cache.Disk.MaxBytes, "must be positive while cache.disk.path is set (\"\" turns the disk tier off)")
	}
	if c.Upstream.Offline && c.Live.Enabled {
		return keyErr("upstream.offline", true, "live.enabled needs the upstream: turn off upstream.offline or live.enabled")
	}
	if c.Live.Enabled && c.Upstream.APIKeyID == "" {
		return keyErr("live.enabled", true, "needs kproxy's own key: set upstream.api_key_id and upstream.private_key_file")
	}
	return nil
}

// WSURL returns where WebSocket traffic goes: upstream.ws_url when set,
// else derived from upstream.url (Kalshi's production and demo hosts map to
// their WebSocket hosts; any other http(s)://H to ws(s)://H/trade-api/ws/v2).
func (c *Config) WSURL() (*url.URL, error) {
	if c.Upstream.WSURL != "" {
		u, err := parseServerURL(c.Upstream.WSURL, "ws", "ws(s)://host[:port][/path]")
		if err != nil {
			return nil, err
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = WSPath
		}
		return u, nil
	}
	origin, err := c.UpstreamURL()
	if err != nil {
		return nil, err
	}
	scheme := "wss"
	if origin.Scheme == "http" {
		scheme = "ws"
	}
	host := origin.Host
	switch host {
	case "external-api.kalshi.com":
		host = "external-api-ws.kalshi.com"
	case "external-api.demo.kalshi.co":
		host = "external-api-ws.demo.kalshi.co"
	}
	return &url.URL{Scheme: scheme, Host: host, Path: WSPath}, nil
}

// WSPath is the path of Kalshi's WebSocket API.
const WSPath = "/trade-api/ws/v2"

func checkRedisURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return errors.New("scheme must be redis or rediss")
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	return nil
}

// redactURL hides a password in a URL shown in an error.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
