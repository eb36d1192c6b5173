package live_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
	"github.com/kproxy/kproxy/internal/live"
)

// benchHit serves a warm key through the whole handler, with the shipped
// observability (metrics, access log), the live feed on or off. With the
// feed on, the market is hot and its entry pushed.
func benchHit(b *testing.B, withLive bool, path string) {
	hour := config.Duration(time.Hour)
	r := start(b, func(c *config.Config) {
		c.Live.Enabled = withLive
		c.Log.Access = true
		// A long ttl, so every iteration is a HIT in both modes however
		// long the run.
		for _, p := range []string{"/trade-api/v2/markets/{ticker}", "/trade-api/v2/series/{series_ticker}"} {
			c.Cache.Overrides = append(c.Cache.Overrides, config.Override{Pattern: p, TTL: &hour})
		}
	})
	if withLive {
		r.hot(vr)
	}
	req := httptest.NewRequest(http.MethodGet, path, nil)
	w := kproxytest.BenchHit(b, r.a.Server, req)
	if cs := w.H.Get("Cache-Status"); withLive && path == vrP && !strings.HasSuffix(cs, "; detail=pushed") {
		b.Fatalf("Cache-Status = %q, want a pushed hit", cs)
	}
}

// The pairs below measure what the live feed costs a hit: compare ns/op
// and allocs/op side by side. Market: a /markets/{ticker} hit (the hot set's
// recency is kept on it); Series: a route the feed does not look at.
func BenchmarkHitMarketLiveOff(b *testing.B) { benchHit(b, false, vrP) }
func BenchmarkHitMarketLiveOn(b *testing.B)  { benchHit(b, true, vrP) }
func BenchmarkHitSeriesLiveOff(b *testing.B) {
	benchHit(b, false, "/trade-api/v2/series/KXEARNINGSMENTIONMETA")
}
func BenchmarkHitSeriesLiveOn(b *testing.B) {
	benchHit(b, true, "/trade-api/v2/series/KXEARNINGSMENTIONMETA")
}

// BenchmarkStaleness measures the age of the price a polling client is
// served: the price of one market changes every 100 ms at the upstream
// (REST data and push together), a client polls it every 10 ms for 3 s; the
// age of an answer is 0 when it shows the current price, else the time
// since its price was replaced. ttl: live.enabled false (the shipped 2 s
// ttl); live: the feed on. Run with -benchtime 1x.
func BenchmarkStaleness(b *testing.B) {
	for _, mode := range []string{"ttl", "live"} {
		b.Run(mode, func(b *testing.B) {
			var ages []time.Duration
			for b.Loop() {
				ages = append(ages, staleness(b, mode == "live")...)
			}
			slices.Sort(ages)
			q := func(p float64) float64 { return float64(ages[int(p*float64(len(ages)-1))]) / float64(time.Millisecond) }
			b.ReportMetric(q(0.5), "age-p50-ms")
			b.ReportMetric(q(0.99), "age-p99-ms")
			b.ReportMetric(q(1), "age-max-ms")
			b.ReportMetric(float64(len(ages)), "answers")
		})
	}
}

func staleness(b *testing.B, withLive bool) []time.Duration {
	b.Helper()
	b.StopTimer()
	r := start(b, func(c *config.Config) { c.Live.Enabled = withLive }, kproxytest.WithRealClock()) // staleness in wall time
	if withLive {
		r.hot(vr)
	} else {
		r.get(vrP)
	}
	b.StartTimer()
	var (
		mu       sync.Mutex
		current  = "0.3300"
		replaced = map[string]time.Time{} // price -> when it stopped being current
	)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-done:
				return
			case <-t.C:
			}
			bid := fmt.Sprintf("0.%02d00", 10+i%80)
			ask := fmt.Sprintf("0.%02d00", 11+i%80)
			mu.Lock()
			if _, err := r.fake.Tick(kalshitest.Ticker{Market: vr, YesBid: bid, YesAsk: ask}); err != nil {
				mu.Unlock()
				b.Error(err)
				return
			}
			replaced[current] = time.Now()
			current = bid
			mu.Unlock()
		}
	})
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	var ages []time.Duration
	end := time.Now().Add(3 * time.Second)
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for ; time.Now().Before(end); <-poll.C {
		resp, err := client.Get(r.URL + vrP)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		at := time.Now()
		var v struct {
			Market struct {
				YesBid string `json:"yes_bid_dollars"`
			} `json:"market"`
		}
		json.Unmarshal(body, &v)
		mu.Lock()
		age := time.Duration(0)
		if v.Market.YesBid != current {
			if t, ok := replaced[v.Market.YesBid]; ok {
				age = at.Sub(t)
			}
		}
		mu.Unlock()
		ages = append(ages, age)
	}
	close(done)
	wg.Wait()
	return ages
}

// BenchmarkRESTCalls measures the upstream REST calls of 50 hot markets
// each polled every 200 ms, with the shipped configuration (basic tier,
// 2 s ttl, auto-batching on), TTL only against the live feed: 2 s warm-up,
// then a 6 s window scaled to a per-minute rate. With the feed on, each
// market is also refetched once per live.max_age (1 m by default): add 50
// calls a minute to a window that saw none. Run with -benchtime 1x.
func BenchmarkRESTCalls(b *testing.B) {
	for _, mode := range []string{"ttl", "live"} {
		b.Run(mode, func(b *testing.B) {
			var perMin float64
			for b.Loop() {
				perMin = restCalls(b, mode == "live")
			}
			b.ReportMetric(perMin, "rest-calls/min")
		})
	}
}

func restCalls(b *testing.B, withLive bool) float64 {
	b.Helper()
	b.StopTimer()
	r := start(b, func(c *config.Config) {
		c.Live.Enabled = withLive
		c.Upstream.ReadRate, c.Upstream.WriteRate = nil, nil // the tier's
		c.Batch.AutoWindow = config.Duration(2 * time.Millisecond)
	}, kproxytest.WithRealClock()) // ttls expire in wall time: calls per minute
	markets := r.fake.MarketTickers("KXBIGSERIES")[:50]
	b.StartTimer()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	// One tick every 4 ms polls the next market: each of the 50 is polled
	// every 200 ms, the pollers spread over the period.
	poll := func(d time.Duration) {
		var wg sync.WaitGroup
		t := time.NewTicker(200 * time.Millisecond / time.Duration(len(markets)))
		defer t.Stop()
		end := time.Now().Add(d)
		for i := 0; time.Now().Before(end); i++ {
			m := markets[i%len(markets)]
			wg.Go(func() {
				if resp, err := client.Get(r.URL + "/trade-api/v2/markets/" + m); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
			<-t.C
		}
		wg.Wait()
	}
	poll(2 * time.Second)
	if withLive {
		r.wait("50 hot markets", func(st live.Stats) bool { return st.Hot == 50 && st.Tickers >= 50 })
	}
	ws := r.fake.Count(kalshitest.WSPath)
	before := r.fake.Total() - ws
	const window = 6 * time.Second
	poll(window)
	calls := r.fake.Total() - r.fake.Count(kalshitest.WSPath) - before
	return float64(calls) * float64(time.Minute) / float64(window)
}
