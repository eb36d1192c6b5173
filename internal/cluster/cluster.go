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
// Keys (all under Config.Prefix; the format version is part of every key so
// that an upgrade reads old entries as misses, never misreads them):
//
//	v1:e:<cache key>   an entry (codec.go), PX = fresh + longest stale window
//	v1:l:<cache key>   the claim of the replica fetching it, renewed while it fetches
//	v1:o:<token>       a claimed fetch's failure or one-off answer, kept 5s for its waiters
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
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/kproxy/kproxy/cache"
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
	// Logger may be nil.
	Logger *slog.Logger
	// Now is the clock for entry freshness; nil means time.Now.
	Now func() time.Time
}

// Cluster is one replica's link to the others. It is safe for concurrent
// use; Close releases it.
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

	// up is the breaker: while false no request-path call goes to Redis.
	// smu serializes its changes (known: a state was reported).
	up    atomic.Bool
	smu   sync.Mutex
	known bool
	fails atomic.Int32 // consecutive request-path failures

	// epoch is the L1 fence (fetch.Shared.Epoch): it moves on every L1
	// purge or flush.
	epoch atomic.Uint64

	// mu guards seen and lagging: seen is the Redis purge epoch this
	// replica's L1 is consistent with (-1: never synced); lagging records a
	// heartbeat that saw a later one without the purge message arriving.
	mu      sync.Mutex
	seen    int64
	lagging bool

	alive atomic.Int64 // replicas alive at the last heartbeat (>= 1)

	lookups singleflight.Group

	wmu     sync.Mutex
	waiters map[string]map[chan string]struct{}

	lmu      sync.Mutex
	limiters []*limiter

	cancel context.CancelFunc
	done   sync.WaitGroup
	psMu   sync.Mutex
	ps     *redis.PubSub // the current subscription, closed by Close to unblock listen
}

// New connects to Redis (without failing when it is down: the Cluster then
// starts in the down state and reconnects by itself) and starts the health
// probe, heartbeat and pub/sub listener.
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
	c.rdb = redis.NewClient(opt)
	v := versionLabel + ":"
	c.keyEpoch, c.keyHB = c.prefix+v+"epoch", c.prefix+v+"hb"
	c.chFill, c.chPurge = c.prefix+v+"fill", c.prefix+v+"purge"

	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	// A first probe now, so that a replica starting beside a healthy Redis
	// is up (and synced to the purge epoch) before it serves.
	if c.beat(ctx, false) == nil {
		c.setState(true, nil)
	} else {
		c.setState(false, errors.New("not reachable at start"))
	}
	subscribed := make(chan struct{})
	c.done.Add(2)
	go c.healthLoop(ctx)
	go c.listen(ctx, subscribed)
	if c.up.Load() {
		select {
		case <-subscribed:
		case <-time.After(2 * c.timeout):
		}
	}
	return c, nil
}

// Close stops the background work, removes this replica's heartbeat and
// closes the connections.
func (c *Cluster) Close() {
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

func (c *Cluster) key(kind, k string) string { return c.prefix + versionLabel + ":" + kind + ":" + k }

// call is the context of one Redis call.
func (c *Cluster) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

// report feeds one request-path call's outcome to the breaker: five
// consecutive failures mark Redis down until the health probe succeeds.
func (c *Cluster) report(err error) {
	if err == nil || errors.Is(err, redis.Nil) {
		c.fails.Store(0)
		return
	}
	if c.fails.Add(1) >= 5 {
		c.setState(false, err)
	}
}

// setState opens (up false) or closes the breaker; only a change is logged
// and reported, once.
func (c *Cluster) setState(up bool, err error) {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.known && c.up.Load() == up {
		return
	}
	c.known = true
	c.up.Store(up)
	if up {
		c.fails.Store(0)
		c.log.Info("redis up", "replicas", c.alive.Load())
	} else {
		c.log.Warn("redis down: serving from the local cache and the upstream with a local share of the rate budget", "err", errString(err))
	}
	c.updateRates()
	if c.onState != nil {
		c.onState(up)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (c *Cluster) hbWindow() time.Duration { return 3 * c.interval }

// beat sends one heartbeat (the health probe) and syncs the purge epoch.
func (c *Cluster) beat(ctx context.Context, reconnect bool) error {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := heartbeatScript.Run(cctx, c.rdb, []string{c.keyHB, c.keyEpoch}, c.id, c.hbWindow().Milliseconds(), "0").Int64Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return errors.New("cluster: unexpected heartbeat reply")
	}
	if n := max(res[0], 1); c.alive.Swap(n) != n {
		c.updateRates()
	}
	c.syncEpoch(res[1], reconnect)
	return nil
}

// syncEpoch compares Redis's purge epoch with the one L1 follows. After a
// reconnect any difference means purges were missed: L1 is dropped whole.
// Otherwise a difference seen by two heartbeats in a row (a lost message)
// does the same.
func (c *Cluster) syncEpoch(redisEpoch int64, reconnect bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.seen < 0 && c.l1.Stats().Items == 0:
		c.seen = redisEpoch
	case redisEpoch == c.seen:
		c.lagging = false
	case redisEpoch > c.seen || c.seen < 0 || reconnect:
		if c.lagging || reconnect || c.seen < 0 {
			c.flushLocked("purges missed while disconnected")
			c.seen, c.lagging = redisEpoch, false
		} else {
			c.lagging = true
		}
	default:
		// Redis's epoch went back (Redis restarted empty): nothing in
		// Redis predates it, and L1 may hold what it lost.
		c.flushLocked("redis restarted")
		c.seen, c.lagging = redisEpoch, false
	}
}

func (c *Cluster) flushLocked(why string) {
	c.epoch.Add(1)
	n := c.l1.Purge("")
	c.epoch.Add(1)
	c.log.Info("local cache dropped", "reason", why, "entries", n)
}

// healthLoop probes Redis every interval: two failures mark it down, one
// success marks it up.
func (c *Cluster) healthLoop(ctx context.Context) {
	defer c.done.Done()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	failed := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wasUp := c.up.Load()
		err := c.beat(ctx, !wasUp)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failed++
			if failed >= 2 || !wasUp {
				c.setState(false, err)
			}
			continue
		}
		failed = 0
		if !wasUp {
			c.setState(true, nil)
			c.wakeAll()
		}
	}
}

// listen keeps one subscription to the fill and purge channels and
// dispatches their messages. After every (re)subscription it re-syncs the
// purge epoch and wakes every waiter, since messages may have been lost.
func (c *Cluster) listen(ctx context.Context, subscribed chan struct{}) {
	defer c.done.Done()
	first := true
	for ctx.Err() == nil {
		if !c.up.Load() {
			if !sleep(ctx, c.interval/4) {
				return
			}
			continue
		}
		ps := c.rdb.Subscribe(ctx)
		c.psMu.Lock()
		if ctx.Err() != nil {
			c.psMu.Unlock()
			ps.Close()
			return
		}
		c.ps = ps
		c.psMu.Unlock()
		if err := ps.Subscribe(ctx, c.chFill, c.chPurge); err != nil {
			ps.Close()
			if !sleep(ctx, c.interval/4) {
				return
			}
			continue
		}
		pinged := false
		for ctx.Err() == nil {
			msg, err := ps.ReceiveTimeout(ctx, c.interval)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && !pinged {
					pctx, cancel := context.WithTimeout(ctx, c.timeout)
					perr := ps.Ping(pctx)
					cancel()
					if perr == nil {
						pinged = true
						continue
					}
				}
				break
			}
			pinged = false
			switch m := msg.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" && m.Channel == c.chPurge {
					if !first {
						cctx, cancel := context.WithTimeout(ctx, c.timeout)
						if e, err := c.rdb.Get(cctx, c.keyEpoch).Int64(); err == nil || errors.Is(err, redis.Nil) {
							c.syncEpoch(e, true)
						}
						cancel()
						c.wakeAll()
					}
					if first {
						first = false
						close(subscribed)
					}
				}
			case *redis.Message:
				c.dispatch(m.Channel, m.Payload)
			}
		}
		ps.Close()
		if !sleep(ctx, c.interval/4) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (c *Cluster) dispatch(channel, payload string) {
	switch channel {
	case c.chPurge:
		// <epoch>|<p prefix | k key>
		es, rest, ok := strings.Cut(payload, "|")
		e, err := strconv.ParseInt(es, 10, 64)
		if !ok || err != nil || rest == "" {
			return
		}
		c.applyPurge(e, rest[0], rest[1:])
	case c.chFill:
		// <kind><16 hex token><key>
		if len(payload) < 17 {
			return
		}
		c.notify(payload[17:], payload[:17])
	}
}

// applyPurge applies a purge announced with Redis epoch e to L1.
func (c *Cluster) applyPurge(e int64, kind byte, arg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen >= 0 && e > c.seen+1 {
		c.flushLocked("purge messages missed")
		c.seen = e
		return
	}
	c.epoch.Add(1)
	if kind == 'k' {
		c.l1.Delete(arg)
	} else {
		c.l1.Purge(arg)
	}
	c.epoch.Add(1)
	if e > c.seen {
		c.seen = e
	}
}

// watch registers a waiter for fill messages of key; stop unregisters.
func (c *Cluster) watch(key string) (ch chan string, stop func()) {
	ch = make(chan string, 4)
	c.wmu.Lock()
	set := c.waiters[key]
	if set == nil {
		set = map[chan string]struct{}{}
		c.waiters[key] = set
	}
	set[ch] = struct{}{}
	c.wmu.Unlock()
	return ch, func() {
		c.wmu.Lock()
		delete(set, ch)
		if len(set) == 0 && c.waiters[key] != nil && len(c.waiters[key]) == 0 {
			delete(c.waiters, key)
		}
		c.wmu.Unlock()
	}
}

func (c *Cluster) notify(key, msg string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for ch := range c.waiters[key] {
		select {
		case ch <- msg:
		default:
		}
	}
}

// wakeAll makes every waiter re-check its claim (after a reconnect).
func (c *Cluster) wakeAll() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, set := range c.waiters {
		for ch := range set {
			select {
			case ch <- "":
			default:
			}
		}
	}
}
