package fetch

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Fetches in flight: one call per key at a time, which any number of
// requests wait on (the first starts it), and what a request holding a
// stale copy learns from one before it ends.
//
// Besides its result, a call reports its first failed attempt (connection
// refused or reset, timeout, 5xx, 429) the moment it happens, through the
// upstream call's attempt hook: a request holding a stale copy within
// stale_if_error is answered STALE then, or after stale_wait, while the call
// goes on with its retries and stores a good answer for the next request.
// Requests that leave early never cut the call short.

// flights is the one registry of fetches under way, by key. The zero value
// is ready to use; it is safe for concurrent use.
type flights struct {
	mu sync.Mutex
	m  map[string]*call
}

// call is one fetch in flight. fl is written before done is closed;
// failStatus before failed is closed.
type call struct {
	done       chan struct{}
	fl         *flight
	failed     chan struct{}
	failStatus int
	failOnce   sync.Once
	attempts   atomic.Int32
	// waiting counts the requests waiting on the call (its leader
	// included), counted once they have joined it.
	waiting atomic.Int32
}

// flight is what one fetch came to.
type flight struct {
	// entry is the answer; nil when err is set.
	entry *cache.Entry
	err   *upstream.Error
	// outcome is how the flight got entry: Stored or Uncacheable (fetched
	// upstream), Hit (found fresh in L1 when it began), SharedHit (found
	// stored in the shared tier) or Collapsed (another replica's fetch).
	// A waiter that did not lead sees Stored and Uncacheable as Collapsed.
	outcome Outcome
	// credential marks a 401/403 answering the leader's own credentials,
	// which are not the waiters': they fetch again, each alone.
	credential bool
	// private marks an answer that is not for other clients (Set-Cookie,
	// Cache-Control private or no-store): other replicas fetch their own.
	private bool
	// epoch is the shared tier's L1 fence when the fetch began; retention
	// how long a stored entry is kept.
	epoch     uint64
	retention time.Duration
	attempts  int
	// start is when the fetch began (its clock), zero when unknown: the
	// entry's Took.
	start time.Time
}

// Waiting is the number of requests waiting on the fetch of key under way
// (0 when none is): each is counted once it has joined that fetch, so a
// test that holds the upstream can wait for N requests to have collapsed
// onto one fetch before it lets the answer go.
func (f *Fetcher) Waiting(key string) int {
	if c := f.flights.lookup(key); c != nil {
		return int(c.waiting.Load())
	}
	return 0
}

// lookup returns the call of key in flight, or nil.
func (g *flights) lookup(key string) *call {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m[key]
}

// join returns the call of key in flight, or starts one running fn on a
// goroutine of its own; started reports which. fn runs as a leader (lead):
// on ctx's values without its cancellation, bounded by the fetch timeout,
// its panics turned into a failed flight. No waiter's cancel reaches it;
// Fetcher.Wait waits for it.
func (f *Fetcher) join(ctx context.Context, key string, fn func(ctx context.Context, c *call) *flight) (c *call, started bool) {
	g := &f.flights
	g.mu.Lock()
	if c := g.m[key]; c != nil {
		g.mu.Unlock()
		return c, false
	}
	if g.m == nil {
		g.m = map[string]*call{}
	}
	c = &call{done: make(chan struct{}), failed: make(chan struct{})}
	g.m[key] = c
	g.mu.Unlock()
	f.bg.Add(1)
	go func() {
		defer f.bg.Done()
		c.fl = f.lead(ctx, key, func(ctx context.Context) *flight { return fn(ctx, c) })
		g.mu.Lock()
		delete(g.m, key)
		g.mu.Unlock()
		close(c.done)
	}()
	return c, true
}

// lead runs one fetch of key: on context.WithoutCancel(ctx) plus the fetch
// timeout, so that the client that started it can leave without cutting
// it short for the others. A panic in fn is logged and becomes a 500
// internal_error flight: it reaches no waiter as a panic.
func (f *Fetcher) lead(ctx context.Context, key string, fn func(ctx context.Context) *flight) (fl *flight) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			f.log.Error("panic in shared fetch", "key", key, "panic", fmt.Sprint(p))
			fl = &flight{err: errInternal}
		}
	}()
	return fn(ctx)
}

// errInternal is the answer of a fetch that panicked.
var errInternal = &upstream.Error{Status: http.StatusInternalServerError, Code: upstream.ErrInternal.Code, Msg: "internal error"}

// attempted is the upstream attempt hook of a call: it counts attempts and
// signals the first failed one.
func (c *call) attempted(status int, err error) {
	c.attempts.Add(1)
	if err == nil && status < 500 && status != http.StatusTooManyRequests {
		return
	}
	c.failOnce.Do(func() {
		c.failStatus = status
		if err != nil {
			c.failStatus = upstream.As(err).Status
		}
		close(c.failed)
	})
}

// ended reports whether c has its result (preferred over an early stale
// answer when both are ready).
func (c *call) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}
