package app_test

// Tests for cache.stale_wait (issue 11, "Found in an independent run"): a
// request holding a stale copy within stale_if_error is answered STALE as
// soon as an upstream attempt fails (no retry backoff first), and after at
// most stale_wait when the upstream is slow or hangs; the fetch goes on in
// the background, one per key, and stores a good answer for the next
// request. Barriers: a transport that holds every retry until released,
// and the fake's Stall.

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

// gate is an upstream transport that counts attempts and, once armed,
// holds every attempt after the first until released: a request answered
// while a retry is held did not wait for the retry or its backoff.
type gate struct {
	next http.RoundTripper
	mu   sync.Mutex
	n    int
	hold chan struct{} // nil: not armed
}

func (g *gate) RoundTrip(r *http.Request) (*http.Response, error) {
	g.mu.Lock()
	g.n++
	n, hold := g.n, g.hold
	g.mu.Unlock()
	if hold != nil && n > 1 {
		select {
		case <-hold:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return g.next.RoundTrip(r)
}

// arm resets the count and holds the retries; the returned func releases
// them (idempotent).
func (g *gate) arm() (release func()) {
	ch := make(chan struct{})
	g.mu.Lock()
	g.n, g.hold = 0, ch
	g.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (g *gate) attempts() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// staleHarness is kproxy on a switchable fake with the gate as transport,
// long per-attempt timeouts and a one-second retry backoff, and
// markets/{ticker} fresh for 50ms and servable on error for 10 minutes.
func staleHarness(t *testing.T, mutate func(*config.Config)) (*harness, *switchable, *gate) {
	t.Helper()
	up := newSwitchable(t)
	fake := kalshitest.New()
	up.handler.Store(fake)
	g := &gate{next: &http.Transport{}}
	h := newHarness(t, func(cfg *config.Config) {
		cfg.Upstream.Timeout = config.Duration(5 * time.Second)
		cfg.Upstream.MaxRetries = 2
		cfg.Breaker.ConsecutiveFailures = 100
		cfg.Cache.StaleWait = config.Duration(100 * time.Millisecond)
		setRoute(cfg, marketPattern, 50*time.Millisecond, 0, 10*time.Minute)
		if mutate != nil {
			mutate(cfg)
		}
	},
		kproxytest.WithFake(fake),
		kproxytest.WithUpstreamURL("http://"+up.addr),
		kproxytest.WithAppOptions(func(o *app.Options) { o.Transport, o.RetryBase, o.RetryCap = g, time.Second, time.Second }))
	t.Cleanup(func() { fake.SetFault(kalshitest.Fault{}) })
	return h, up, g
}

func TestStaleAnsweredAtTheFirstFailedAttempt(t *testing.T) {
	tests := []struct {
		name   string
		fault  *kalshitest.Fault // set in the fake; nil: the upstream's port is closed
		status int               // fwd-status of the stale answer
	}{
		{name: "connection refused", status: 502},
		{name: "connection reset", fault: &kalshitest.Fault{Close: true}, status: 502},
		{name: "503", fault: &kalshitest.Fault{Status: 503}, status: 503},
		{name: "500", fault: &kalshitest.Fault{Status: 500}, status: 500},
		{name: "429", fault: &kalshitest.Fault{Status: 429}, status: 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// stale_wait is long here: only the failed attempt can
			// explain an early answer.
			h, up, g := staleHarness(t, func(c *config.Config) { c.Cache.StaleWait = config.Duration(10 * time.Second) })
			path := marketPath(1)
			cached := primeStale(t, h, path, 50*time.Millisecond)
			release := g.arm()
			t.Cleanup(release)
			if tt.fault == nil {
				up.down()
			} else {
				h.fake.SetFault(*tt.fault)
			}

			a := h.send(http.MethodGet, path, nil)
			wantStale(t, "stale key, first attempt failed", a, cached, "fwd=stale; fwd-status="+strconv.Itoa(tt.status))
			// Answered while every retry is held: it waited neither for
			// the backoff (up to 1s) nor for a retry.
			if got := g.attempts(); got > 2 {
				t.Errorf("%d upstream attempts before the stale answer, want 1 (+1 held retry)", got)
			}
			if a.took > time.Second {
				t.Errorf("stale answer after %v, want at the first failed attempt", a.took)
			}
			t.Logf("%s: stale after %v", tt.name, a.took)

			// The fetch goes on: its retry, released once the upstream
			// is well, stores a good answer for the next request.
			if tt.fault == nil {
				up.up(t)
			} else {
				h.fake.SetFault(kalshitest.Fault{})
			}
			release()
			h.app.Fetcher.Wait()
			if tt.status == 500 {
				// 500 is not retried: nothing was stored, the next
				// request fetches.
				a = h.send(http.MethodGet, path, nil)
				if a.status != 200 || a.header.Get("X-Cache") != "MISS" {
					t.Errorf("after recovery: %d X-Cache %q, want a 200 MISS", a.status, a.header.Get("X-Cache"))
				}
				return
			}
			a = h.send(http.MethodGet, path, nil)
			if a.status != 200 || a.header.Get("X-Cache") != "HIT" {
				t.Errorf("after the background retry: %d X-Cache %q Cache-Status %q, want a 200 HIT (the retry stored the answer)",
					a.status, a.header.Get("X-Cache"), a.header.Get("Cache-Status"))
			}
		})
	}
}

func TestStaleWaitBoundsASlowUpstream(t *testing.T) {
	h, _, _ := staleHarness(t, nil) // stale_wait 100ms, attempt timeout 5s
	path := marketPath(1)
	cached := primeStale(t, h, path, 50*time.Millisecond)
	release := h.fake.Stall()
	t.Cleanup(release)

	a := h.send(http.MethodGet, path, nil)
	wantStale(t, "stale key, upstream stalled", a, cached, "fwd=stale; detail=stale-wait")
	if a.took < 100*time.Millisecond || a.took > 2*time.Second {
		t.Errorf("stale answer after %v, want after stale_wait (100ms), well before the 5s timeout", a.took)
	}
	t.Logf("stale-wait answer after %v", a.took)

	// While that fetch hangs, every request for the key gets the copy at
	// once, and none starts another fetch.
	var wg sync.WaitGroup
	answers := make(chan answer, 10)
	for range 10 {
		wg.Go(func() { answers <- h.send(http.MethodGet, path, nil) })
	}
	wg.Wait()
	close(answers)
	for a := range answers {
		wantStale(t, "stale key while its fetch hangs", a, cached, "fwd=stale; detail=revalidating")
		if a.took > time.Second {
			t.Errorf("stale answer while the fetch hangs after %v, want at once", a.took)
		}
	}
	// The batch endpoint goes through the same fetch path.
	b := h.send(http.MethodPost, "/batch", []byte(`{"requests":[{"id":"m","path":"`+path+`"}]}`))
	var out struct {
		Responses []struct {
			Status int    `json:"status"`
			Cache  string `json:"cache"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(b.body, &out); err != nil || len(out.Responses) != 1 || out.Responses[0].Cache != "STALE" || out.Responses[0].Status != 200 {
		t.Errorf("batch item while the fetch hangs: %s, want status 200 cache STALE", b.body)
	}
	if got := h.fake.Count(path); got != 2 {
		t.Errorf("upstream saw %d requests for the key, want 2 (the first fetch and one background fetch)", got)
	}

	release()
	h.app.Fetcher.Wait()
	a = h.send(http.MethodGet, path, nil)
	if a.header.Get("X-Cache") != "HIT" {
		t.Errorf("after the stalled fetch finished: X-Cache %q, want HIT (it stored its answer)", a.header.Get("X-Cache"))
	}
	if got := h.fake.Count(path); got != 2 {
		t.Errorf("upstream saw %d requests for the key, want 2", got)
	}
}

func TestStaleWaitZeroWaitsForTheFetch(t *testing.T) {
	h, _, _ := staleHarness(t, func(c *config.Config) { c.Cache.StaleWait = 0 })
	path := marketPath(1)
	primeStale(t, h, path, 50*time.Millisecond)
	release := h.fake.Stall()
	t.Cleanup(release)
	done := make(chan answer, 1)
	go func() { done <- h.send(http.MethodGet, path, nil) }()
	kproxytest.Eventually(t, 5*time.Second, "the fetch reaches the upstream", func() bool { return h.fake.Count(path) == 2 })
	select {
	case a := <-done:
		t.Fatalf("answered %d %q while the fetch is stalled, want it to wait (stale_wait 0)", a.status, a.header.Get("X-Cache"))
	case <-time.After(300 * time.Millisecond):
	}
	release()
	a := <-done
	if a.status != 200 || a.header.Get("X-Cache") != "MISS" {
		t.Errorf("after the fetch: %d X-Cache %q, want a 200 MISS", a.status, a.header.Get("X-Cache"))
	}
}

func TestStaleAnsweredAtOnceThroughAutomaticBatching(t *testing.T) {
	// Two stale single-market keys asked within the auto-batch window go
	// upstream as one combined call; its failed attempt answers both.
	h, _, g := staleHarness(t, func(c *config.Config) {
		c.Cache.StaleWait = config.Duration(10 * time.Second)
		c.Batch.AutoWindow = config.Duration(20 * time.Millisecond)
	})
	p1, p2 := marketPath(1), marketPath(2)
	h.send(http.MethodGet, p1, nil)
	h.send(http.MethodGet, p2, nil)
	h.clock.Advance(70 * time.Millisecond) // past the 50ms ttl
	release := g.arm()
	t.Cleanup(release)
	h.fake.SetFault(kalshitest.Fault{Status: 503})
	var wg sync.WaitGroup
	answers := make([]answer, 2)
	for i, p := range []string{p1, p2} {
		wg.Go(func() { answers[i] = h.send(http.MethodGet, p, nil) })
	}
	wg.Wait()
	for i, a := range answers {
		if a.status != 200 || a.header.Get("X-Cache") != "STALE" || !strings.HasSuffix(a.header.Get("Cache-Status"), "fwd-status=503") || a.took > time.Second {
			t.Errorf("stale key %d: %d %q %q after %v, want STALE fwd-status=503 at once", i, a.status, a.header.Get("X-Cache"), a.header.Get("Cache-Status"), a.took)
		}
	}
	if got := g.attempts(); got > 2 {
		t.Errorf("%d upstream attempts before the stale answers, want 1 combined (+1 held retry)", got)
	}
	combined := false
	for _, r := range h.fake.Requests() {
		combined = combined || strings.Contains(r.RawQuery, "tickers=")
	}
	if !combined {
		t.Errorf("no combined /markets?tickers= call reached the upstream; the test did not exercise automatic batching")
	}
	h.fake.SetFault(kalshitest.Fault{})
	release()
}
