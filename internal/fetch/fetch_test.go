package fetch

// Unit tests of the fetch path in groupcache's manner: a fake upstream that
// counts fills, channels as barriers, a clock moved by hand, and
// testing/synctest where a timer decides. Nothing sleeps.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// fakeUpstream answers fetches with serve and records every call. It plays
// the upstream client's part: it counts attempts and calls the hooks.
type fakeUpstream struct {
	serve func(ctx context.Context, call *upstream.Call, path, query string) (status int, body string, err error)
	signs bool

	mu    sync.Mutex
	calls []fakeCall
}

type fakeCall struct {
	call        upstream.Call // a copy, as the call began
	path, query string
	header      http.Header
}

func (u *fakeUpstream) Get(ctx context.Context, call *upstream.Call, path, query string, h http.Header) (*http.Response, error) {
	u.mu.Lock()
	u.calls = append(u.calls, fakeCall{call: *call, path: path, query: query, header: h.Clone()})
	u.mu.Unlock()
	call.Attempts++
	status, body, err := u.serve(ctx, call, path, query)
	if call.OnAttempt != nil {
		call.OnAttempt(status, err)
	}
	if err != nil {
		return nil, err
	}
	return &http.Response{
		StatusCode:    status,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
	}, nil
}

func (u *fakeUpstream) Signs() bool { return u.signs }

// fills is how many upstream calls were made.
func (u *fakeUpstream) fills() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.calls)
}

func (u *fakeUpstream) recorded() []fakeCall {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.calls)
}

// ok answers every call 200 with a body naming its path.
func ok(_ context.Context, _ *upstream.Call, path, _ string) (int, string, error) {
	return http.StatusOK, `{"path":"` + path + `"}`, nil
}

// gate answers like ok once release is closed; arrived is closed when the
// first call reaches it (the fetch is under way).
func gate() (serve func(context.Context, *upstream.Call, string, string) (int, string, error), arrived, release chan struct{}) {
	arrived, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	serve = func(ctx context.Context, c *upstream.Call, p, q string) (int, string, error) {
		once.Do(func() { close(arrived) })
		<-release
		return ok(ctx, c, p, q)
	}
	return serve, arrived, release
}

// mapStore is a cache.Store in a map: no background goroutines, no TTL of
// its own (retention is ignored), every Set visible at once.
type mapStore struct {
	mu sync.Mutex
	m  map[string]*cache.Entry
}

func newMapStore() *mapStore { return &mapStore{m: map[string]*cache.Entry{}} }

func (s *mapStore) Get(key string) (*cache.Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	return e, ok
}

func (s *mapStore) Set(e *cache.Entry, _ time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[e.Key] = e
}

func (s *mapStore) Purge(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k := range s.m {
		if strings.HasPrefix(k, prefix) {
			delete(s.m, k)
			n++
		}
	}
	return n
}

func (s *mapStore) Delete(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[key]
	delete(s.m, key)
	return ok
}

func (s *mapStore) List(string, int) ([]*cache.Entry, int) { return nil, 0 }
func (s *mapStore) Stats() cache.Stats                     { return cache.Stats{} }

// clock is a clock moved by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

// markets is the route of the tests: 10s fresh, 10s stale-while-revalidate,
// one hour stale-if-error.
var marketRoute = &route.Route{Pattern: marketPattern, Policy: route.Policy{
	TTL: 10 * time.Second, StaleWhileRevalidate: 10 * time.Second, StaleIfError: time.Hour,
}}

type env struct {
	f     *Fetcher
	up    *fakeUpstream
	store *mapStore
	clock *clock
}

// newEnv builds a Fetcher on a fake upstream serving serve; edit adjusts its
// Config. A nil clock in the result means the real one (synctest's).
func newEnv(t *testing.T, serve func(context.Context, *upstream.Call, string, string) (int, string, error), edit func(*Config)) *env {
	t.Helper()
	e := &env{up: &fakeUpstream{serve: serve}, store: newMapStore(), clock: &clock{t: t0}}
	cfg := Config{Store: e.store, Upstream: e.up, Now: e.clock.Now}
	if edit != nil {
		edit(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.f = f
	t.Cleanup(f.Wait)
	return e
}

// request is a GET of market ticker.
func request(ticker string) *Request {
	p := route.Prefix + "markets/" + ticker
	return &Request{Route: marketRoute, Key: route.Key(p, ""), EscapedPath: p, RemoteAddr: "127.0.0.1:5000"}
}

// store puts an entry for req fetched at fetchedAt.
func (e *env) put(req *Request, fetchedAt time.Time) *cache.Entry {
	rt := req.Route
	ent := cache.NewEntry(req.Key, http.StatusOK, http.Header{}, []byte(`{"cached":true}`), fetchedAt,
		cache.Windows{TTL: rt.TTL, StaleWhileRevalidate: rt.StaleWhileRevalidate, StaleIfError: rt.StaleIfError}, true)
	e.store.Set(ent, time.Hour)
	return ent
}

func TestConcurrentMissesFillOnce(t *testing.T) {
	serve, arrived, release := gate()
	e := newEnv(t, serve, nil)
	const n = 100
	results := make(chan Result, n)
	for range n {
		go func() { results <- e.f.Get(t.Context(), request("A")) }()
	}
	<-arrived
	close(release)
	count := map[Outcome]int{}
	for range n {
		res := <-results
		if res.Outcome == Failed || res.Entry.Status != http.StatusOK {
			t.Fatalf("Get = %v %+v, want a 200", res.Outcome, res.Err)
		}
		count[res.Outcome]++
	}
	if got := e.up.fills(); got != 1 {
		t.Errorf("upstream fills = %d, want 1", got)
	}
	if count[Stored] != 1 || count[Stored]+count[Collapsed]+count[Hit] != n {
		t.Errorf("outcomes = %v, want one stored, the rest collapsed or hits", count)
	}
}

// missOnce is a store whose first Get of each key misses although the
// entry is there: the caller's lookup ran just before another flight
// stored it.
type missOnce struct {
	*mapStore
	missed sync.Map
}

func (s *missOnce) Get(key string) (*cache.Entry, bool) {
	if _, seen := s.missed.LoadOrStore(key, true); !seen {
		return nil, false
	}
	return s.mapStore.Get(key)
}

func TestFlightRechecksTheCache(t *testing.T) {
	var late *missOnce
	e := newEnv(t, ok, func(c *Config) {
		late = &missOnce{mapStore: c.Store.(*mapStore)}
		c.Store = late
	})
	req := request("A")
	e.put(req, t0)
	res := e.f.Get(t.Context(), req)
	if got := e.up.fills(); got != 0 {
		t.Errorf("upstream fills = %d, want 0 (the flight must find the entry stored since the lookup)", got)
	}
	if res.Outcome != Hit || string(res.Entry.Body) != `{"cached":true}` {
		t.Errorf("Get = %v %q, want the stored entry as a hit", res.Outcome, res.Entry.Body)
	}
}

func TestStaleAnsweredAtFirstFailedAttempt(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, func(ctx context.Context, c *upstream.Call, p, q string) (int, string, error) {
		c.OnAttempt(http.StatusServiceUnavailable, nil) // the first attempt fails ...
		<-release                                       // ... and the retries take their time
		return ok(ctx, c, p, q)
	}, func(c *Config) { c.StaleWait = time.Hour })
	req := request("A")
	e.put(req, t0)
	e.clock.Add(30 * time.Second) // past stale-while-revalidate, within stale-if-error

	res := e.f.Get(t.Context(), req)
	if res.Outcome != StaleOnError || res.FwdStatus != http.StatusServiceUnavailable {
		t.Errorf("Get = %v fwd-status %d, want stale-if-error with fwd-status 503", res.Outcome, res.FwdStatus)
	}
	if got, want := res.CacheStatus(-20*time.Second), "kproxy; hit; ttl=-20; fwd=stale; fwd-status=503"; got != want {
		t.Errorf("Cache-Status = %q, want %q", got, want)
	}
	close(release)
	e.f.Wait()
	if ent, _ := e.store.Get(req.Key); !ent.Fresh(e.clock.Now()) {
		t.Error("the fetch did not go on to store a fresh entry after the stale answer")
	}
}

func TestStaleWaitOnHangingUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		e := newEnv(t, func(ctx context.Context, c *upstream.Call, p, q string) (int, string, error) {
			<-release // hangs without failing
			return ok(ctx, c, p, q)
		}, func(c *Config) {
			c.StaleWait = 500 * time.Millisecond
			c.Now = nil // synctest's clock
		})
		req := request("A")
		e.put(req, time.Now().Add(-30*time.Second))
		start := time.Now()
		res := e.f.Get(t.Context(), req)
		if res.Outcome != StaleOnError || res.Detail != DetailStaleWait {
			t.Errorf("Get = %v detail %q, want stale-if-error detail stale-wait", res.Outcome, res.Detail)
		}
		if waited := time.Since(start); waited != 500*time.Millisecond {
			t.Errorf("waited %v, want stale_wait (500ms)", waited)
		}
		close(release)
		e.f.Wait()
	})
}

// epochTier is a Shared tier that never holds anything and lets every
// replica fetch; a purge moves its epoch.
type epochTier struct{ epoch atomic.Uint64 }

func (s *epochTier) Lookup(context.Context, string) (*cache.Entry, bool)   { return nil, false }
func (s *epochTier) Acquire(context.Context, string, bool, time.Time) Turn { return Turn{} }
func (s *epochTier) Epoch() uint64                                         { return s.epoch.Load() }

func TestPurgeFencesARunningFetch(t *testing.T) {
	tier := &epochTier{}
	e := newEnv(t, func(ctx context.Context, c *upstream.Call, p, q string) (int, string, error) {
		tier.epoch.Add(1) // a purge lands while the fetch is under way
		return ok(ctx, c, p, q)
	}, func(c *Config) { c.Shared = tier })
	req := request("A")
	res := e.f.Get(t.Context(), req)
	if res.Outcome == Failed || res.Entry.Status != http.StatusOK {
		t.Fatalf("Get = %v, want the fetched answer", res.Outcome)
	}
	if _, ok := e.store.Get(req.Key); ok {
		t.Error("an answer fetched across a purge was stored; want it fenced out")
	}
}

func TestOnlyIfCached(t *testing.T) {
	tests := []struct {
		name       string
		fetchedAgo time.Duration // <0: nothing stored
		want       Outcome
		wantDetail string
	}{
		{"fresh entry is a hit", time.Second, Hit, ""},
		{"stale entry is served stale", 30 * time.Second, StaleOnError, DetailOnlyIfCached},
		{"nothing stored is 504 not_cached", -1, Failed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, ok, nil)
			req := request("A")
			if tt.fetchedAgo >= 0 {
				e.put(req, t0.Add(-tt.fetchedAgo))
			}
			req.OnlyIfCached = true
			res := e.f.Get(t.Context(), req)
			if res.Outcome != tt.want || res.Detail != tt.wantDetail {
				t.Errorf("Get = %v detail %q, want %v detail %q", res.Outcome, res.Detail, tt.want, tt.wantDetail)
			}
			if tt.want == Failed && (!errors.Is(res.Err, ErrNotCached) || res.Err.Status != http.StatusGatewayTimeout) {
				t.Errorf("Err = %v, want 504 not_cached", res.Err)
			}
			if got := e.up.fills(); got != 0 {
				t.Errorf("upstream fills = %d, want 0", got)
			}
		})
	}
}

func TestNoCacheRefetchesCoalesced(t *testing.T) {
	for _, h := range []http.Header{
		{"Cache-Control": {"no-cache"}},
		{"Cache-Control": {"max-age=0"}},
		{"Pragma": {"no-cache"}},
	} {
		t.Run(fmt.Sprint(h), func(t *testing.T) {
			serve, arrived, release := gate()
			e := newEnv(t, serve, nil)
			e.put(request("A"), t0) // fresh: only the directive makes it fetch
			const n = 10
			results := make(chan Result, n)
			for range n {
				go func() {
					req := request("A")
					req.Header, req.NoCache = h, ParseDirectives(h).NoCache
					results <- e.f.Get(t.Context(), req)
				}()
			}
			<-arrived
			close(release)
			for range n {
				if res := <-results; res.Fwd != "request" || (res.Outcome != Stored && res.Outcome != Collapsed) {
					t.Errorf("Get = %v fwd %q, want stored or collapsed with fwd=request", res.Outcome, res.Fwd)
				}
			}
			// Requests that arrive after the fetch ended start one more.
			if got := e.up.fills(); got < 1 || got > n {
				t.Errorf("upstream fills = %d, want 1 to %d", got, n)
			}
			if got := e.up.fills(); got != 1 {
				t.Logf("upstream fills = %d (some requests came after the first fetch)", got)
			}
		})
	}
}

func TestWaiterCancelDoesNotCancelLeader(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	leaderCtxErr := make(chan error, 1)
	e := newEnv(t, func(ctx context.Context, c *upstream.Call, p, q string) (int, string, error) {
		close(arrived)
		<-release
		leaderCtxErr <- ctx.Err()
		return ok(ctx, c, p, q)
	}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan Result, 1)
	req := request("A")
	go func() { done <- e.f.Get(ctx, req) }()
	<-arrived
	cancel()
	res := <-done
	if res.Outcome != Failed || !errors.Is(res.Err, upstream.ErrClientClosed) {
		t.Errorf("Get after cancel = %v %v, want client_closed", res.Outcome, res.Err)
	}
	close(release)
	e.f.Wait()
	if err := <-leaderCtxErr; err != nil {
		t.Errorf("the fetch's context ended with %v when its starter left; want it running", err)
	}
	if _, ok := e.store.Get(req.Key); !ok {
		t.Error("the fetch did not store its answer after its starter left")
	}
}

func TestPanicInFetchReachesNoWaiter(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, func(context.Context, *upstream.Call, string, string) (int, string, error) {
		<-release
		panic("boom")
	}, nil)
	const n = 5
	results := make(chan Result, n)
	for range n {
		go func() { results <- e.f.Get(t.Context(), request("A")) }()
	}
	close(release)
	for range n {
		res := <-results
		if res.Outcome != Failed || !errors.Is(res.Err, upstream.ErrInternal) || res.Err.Status != http.StatusInternalServerError {
			t.Errorf("Get = %v %v, want a 500 internal_error", res.Outcome, res.Err)
		}
	}
}

func TestAutoBatchSplitsCombinedCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, func(_ context.Context, c *upstream.Call, p, q string) (int, string, error) {
			if p == marketsPattern {
				// The list knows A and B, not Z.
				return http.StatusOK, `{"markets":[{"ticker":"A","x":1},{"ticker":"B","x":2}],"cursor":""}`, nil
			}
			return http.StatusNotFound, `{"error":{"code":"not_found"}}`, nil
		}, func(c *Config) {
			c.AutoWindow = 10 * time.Millisecond
			c.Now = nil
		})
		tickers := []string{"A", "B", "Z"}
		results := make([]Result, len(tickers))
		var wg sync.WaitGroup
		for i, tk := range tickers {
			wg.Go(func() {
				req := request(tk)
				req.Header = http.Header{"Kalshi-Access-Key": {"client-" + tk}, "Kalshi-Access-Signature": {"sig-" + tk}}
				results[i] = e.f.Get(t.Context(), req)
			})
		}
		wg.Wait()
		for i, want := range []string{`{"market":{"ticker":"A","x":1}}`, `{"market":{"ticker":"B","x":2}}`} {
			if res := results[i]; res.Outcome != Stored || string(res.Entry.Body) != want {
				t.Errorf("%s: Get = %v %q, want stored %s", tickers[i], res.Outcome, res.Entry.Body, want)
			}
		}
		if res := results[2]; res.Outcome == Failed || res.Entry.Status != http.StatusNotFound {
			t.Errorf("Z: Get = %v, want the single route's 404", res.Outcome)
		}
		var combined, single []fakeCall
		for _, c := range e.up.recorded() {
			if c.path == marketsPattern {
				combined = append(combined, c)
			} else {
				single = append(single, c)
			}
		}
		if len(combined) != 1 || len(single) != 1 || single[0].path != route.Prefix+"markets/Z" {
			t.Fatalf("upstream calls: %d combined, singles %v; want 1 combined and one single for Z", len(combined), single)
		}
		cc := combined[0]
		if cc.call.Credentials != upstream.OwnKey || cc.call.Charge != marketPattern || cc.call.Route != marketsPattern {
			t.Errorf("combined call = %+v, want OwnKey credentials, route %s charged to %s", cc.call, marketsPattern, marketPattern)
		}
		for _, tk := range tickers {
			if !strings.Contains(cc.query, tk) {
				t.Errorf("combined query %q lacks %s", cc.query, tk)
			}
		}
		if s := single[0]; s.call.Credentials != upstream.Forward || s.header.Get("Kalshi-Access-Key") != "client-Z" {
			t.Errorf("single call for Z: credentials %v key %q, want Z's own, forwarded", s.call.Credentials, s.header.Get("Kalshi-Access-Key"))
		}
		e.f.Wait()
	})
}

func TestClientName(t *testing.T) {
	tests := []struct {
		name    string
		h       http.Header
		addr    string
		want    string
		wantErr bool
	}{
		{"kproxy-client wins", http.Header{"Kproxy-Client": {"bot-1.a:b_c"}, "Kalshi-Access-Key": {"k"}}, "10.0.0.1:1", "bot-1.a:b_c", false},
		{"access key is tagged, not revealed", http.Header{"Kalshi-Access-Key": {"secret-key"}}, "10.0.0.1:1", "key:", false},
		{"address without either", http.Header{}, "127.0.0.1:5000", "addr:127.0.0.1", false},
		{"empty value refused", http.Header{"Kproxy-Client": {""}}, "", "", true},
		{"space refused", http.Header{"Kproxy-Client": {"a b"}}, "", "", true},
		{"65 bytes refused", http.Header{"Kproxy-Client": {strings.Repeat("a", 65)}}, "", "", true},
		{"two values refused", http.Header{"Kproxy-Client": {"a", "b"}}, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ClientName(tt.h, tt.addr)
			if tt.wantErr {
				if !errors.Is(err, ErrBadClient) {
					t.Errorf("ClientName = %q, %v; want ErrBadClient", got, err)
				}
				return
			}
			if err != nil || !strings.HasPrefix(got, tt.want) || len(got) > maxClientName || strings.Contains(got, "secret") {
				t.Errorf("ClientName = %q, %v; want %q...", got, err, tt.want)
			}
		})
	}
	if a, _ := ClientName(http.Header{"Kalshi-Access-Key": {"k1"}}, ""); a != mustName("k1") || a == mustName("k2") || len(a) != len("key:")+8 {
		t.Errorf("key tags %q / %q: want stable, distinct, 8 hex digits", a, mustName("k2"))
	}
}

func mustName(key string) string {
	n, _ := ClientName(http.Header{"Kalshi-Access-Key": {key}}, "")
	return n
}
