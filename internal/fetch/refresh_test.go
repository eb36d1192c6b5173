package fetch

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	kclock "github.com/kproxy/kproxy/internal/clock"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// pollRoute is a trading route as shipped: 2s fresh, 1s
// stale-while-revalidate, a minute stale-if-error.
var pollRoute = &route.Route{Pattern: marketPattern, Policy: route.Policy{
	TTL: 2 * time.Second, StaleWhileRevalidate: time.Second, StaleIfError: time.Minute,
}}

// pollEnv is an env on a clock.Fake whose timers the Fetcher uses, and
// counts the refreshes it schedules.
type pollEnv struct {
	*env
	fake      *kclock.Fake
	scheduled atomic.Int32
}

func newPollEnv(t *testing.T) *pollEnv {
	t.Helper()
	pe := &pollEnv{fake: kclock.NewFake(t0)}
	after := kclock.AfterFuncOf(pe.fake)
	pe.env = newEnv(t, ok, func(c *Config) {
		c.Now = pe.fake.Now
		c.AfterFunc = func(d time.Duration, fn func()) func() bool {
			pe.scheduled.Add(1)
			return after(d, fn)
		}
	})
	t.Cleanup(pe.f.Close)
	return pe
}

func pollRequest() *Request {
	r := request("POLL")
	r.Route = pollRoute
	r.Header = http.Header{ClientHeader: {"poller"}, "Kalshi-Access-Signature": {"client-sig"}}
	r.Credentials = upstream.Forward
	r.Charge = "/batch" // a batch item's hit: the refresh is still charged to the route
	return r
}

// poll sends n requests period apart and returns their outcomes and how
// far past its ttl each answer was (negative: fresh).
func poll(t *testing.T, e *pollEnv, n int, period time.Duration) (outs []Outcome, pastTTL []time.Duration) {
	t.Helper()
	for i := range n {
		if i > 0 {
			e.fake.Advance(period)
		}
		now := e.fake.Now()
		res := e.f.Get(t.Context(), pollRequest())
		if res.Entry == nil {
			t.Fatalf("poll %d: %v %v", i, res.Outcome, res.Err)
		}
		outs = append(outs, res.Outcome)
		pastTTL = append(pastTTL, now.Sub(res.Entry.FreshUntil))
	}
	return outs, pastTTL
}

func TestRefreshAheadKeepsSteadyPollerFresh(t *testing.T) {
	e := newPollEnv(t)
	const ttls = 10
	outs, _ := poll(t, e, 2*ttls+1, time.Second) // t = 0s .. 20s
	if outs[0] != Stored {
		t.Errorf("first poll = %v, want stored", outs[0])
	}
	for i, o := range outs[1:] {
		if o != Hit {
			t.Errorf("poll %d at %ds = %v, want hit", i+1, i+1, o)
		}
	}
	if got := e.up.fills(); got > ttls+1 {
		t.Errorf("upstream calls = %d over %d ttls, want <= %d", got, ttls, ttls+1)
	}
	for i, c := range e.up.recorded()[1:] {
		if c.call.Credentials != upstream.OwnKey || c.header.Get("Kalshi-Access-Signature") != "" {
			t.Errorf("refresh %d credentials = %v, signature %q; want OwnKey, none", i, c.call.Credentials, c.header.Get("Kalshi-Access-Signature"))
		}
		if c.call.Client != "poller" || c.call.Charge != "" || c.call.Route != marketPattern {
			t.Errorf("refresh %d client %q charge %q route %q, want poller, \"\" (the route), %s", i, c.call.Client, c.call.Charge, c.call.Route, marketPattern)
		}
	}
}

func TestRefreshAheadNotForSlowPoller(t *testing.T) {
	e := newPollEnv(t)
	outs, past := poll(t, e, 8, 3*time.Second)
	if got := int(e.scheduled.Load()); got != 0 {
		t.Errorf("refreshes scheduled = %d, want 0", got)
	}
	for i, o := range outs {
		if o == Hit {
			t.Errorf("poll %d = hit, want a miss or stale (3s apart on a 2s ttl)", i)
		}
		if past[i] > pollRoute.StaleWhileRevalidate {
			t.Errorf("poll %d served %v past its ttl, want <= %v", i, past[i], pollRoute.StaleWhileRevalidate)
		}
	}
}

func TestRefreshAheadOneOffAndStoppedPolls(t *testing.T) {
	t.Run("one-off request schedules nothing", func(t *testing.T) {
		e := newPollEnv(t)
		poll(t, e, 1, 0)
		e.fake.Advance(time.Minute)
		if got, want := int(e.scheduled.Load()), 0; got != want {
			t.Errorf("refreshes scheduled = %d, want %d", got, want)
		}
		if got := e.up.fills(); got != 1 {
			t.Errorf("upstream calls = %d, want 1", got)
		}
	})
	t.Run("stopped polls cost at most one refresh", func(t *testing.T) {
		e := newPollEnv(t)
		poll(t, e, 4, time.Second)
		before := e.up.fills()
		e.fake.Advance(time.Minute)
		// The last polls scheduled one refresh; the entry it stored has
		// no hits and schedules nothing.
		if got := e.up.fills() - before; got != 1 {
			t.Errorf("upstream calls after polls stopped = %d, want 1", got)
		}
	})
	t.Run("replaced entry is not refreshed", func(t *testing.T) {
		e := newPollEnv(t)
		poll(t, e, 2, time.Second) // schedules the refresh of the first entry
		if int(e.scheduled.Load()) != 1 {
			t.Fatalf("refreshes scheduled = %d, want 1", int(e.scheduled.Load()))
		}
		e.put(pollRequest(), e.fake.Now()) // a newer answer (a push, a no-cache fetch)
		before := e.up.fills()
		e.fake.Advance(time.Second)
		if got := e.up.fills() - before; got != 0 {
			t.Errorf("upstream calls = %d, want 0 (the entry refreshed ahead is gone)", got)
		}
	})
}

func TestCloseCancelsScheduledRefresh(t *testing.T) {
	e := newPollEnv(t)
	poll(t, e, 2, time.Second) // schedules one refresh
	e.f.Close()
	before := e.up.fills()
	e.fake.Advance(time.Minute)
	if got := e.up.fills() - before; got != 0 {
		t.Errorf("upstream calls after Close = %d, want 0", got)
	}
}

func TestHitNotingAllocatesNothing(t *testing.T) {
	e := newPollEnv(t)
	req := pollRequest()
	e.put(req, t0)
	ctx := t.Context()
	allocs := testing.AllocsPerRun(100, func() {
		if res := e.f.Get(ctx, req); res.Outcome != Hit {
			t.Fatalf("Get = %v, want hit", res.Outcome)
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per hit = %v, want 0", allocs)
	}
}

func TestRequestFreshnessLimits(t *testing.T) {
	// The stored entry: fetched 4s ago (route ttl 10s: 6s of freshness
	// left), or 15s ago (5s stale: past nothing, within swr 10s), or 25s
	// ago (15s stale: past swr, within stale-if-error).
	tests := []struct {
		name       string
		fetchedAgo time.Duration
		set        func(*Request)
		want       Outcome
		wantFwd    string
		wantFills  int
	}{
		{"max-age older than entry: hit", 4 * time.Second, func(r *Request) { r.MaxAge = 5 * time.Second }, Hit, "", 0},
		{"max-age younger than entry: fetch", 4 * time.Second, func(r *Request) { r.MaxAge = 3 * time.Second }, Stored, "request", 1},
		{"min-fresh within freshness left: hit", 4 * time.Second, func(r *Request) { r.MinFresh = 6 * time.Second }, Hit, "", 0},
		{"min-fresh beyond freshness left: fetch", 4 * time.Second, func(r *Request) { r.MinFresh = 7 * time.Second }, Stored, "request", 1},
		{"past swr without max-stale: fetch", 25 * time.Second, nil, Stored, "stale", 1},
		{"max-stale covers staleness: stale at once", 25 * time.Second, func(r *Request) { r.MaxStale = 20 * time.Second }, Revalidating, "", 1},
		{"max-stale short of staleness: fetch", 25 * time.Second, func(r *Request) { r.MaxStale = 10 * time.Second }, Stored, "stale", 1},
		{"max-stale any: stale at once", 25 * time.Second, func(r *Request) { r.MaxStale = AnyStale }, Revalidating, "", 1},
		{"max-stale past retention: fetch", 2 * time.Hour, func(r *Request) { r.MaxStale = AnyStale }, Stored, "stale", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, ok, nil)
			req := request("A")
			e.put(req, t0.Add(-tt.fetchedAgo))
			if tt.set != nil {
				tt.set(req)
			}
			res := e.f.Get(t.Context(), req)
			e.f.Wait() // a background refresh, if any, has ended
			if res.Outcome != tt.want || res.Fwd != tt.wantFwd {
				t.Errorf("Get = %v fwd %q, want %v fwd %q", res.Outcome, res.Fwd, tt.want, tt.wantFwd)
			}
			if got := e.up.fills(); got != tt.wantFills {
				t.Errorf("upstream calls = %d, want %d", got, tt.wantFills)
			}
		})
	}
}

func TestParseFreshnessDirectives(t *testing.T) {
	tests := []struct {
		value string
		want  Directives
	}{
		{"max-age=5", Directives{MaxAge: 5 * time.Second}},
		{`MAX-AGE="7"`, Directives{MaxAge: 7 * time.Second}},
		{"max-age=0", Directives{NoCache: true}},
		{"max-age=abc", Directives{}},
		{"min-fresh=3", Directives{MinFresh: 3 * time.Second}},
		{"min-fresh=", Directives{}},
		{"max-stale", Directives{MaxStale: AnyStale}},
		{"max-stale=30", Directives{MaxStale: 30 * time.Second}},
		{"max-stale=-1", Directives{}},
		{"max-age=99999999999999999999", Directives{MaxAge: maxDelta * time.Second}},
		{"no-cache, min-fresh=2, max-stale=4", Directives{NoCache: true, MinFresh: 2 * time.Second, MaxStale: 4 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			h := http.Header{"Cache-Control": {tt.value}}
			if got := ParseDirectives(h); got != tt.want {
				t.Errorf("ParseDirectives(%q) = %+v, want %+v", tt.value, got, tt.want)
			}
			if a := testing.AllocsPerRun(10, func() { ParseDirectives(h) }); a != 0 {
				t.Errorf("ParseDirectives allocates %v times, want 0", a)
			}
		})
	}
}
