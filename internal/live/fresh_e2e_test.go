package live_test

// Freshness of pushed entries end to end (issue 16): Age from the last
// push, and a route's stale_while_revalidate obeyed once the feed is down.

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kproxytest"
	"github.com/kproxy/kproxy/internal/live"
)

// TestPushedEntryObeysRouteWindowsWhenFeedDrops: on a route with
// stale_while_revalidate 0, a pushed market's Age resets at the push; once
// the feed is down and its ttl has passed, the next request goes upstream
// (never a STALE answer with the old price).
func TestPushedEntryObeysRouteWindowsWhenFeedDrops(t *testing.T) {
	zero := config.Duration(0)
	p := kproxytest.New(t, kproxytest.WithLive(), kproxytest.WithConfig(func(c *config.Config) {
		c.Cache.Overrides = append(c.Cache.Overrides, config.Override{Pattern: "/trade-api/v2/markets/{ticker}", StaleWhileRevalidate: &zero})
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wait := func(what string, cond func(live.Stats) bool) {
		t.Helper()
		if err := p.App.Live.Wait(ctx, cond); err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
	get := func() *http.Response {
		t.Helper()
		resp, _ := p.Get(vrP)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", vrP, resp.StatusCode)
		}
		return resp
	}
	get() // fetched at 0s; subscribes the market
	wait("the snapshot", func(st live.Stats) bool { return st.Tickers >= 1 })

	p.Clock.Advance(5 * time.Second) // past the ttl, within live.max_age
	tickers := p.App.Live.Stats().Tickers
	if n, err := p.Fake.Tick(newQuote); err != nil || n != 1 {
		t.Fatalf("Tick: %d messages, %v", n, err)
	}
	wait("the push", func(st live.Stats) bool { return st.Tickers > tickers })
	resp := get()
	if got := resp.Header.Get("X-Cache"); got != "HIT" {
		t.Fatalf("after the push: X-Cache %s (%s), want HIT", got, resp.Header.Get("Cache-Status"))
	}
	if got := resp.Header.Get("Age"); got != "0" {
		t.Errorf("Age right after the push = %s, want 0 (it counts from the push, not the fetch 5s ago)", got)
	}
	p.Clock.Advance(1 * time.Second)
	if got, _ := strconv.Atoi(get().Header.Get("Age")); got != 1 {
		t.Errorf("Age 1s after the push = %d, want 1", got)
	}

	// The feed goes down and stays down.
	p.Fake.RefuseWS(http.StatusServiceUnavailable, `{"error":"down"}`)
	connects := p.App.Live.Stats().Connects
	if n := p.Fake.DropWS(); n != 1 {
		t.Fatalf("DropWS closed %d connections, want 1", n)
	}
	wait("the feed to notice", func(st live.Stats) bool { return st.State == "connecting" && st.Connects == connects })
	calls := p.Fake.Count(vrP)
	resp = get() // 6s after the fetch: 4s past the ttl, swr 0
	if got := resp.Header.Get("X-Cache"); got != "MISS" {
		t.Errorf("feed down, past the ttl: X-Cache %s (%s), want MISS", got, resp.Header.Get("Cache-Status"))
	}
	if got := p.Fake.Count(vrP) - calls; got != 1 {
		t.Errorf("upstream requests = %d, want 1", got)
	}
}
