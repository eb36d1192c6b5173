package fetch

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Freshness beyond the stored windows: the request's own limits
// (max-age, min-fresh, max-stale) and the refresh of a polled key ahead of
// its expiry.
//
// Refresh ahead. A script that polls a key at a steady period p no longer
// than its ttl would otherwise see, once per ttl, a STALE answer (within
// stale_while_revalidate) or a MISS that waits on the upstream. Instead,
// each fresh hit notes its time on the entry (Entry.NoteHit: one atomic
// load and at most one store, no lock, no allocation), and when the gap to
// the hit before it says the next hit would land in the last lead of the
// entry's freshness or past it (now+p >= FreshUntil-lead, p <= ttl), the
// hit claims the entry's one refresh (a CAS on the entry) and schedules it
// at FreshUntil-lead on the Fetcher's clock. The refresh is a request kproxy
// composes: kproxy's own key or no credentials (never a client's signature,
// made for another request), coalesced with any fetch of the key (the one
// flight registry), rate limited and charged to the route like any fetch,
// on behalf of the client whose hit scheduled it. It stores a new entry
// before the old one expires, so the pollers keep getting HITs, at about
// one upstream call per key per ttl: the same budget a MISS per ttl costs.
//
// Why this trigger. Scheduling at FreshUntil-lead rather than at once keeps
// the new entry's freshness aligned to when it is needed; asking that the
// next hit be due in the last lead (rather than, say, any hit within the
// last quarter of the ttl) means a key polled more slowly than its ttl, or
// requested once, never costs a refresh: its clients get the honest
// MISS/STALE the windows promise. When polls stop, the one refresh already
// scheduled is the only extra call: the entry it stores has no hits, so it
// schedules nothing. A key hit by many clients at once has a small p, so it
// triggers once, lead before expiry, the same.
//
// The lead is max(minLead, 2 x the fetch that made the entry), capped at a
// quarter of the ttl: room for a normal fetch to land before expiry without
// refreshing far too early on short ttls.

// minLead is the least time ahead of expiry a refresh is scheduled.
const minLead = 50 * time.Millisecond

// acceptable reports whether cached meets req's max-age and min-fresh: not
// older than MaxAge, and with at least MinFresh of freshness left.
func acceptable(cached *cache.Entry, req *Request, now time.Time) bool {
	if req.MaxAge > 0 && now.Sub(cached.UpdatedAt) > req.MaxAge {
		return false
	}
	if req.MinFresh > 0 && cached.FreshUntil.Sub(now) < req.MinFresh {
		return false
	}
	return true
}

// withinMaxStale reports whether a stale cached may be served under a
// request's max-stale: at most maxStale past its ttl and still retained.
func withinMaxStale(cached *cache.Entry, maxStale time.Duration, now time.Time) bool {
	return maxStale > 0 && now.Before(cached.RetainedUntil()) && now.Sub(cached.FreshUntil) <= maxStale
}

// lead is how long before e's expiry a refresh of it is scheduled.
func lead(e *cache.Entry, ttl time.Duration) time.Duration {
	return min(max(minLead, 2*e.Took), ttl/4)
}

// noteHit records a fresh hit of e at now and, when the hits come at a
// steady period that would let the entry expire before the next one,
// schedules its one refresh ahead of expiry. The hit path: it allocates
// nothing and takes no lock unless it schedules (once per entry).
func (f *Fetcher) noteHit(req *Request, e *cache.Entry, now time.Time) {
	if e.RefreshClaimed() {
		return
	}
	// In Unix nanoseconds: time.Time arithmetic would cost the hit more
	// than everything else here.
	n := now.UnixNano()
	prev := e.NoteHitNano(n)
	fetched, fresh := e.FetchedAt.UnixNano(), e.FreshUntil.UnixNano()
	if prev == 0 {
		// The first hit: the request that stored the entry came before.
		prev = fetched
	}
	p, ttl := n-prev, fresh-fetched
	if p <= 0 || p > ttl {
		return
	}
	at := fresh - int64(lead(e, time.Duration(ttl)))
	if n+p < at {
		return
	}
	if !e.ClaimRefresh() {
		return
	}
	f.scheduleAhead(req, e, time.Duration(at-n))
}

// scheduleAhead schedules the refresh of e in d (at once if d <= 0) as a
// request kproxy composes for req's key, on behalf of req's client.
func (f *Fetcher) scheduleAhead(req *Request, e *cache.Entry, d time.Duration) {
	// Charged to the route itself (Charge ""), not to the batch endpoint a
	// batch item's hit came through: no client asked for this call.
	r := &Request{
		Route: req.Route, Key: req.Key, EscapedPath: req.EscapedPath, RawQuery: req.RawQuery,
		Credentials: upstream.OwnKey, Client: req.Client,
	}
	if r.Client == "" {
		name, err := f.ClientName(req.Header, req.RemoteAddr)
		if err != nil {
			return // a bad Kproxy-Client schedules nothing
		}
		r.Client = name
	}
	f.ahead.schedule(e, max(d, 0), func() { f.runAhead(r, e) })
}

// runAhead refreshes e, unless it is no longer the stored entry of its key
// (refreshed, pushed or purged meanwhile: nothing to refresh ahead of), and
// waits for the fetch to end. It runs on a timer's own goroutine; with a
// fake clock, Advance therefore returns once the refresh has stored its
// answer.
func (f *Fetcher) runAhead(r *Request, e *cache.Entry) {
	if cur, ok := f.store.Get(r.Key); !ok || cur != e {
		return
	}
	c, _ := f.join(context.Background(), r.Key, func(ctx context.Context, c *call) *flight {
		rc := *r
		rc.call = c
		// Not checkCache: the entry is still fresh, that is the point.
		return f.load(ctx, &rc, http.Header{}, false)
	})
	<-c.done
}

// aheadTimers are the refreshes ahead of expiry scheduled and not yet
// started, so that Fetcher.Close can cancel them. Safe for concurrent use.
type aheadTimers struct {
	afterFunc func(time.Duration, func()) func() bool
	mu        sync.Mutex
	pending   map[*cache.Entry]func() bool
	closed    bool // stopAll ran: nothing more is scheduled
}

// schedule runs fn in d, tracked under e until it starts. The timer is
// made without the lock held (a clock may run fn at once).
func (a *aheadTimers) schedule(e *cache.Entry, d time.Duration, fn func()) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	if a.pending == nil {
		a.pending = map[*cache.Entry]func() bool{}
	}
	a.pending[e] = nil // reserved: fn finds it even if it fires at once
	a.mu.Unlock()
	stop := a.afterFunc(d, func() {
		a.mu.Lock()
		_, live := a.pending[e]
		delete(a.pending, e)
		a.mu.Unlock()
		if live {
			fn()
		}
	})
	a.mu.Lock()
	if _, ok := a.pending[e]; ok {
		a.pending[e] = stop
	}
	a.mu.Unlock()
}

// stopAll cancels the refreshes that have not started, and any later one.
func (a *aheadTimers) stopAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	for e, stop := range a.pending {
		if stop != nil {
			stop()
		}
		delete(a.pending, e)
	}
}
