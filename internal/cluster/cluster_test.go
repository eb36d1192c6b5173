package cluster

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/upstream"
)

func newL1(t testing.TB) *cache.Memory {
	t.Helper()
	m, err := cache.NewMemory(cache.Config{MaxBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// newCluster is one replica's Cluster on mr.
func newCluster(t testing.TB, mr *miniredis.Miniredis, mutate func(*Config)) *Cluster {
	t.Helper()
	return newClusterAt(t, "redis://"+mr.Addr(), mutate)
}

// newClusterAt is one replica's Cluster on the Redis at url.
func newClusterAt(t testing.TB, url string, mutate func(*Config)) *Cluster {
	t.Helper()
	cfg := Config{URL: url, L1: newL1(t), Timeout: time.Second, FetchTimeout: 5 * time.Second,
		HealthInterval: 50 * time.Millisecond, Backstop: 10 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func entry(key string, body []byte, fetched time.Time) *cache.Entry {
	h := http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}}
	return cache.NewEntry(key, 200, h, body, fetched, cache.Windows{TTL: 2 * time.Second, StaleWhileRevalidate: 3 * time.Second, StaleIfError: 10 * time.Minute}, true)
}

func TestSharedBudgetAcrossReplicas(t *testing.T) {
	mr := miniredis.RunT(t)
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	mr.SetTime(t0)
	a, b := newCluster(t, mr, nil), newCluster(t, mr, nil)
	la, lb := a.Limiter("read", 10), b.Limiter("read", 10)
	// A bucket of one second (10 tokens), shared: ten go at once, from
	// either replica, then one every 100ms of the server's clock.
	var delays []time.Duration
	for i := range 14 {
		l := la
		if i%2 == 1 {
			l = lb
		}
		d, ok, _ := l.Reserve(context.Background(), 250*time.Millisecond)
		if i < 12 && !ok {
			t.Fatalf("reservation %d refused, want a delay of at most 250ms", i)
		}
		if i >= 12 && ok {
			t.Fatalf("reservation %d granted with delay %v, want refused (over max_wait)", i, d)
		}
		if ok {
			delays = append(delays, d)
		}
	}
	for i, d := range delays {
		want := time.Duration(0)
		if i >= 10 {
			want = time.Duration(i-9) * 100 * time.Millisecond
		}
		if d != want {
			t.Errorf("reservation %d: delay %v, want %v", i, d, want)
		}
	}
	// The server's clock moves, not the replicas': a second later the
	// bucket has refilled.
	mr.SetTime(t0.Add(2 * time.Second))
	if d, ok, _ := la.Reserve(context.Background(), 0); !ok || d != 0 {
		t.Errorf("after refill: delay %v ok %v, want an immediate token", d, ok)
	}
}

func TestUpstream429SlowsEveryReplica(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.SetTime(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	a, b := newCluster(t, mr, nil), newCluster(t, mr, nil)
	la, lb := a.Limiter("read", 10), b.Limiter("read", 10)
	la.Penalize(time.Second)
	d, ok, _ := lb.Reserve(context.Background(), 5*time.Second)
	if !ok || d < time.Second || d > 1100*time.Millisecond {
		t.Errorf("other replica after a 429: delay %v ok %v, want about 1s", d, ok)
	}
}

func TestRedisDownFallsBackToAShareOfTheBudget(t *testing.T) {
	mr := miniredis.RunT(t)
	c, states := newWatchedCluster(t, mr)
	newCluster(t, mr, nil)
	newCluster(t, mr, nil)
	lim := c.Limiter("read", 30)
	if _, ok := waitFor(2*time.Second, func() bool { return c.Alive() == 3 }); !ok {
		t.Fatalf("alive = %d, want 3 from heartbeats", c.Alive())
	}
	mr.Close()
	waitDown(t, states)
	// 30/s over 3 replicas: a local bucket of 10.
	granted := 0
	for range 20 {
		if _, ok, _ := lim.Reserve(context.Background(), 0); ok {
			granted++
		}
	}
	if granted < 10 || granted > 11 {
		t.Errorf("with Redis down one of 3 replicas got %d immediate tokens of a 30/s budget, want 10", granted)
	}
}

// newWatchedCluster is newCluster with the changes of Redis's state on a
// channel (OnState).
func newWatchedCluster(t testing.TB, mr *miniredis.Miniredis) (*Cluster, <-chan bool) {
	states := make(chan bool, 16)
	c := newCluster(t, mr, func(cfg *Config) {
		cfg.OnState = func(up bool) {
			select {
			case states <- up:
			default:
			}
		}
	})
	return c, states
}

// waitDown waits until the Cluster reports Redis down.
func waitDown(t testing.TB, states <-chan bool) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case up := <-states:
			if !up {
				return
			}
		case <-timeout:
			t.Fatal("still up 5s after Redis closed")
		}
	}
}

// commands counts the commands a Redis client sends (a go-redis hook).
type commands struct{ n atomic.Int64 }

func (h *commands) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *commands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *commands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func waitFor(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start), true
		}
		time.Sleep(5 * time.Millisecond) // bounded poll of Redis-side state (replicas, waiters) that raises no event
	}
	return time.Since(start), cond()
}

// acquire runs Acquire in the background.
func acquire(c *Cluster, key string, timeout time.Duration) chan fetch.Turn {
	out := make(chan fetch.Turn, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out <- c.Acquire(ctx, key, true, time.Now())
	}()
	return out
}

// waiting reports whether a waiter for key is registered on c.
func waiting(c *Cluster, key string) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.waiters[key]) > 0
}

func TestWaiterIsWokenByTheFill(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := newCluster(t, mr, nil), newCluster(t, mr, nil) // backstop 10s: only pub/sub can wake in time
	turn := a.Acquire(context.Background(), "k", true, time.Now())
	if turn.Claim == nil {
		t.Fatalf("first Acquire: %+v, want the claim", turn)
	}
	got := acquire(b, "k", 5*time.Second)
	if _, ok := waitFor(2*time.Second, func() bool { return waiting(b, "k") }); !ok {
		t.Fatal("no waiter")
	}
	e := entry("k", []byte(`{"a":1}`), time.Now())
	start := time.Now()
	turn.Claim.Done(fetch.SharedOutcome{Entry: e, Retention: time.Minute})
	select {
	case w := <-got:
		if w.Entry == nil || !w.Waited || !w.Stored || string(w.Entry.Body) != `{"a":1}` {
			t.Fatalf("waiter got %+v, want the stored entry after waiting", w)
		}
		t.Logf("woken %v after the fill", time.Since(start))
	case <-time.After(2 * time.Second):
		t.Fatal("waiter not woken by the fill message")
	}
}

func TestWaiterOutcomes(t *testing.T) {
	for _, tt := range []struct {
		name  string
		o     fetch.SharedOutcome
		check func(fetch.Turn) bool
	}{
		{"401 is not shared: fetch yourself", fetch.SharedOutcome{Private: true, Entry: entry("k", []byte("x"), time.Now())},
			func(w fetch.Turn) bool { return w.Entry == nil && w.Err == nil && w.Claim == nil }},
		{"failure is shared", fetch.SharedOutcome{Err: &upstream.Error{Status: 504, Code: "upstream_timeout", Msg: "m"}},
			func(w fetch.Turn) bool {
				return w.Err != nil && w.Err.Status == 504 && w.Err.Code == "upstream_timeout"
			}},
		{"one-off answer is shared, not stored", fetch.SharedOutcome{Entry: cache.NewEntry("k", 503, nil, []byte("down"), time.Now(), cache.Windows{}, false)},
			func(w fetch.Turn) bool { return w.Entry != nil && w.Entry.Status == 503 && !w.Stored }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			a, b := newCluster(t, mr, nil), newCluster(t, mr, nil)
			turn := a.Acquire(context.Background(), "k", true, time.Now())
			if turn.Claim == nil {
				t.Fatal("no claim")
			}
			got := acquire(b, "k", 5*time.Second)
			if _, ok := waitFor(2*time.Second, func() bool { return waiting(b, "k") }); !ok {
				t.Fatal("no waiter")
			}
			turn.Claim.Done(tt.o)
			select {
			case w := <-got:
				if !tt.check(w) {
					t.Errorf("waiter got %+v", w)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("waiter not woken")
			}
			if mr.Exists("kproxy:v2:e:k") {
				t.Error("a non-storable outcome was stored as an entry")
			}
		})
	}
}

func TestExpiredClaimIsTakenOver(t *testing.T) {
	mr := miniredis.RunT(t)
	b := newCluster(t, mr, func(c *Config) { c.Backstop = 20 * time.Millisecond })
	// A claimant that died: its lease stays until it expires.
	mr.Set("kproxy:v1:l:k", "dead")
	mr.SetTTL("kproxy:v1:l:k", 3*time.Second)
	got := acquire(b, "k", 5*time.Second)
	if _, ok := waitFor(2*time.Second, func() bool { return waiting(b, "k") }); !ok {
		t.Fatal("no waiter")
	}
	select {
	case w := <-got:
		t.Fatalf("took over a live lease: %+v", w)
	case <-time.After(100 * time.Millisecond):
	}
	mr.FastForward(3 * time.Second)
	select {
	case w := <-got:
		if w.Claim == nil {
			t.Fatalf("after the lease expired: %+v, want the claim", w)
		}
		w.Claim.Done(fetch.SharedOutcome{Private: true})
	case <-time.After(2 * time.Second):
		t.Fatal("waiter did not take over the expired claim")
	}
}

func TestFillAfterPurgeIsFenced(t *testing.T) {
	mr := miniredis.RunT(t)
	a := newCluster(t, mr, nil)
	turn := a.Acquire(context.Background(), "/k", true, time.Now())
	if turn.Claim == nil {
		t.Fatal("no claim")
	}
	a.Store().Purge("/")
	turn.Claim.Done(fetch.SharedOutcome{Entry: entry("/k", []byte("old"), time.Now()), Retention: time.Minute})
	if mr.Exists("kproxy:v2:e:/k") {
		t.Error("an answer claimed before the purge was stored after it")
	}
}

func TestPurgeScansOnlyTheMatchingKeys(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := newCluster(t, mr, nil), newCluster(t, mr, nil)
	s := a.Store()
	for _, k := range []string{"/trade-api/v2/markets/A", "/trade-api/v2/markets/B", "/trade-api/v2/markets?x=[1]", "/trade-api/v2/series/S"} {
		s.Set(entry(k, []byte("v"), time.Now()), time.Minute)
		b.l1.Set(entry(k, []byte("v"), time.Now()), time.Minute)
	}
	// Entries of the previous format, which replicas of the previous
	// release still read during a rolling upgrade.
	mr.Set("kproxy:v1:e:/trade-api/v2/markets/C", "K\x01old")
	mr.Set("kproxy:v1:e:/trade-api/v2/series/S", "K\x01old")
	if n := s.Purge("/trade-api/v2/markets"); n != 4 {
		t.Errorf("Purge = %d, want 4 (3 entries, 1 of the previous format)", n)
	}
	want := []string{"kproxy:v1:e:/trade-api/v2/series/S", "kproxy:v2:e:/trade-api/v2/series/S"}
	if got := entryKeys(mr); !slices.Equal(got, want) {
		t.Errorf("L2 after purge: %q, want %q", got, want)
	}
	mr.Set("kproxy:v1:e:/trade-api/v2/series/T", "K\x01old")
	if !s.Delete("/trade-api/v2/series/T") || mr.Exists("kproxy:v1:e:/trade-api/v2/series/T") {
		t.Errorf("Delete left the previous format's entry: %q", entryKeys(mr))
	}
	if _, ok := waitFor(time.Second, func() bool { return b.l1.Stats().Items == 1 }); !ok {
		t.Errorf("other replica's L1 holds %d entries after the purge, want 1", b.l1.Stats().Items)
	}
}

// entryKeys lists the entry keys in mr, of every format, sorted.
func entryKeys(mr *miniredis.Miniredis) []string {
	var out []string
	for _, k := range mr.Keys() {
		if strings.Contains(k, ":e:") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func TestReconnectAfterMissedPurgeDropsL1(t *testing.T) {
	mr := miniredis.RunT(t)
	b := newCluster(t, mr, nil)
	b.l1.Set(entry("/k", []byte("v"), time.Now()), time.Minute)
	// A purge b never heard of (it happened while b was cut off).
	mr.Incr("kproxy:v1:epoch", 1)
	if _, ok := waitFor(2*time.Second, func() bool { return b.l1.Stats().Items == 0 }); !ok {
		t.Error("L1 kept its entries though the purge epoch moved")
	}
}

func TestLookupFillsNothingWhenRedisIsDown(t *testing.T) {
	mr := miniredis.RunT(t)
	c, states := newWatchedCluster(t, mr)
	c.Store().Set(entry("/k", []byte("v"), time.Now()), time.Minute)
	c.l1.Purge("")
	if _, ok := c.Store().Get("/k"); !ok {
		t.Fatal("L2 entry not found")
	}
	mr.Close()
	waitDown(t, states)
	sent := &commands{}
	c.Client().AddHook(sent)
	if _, ok := c.Lookup(context.Background(), "/x"); ok {
		t.Error("lookup found something with Redis down")
	}
	if turn := c.Acquire(context.Background(), "/x", true, time.Now()); turn.Claim != nil || turn.Entry != nil || turn.Err != nil {
		t.Errorf("Acquire with Redis down: %+v, want a zero Turn (fetch locally)", turn)
	}
	if n := sent.n.Load(); n != 0 {
		t.Errorf("Lookup and Acquire with the breaker open sent %d Redis commands, want 0", n)
	}
}

func TestCloseStopsEveryGoroutineAndIsIdempotent(t *testing.T) {
	mr := miniredis.RunT(t)
	c := newCluster(t, mr, func(cfg *Config) { cfg.LeaseTTL, cfg.FetchTimeout = 30*time.Millisecond, time.Minute })
	turn := c.Acquire(context.Background(), "/k", true, time.Now())
	if turn.Claim == nil {
		t.Fatalf("Acquire = %+v, want the claim", turn)
	}
	// The claim's lease renewal would run for the minute of FetchTimeout;
	// Close stops it and waits for it, and a second Close returns at once.
	closed := make(chan struct{})
	go func() {
		c.Close()
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a claim was held")
	}
	if c.spawn(func() {}) {
		t.Error("a goroutine started after Close")
	}
	turn.Claim.Done(fetch.SharedOutcome{Private: true})
}
