// Package cluster makes several kproxy replicas act as one through Redis: a
// shared second cache tier, one upstream rate budget, cross-replica
// coalescing of misses and purges that reach every replica, while Redis
// failing or slowing down never stops a replica from serving.
//
// Every Redis call has a tight deadline (Config.Timeout) and passes a
// breaker: after a few consecutive failures, or when the health probe fails,
// Redis counts as down and the replica stops calling it on the request path
// (L1 and the upstream serve, with local coalescing and a local share of the
// rate budget) until the probe, run every HealthInterval, succeeds again.
//
// go-redis logs through one logger for the whole process; a Cluster
// routes those lines to its Config.Logger while it is open (redislog.go),
// so that a replica's every line has its log format.
//
// Keys (all under Config.Prefix). The version in a key names the format of
// its value, so that a replica reads a value of another format as a miss,
// never misreads it. Entries and one-off answers are cache records
// (cache/codec.go) since v2; the other values have kept their v1 format, so
// that during a rolling upgrade old and new replicas still share claims,
// purges, heartbeats and one rate budget (each reads only its own entries):
//
//	v2:e:<cache key>   an entry (a cache record), PX = fresh + longest stale window
//	v1:l:<cache key>   the claim of the replica fetching it, renewed while it fetches
//	v2:o:<token>       a claimed fetch's one-off answer (a cache record) or
//	                   failure (coalesce.go), kept 5s for its waiters
//	v1:epoch           purge counter (fencing: a fill claimed before a purge is not stored)
//	v1:rl:<kind>       GCRA state of a rate budget ("read", "write")
//	v1:hb              sorted set of live replicas (heartbeats)
//	v1:fill, v1:purge  pub/sub channels
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/logging"
)

// Config configures a Cluster.
type Config struct {
	// URL is redis://[user:pass@]host:port[/db] or rediss://...; required.
	URL string
	// Prefix starts every key; replicas sharing Redis and Prefix act as
	// one. Empty means "kproxy:".
	Prefix string
	// Timeout bounds one Redis call (dial, pool wait, read and write
	// included); 0 means 100ms.
	Timeout time.Duration
	// L1 is this replica's in-process cache; required.
	L1 *cache.Memory
	// FetchTimeout bounds a claimed upstream fetch and so a waiter's wait
	// for it; 0 means 30s.
	FetchTimeout time.Duration
	// LeaseTTL is how long a claim lives without renewal: a replica that
	// dies mid-fetch is replaced by a waiter within about this long. 0
	// means min(3s, FetchTimeout).
	LeaseTTL time.Duration
	// HealthInterval is the period of the health probe and heartbeat; 0
	// means 1s. Redis is marked down after two failed probes and up after
	// one good one.
	HealthInterval time.Duration
	// Backstop is how often a waiter re-checks a claim in case a pub/sub
	// message was lost; 0 means 250ms.
	Backstop time.Duration
	// OnState, if set, is called once per change of Redis's state (and
	// once at start) with true when it answers; it must not block.
	OnState func(up bool)
	// Logger receives the Cluster's own lines and go-redis's (see
	// redislog.go); nil discards them.
	Logger *slog.Logger
	// Now is this replica's clock: what counts as fresh or still retained
	// when an entry is read from L2 or claimed, and the repeat window of
	// go-redis's log lines. nil means time.Now. The shared budget runs on
	// Redis's own clock (TIME in the script), never this one.
	Now func() time.Time
}

// Cluster is one replica's link to the others. It is safe for concurrent
// use; Close releases it.
//
// Its work is split by concern, one file each: health.go (the breaker and
// the heartbeat that probes Redis), pubsub.go (the subscription to fill and
// purge messages), purge.go (the purge epoch that fences L1 and L2),
// waiters.go (local waiters for another replica's fetch), coalesce.go
// (claims), store.go (the two-tier store), limiter.go (the shared budget).
type Cluster struct {
	rdb      *redis.Client
	prefix   string
	timeout  time.Duration
	l1       *cache.Memory
	fetchTO  time.Duration
	leaseTTL time.Duration
	interval time.Duration
	backstop time.Duration
	onState  func(bool)
	log      *slog.Logger
	now      func() time.Time
	id       string

	keyEpoch, keyHB, chFill, chPurge string

	// Breaker (health.go). up is read without a lock on every request:
	// while false no request-path call goes to Redis. smu serializes the
	// changes of up and guards known (a state was reported).
	up    atomic.Bool
	smu   sync.Mutex
	known bool
	fails atomic.Int32 // consecutive request-path failures

	// epoch is the L1 fence (fetch.Shared.Epoch): it moves on every L1
	// purge or flush.
	epoch atomic.Uint64

	// Purge epoch (purge.go). mu guards seen and lagging: seen is the
	// Redis purge epoch this replica's L1 is consistent with (-1: never
	// synced); lagging records a heartbeat that saw a later one without
	// the purge message arriving.
	mu      sync.Mutex
	seen    int64
	lagging bool

	alive atomic.Int64 // replicas alive at the last heartbeat (>= 1)

	lookups singleflight.Group

	// Waiters (waiters.go). wmu guards waiters: per key, the channels of
	// this replica's Acquire calls waiting for another replica's fill.
	wmu     sync.Mutex
	waiters map[string]map[chan string]struct{}

	// Budgets (limiter.go). lmu guards limiters, the shared budgets whose
	// local fallback rate follows the number of replicas alive.
	lmu      sync.Mutex
	limiters []*limiter

	// Lifecycle (cluster.go). quit is closed by Close. lifeMu guards
	// closed and every done.Add, so that no goroutine starts once Close
	// waits on done: the health loop, the listener and every claim's lease
	// renewal run under done. psMu guards ps, the current subscription,
	// which Close closes to unblock listen.
	cancel    context.CancelFunc
	quit      <-chan struct{}
	lifeMu    sync.Mutex
	closed    bool
	done      sync.WaitGroup
	closeOnce sync.Once
	psMu      sync.Mutex
	ps        *redis.PubSub

	redisLog *logging.Printf // go-redis's lines, while this Cluster is open
}

// New connects to Redis (without failing when it is down: the Cluster then
// starts in the down state and reconnects by itself) and starts the health
// probe, heartbeat and pub/sub listener. It routes go-redis's log lines to
// cfg.Logger until Close (redislog.go).
func New(cfg Config) (*Cluster, error) {
	if cfg.L1 == nil {
		return nil, errors.New("cluster: L1 store required")
	}
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("cluster: redis url: %w", err)
	}
	c := &Cluster{
		prefix:   cfg.Prefix,
		timeout:  cfg.Timeout,
		l1:       cfg.L1,
		fetchTO:  cfg.FetchTimeout,
		leaseTTL: cfg.LeaseTTL,
		interval: cfg.HealthInterval,
		backstop: cfg.Backstop,
		onState:  cfg.OnState,
		log:      cfg.Logger,
		now:      cfg.Now,
		id:       fmt.Sprintf("%016x", rand.Uint64()),
		seen:     -1,
		waiters:  map[string]map[chan string]struct{}{},
	}
	if c.prefix == "" {
		c.prefix = "kproxy:"
	}
	if c.timeout <= 0 {
		c.timeout = 100 * time.Millisecond
	}
	if c.fetchTO <= 0 {
		c.fetchTO = 30 * time.Second
	}
	if c.leaseTTL <= 0 {
		c.leaseTTL = min(3*time.Second, c.fetchTO)
	}
	if c.interval <= 0 {
		c.interval = time.Second
	}
	if c.backstop <= 0 {
		c.backstop = 250 * time.Millisecond
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.alive.Store(1)
	// Tight deadlines everywhere and no retries: a slow Redis is a down
	// Redis for that request, and the breaker takes it out of the path.
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = c.timeout, c.timeout, c.timeout, c.timeout
	opt.ContextTimeoutEnabled = true
	opt.MaxRetries = -1
	opt.DialerRetries = 1
	opt.DisableIdentity = true
	opt.Protocol = 2
	c.redisLog = logging.NewPrintf(logging.PrintfConfig{
		Logger: c.log.With("component", "redis"), Level: slog.LevelWarn, Now: c.now, Prefix: "redis: ",
	})
	redisLogs.push(c.redisLog)
	c.rdb = redis.NewClient(opt)
	v := stateVersion + ":"
	c.keyEpoch, c.keyHB = c.prefix+v+"epoch", c.prefix+v+"hb"
	c.chFill, c.chPurge = c.prefix+v+"fill", c.prefix+v+"purge"

	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.quit = cancel, ctx.Done()
	// A first probe now, so that a replica starting beside a healthy Redis
	// is up (and synced to the purge epoch) before it serves.
	if c.beat(ctx, false) == nil {
		c.setState(true, nil)
	} else {
		c.setState(false, errors.New("not reachable at start"))
	}
	subscribed := make(chan struct{})
	c.spawn(func() { c.healthLoop(ctx) })
	c.spawn(func() { c.listen(ctx, subscribed) })
	if c.up.Load() {
		select {
		case <-subscribed:
		case <-time.After(2 * c.timeout):
		}
	}
	return c, nil
}

// Close stops every goroutine the Cluster started (the health loop, the
// pub/sub listener, the lease renewal of claims still held) and waits for
// them, removes this replica's heartbeat, closes the connections and stops
// routing go-redis's log lines to Config.Logger. Claims still held after
// Close end at Done, which then fails quietly; Lookup, Acquire and the
// Store keep answering, as with Redis down. Calling Close again, or
// concurrently, does nothing more (every call returns once the first is
// done). go-redis's own dial prober may outlive Close by up to a second
// (it checks for a closed pool between its one-second sleeps).
func (c *Cluster) Close() {
	c.closeOnce.Do(func() {
		c.lifeMu.Lock()
		c.closed = true
		c.lifeMu.Unlock()
		c.cancel()
		c.psMu.Lock()
		if c.ps != nil {
			c.ps.Close()
		}
		c.psMu.Unlock()
		c.done.Wait()
		if c.up.Load() {
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			heartbeatScript.Run(ctx, c.rdb, []string{c.keyHB, c.keyEpoch}, c.id, c.hbWindow().Milliseconds(), "1")
			cancel()
		}
		c.rdb.Close()
		redisLogs.remove(c.redisLog)
	})
}

// spawn runs f in a goroutine Close waits for; once Close has begun it
// runs nothing and reports false.
func (c *Cluster) spawn(f func()) bool {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed {
		return false
	}
	c.done.Go(f)
	return true
}

// Up reports whether Redis answers (the breaker is closed).
func (c *Cluster) Up() bool { return c.up.Load() }

// State is "up" or "down", for /readyz.
func (c *Cluster) State() string {
	if c.up.Load() {
		return "up"
	}
	return "down"
}

// Alive is how many replicas sent a heartbeat lately (at least 1).
func (c *Cluster) Alive() int { return int(c.alive.Load()) }

// Epoch implements fetch.Shared.
func (c *Cluster) Epoch() uint64 { return c.epoch.Load() }

// Client is the underlying Redis client (tests, diagnostics).
func (c *Cluster) Client() *redis.Client { return c.rdb }

// Key versions (see the package doc): recordVersion for the keys whose
// value is a cache record, previousRecordVersion for the entries of the
// release before (a purge removes them too), stateVersion for the other
// keys. Bump recordVersion (and previousRecordVersion) with the record
// format (cache/codec.go).
const (
	recordVersion         = "v2"
	previousRecordVersion = "v1"
	stateVersion          = "v1"
)

// key is the Redis key of kind ("e", "l", "o", "rl") for k.
func (c *Cluster) key(kind, k string) string {
	v := stateVersion
	if kind == "e" || kind == "o" {
		v = recordVersion
	}
	return c.prefix + v + ":" + kind + ":" + k
}

// call is the context of one Redis call.
func (c *Cluster) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

// get reads the value at key, reporting the outcome to the breaker
// (redis.Nil when there is none).
func (c *Cluster) get(key string) ([]byte, error) {
	ctx, cancel := c.call()
	defer cancel()
	b, err := c.rdb.Get(ctx, key).Bytes()
	c.report(err)
	return b, err
}
