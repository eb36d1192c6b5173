package app_test

// The soak (issue 11, item 3): mixed load on one kproxy in front of the fake
// Kalshi, with faults injected on a schedule, for -soak (default 3s, so
// every `go test` runs a short one; CI: -soak 60s; scripts/soak.sh: minutes).
// It asserts zero cross-user leaks, every write id reaching the upstream
// exactly once, no error beyond those injected, and (for runs of 30s or
// more) flat resource use: the least-squares slopes of RSS, the live heap
// (after a GC), goroutines and open file descriptors, after a warm-up of a
// third of the run, within the bounds below. The cache is 16 MiB, so it is
// full within the warm-up; the fake's request record is dropped at every
// sample, write ids are counted as they arrive. Loopback only; every loop ends at the deadline.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

var (
	soakFor     = flag.Duration("soak", 3*time.Second, "how long TestSoak runs")
	soakProfile = flag.String("soakprofile", "", "write a heap profile at the end of TestSoak (before cleanup) to this file")
)

// Bounds of the slopes, per minute, after warm-up.
const (
	soakHeapSlope      = 2 << 20  // live heap after a GC, bytes/min
	soakRSSSlope       = 16 << 20 // bytes/min (RSS lags the heap: scavenging, fragmentation)
	soakGoroutineSlope = 20.0     // goroutines/min
	soakFDSlope        = 10.0     // fds/min
	soakFaultPath      = "/trade-api/v2/events"
)

type soakSample struct {
	at                         time.Duration
	rss, heap, goroutines, fds float64
}

func rssBytes() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb * 1024
		}
	}
	return 0
}

func openFDs() float64 {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return float64(len(ents))
}

// slope is the least-squares slope of ys over xs (per unit of x).
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

func TestSoak(t *testing.T) {
	dur := *soakFor
	h := newHarness(t, func(c *config.Config) {
		c.Upstream.Timeout = config.Duration(2 * time.Second)
		c.Cache.MaxBytes = 16 << 20          // full within the warm-up: later growth is a leak
		c.Breaker.ConsecutiveFailures = 1000 // faults on one route must not stop the others
		c.Log.Access = false
		setRoute(c, marketPattern, 200*time.Millisecond, 200*time.Millisecond, 10*time.Minute)
	}, kproxytest.WithRealClock()) // a soak: entries expire and refill on the wall clock
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}, Timeout: 10 * time.Second}
	deadline := time.Now().Add(dur)
	start := time.Now()

	var (
		mu         sync.Mutex
		unexpected []string
		requests   atomic.Int64
		injected   atomic.Int64
		leaks      atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(unexpected) < 20 {
			unexpected = append(unexpected, fmt.Sprintf(format, args...))
		}
	}
	do := func(method, path string, body []byte, hdr ...string) (int, http.Header, []byte, error) {
		requests.Add(1)
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, _ := http.NewRequest(method, h.url(path), rd)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b, err
	}
	// okOr checks an answer: 2xx, or (on the faulted route) an injected
	// failure or a stale copy of it.
	okOr := func(what, path string, status int, err error) {
		if err == nil && status/100 == 2 {
			return
		}
		if strings.HasPrefix(path, soakFaultPath) && err == nil && (status >= 500 || status == 429) {
			injected.Add(1)
			return
		}
		fail("%s %s: %d %v", what, path, status, err)
	}

	var wg sync.WaitGroup
	loop := func(name string, every time.Duration, body func(i int)) {
		wg.Go(func() {
			var tick <-chan time.Time
			if every > 0 {
				t := time.NewTicker(every)
				defer t.Stop()
				tick = t.C
			}
			for i := 0; time.Now().Before(deadline); i++ {
				body(i)
				if tick != nil {
					<-tick
				}
			}
		})
	}
	// Faults on a schedule, on /events only: 503s, resets, 429s, hangs.
	loop("faults", 250*time.Millisecond, func(i int) {
		f := [...]kalshitest.Fault{{Status: 503}, {Close: true}, {Status: 429}, {Hang: true}, {}}[i%5]
		f.Paths = []string{soakFaultPath}
		h.fake.SetFault(f)
	})
	// Hits on a few hot keys.
	for w := range 2 {
		loop("hits", 0, func(i int) {
			p := marketPath(1 + (i+w)%5)
			s, _, _, err := do(http.MethodGet, p, nil)
			okOr("hit", p, s, err)
		})
	}
	// Cold misses: 450 markets, fresh for 200ms each.
	loop("cold", time.Millisecond, func(i int) {
		p := marketPath(1 + (i*7)%450)
		s, _, _, err := do(http.MethodGet, p, nil)
		okOr("cold", p, s, err)
	})
	// The faulted route, cold and stale.
	loop("events", 5*time.Millisecond, func(i int) {
		p := soakFaultPath + "?limit=" + strconv.Itoa(1+i%3)
		s, _, _, err := do(http.MethodGet, p, nil)
		okOr("events", p, s, err)
	})
	// Coalesced bursts: 10 at once on a new key.
	loop("bursts", 50*time.Millisecond, func(i int) {
		p := "/trade-api/v2/markets?limit=1&tickers=" + strings.TrimPrefix(marketPath(1+i%450), "/trade-api/v2/markets/")
		var bw sync.WaitGroup
		for range 10 {
			bw.Go(func() {
				s, _, _, err := do(http.MethodGet, p, nil)
				okOr("burst", p, s, err)
			})
		}
		bw.Wait()
	})
	// Batches with NDJSON progress.
	loop("batches", 10*time.Millisecond, func(i int) {
		body := fmt.Sprintf(`{"requests":[{"id":"a","path":"%s"},{"id":"b","path":"/trade-api/v2/series/KXFEDDECISION"},{"id":"c","path":"/trade-api/v2/events/KXFEDDECISION-26JUN30"}]}`, marketPath(1+i%450))
		s, _, b, err := do(http.MethodPost, "/batch", []byte(body), "Accept", "application/x-ndjson")
		if err != nil || s != 200 {
			fail("batch: %d %v", s, err)
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		items, done := 0, false
		for sc.Scan() {
			var line struct {
				ID     string `json:"id"`
				Status int    `json:"status"`
				Done   bool   `json:"done"`
				OK     int    `json:"ok"`
				Failed int    `json:"failed"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				fail("batch: line %q is not JSON", sc.Bytes())
				return
			}
			switch {
			case line.Done:
				done = line.OK+line.Failed == 3
			case line.ID == "c":
				items++
				okOr("batch item", "/trade-api/v2/events/", line.Status, nil)
			default:
				items++
				okOr("batch item "+line.ID, "", line.Status, nil)
			}
		}
		if items != 3 || !done {
			fail("batch: %d item lines, done line right: %v", items, done)
		}
	})
	// Private calls from distinct keys: each answer names its caller.
	for k := range 4 {
		key := fmt.Sprintf("soak-key-%d", k)
		loop("private", time.Millisecond, func(i int) {
			s, hdr, b, err := do(http.MethodGet, "/trade-api/v2/portfolio/balance", nil,
				"KALSHI-ACCESS-KEY", key, "KALSHI-ACCESS-TIMESTAMP", "1", "KALSHI-ACCESS-SIGNATURE", "s")
			okOr("private", "", s, err)
			var bal struct {
				KeyID string `json:"key_id"`
			}
			if err == nil && s == 200 && (json.Unmarshal(b, &bal) != nil || bal.KeyID != key || hdr.Get("X-Cache") != "BYPASS") {
				leaks.Add(1)
				fail("private: key %s got %s (X-Cache %q)", key, b, hdr.Get("X-Cache"))
			}
		})
	}
	// Writes with unique ids, counted where they arrive (the fake's own
	// record is dropped as the run goes, or it would grow without bound).
	// arrivals[n] counts the arrivals of write id soak-n: one byte per
	// write, so the test's own record does not look like a leak.
	var seenMu sync.Mutex
	var wseq, bad atomic.Int64
	var seen []uint8
	h.fake.Handle("POST "+ordersPath, func(w http.ResponseWriter, r *http.Request) {
		var o struct {
			ID string `json:"client_order_id"`
		}
		json.NewDecoder(r.Body).Decode(&o)
		n, err := strconv.Atoi(strings.TrimPrefix(o.ID, "soak-"))
		seenMu.Lock()
		if err == nil && n > 0 {
			for len(seen) <= n {
				seen = append(seen, 0)
			}
			if seen[n] < 255 {
				seen[n]++
			}
		} else {
			bad.Add(1)
		}
		seenMu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"order":{"order_id":"o-` + o.ID + `","client_order_id":"` + o.ID + `","status":"resting"}}`))
	})
	for range 2 {
		loop("writes", 2*time.Millisecond, func(int) {
			id := fmt.Sprintf("soak-%d", wseq.Add(1))
			s, _, _, err := do(http.MethodPost, ordersPath, []byte(`{"ticker":"X","client_order_id":"`+id+`"}`),
				"KALSHI-ACCESS-KEY", "writer", "KALSHI-ACCESS-TIMESTAMP", "1", "KALSHI-ACCESS-SIGNATURE", "s")
			okOr("write", "", s, err)
		})
	}
	// Resource samples.
	var samples []soakSample
	every := max(dur/60, 100*time.Millisecond)
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for ; time.Now().Before(deadline); <-tick.C {
			h.fake.Reset()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			samples = append(samples, soakSample{at: time.Since(start), rss: rssBytes(), heap: float64(ms.HeapAlloc), goroutines: float64(runtime.NumGoroutine()), fds: openFDs()})
		}
	})
	wg.Wait()
	h.fake.SetFault(kalshitest.Fault{})
	h.app.Fetcher.Wait()

	if *soakProfile != "" {
		if f, err := os.Create(*soakProfile); err == nil {
			runtime.GC()
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	// Every write id reached the upstream exactly once.
	writes := int(wseq.Load())
	seenMu.Lock()
	for n := 1; n <= writes; n++ {
		if got := uint8(0); n < len(seen) {
			got = seen[n]
			if got != 1 {
				t.Errorf("write soak-%d reached the upstream %d times, want exactly 1", n, got)
			}
		} else {
			t.Errorf("write soak-%d never reached the upstream", n)
		}
	}
	if len(seen) > writes+1 || bad.Load() != 0 {
		t.Errorf("the upstream saw write ids kproxy was never sent (%d ids, %d unparsable)", len(seen)-1, bad.Load())
	}
	seenMu.Unlock()
	if leaks.Load() != 0 {
		t.Errorf("%d private answers carried another caller's identity or were not BYPASS", leaks.Load())
	}
	for _, u := range unexpected {
		t.Errorf("error beyond those injected: %s", u)
	}

	// Slopes after warm-up (the first third: the cache fills, pools and
	// the heap grow to their working size).
	var xs, rss, heap, gor, fds []float64
	var last soakSample
	for _, s := range samples {
		if s.at < dur/3 {
			continue
		}
		xs = append(xs, s.at.Minutes())
		rss, heap, gor, fds = append(rss, s.rss), append(heap, s.heap), append(gor, s.goroutines), append(fds, s.fds)
		last = s
	}
	sr, sh, sg, sf := slope(xs, rss), slope(xs, heap), slope(xs, gor), slope(xs, fds)
	t.Logf("soak %v: %d requests, %d writes (each once), %d injected failures seen, %d leaks; %d samples; at the end RSS %.0f MiB, heap %.0f MiB, %.0f goroutines, %.0f fds; slopes per minute after warm-up: RSS %+.2f MiB, live heap %+.2f MiB, goroutines %+.1f, fds %+.1f (bounds %d MiB, %d MiB, %.0f, %.0f; enforced from 30s)",
		dur, requests.Load(), writes, injected.Load(), leaks.Load(), len(samples), last.rss/(1<<20), last.heap/(1<<20), last.goroutines, last.fds,
		sr/(1<<20), sh/(1<<20), sg, sf, soakRSSSlope>>20, soakHeapSlope>>20, soakGoroutineSlope, soakFDSlope)
	if injected.Load() == 0 {
		t.Errorf("no injected failure was seen: the fault schedule did not run")
	}
	if dur >= 30*time.Second {
		if sr > soakRSSSlope || sh > soakHeapSlope || sg > soakGoroutineSlope || sf > soakFDSlope {
			t.Errorf("resource use grows: RSS %+.2f MiB/min, live heap %+.2f MiB/min, goroutines %+.1f/min, fds %+.1f/min; bounds %d MiB, %d MiB, %.0f, %.0f",
				sr/(1<<20), sh/(1<<20), sg, sf, soakRSSSlope>>20, soakHeapSlope>>20, soakGoroutineSlope, soakFDSlope)
		}
	}
}
