package fetch

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Shared fetches in flight, and what a request holding a stale copy learns
// from one before it ends.
//
// A call is one upstream fetch of a key that any number of requests wait
// on (the first starts it). Besides its result, a call reports its first
// failed attempt (connection refused or reset, timeout, 5xx, 429) the
// moment it happens, through the upstream client's attempt hook: a request
// holding a stale copy within stale_if_error is answered STALE then, or
// after stale_wait, while the call goes on with its retries and stores a
// good answer for the next request. Requests that leave early never cut
// the call short, and there is one call per key at a time.

// call is one shared fetch in flight. fl is written before done is closed;
// failStatus before failed is closed.
type call struct {
	done       chan struct{}
	fl         *flight
	failed     chan struct{}
	failStatus int
	failOnce   sync.Once
	attempts   atomic.Int32
}

// calls maps a key to its call in flight. The zero value is ready to use.
type calls struct {
	mu sync.Mutex
	m  map[string]*call
}

// join returns the call of key in flight, or starts one running fn on a
// goroutine of its own; started reports which. fn's panic is turned into a
// failed flight, so waiters always get an answer. Fetcher.Wait waits for
// started calls.
func (f *Fetcher) join(key string, fn func(c *call) *flight) (c *call, started bool) {
	f.calls.mu.Lock()
	if c := f.calls.m[key]; c != nil {
		f.calls.mu.Unlock()
		return c, false
	}
	if f.calls.m == nil {
		f.calls.m = map[string]*call{}
	}
	c = &call{done: make(chan struct{}), failed: make(chan struct{})}
	f.calls.m[key] = c
	f.calls.mu.Unlock()
	f.bg.Add(1)
	go func() {
		defer f.bg.Done()
		defer func() {
			if p := recover(); p != nil {
				f.log.Error("panic in shared fetch", "key", key, "panic", fmt.Sprint(p))
				c.fl = &flight{err: &upstream.Error{Status: http.StatusInternalServerError, Code: "internal_error", Msg: "internal error"}}
			}
			f.calls.mu.Lock()
			delete(f.calls.m, key)
			f.calls.mu.Unlock()
			close(c.done)
		}()
		c.fl = fn(c)
	}()
	return c, true
}

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
			c.failStatus = asError(err).Status
		}
		close(c.failed)
	})
}

// watch marks the context of req's upstream fetch with the client it is
// made for (fair shares of the budget) and, when the fetch runs for a
// call, with the call's attempt hook.
func (f *Fetcher) watch(ctx context.Context, req *Request) context.Context {
	ctx = upstream.WithClient(ctx, req.client)
	if req.call != nil {
		ctx = upstream.WithAttemptHook(ctx, req.call.attempted)
	}
	return ctx
}

// clientOf names the client a request is for: its KALSHI-ACCESS-KEY, else
// the host of its address. It is worked out when a fetch starts, never on
// a hit.
func clientOf(req *Request) string {
	if req.Client != "" {
		return req.Client
	}
	if v := req.Header["Kalshi-Access-Key"]; len(v) > 0 && v[0] != "" {
		return "key:" + v[0]
	}
	if req.RemoteAddr != "" {
		return "addr:" + hostOf(req.RemoteAddr)
	}
	return ""
}

// Directives are the request cache directives kproxy obeys (Cache-Control
// and Pragma); every other directive is ignored.
type Directives struct {
	// NoCache: no-cache or max-age=0 (Cache-Control), or Pragma: no-cache:
	// the answer must come from a fresh upstream fetch (still coalesced,
	// still rate limited).
	NoCache bool
	// OnlyIfCached: answer from the cache (fresh, or stale within a stale
	// window) or 504 not_cached, never contacting the upstream.
	OnlyIfCached bool
}

// ParseDirectives reads the request cache directives of h. Directive names
// are matched in any case; a max-age value of zero in any spelling ("0",
// "00", quoted) counts. It does not allocate.
func ParseDirectives(h http.Header) Directives {
	var d Directives
	for _, v := range h["Cache-Control"] {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			name, value, _ := strings.Cut(item, "=")
			name = strings.TrimSpace(name)
			switch {
			case strings.EqualFold(name, "no-cache"):
				d.NoCache = true
			case strings.EqualFold(name, "only-if-cached"):
				d.OnlyIfCached = true
			case strings.EqualFold(name, "max-age") && isZero(value):
				d.NoCache = true
			}
		}
	}
	for _, v := range h["Pragma"] {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(item), "no-cache") {
				d.NoCache = true
			}
		}
	}
	return d
}

// isZero reports whether a delta-seconds value (optionally quoted) is 0.
func isZero(v string) bool {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] != '0' {
			return false
		}
	}
	return true
}

// ended reports whether c has its result (preferred over an early stale
// answer when both are ready).
func ended(c *call) bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// earlyStale is the answer of a request holding a stale copy that stops
// waiting for the call: status is the failed attempt's, or 0 with detail
// saying why.
func earlyStale(cached *cache.Entry, c *call, led bool, fwd string, status int, detail string) Result {
	res := Result{Entry: cached, Outcome: StaleOnError, Fwd: fwd, FwdStatus: status, Detail: detail}
	if led {
		res.Attempts = int(c.attempts.Load())
	}
	return res
}

// errNotCached answers only-if-cached when nothing servable is stored.
var errNotCached = &upstream.Error{Status: http.StatusGatewayTimeout, Code: "not_cached",
	Msg: "not in the cache, and the request allows only a cached answer (Cache-Control: only-if-cached)"}

// onlyIfCached answers a request carrying only-if-cached: a fresh entry is
// a hit, a stale one within either window is served as stale with detail
// only-if-cached, anything else is 504 not_cached. Nothing is fetched or
// refreshed.
func onlyIfCached(cached *cache.Entry, ok, shared bool, now time.Time) Result {
	switch {
	case ok && cached.Fresh(now) && shared:
		return Result{Entry: cached, Outcome: SharedHit}
	case ok && cached.Fresh(now):
		return Result{Entry: cached, Outcome: Hit}
	case ok && (cached.Revalidatable(now) || cached.ServableOnError(now)):
		return Result{Entry: cached, Outcome: StaleOnError, Detail: "only-if-cached"}
	}
	return Result{Outcome: Failed, Err: errNotCached}
}
