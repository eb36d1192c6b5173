package live

import (
	"net/http/httptest"
	"testing"

	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/route"
)

// BenchmarkOnRequest is the feed's cost on the hit path: a hit of a hot
// market (recency kept: a map lookup, an atomic load), and a hit of
// another route (one comparison). Both must not allocate.
func BenchmarkOnRequest(b *testing.B) {
	r := newRig(b, false)
	r.hot(map[string]*state{vr: nil})
	for _, tc := range []struct {
		name string
		req  *fetch.Request
	}{
		{"hot-market", &fetch.Request{Route: r.f.single, Key: singlePrefix + vr, Now: t0}},
		{"other-route", &fetch.Request{Route: r.routes.Match(route.Prefix + "series/X"), Key: route.Prefix + "series/X", Now: t0}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.f.OnRequest(tc.req.Route, tc.req.Key, tc.req.Now)
			}
		})
	}
}

// BenchmarkPushList is the cost of one push to a market held by a cached
// 100-market /markets page: the page is patched, hashed and gzipped again.
func BenchmarkPushList(b *testing.B) {
	r := newRig(b, false)
	rec := httptest.NewRecorder()
	kalshitest.New().ServeHTTP(rec, httptest.NewRequest("GET", route.Prefix+"markets?series_ticker=KXBIGSERIES&limit=100", nil))
	key := route.Prefix + "markets?limit=100&series_ticker=KXBIGSERIES"
	r.put(key, rec.Body.Bytes(), t0)
	m := "KXBIGSERIES-26JUN30-M001"
	r.hot(map[string]*state{m: nil})
	hm := (*r.f.hot.Load())[m]
	prices := [2]string{"0.4000", "0.4100"}
	b.SetBytes(int64(rec.Body.Len()))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		hm.st.Store(parsed(b, tickerJSON(b, m, prices[i%2], "0.5000", "0.4500", "10.00", "10.00")))
		r.f.push(m)
	}
}
