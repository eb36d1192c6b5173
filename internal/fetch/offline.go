package fetch

import (
	"net/http"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/httperr"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Offline (upstream.offline, docs/history.md): kproxy never contacts
// Kalshi. A public GET it holds, in memory or on disk, fresh or not, is
// answered from it; anything else is 504 not_cached. Nothing is fetched or
// refreshed, so the rate limit and the breaker are never touched.

// DetailOffline is the Cache-Status detail of every answer given offline.
const DetailOffline = "offline"

// ErrOfflineNotCached answers a public GET offline when nothing is held
// for it; errors.Is matches it.
var ErrOfflineNotCached = &upstream.Error{Status: http.StatusGatewayTimeout, Code: httperr.CodeNotCached,
	Msg: "not in the cache, and kproxy is offline (upstream.offline): it does not contact Kalshi"}

// offlineAnswer answers a request offline: a fresh (or immutable) copy is
// an Offline HIT, any other copy held is STALE with detail offline.
func offlineAnswer(cached *cache.Entry, ok bool, now time.Time) Result {
	switch {
	case ok && cached.Fresh(now):
		return Result{Entry: cached, Outcome: Offline}
	case ok:
		return Result{Entry: cached, Outcome: StaleOnError, Detail: DetailOffline}
	}
	return Result{Outcome: Failed, Err: ErrOfflineNotCached}
}
