package fetch

import (
	"net/http"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/httperr"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Stale answers a request gets without waiting for a fetch to end.

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

// ErrNotCached answers only-if-cached when nothing servable is stored;
// errors.Is matches it.
var ErrNotCached = &upstream.Error{Status: http.StatusGatewayTimeout, Code: httperr.CodeNotCached,
	Msg: "not in the cache, and the request allows only a cached answer (Cache-Control: only-if-cached)"}

// onlyIfCached answers a request carrying only-if-cached: a fresh entry is
// a hit, a stale one within either window is served as stale with detail
// only-if-cached, anything else is 504 not_cached. Nothing is fetched or
// refreshed.
func onlyIfCached(cached *cache.Entry, ok bool, tier Outcome, now time.Time) Result {
	switch {
	case ok && cached.Fresh(now):
		return Result{Entry: cached, Outcome: tier}
	case ok && (cached.Revalidatable(now) || cached.ServableOnError(now)):
		return Result{Entry: cached, Outcome: StaleOnError, Detail: DetailOnlyIfCached}
	}
	return Result{Outcome: Failed, Err: ErrNotCached}
}
