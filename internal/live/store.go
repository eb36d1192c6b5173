package live

import (
	"encoding/json"
	"hash/maphash"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/jsonedit"
	"github.com/kproxy/kproxy/internal/legacy"
	"github.com/kproxy/kproxy/internal/route"
)

// detailPushed marks in Cache-Status an entry whose body the feed updated.
const detailPushed = "pushed"

// store is the cache.Store the fetch path uses when the feed is on. Get is
// the inner store's (the hit path pays one indirect call); Set indexes the
// markets an answer holds and writes the feed's latest values into it
// before it becomes visible, so no answer that arrives (from the upstream
// or from another tier below) is ever served with values older than a push.
//
// Every write of a market-holding key (a stored answer, a patch, a revert,
// a removal) happens under that key's stripe lock, and a patch reads the
// entry it rewrites under the same lock: a patch can never put back an
// older body over a newer one.
type store struct {
	f *Feed
}

var _ cache.Store = store{}

func (s store) Get(key string) (*cache.Entry, bool) { return s.f.inner.Get(key) }

func (s store) Purge(prefix string) int                    { return s.f.inner.Purge(prefix) }
func (s store) Delete(key string) bool                     { return s.f.inner.Delete(key) }
func (s store) Stats() cache.Stats                         { return s.f.inner.Stats() }
func (s store) List(p string, n int) ([]*cache.Entry, int) { return s.f.inner.List(p, n) }

// Set stores e. An answer that holds markets is indexed first (so a push
// that arrives meanwhile finds it), then stored with the pushed values of
// its hot markets written in.
func (s store) Set(e *cache.Entry, retention time.Duration) {
	f := s.f
	kind, rt := f.classify(e.Key)
	if kind == legacy.None || e.Status != http.StatusOK || !json.Valid(e.Body) {
		f.inner.Set(e, retention)
		return
	}
	var tickers []string
	legacy.EachMarket(kind, e.Body, func(ms []jsonedit.Member) {
		if t, ok := tickerOf(e.Body, ms); ok {
			tickers = append(tickers, string(t))
		}
	})
	st := f.stripe(e.Key)
	st.mu.Lock()
	// Indexed before the states are read: a push either updated its state
	// before this reads it, or finds this key in the index afterwards.
	f.idx.put(e.Key, tickers)
	n := f.withStates(e, kind, rt)
	if n != e {
		retention = max(retention, retentionOf(n, f.now()))
	}
	f.inner.Set(n, retention)
	st.mark(e.Key, n.FreshUntil.After(baseFresh(n, rt)))
	st.mu.Unlock()
	if kind == legacy.Market && len(tickers) == 1 {
		f.candidate(tickers[0])
	}
}

// stripe guards writes of the keys that hash to it, and knows which of
// them hold pushed freshness (to turn back when the feed goes down).
type stripe struct {
	mu     sync.Mutex
	pushed map[string]bool
}

func (s *stripe) mark(key string, pushed bool) {
	if pushed {
		if s.pushed == nil {
			s.pushed = map[string]bool{}
		}
		s.pushed[key] = true
	} else {
		delete(s.pushed, key)
	}
}

const nStripes = 64

var stripeSeed = maphash.MakeSeed()

func (f *Feed) stripe(key string) *stripe {
	return &f.stripes[maphash.String(stripeSeed, key)%nStripes]
}

// classify tells which answers hold market objects.
func (f *Feed) classify(key string) (legacy.Kind, *route.Route) {
	path, _, _ := strings.Cut(key, "?")
	rt := f.routes.Match(path)
	if rt == nil {
		return legacy.None, nil
	}
	return f.kinds[rt], rt
}

// baseFresh is when e stops being fresh by its route's ttl alone.
func baseFresh(e *cache.Entry, rt *route.Route) time.Time { return e.FetchedAt.Add(rt.TTL) }

// retentionOf is how long e is worth keeping from now on.
func retentionOf(e *cache.Entry, now time.Time) time.Duration {
	end := e.FreshUntil
	if e.RevalidateUntil.After(end) {
		end = e.RevalidateUntil
	}
	if e.ErrorUntil.After(end) {
		end = e.ErrorUntil
	}
	return end.Sub(now)
}

// withStates returns e with the latest pushed values of its hot markets
// written into its body, or e itself when there is nothing to change. A
// single-market answer with a pushed state is fresh until max_age after its
// fetch, never past its market's next open_time or close_time, and never
// less than its ttl; lists and events keep their ttl. Nothing is applied
// while the feed is not healthy. Call with e's stripe locked.
func (f *Feed) withStates(e *cache.Entry, kind legacy.Kind, rt *route.Route) *cache.Entry {
	if !f.healthy.Load() {
		return e
	}
	hot := *f.hot.Load()
	var (
		ed          jsonedit.Edits
		pushed      bool
		open, close time.Time
	)
	legacy.EachMarket(kind, e.Body, func(ms []jsonedit.Member) {
		t, ok := tickerOf(e.Body, ms)
		if !ok {
			return
		}
		m := hot[string(t)]
		if m == nil {
			return
		}
		st := m.st.Load()
		if st == nil {
			return
		}
		patchMarket(&ed, e.Body, ms, st, rt.LegacyFields)
		if kind == legacy.Market {
			pushed = true
			open, _ = timeOf(e.Body, ms, "open_time")
			close, _ = timeOf(e.Body, ms, "close_time")
		}
	})
	fresh, reval, errUntil, detail := e.FreshUntil, e.RevalidateUntil, e.ErrorUntil, e.Detail
	if pushed {
		fresh = e.FetchedAt.Add(f.maxAge)
		for _, b := range [...]time.Time{open, close} {
			if b.After(e.FetchedAt) && b.Before(fresh) {
				fresh = b
			}
		}
		fresh = later(fresh, baseFresh(e, rt))
		reval = later(e.RevalidateUntil, fresh.Add(rt.StaleWhileRevalidate))
		errUntil = later(e.ErrorUntil, fresh.Add(rt.StaleIfError))
		detail = detailPushed
	}
	if ed.Len() > 0 {
		detail = detailPushed
	}
	if ed.Len() == 0 && fresh.Equal(e.FreshUntil) && reval.Equal(e.RevalidateUntil) && errUntil.Equal(e.ErrorUntil) && detail == e.Detail {
		return e
	}
	var body []byte
	if ed.Len() > 0 {
		body = ed.Apply(e.Body)
	}
	return e.Derived(body, f.now(), fresh, reval, errUntil, detail)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// repatch rewrites the stored entry under key with the latest states.
func (f *Feed) repatch(key string) {
	kind, rt := f.classify(key)
	if kind == legacy.None {
		return
	}
	st := f.stripe(key)
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := f.inner.Get(key)
	if !ok {
		f.idx.drop(key)
		return
	}
	if e.Status != http.StatusOK {
		return
	}
	n := f.withStates(e, kind, rt)
	if n == e {
		return
	}
	if r := retentionOf(n, f.now()); r > 0 {
		f.inner.Set(n, r)
		st.mark(key, n.FreshUntil.After(baseFresh(n, rt)))
	}
}

// revert turns the pushed entry under key back to its route's ttl and
// stale windows, counted from its fetch, as if it had never been pushed
// (its body keeps the last pushed values, which were current when the feed
// stopped): a route's stale_while_revalidate (0 included) is obeyed exactly
// once the feed can no longer vouch for the entry. Call with key's stripe
// locked.
func (f *Feed) revert(key string) {
	kind, rt := f.classify(key)
	e, ok := f.inner.Get(key)
	if kind == legacy.None || !ok {
		return
	}
	base := baseFresh(e, rt)
	if !e.FreshUntil.After(base) {
		return
	}
	n := e.Derived(nil, time.Time{}, base, base.Add(rt.StaleWhileRevalidate), base.Add(rt.StaleIfError), e.Detail)
	if r := retentionOf(n, f.now()); r > 0 {
		f.inner.Set(n, r)
	} else {
		f.inner.Delete(key)
	}
}

// revertAll turns every pushed entry back to ttl freshness: the feed is
// down (or a subscription ended) and can no longer vouch for them.
func (f *Feed) revertAll() {
	for i := range f.stripes {
		st := &f.stripes[i]
		st.mu.Lock()
		for key := range st.pushed {
			f.revert(key)
		}
		clear(st.pushed)
		st.mu.Unlock()
	}
}

// revertMarket turns the pushed entries of one market back to ttl
// freshness (it left the hot set).
func (f *Feed) revertMarket(ticker string) {
	for _, key := range f.idx.holders(ticker) {
		st := f.stripe(key)
		st.mu.Lock()
		if st.pushed[key] {
			f.revert(key)
			delete(st.pushed, key)
		}
		st.mu.Unlock()
	}
}

// remove deletes every cached answer that holds ticker (a lifecycle event:
// its status, times or result changed).
func (f *Feed) remove(ticker string) int {
	n := 0
	for _, key := range f.idx.holders(ticker) {
		st := f.stripe(key)
		st.mu.Lock()
		if f.inner.Delete(key) {
			n++
		}
		delete(st.pushed, key)
		f.idx.drop(key)
		st.mu.Unlock()
	}
	return n
}

// index maps markets to the cached answers that hold them. Entries can
// leave the store without telling it (expiry, eviction): lookups drop what
// they find gone, and sweep drops the rest now and then.
type index struct {
	mu      sync.Mutex
	keys    map[string][]string            // cache key -> tickers it holds
	markets map[string]map[string]struct{} // ticker -> cache keys
}

func (x *index) put(key string, tickers []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.keys == nil {
		x.keys, x.markets = map[string][]string{}, map[string]map[string]struct{}{}
	}
	x.dropLocked(key)
	x.keys[key] = tickers
	for _, t := range tickers {
		ks := x.markets[t]
		if ks == nil {
			ks = map[string]struct{}{}
			x.markets[t] = ks
		}
		ks[key] = struct{}{}
	}
}

func (x *index) drop(key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropLocked(key)
}

func (x *index) dropLocked(key string) {
	for _, t := range x.keys[key] {
		if ks := x.markets[t]; ks != nil {
			delete(ks, key)
			if len(ks) == 0 {
				delete(x.markets, t)
			}
		}
	}
	delete(x.keys, key)
}

func (x *index) holders(ticker string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	ks := x.markets[ticker]
	out := make([]string, 0, len(ks))
	for k := range ks {
		out = append(out, k)
	}
	return out
}

// keyList is a copy of the indexed keys.
func (x *index) keyList() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	keys := make([]string, 0, len(x.keys))
	for k := range x.keys {
		keys = append(keys, k)
	}
	return keys
}

// sweep drops from the index the answers no longer in the store. Each key
// is checked under its stripe lock, so an answer being stored is never
// dropped.
func (f *Feed) sweep() {
	for _, key := range f.idx.keyList() {
		st := f.stripe(key)
		st.mu.Lock()
		if _, ok := f.inner.Get(key); !ok {
			f.idx.drop(key)
			delete(st.pushed, key)
		}
		st.mu.Unlock()
	}
}

// size is the number of indexed answers.
func (x *index) size() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.keys)
}
