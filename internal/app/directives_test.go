package app_test

// Request cache directives (issue 13 item 5, docs/cache-control.md).

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

func TestMaxAgeZeroForcesAFreshCoalescedFetch(t *testing.T) {
	h := newHarness(t, nil)
	if a := h.send(http.MethodGet, metaSeries, nil); a.status != 200 {
		t.Fatalf("priming: %d", a.status)
	}
	for _, cc := range []string{"max-age=0", "MAX-AGE=0", `max-age="0"`, "private, max-age=00", "no-cache"} {
		before := h.fake.Count(metaSeries)
		a := h.send(http.MethodGet, metaSeries, nil, "Cache-Control", cc)
		if a.status != 200 || !strings.Contains(a.header.Get("Cache-Status"), "fwd=request") || h.fake.Count(metaSeries) != before+1 {
			t.Errorf("Cache-Control %q: %d Cache-Status %q, upstream +%d; want a fresh fetch (fwd=request)", cc, a.status, a.header.Get("Cache-Status"), h.fake.Count(metaSeries)-before)
		}
	}
	// Still coalesced: 10 at once make one upstream request.
	release := h.fake.Stall()
	before := h.fake.Count(metaSeries)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if a := h.send(http.MethodGet, metaSeries, nil, "Cache-Control", "max-age=0"); a.status != 200 {
				t.Errorf("coalesced max-age=0: %d", a.status)
			}
		})
	}
	kproxytest.Eventually(t, 5*time.Second, "the fetch reaches the upstream", func() bool { return h.fake.Count(metaSeries) > before })
	h.AwaitCollapsed(metaSeries, 10) // the others joined the held fetch
	release()
	wg.Wait()
	if got := h.fake.Count(metaSeries) - before; got != 1 {
		t.Errorf("10 concurrent max-age=0 requests made %d upstream requests, want 1", got)
	}
}

func TestOnlyIfCached(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { setRoute(c, marketPattern, 50*time.Millisecond, 0, 10*time.Minute) })
	cold := marketPath(1)
	a := h.send(http.MethodGet, cold, nil, "Cache-Control", "only-if-cached")
	wantKproxyError(t, "only-if-cached, not cached", a, http.StatusGatewayTimeout, "not_cached", "")
	if cs := a.header.Get("Cache-Status"); cs != "kproxy; detail=not_cached" {
		t.Errorf("Cache-Status = %q, want kproxy; detail=not_cached", cs)
	}
	wantUpstreamTotal(t, h.fake, 0, "")
	cached := h.send(http.MethodGet, cold, nil).body
	a = h.send(http.MethodGet, cold, nil, "Cache-Control", "only-if-cached")
	if a.status != 200 || a.header.Get("X-Cache") != "HIT" {
		t.Errorf("only-if-cached, fresh: %d %q, want a 200 HIT", a.status, a.header.Get("X-Cache"))
	}
	h.clock.Advance(80 * time.Millisecond) // past the 50ms ttl, within stale_if_error
	a = h.send(http.MethodGet, cold, nil, "Cache-Control", "ONLY-IF-CACHED, max-age=0")
	if a.status != 200 || a.header.Get("X-Cache") != "STALE" || string(a.body) != string(cached) || !strings.HasSuffix(a.header.Get("Cache-Status"), "; detail=only-if-cached") {
		t.Errorf("only-if-cached, stale: %d %q %q, want the stale copy with detail=only-if-cached", a.status, a.header.Get("X-Cache"), a.header.Get("Cache-Status"))
	}
	h.app.Fetcher.Wait()
	wantUpstreamTotal(t, h.fake, 1, "only-if-cached never fetches")
}

func TestIgnoredRequestDirectives(t *testing.T) {
	h := newHarness(t, nil)
	h.send(http.MethodGet, metaSeries, nil)
	for _, cc := range []string{"max-age=5", "no-store", "min-fresh=1", "max-stale", "no-transform", "stale-if-error=5", "max-age=0x", "nocache"} {
		a := h.send(http.MethodGet, metaSeries, nil, "Cache-Control", cc)
		if a.header.Get("X-Cache") != "HIT" {
			t.Errorf("Cache-Control %q: X-Cache %q, want HIT (ignored)", cc, a.header.Get("X-Cache"))
		}
	}
	wantUpstreamTotal(t, h.fake, 1, "")
}

func TestParseDirectivesDoesNotAllocate(t *testing.T) {
	hdr := http.Header{"Cache-Control": {"public, Max-Age=0, only-if-cached"}, "Pragma": {"no-cache"}}
	if n := testing.AllocsPerRun(100, func() { fetch.ParseDirectives(hdr) }); n != 0 {
		t.Errorf("ParseDirectives allocates %v times per call, want 0", n)
	}
	if d := fetch.ParseDirectives(hdr); !d.NoCache || !d.OnlyIfCached {
		t.Errorf("ParseDirectives = %+v, want both set", d)
	}
}
