package app_test

// Tests for issue 9: several replicas acting as one through a real Redis
// (redistest starts redis-server; CI installs it with apt-get).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/clock"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
	"github.com/kproxy/kproxy/internal/redistest"
)

// replicas are n kproxy instances in this process, one Redis, one fake
// Kalshi, one fake clock.
type replicas struct {
	t      testing.TB
	fake   *kalshitest.Server
	up     string // the fake's URL
	clock  *clock.Fake
	redis  *redistest.Server
	mutate func(*config.Config)
	mu     sync.Mutex
	procs  []*kproxytest.Proxy // nil while replica i is stopped
}

const adminToken = "cluster-test-token"

func newReplicas(t testing.TB, n int, mutate func(*config.Config)) *replicas {
	t.Helper()
	r := &replicas{t: t, fake: kalshitest.New(), redis: redistest.Start(t), mutate: mutate, procs: make([]*kproxytest.Proxy, n)}
	up := httptest.NewServer(r.fake)
	t.Cleanup(up.Close)
	r.up = up.URL
	for i := range n {
		r.start(i)
	}
	return r
}

// start builds replica i anew (a restart when it ran before).
func (r *replicas) start(i int) {
	r.t.Helper()
	p := kproxytest.New(r.t,
		kproxytest.WithFake(r.fake), kproxytest.WithUpstreamURL(r.up), kproxytest.WithClock(r.clock),
		kproxytest.WithRedis(r.redis.URL()),
		kproxytest.WithConfig(func(c *config.Config) {
			c.Admin.Token = adminToken
			if r.mutate != nil {
				r.mutate(c)
			}
		}))
	if r.clock == nil {
		r.clock = p.Clock
	}
	r.mu.Lock()
	r.procs[i] = p
	r.mu.Unlock()
	// On a loaded machine the first probe may miss its deadline: the
	// tests start once the replica sees Redis (it would reconnect by
	// itself within a second anyway).
	if p.App.Cluster != nil && r.redis.PID() != 0 {
		kproxytest.Eventually(r.t, 5*time.Second, fmt.Sprintf("replica %d sees Redis", i), p.App.Cluster.Up)
	}
}

// stop stops replica i (a replica going down).
func (r *replicas) stop(i int) {
	r.mu.Lock()
	p := r.procs[i]
	r.procs[i] = nil
	r.mu.Unlock()
	if p != nil {
		p.Close()
	}
}

func (r *replicas) url(i int, path string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs[i].URL + path
}

func (r *replicas) get(i int, path string, header ...string) answer {
	return send(http.MethodGet, r.url(i, path), nil, header...)
}

func (r *replicas) app(i int) *app.App {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs[i].App
}

// readyRedis is the "redis" field of replica i's /readyz.
func (r *replicas) readyRedis(i int) (string, int) {
	a := r.get(i, "/readyz")
	var body struct{ Redis string }
	json.Unmarshal(a.body, &body)
	return body.Redis, a.status
}

func TestReplicasColdBurstMakesOneUpstreamRequest(t *testing.T) {
	r := newReplicas(t, 3, func(c *config.Config) {
		// This test is about coalescing, not about Redis deadlines: on a
		// loaded two-core -race run a 300-request burst can hold a Redis
		// reply past 500ms, and a replica whose claim call times out
		// rightly fetches on its own.
		c.Redis.Timeout = config.Duration(3 * time.Second)
		c.Log.Level = "debug"
		// Nor about expiry: the burst may outlast the route's 2s ttl under
		// -race, and a refresh of an expired entry is a second request
		// by design.
		ttl := config.Duration(time.Minute)
		c.Cache.Overrides = append(c.Cache.Overrides, config.Override{Pattern: "/trade-api/v2/markets/{ticker}", TTL: &ttl})
	})
	r.fake.SetLatency(100 * time.Millisecond) // the burst lands while the fetch runs
	path := marketPath(7)
	const n = 300
	answers := make(chan answer, n)
	start := make(chan struct{})
	for i := range n {
		go func() {
			<-start
			answers <- r.get(i%3, path)
		}()
	}
	close(start)
	outcomes := map[string]int{}
	for range n {
		a := <-answers
		if a.err != nil || a.status != http.StatusOK {
			t.Fatalf("cold request: %d %v %s", a.status, a.err, a.body)
		}
		outcomes[a.header.Get("X-Cache")+" "+a.header.Get("Cache-Status")]++
	}
	if got := r.fake.Count("/trade-api/v2/markets/KXBIGSERIES-26JUN30-M007"); got != 1 {
		t.Errorf("upstream saw %d requests for %d concurrent cold requests over 3 replicas, want 1 (outcomes %v)", got, n, outcomes)
	}
	t.Logf("outcomes: %v", outcomes)
}

func TestReplicasServeEachOthersAnswersAsSharedHits(t *testing.T) {
	r := newReplicas(t, 3, nil)
	path := marketPath(3)
	first := r.get(0, path)
	if first.status != http.StatusOK || first.header.Get("X-Cache") != "MISS" {
		t.Fatalf("first request: %d X-Cache %q", first.status, first.header.Get("X-Cache"))
	}
	for _, i := range []int{1, 2} {
		a := r.get(i, path)
		if a.status != http.StatusOK || a.header.Get("X-Cache") != "HIT" || !strings.HasSuffix(a.header.Get("Cache-Status"), "; detail=shared") {
			t.Errorf("replica %d: %d X-Cache %q Cache-Status %q, want a HIT with detail=shared", i, a.status, a.header.Get("X-Cache"), a.header.Get("Cache-Status"))
		}
		if string(a.body) != string(first.body) || a.header.Get("ETag") != first.header.Get("ETag") {
			t.Errorf("replica %d: body or ETag differ from the fetching replica's", i)
		}
		// Later hits on that replica come from its own L1.
		if again := r.get(i, path); again.header.Get("Cache-Status") != "kproxy; hit; ttl="+ttlOf(again) {
			t.Errorf("replica %d second hit: Cache-Status %q, want a plain L1 hit", i, again.header.Get("Cache-Status"))
		}
	}
	wantUpstreamTotal(t, r.fake, 1, "")
	// gzip clients get the compressed copy rebuilt from L2.
	page := "/trade-api/v2/markets?series_ticker=KXBIGSERIES&limit=50"
	r.get(0, page)
	gz := r.get(1, page, "Accept-Encoding", "gzip")
	if gz.header.Get("Content-Encoding") != "gzip" || !strings.Contains(gz.header.Get("Cache-Status"), "detail=shared") {
		t.Errorf("gzip shared hit: Content-Encoding %q Cache-Status %q", gz.header.Get("Content-Encoding"), gz.header.Get("Cache-Status"))
	}
}

func ttlOf(a answer) string {
	cs := a.header.Get("Cache-Status")
	i := strings.Index(cs, "ttl=")
	if i < 0 {
		return "?"
	}
	return strings.TrimSpace(strings.SplitN(cs[i+4:], ";", 2)[0])
}

func TestReplicasShareOneRateBudget(t *testing.T) {
	const rate = 10
	r := newReplicas(t, 3, func(c *config.Config) { setRates(c, rate, rate, 5*time.Second) })
	const keys = 3 * rate
	answers := make(chan answer, keys)
	for i := range keys {
		go func() { answers <- r.get(i%3, marketPath(i+1)) }()
	}
	for range keys {
		if a := <-answers; a.err != nil || a.status != http.StatusOK {
			t.Errorf("cold request: %d %s %v, want 200 (the wait stays under max_wait)", a.status, a.body, a.err)
		}
	}
	at := arrivalTimes(t, r.fake, keys)
	// One bucket of one second of budget plus its refill, for all three
	// replicas together: no one-second window holds more than 2*rate
	// (three separate buckets would allow 6*rate).
	busiest := busiestSecond(at)
	if busiest > 2*rate {
		t.Errorf("busiest one-second window had %d upstream arrivals from 3 replicas, want at most %d (one budget of %d/s)", busiest, 2*rate, rate)
	}
	t.Logf("%d keys over 3 replicas: busiest 1s window %d arrivals, spread %v", keys, busiest, at[len(at)-1].Sub(at[0]))
}

func TestPurgeOnOneReplicaReachesEveryReplica(t *testing.T) {
	r := newReplicas(t, 3, nil)
	path := marketPath(5)
	for i := range 3 {
		if a := r.get(i, path); a.status != http.StatusOK {
			t.Fatalf("priming replica %d: %d", i, a.status)
		}
	}
	before := r.fake.Total()
	a := send(http.MethodDelete, r.url(0, "/admin/cache?prefix=/trade-api/v2/markets/"), nil, "Authorization", "Bearer "+adminToken)
	if a.status != http.StatusOK {
		t.Fatalf("purge: %d %s", a.status, a.body)
	}
	key := "/trade-api/v2/markets/KXBIGSERIES-26JUN30-M005"
	start := time.Now()
	kproxytest.Eventually(t, time.Second, "the purge reaches every replica's L1", func() bool {
		for i := range 3 {
			if _, held := r.app(i).Store.Get(key); held {
				return false
			}
		}
		return true
	})
	t.Logf("purge reached every L1 in %v", time.Since(start))
	// The first request after the purge misses; the other replicas then
	// share its new answer (fetched after the purge), never the old one.
	if a := r.get(0, path); a.header.Get("X-Cache") != "MISS" {
		t.Errorf("replica 0 after purge: X-Cache %q (%s), want MISS", a.header.Get("X-Cache"), a.header.Get("Cache-Status"))
	}
	for i := 1; i < 3; i++ {
		if a := r.get(i, path); !strings.Contains(a.header.Get("Cache-Status"), "detail=shared") || a.header.Get("Age") != "0" {
			t.Errorf("replica %d after purge: Cache-Status %q Age %q, want the new answer shared", i, a.header.Get("Cache-Status"), a.header.Get("Age"))
		}
	}
	if got := r.fake.Total() - before; got != 1 {
		t.Errorf("after the purge the three replicas made %d upstream requests, want 1 (refetched once, shared)", got)
	}
}

func TestPurgeFencesAFetchThatStartedBeforeIt(t *testing.T) {
	r := newReplicas(t, 2, nil)
	path := marketPath(9)
	release := r.fake.Stall()
	done := make(chan answer, 1)
	go func() { done <- r.get(0, path) }()
	// The fetch is under way (the fake holds it), then a purge happens.
	kproxytest.Eventually(t, 5*time.Second, "the fetch reaches the upstream", func() bool { return r.fake.Total() == 1 })
	a := send(http.MethodDelete, r.url(1, "/admin/cache?prefix="), nil, "Authorization", "Bearer "+adminToken)
	if a.status != http.StatusOK {
		t.Fatalf("purge: %d", a.status)
	}
	release()
	if a := <-done; a.status != http.StatusOK {
		t.Fatalf("fenced request: %d", a.status)
	}
	// Its answer predates the purge: neither L2 nor any L1 keeps it.
	key := "/trade-api/v2/markets/KXBIGSERIES-26JUN30-M009"
	if got, _ := r.redis.Do("EXISTS", "kproxy:v2:e:"+key); !strings.HasPrefix(got, ":0") {
		t.Errorf("L2 holds an answer fetched before the purge (EXISTS = %q)", strings.TrimSpace(got))
	}
	for i := range 2 {
		if _, ok := r.app(i).Store.Get(key); ok {
			t.Errorf("replica %d L1 holds an answer fetched before the purge", i)
		}
	}
}

func TestRestartedReplicaServesSharedEntriesAtOnce(t *testing.T) {
	r := newReplicas(t, 2, nil)
	path := marketPath(11)
	if a := r.get(0, path); a.status != http.StatusOK {
		t.Fatalf("priming: %d", a.status)
	}
	r.stop(1)
	r.start(1)
	a := r.get(1, path)
	if a.header.Get("X-Cache") != "HIT" || !strings.Contains(a.header.Get("Cache-Status"), "detail=shared") {
		t.Errorf("restarted replica: X-Cache %q Cache-Status %q, want a shared HIT", a.header.Get("X-Cache"), a.header.Get("Cache-Status"))
	}
	wantUpstreamTotal(t, r.fake, 1, "")
}

func TestDeadClaimantIsTakenOverWithinTheFetchTimeout(t *testing.T) {
	r := newReplicas(t, 2, nil)
	path := marketPath(13)
	// A replica took the claim and died: the lease is there, no one
	// renews it, no fill will come.
	lease := "kproxy:v1:l:/trade-api/v2/markets/KXBIGSERIES-26JUN30-M013"
	if got, err := r.redis.Do("SET", lease, "deadbeefdeadbeef", "PX", "1500"); err != nil || !strings.HasPrefix(got, "+OK") {
		t.Fatalf("SET lease: %q %v", got, err)
	}
	start := time.Now()
	answers := make(chan answer, 2)
	for i := range 2 {
		go func() { answers <- r.get(i, path) }()
	}
	for range 2 {
		if a := <-answers; a.status != http.StatusOK {
			t.Fatalf("waiter: %d %s", a.status, a.body)
		}
	}
	took := time.Since(start)
	fetchTimeout := 5*time.Second + 3*(2*time.Second+5*time.Millisecond)
	if took < time.Second || took > fetchTimeout {
		t.Errorf("answered after %v, want after the dead lease expired (1.5s) and within the fetch timeout %v", took, fetchTimeout)
	}
	wantUpstreamTotal(t, r.fake, 1, "one waiter took over, the other shared its answer")
}

func TestEntriesOfAnotherEncodingAreIgnored(t *testing.T) {
	r := newReplicas(t, 1, nil)
	path := marketPath(15)
	key := "/trade-api/v2/markets/KXBIGSERIES-26JUN30-M015"
	// A value under this version's key that this version did not write
	// (a future format, or garbage), and ones under older versions' keys.
	r.redis.Do("SET", "kproxy:v2:e:"+key, "k\x02\x00not a record of version 1", "PX", "60000")
	r.redis.Do("SET", "kproxy:v1:e:"+key, "K\x01\x00an entry of the previous format", "PX", "60000")
	r.redis.Do("SET", "kproxy:v0:e:"+key, "anything", "PX", "60000")
	a := r.get(0, path)
	if a.status != http.StatusOK || a.header.Get("X-Cache") != "MISS" || !strings.Contains(string(a.body), "KXBIGSERIES-26JUN30-M015") {
		t.Fatalf("with a foreign L2 value: %d X-Cache %q body %.80s, want a MISS fetched upstream", a.status, a.header.Get("X-Cache"), a.body)
	}
	wantUpstreamTotal(t, r.fake, 1, "")
	// The fill replaced it with a readable entry.
	r2 := r.get(0, path)
	if r2.header.Get("X-Cache") != "HIT" {
		t.Errorf("after the refetch: X-Cache %q", r2.header.Get("X-Cache"))
	}
}

// redisFault runs steady load on every replica while fault takes Redis
// away, checks readiness turns "down" within 5s and the load sees no error,
// then heals Redis and checks "up" within 10s and shared hits again.
func redisFault(t *testing.T, fault func(*redistest.Server), heal func(*redistest.Server)) {
	r := newReplicas(t, 3, nil)
	for i := range 3 {
		if s, code := r.readyRedis(i); s != "up" || code != http.StatusOK {
			t.Fatalf("replica %d readyz redis %q (%d), want up", i, s, code)
		}
	}
	hot := marketPath(1)
	r.get(0, hot)
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		errs     []string
		slowest  time.Duration
		requests int
	)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ctx.Err() == nil && k < 2000; k++ {
				path := hot
				if k%3 == 0 {
					path = marketPath(20 + (w*2000+k)%400) // cold keys too
				}
				a := r.get(w%3, path)
				mu.Lock()
				requests++
				if a.err != nil || a.status != http.StatusOK {
					errs = append(errs, fmt.Sprintf("%s: %d %v %.100s", path, a.status, a.err, a.body))
				}
				slowest = max(slowest, a.took)
				mu.Unlock()
			}
		}()
	}
	// served waits until the load has made n more requests.
	served := func(what string, n int) {
		mu.Lock()
		want := requests + n
		mu.Unlock()
		kproxytest.Eventually(t, 10*time.Second, what, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return requests >= want
		})
	}
	served("load before the fault", 50)
	fault(r.redis)
	start := time.Now()
	kproxytest.Eventually(t, 5*time.Second, "readyz says redis down on every replica", func() bool {
		for i := range 3 {
			if s, code := r.readyRedis(i); s != "down" || code != http.StatusOK {
				return false
			}
		}
		return true
	})
	t.Logf("readyz down after %v", time.Since(start))
	served("load while Redis is gone", 100)
	heal(r.redis)
	start = time.Now()
	kproxytest.Eventually(t, 10*time.Second, "readyz says redis up on every replica once it answers", func() bool {
		for i := range 3 {
			if s, _ := r.readyRedis(i); s != "up" {
				return false
			}
		}
		return true
	})
	t.Logf("readyz up after %v", time.Since(start))
	cancel()
	wg.Wait()
	if len(errs) > 0 {
		t.Errorf("%d of %d requests failed while Redis failed, want none; first: %s", len(errs), requests, errs[0])
	}
	// Bounded added latency: a Redis call costs at most redis.timeout and
	// the breaker takes Redis out of the path after a few failures.
	if slowest > 3*time.Second {
		t.Errorf("slowest request took %v while Redis failed, want well under 3s", slowest)
	}
	t.Logf("%d requests, slowest %v", requests, slowest)
	if got := metric(t, &harness{app: r.app(0)}, "kproxy_redis_up"); got != 1 {
		t.Errorf("kproxy_redis_up = %v after recovery, want 1", got)
	}
	// Sharing works again.
	fresh := marketPath(450)
	r.get(0, fresh)
	if a := r.get(1, fresh); !strings.Contains(a.header.Get("Cache-Status"), "detail=shared") {
		t.Errorf("after recovery: Cache-Status %q, want a shared hit", a.header.Get("Cache-Status"))
	}
}

func TestRedisPausedMidLoad(t *testing.T) {
	redisFault(t, (*redistest.Server).Pause, (*redistest.Server).Resume)
}

func TestRedisKilledMidLoad(t *testing.T) {
	redisFault(t, (*redistest.Server).Kill, (*redistest.Server).Restart)
}

func TestReplicaStartsWithoutRedis(t *testing.T) {
	r := newReplicas(t, 1, nil)
	r.redis.Kill()
	r.stop(0)
	r.start(0)
	if s, code := r.readyRedis(0); s != "down" || code != http.StatusOK {
		t.Fatalf("readyz redis %q (%d), want down with 200", s, code)
	}
	if a := r.get(0, marketPath(2)); a.status != http.StatusOK {
		t.Fatalf("without redis: %d", a.status)
	}
	if got := metric(t, &harness{app: r.app(0)}, "kproxy_redis_up"); got != 0 {
		t.Errorf("kproxy_redis_up = %v, want 0", got)
	}
	r.redis.Restart()
	kproxytest.Eventually(t, 10*time.Second, "replica 0 reconnects to Redis", func() bool { s, _ := r.readyRedis(0); return s == "up" })
}

// Benchmarks (go test -bench Tier -run '^$' ./app/): one warm key served
// from L1, from L2 (L1 emptied before every request) and from the upstream
// (client no-cache: claim, fetch, L2 fill), side by side.

func benchTier(b *testing.B, tier string) {
	r := newReplicas(b, 1, nil)
	a := r.app(0)
	req := httptest.NewRequest(http.MethodGet, benchSeries, nil)
	if tier == "upstream" {
		req.Header.Set("Cache-Control", "no-cache")
	}
	w := kproxytest.Warm(b, a.Server, req)
	key := benchSeries
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if tier == "L2" {
			b.StopTimer()
			a.Store.Delete(key)
			b.StartTimer()
		}
		w.H = make(http.Header)
		a.Server.ServeHTTP(w, req)
	}
	want := map[string]string{"L1": "kproxy; hit; ttl=", "L2": "detail=shared", "upstream": "fwd=request"}[tier]
	if !strings.Contains(w.H.Get("Cache-Status"), want) {
		b.Fatalf("Cache-Status %q, want %q", w.H.Get("Cache-Status"), want)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

func BenchmarkTierL1Hit(b *testing.B)    { benchTier(b, "L1") }
func BenchmarkTierL2Hit(b *testing.B)    { benchTier(b, "L2") }
func BenchmarkTierUpstream(b *testing.B) { benchTier(b, "upstream") }

// BenchmarkPollingScripts counts upstream calls for one workload: 20
// scripts each polling the same 50 keys 5 times, spread over the replicas.
// Compare upstream-calls/op between the three set-ups.
func BenchmarkPollingScripts(b *testing.B) {
	for _, tt := range []struct {
		name     string
		replicas int
		redis    bool
	}{{"1-replica", 1, false}, {"3-replicas-no-redis", 3, false}, {"3-replicas-redis", 3, true}} {
		b.Run(tt.name, func(b *testing.B) {
			calls := 0
			for b.Loop() {
				b.StopTimer()
				r := newReplicas(b, tt.replicas, func(c *config.Config) {
					// Long-lived entries: the count is of cold fetches only.
					setRoute(c, "/trade-api/v2/markets/{ticker}", 10*time.Minute, 0, 0)
					if !tt.redis {
						c.Redis.URL = ""
					}
				})
				r.fake.SetLatency(20 * time.Millisecond)
				b.StartTimer()
				var wg sync.WaitGroup
				for s := range 20 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for round := range 5 {
							for k := range 50 {
								r.get((s+k+round)%tt.replicas, marketPath(k+1))
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				calls += r.fake.Total()
				for i := range tt.replicas {
					r.stop(i)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(calls)/float64(b.N), "upstream-calls/op")
		})
	}
}

// BenchmarkRedisMemoryPerEntry reports what one L2 entry costs in Redis
// (MEMORY USAGE, and used_memory growth over n entries) for a single
// market and a 50-market page.
func BenchmarkRedisMemoryPerEntry(b *testing.B) {
	const n = 400
	for _, tt := range []struct{ name, path, key string }{
		{"market", "/trade-api/v2/markets/KXBIGSERIES-26JUN30-M%03d", "/trade-api/v2/markets/KXBIGSERIES-26JUN30-M001"},
		{"page50", "/trade-api/v2/markets?series_ticker=KXMEM%03d&limit=50", "/trade-api/v2/markets?limit=50&series_ticker=KXMEM001"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			r := newReplicas(b, 1, nil)
			for i := range n {
				r.fake.AddSeries(fmt.Sprintf("KXMEM%03d", i+1), 50)
			}
			used := func() float64 {
				info, err := r.app(0).Cluster.Client().Info(context.Background(), "memory").Result()
				if err != nil {
					b.Fatal(err)
				}
				for _, line := range strings.Split(info, "\r\n") {
					if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
						var n float64
						fmt.Sscan(v, &n)
						return n
					}
				}
				return 0
			}
			before := used()
			body := 0
			for i := range n {
				a := r.get(0, fmt.Sprintf(tt.path, i+1))
				if a.status != http.StatusOK {
					b.Fatalf("%s: %d", fmt.Sprintf(tt.path, i+1), a.status)
				}
				body += len(a.body)
			}
			after := used()
			key := "kproxy:v2:e:" + tt.key
			usage, err := r.app(0).Cluster.Client().MemoryUsage(context.Background(), key).Result()
			if err != nil {
				b.Fatalf("MEMORY USAGE %s: %v", key, err)
			}
			for b.Loop() {
			}
			b.ReportMetric(float64(usage), "memory-usage-B")
			b.ReportMetric((after-before)/n, "used-memory-B/entry")
			b.ReportMetric(float64(body)/n, "identity-body-B")
		})
	}
}

func TestUpstream429SlowsEveryReplica(t *testing.T) {
	r := newReplicas(t, 2, nil)
	a := "/trade-api/v2/markets/KXBIGSERIES-26JUN30-M021"
	b := "/trade-api/v2/markets/KXBIGSERIES-26JUN30-M022"
	r.fake.SetFault(kalshitest.Fault{Status: http.StatusTooManyRequests, Times: 1, Paths: []string{a}})
	first := make(chan answer, 1)
	go func() { first <- r.get(0, a) }()
	// Replica 0 counts its retry once it has pushed the penalty to the
	// shared bucket.
	kproxytest.Eventually(t, 5*time.Second, "replica 0 got the 429 and penalized the shared bucket", func() bool {
		return metric(t, &harness{app: r.app(0)}, "kproxy_upstream_retries_total", "reason", "429") >= 1
	})
	// Replica 1 never saw the 429, but shares the bucket it pushed back.
	if got := r.get(1, b); got.status != http.StatusOK {
		t.Fatalf("other replica: %d", got.status)
	}
	if got := <-first; got.status != http.StatusOK {
		t.Fatalf("replica 0 after its retry: %d", got.status)
	}
	at := map[string][]time.Time{}
	for _, q := range r.fake.Requests() {
		at[q.Path] = append(at[q.Path], q.At)
	}
	if len(at[a]) != 2 || len(at[b]) != 1 {
		t.Fatalf("upstream saw %d requests for a, %d for b; want 2 (429, retry) and 1", len(at[a]), len(at[b]))
	}
	if d := at[b][0].Sub(at[a][0]); d < 900*time.Millisecond {
		t.Errorf("the other replica went upstream %v after the 429, want about 1s later (the shared bucket's penalty)", d)
	}
}
