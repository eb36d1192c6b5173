package fetch_test

// End-to-end freshness (issue 16): a whole kproxy in front of the fake
// Kalshi on a fake clock; upstream calls are the fake's own count.

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/kproxytest"
)

const (
	vr         = "KXEARNINGSMENTIONMETA-26JUN30-VR"
	llam       = "KXEARNINGSMENTIONMETA-26JUN30-LLAM"
	marketPath = "/trade-api/v2/markets/"
	listPath   = "/trade-api/v2/markets"
	listQuery  = "series_ticker=KXEARNINGSMENTIONMETA"
	ttl        = 2 // seconds: the shipped ttl of both routes
)

// header reads one answer's freshness headers.
type answer struct {
	xcache      string
	age         int
	cacheStatus string
}

func get(t *testing.T, p *kproxytest.Proxy, path string, header ...string) answer {
	t.Helper()
	resp, _ := p.Get(path, header...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	age, err := strconv.Atoi(resp.Header.Get("Age"))
	if err != nil {
		t.Fatalf("GET %s: Age %q", path, resp.Header.Get("Age"))
	}
	return answer{xcache: resp.Header.Get("X-Cache"), age: age, cacheStatus: resp.Header.Get("Cache-Status")}
}

// TestPricesAtMostOneSecondPastTTL: with the shipped defaults, while the
// upstream answers, no answer of a market list or a single market is
// older than its ttl by more than 1s (Age, whole seconds), whatever the
// rhythm of the requests: polls that come back within the ttl, just
// after it, and long after it.
func TestPricesAtMostOneSecondPastTTL(t *testing.T) {
	p := kproxytest.New(t)
	gaps := []time.Duration{250 * time.Millisecond, 900 * time.Millisecond, 2900 * time.Millisecond,
		1100 * time.Millisecond, 3300 * time.Millisecond, 600 * time.Millisecond, 2050 * time.Millisecond, 2990 * time.Millisecond}
	paths := []string{marketPath + vr, listPath + "?" + listQuery}
	stale := 0
	for round := range 3 { // about 14s each: several ttls
		for i, gap := range gaps {
			for _, path := range paths {
				a := get(t, p, path)
				if a.age > ttl+1 {
					t.Errorf("round %d, poll %d, %s: %s Age %d (%s), want <= %d", round, i, path, a.xcache, a.age, a.cacheStatus, ttl+1)
				}
				if a.xcache == "STALE" {
					stale++
				}
			}
			p.App.Fetcher.Wait() // background refreshes land at this instant
			p.Clock.Advance(gap)
		}
	}
	t.Logf("%d STALE answers, all within 1s of their ttl", stale)
}

// TestSteadyPollerRefreshedAhead: a 1s poller on a 2s ttl gets a HIT
// after its first MISS, for 10 ttls, at no more than one upstream call
// per ttl (plus the first); a 3s poller gets honest MISSes and no refresh
// ahead; a one-off request costs one call.
func TestSteadyPollerRefreshedAhead(t *testing.T) {
	t.Run("1s poller", func(t *testing.T) {
		p := kproxytest.New(t)
		path := marketPath + vr
		for i := range 2*10 + 1 {
			if i > 0 {
				p.Clock.Advance(time.Second)
			}
			a := get(t, p, path, "Kproxy-Client", "poller")
			want := "HIT"
			if i == 0 {
				want = "MISS"
			}
			if a.xcache != want {
				t.Errorf("poll %d at %ds: X-Cache %s (%s), want %s", i, i, a.xcache, a.cacheStatus, want)
			}
		}
		if got := p.Fake.Count(path); got > 11 {
			t.Errorf("upstream requests for %s over 10 ttls = %d, want <= 11", path, got)
		}
	})
	t.Run("3s poller", func(t *testing.T) {
		p := kproxytest.New(t)
		path := marketPath + llam
		const polls = 6
		for i := range polls {
			if i > 0 {
				p.Clock.Advance(3 * time.Second)
			}
			if a := get(t, p, path); a.xcache == "HIT" || a.age > ttl+1 {
				t.Errorf("poll %d: X-Cache %s Age %d, want a MISS or STALE within 1s of the ttl", i, a.xcache, a.age)
			}
			p.App.Fetcher.Wait()
		}
		if got := p.Fake.Count(path); got != polls {
			t.Errorf("upstream requests = %d, want %d (one per poll, none ahead)", got, polls)
		}
	})
	t.Run("one-off request", func(t *testing.T) {
		p := kproxytest.New(t)
		path := marketPath + vr
		get(t, p, path)
		p.Clock.Advance(time.Minute)
		p.App.Fetcher.Wait()
		if got := p.Fake.Count(path); got != 1 {
			t.Errorf("upstream requests = %d, want 1", got)
		}
	})
}

// TestRequestFreshnessDirectives: max-age, min-fresh and max-stale on
// requests, against the fake's count.
func TestRequestFreshnessDirectives(t *testing.T) {
	p := kproxytest.New(t)
	path := marketPath + vr
	get(t, p, path) // stored at 0s, fresh until 2s
	p.Clock.Advance(1500 * time.Millisecond)
	steps := []struct {
		name       string
		advance    time.Duration // before the request
		cc         string
		wantXCache string
		wantCalls  int // upstream requests so far, after background refreshes
	}{
		{"max-age older than the copy: hit", 0, "max-age=2", "HIT", 1},
		{"max-age younger than the copy: fetched", 0, "max-age=1", "MISS", 2},
		{"min-fresh within what is left: hit", 0, "min-fresh=1", "HIT", 2},
		{"min-fresh beyond what is left: fetched", 1500 * time.Millisecond, "min-fresh=1", "MISS", 3},
		// Stored at 3s: fresh until 5s, stale_while_revalidate until 6s.
		{"max-stale past swr: stale at once, refreshed", 5 * time.Second, "max-stale=10", "STALE", 4},
		{"max-stale short of the staleness: fetched", 5 * time.Second, "max-stale=1", "MISS", 5},
	}
	for _, s := range steps {
		p.Clock.Advance(s.advance)
		a := get(t, p, path, "Cache-Control", s.cc)
		p.App.Fetcher.Wait()
		if a.xcache != s.wantXCache {
			t.Errorf("%s: X-Cache %s (%s), want %s", s.name, a.xcache, a.cacheStatus, s.wantXCache)
		}
		if s.wantXCache == "MISS" && !strings.Contains(a.cacheStatus, "fwd=request") && !strings.Contains(a.cacheStatus, "fwd=stale") {
			t.Errorf("%s: Cache-Status %q, want fwd=request or fwd=stale", s.name, a.cacheStatus)
		}
		if got := p.Fake.Count(path); got != s.wantCalls {
			t.Errorf("%s: upstream requests = %d, want %d", s.name, got, s.wantCalls)
		}
	}
}
