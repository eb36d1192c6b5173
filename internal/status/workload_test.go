package status

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// slowList is the sentence the page shows for a slow poller of the
// market list (ttl 2 s).
const slowList = "Clients poll /trade-api/v2/markets slower than its ttl (2s): the cache cannot save these calls; raise the ttl or turn on the live feed."

// served is a Collector whose ledger tests feed as the proxy does, on an
// injected clock, sampled once a (fake) second.
type served struct {
	t   *testing.T
	clk *clock
	c   *Collector
	e   *echo.Echo
}

func newServed(t *testing.T) *served {
	t.Helper()
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	c, err := New(Config{
		Gatherer: newFakeKproxy().reg, Now: clk.Now,
		TTLs: map[string]time.Duration{markets: time.Second, marketList: 2 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e := echo.New()
	c.Register(func(method, path string, h echo.HandlerFunc) { e.Add(method, path, h) })
	return &served{t: t, clk: clk, c: c, e: e}
}

// tick ends one second: the clock moves on and the collector samples.
func (s *served) tick() {
	s.clk.Add(time.Second)
	s.c.Sample()
}

// doc is GET /status.json, decoded.
func (s *served) doc() map[string]any {
	s.t.Helper()
	w := httptest.NewRecorder()
	s.e.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/status.json", nil))
	if w.Code != http.StatusOK {
		s.t.Fatalf("GET /status.json = %d %s", w.Code, w.Body)
	}
	var doc map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		s.t.Fatalf("/status.json: %v in %s", err, w.Body)
	}
	return doc
}

// field is the JSON text (objects with sorted keys) of the value at a dotted path of doc; a number
// segment indexes an array, a [key=value] segment picks the array element
// whose key has that value. "absent" when there is none.
func field(doc any, path string) string {
	v := doc
	for _, p := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[p]; !ok {
				return "absent"
			}
		case []any:
			v = nil
			for i, el := range x {
				if fmt.Sprint(i) == p {
					v = el
				}
				if k, want, ok := strings.Cut(strings.Trim(p, "[]"), "="); ok && strings.HasPrefix(p, "[") {
					if m, _ := el.(map[string]any); m != nil && m[k] == want {
						v = el
					}
				}
			}
			if v == nil {
				return "absent"
			}
		default:
			return "absent"
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// Known workloads, shaped as the proxy reports them to the ledger, and
// every headline figure they must give on /status.json.
func TestWorkloadFigures(t *testing.T) {
	cases := []struct {
		name string
		run  func(l *Ledger, tick func())
		want map[string]string
	}{{
		// One script polls the market list every 3 s; its ttl is 2 s. The
		// first poll is a MISS, each later one finds only an expired copy:
		// STALE, and its background refresh is one upstream call. 6
		// requests, 6 upstream calls: the cache saved nothing.
		name: "3 s poller of a 2 s route",
		run: func(l *Ledger, tick func()) {
			for i := range 18 {
				switch {
				case i == 0:
					l.Request(marketList, "nvda-poller", "MISS", false)
					l.Upstream(marketList, "nvda-poller")
				case i%3 == 0:
					l.Request(marketList, "nvda-poller", "STALE", true)
					l.Upstream(marketList, "nvda-poller")
				}
				tick()
			}
		},
		want: map[string]string{
			"requests.total": "6", "requests.hit": "0", "requests.stale": "5", "requests.miss": "1",
			"requests.expired": "5", "requests.upstream": "6",
			"upstream_calls_avoided.requests": "6", "upstream_calls_avoided.upstream": "6",
			"upstream_calls_avoided.count": "0", "upstream_calls_avoided.share": "0",
			"upstream_calls_avoided.last_minute.count": "0", "upstream_calls_avoided.last_minute.share": "0",
			"hit_ratio.since_start": "0", "hit_ratio.last_minute": "0", "stale_ratio.since_start": "0.8333",
			// Last 10 s (samples at 8 s and 18 s): the polls at 9, 12, 15 s.
			"rates.total": "0.3", "rates.upstream": "0.3", "rates.stale": "0.3",
			"advice":                         `["` + slowList + `"]`,
			"routes.0.route":                 `"` + marketList + `"`,
			"routes.0.ttl_seconds":           "2",
			"routes.0.requests":              "6",
			"routes.0.upstream":              "6",
			"routes.0.avoided":               "0",
			"routes.0.hit_ratio":             "0",
			"routes.1":                       "absent",
			"clients":                        `[{"name":"nvda-poller","requests":6,"upstream":6}]`,
			"routes.[route=/trade-api/v2/*]": "absent",
			"routes.[route=/trade-api/v2/markets/{ticker}]":      "absent",
			"upstream_calls_avoided.last_minute.requests":        "6",
			"upstream_calls_avoided.last_minute.upstream":        "6",
			"routes.[route=/trade-api/v2/markets].stale":         "5",
			"routes.[route=/trade-api/v2/markets].expired":       "5",
			"routes.[route=/trade-api/v2/markets].miss":          "1",
			"routes.[route=/trade-api/v2/markets].hit":           "0",
			"routes.[route=/trade-api/v2/markets].avoided_share": "0",
		},
	}, {
		// 20 scripts poll the same list every second, within its 2 s ttl:
		// at 0 s one fetch (19 collapsed MISSes wait on it), then fresh
		// HITs, the entry refreshed ahead of expiry every 2 s.
		name: "20 pollers within the ttl",
		run: func(l *Ledger, tick func()) {
			for i := range 10 {
				for p := range 20 {
					name := fmt.Sprintf("p%02d", p)
					if i == 0 {
						l.Request(marketList, name, "MISS", false)
						if p == 0 {
							l.Upstream(marketList, name)
						}
						continue
					}
					l.Request(marketList, name, "HIT", false)
					if p == 0 && i%2 == 0 {
						l.Upstream(marketList, name) // refresh ahead
					}
				}
				tick()
			}
		},
		want: map[string]string{
			"requests.total": "200", "requests.hit": "180", "requests.stale": "0", "requests.miss": "20",
			"requests.expired": "0", "requests.upstream": "5",
			"upstream_calls_avoided.count": "195", "upstream_calls_avoided.share": "0.975",
			"hit_ratio.since_start": "0.9", "hit_ratio.last_minute": "0.9",
			"rates.total": "20", "rates.upstream": "0.5",
			"advice": "[]", "routes.0.avoided": "195", "routes.0.avoided_share": "0.975",
			"clients.0":  `{"name":"p00","requests":10,"upstream":5}`,
			"clients.1":  `{"name":"p01","requests":10,"upstream":0}`,
			"clients.9":  `{"name":"p09","requests":10,"upstream":0}`,
			"clients.10": "absent",
		},
	}, {
		// A /batch of 10 items (2 cached, 8 fetched) and a /batch/markets
		// of 3 series that took 5 pages: charged to the batch endpoints,
		// never to the routes of their items. The typed batch made more
		// upstream calls than items: a negative saving.
		name: "batches",
		run: func(l *Ledger, tick func()) {
			for i := range 10 {
				if i < 2 {
					l.Request("/batch", "desk", "HIT", false)
				} else {
					l.Request("/batch", "desk", "MISS", true)
					l.Upstream("/batch", "desk")
				}
			}
			for range 3 {
				l.Request("/batch/markets", "desk", "MISS", false)
			}
			for range 5 {
				l.Upstream("/batch/markets", "desk")
			}
			tick()
		},
		want: map[string]string{
			"requests.total": "13", "requests.upstream": "13",
			"upstream_calls_avoided.count": "0", "upstream_calls_avoided.share": "0",
			"hit_ratio.since_start": "0.1538",
			"routes.0":              `{"avoided":2,"avoided_share":0.2,"expired":8,"hit":2,"hit_ratio":0.2,"miss":8,"p50_ms":null,"p99_ms":null,"requests":10,"route":"/batch","stale":0,"ttl_seconds":null,"upstream":8}`,
			"routes.1.route":        `"/batch/markets"`, "routes.1.avoided": "-2", "routes.1.avoided_share": "-0.6667",
			"routes.2": "absent",
			// 8 of 10 items found only an expired copy and went upstream,
			// but a batch is not polled on a ttl: no advice.
			"advice":  "[]",
			"clients": `[{"name":"desk","requests":13,"upstream":13}]`,
		},
	}, {
		// Five clients ask for five single markets within the auto-batch
		// window; kproxy sends one combined /markets call, charged to the
		// route they asked for.
		name: "auto-batched singles",
		run: func(l *Ledger, tick func()) {
			for p := range 5 {
				l.Request(markets, fmt.Sprintf("bot-%d", p), "MISS", false)
			}
			l.Upstream(markets, "bot-0")
			tick()
		},
		want: map[string]string{
			"requests.total": "5", "requests.upstream": "1",
			"upstream_calls_avoided.count": "4", "upstream_calls_avoided.share": "0.8",
			"routes.0.route": `"` + markets + `"`, "routes.0.ttl_seconds": "1", "routes.0.upstream": "1",
			"routes.[route=/trade-api/v2/markets]": "absent",
			"clients.0":                            `{"name":"bot-0","requests":1,"upstream":1}`,
		},
	}, {
		// One STALE answer and its background refresh: a STALE (not a
		// hit), one upstream call.
		name: "stale with its refresh",
		run: func(l *Ledger, tick func()) {
			l.Request(markets, "solo", "STALE", true)
			l.Upstream(markets, "solo")
			tick()
		},
		want: map[string]string{
			"requests.total": "1", "requests.stale": "1", "requests.hit": "0", "requests.expired": "1",
			"requests.upstream": "1", "hit_ratio.since_start": "0", "stale_ratio.since_start": "1",
			"upstream_calls_avoided.count": "0", "advice": "[]",
		},
	}, {
		// The same slow poller while Kalshi is down: every poll is STALE,
		// the breaker lets one probe through. The cache is covering, not
		// failing to save calls: no advice.
		name: "slow poller while the upstream is down",
		run: func(l *Ledger, tick func()) {
			for i := range 30 {
				if i%3 == 0 {
					l.Request(marketList, "nvda-poller", "STALE", true)
				}
				if i == 12 {
					l.Upstream(marketList, "nvda-poller")
				}
				tick()
			}
		},
		want: map[string]string{
			"requests.total": "10", "requests.upstream": "1",
			"upstream_calls_avoided.count": "9", "upstream_calls_avoided.share": "0.9", "advice": "[]",
		},
	}, {
		// The 3 s poller stopped more than a minute ago: since start is
		// unchanged, the last minute is empty and the advice is gone.
		name: "slow poller that stopped",
		run: func(l *Ledger, tick func()) {
			for i := range 18 {
				if i%3 == 0 {
					l.Request(marketList, "nvda-poller", "STALE", true)
					l.Upstream(marketList, "nvda-poller")
				}
				tick()
			}
			for range 61 {
				tick()
			}
		},
		want: map[string]string{
			"requests.total": "6", "upstream_calls_avoided.share": "0",
			"upstream_calls_avoided.last_minute.requests": "0", "upstream_calls_avoided.last_minute.share": "null",
			"hit_ratio.last_minute": "null", "rates.total": "0", "advice": "[]",
		},
	}, {
		// Pass-through areas are not cached routes: no row, no count.
		name: "pass-throughs",
		run: func(l *Ledger, tick func()) {
			l.Request("/trade-api/v2/*", "x", "BYPASS", false)
			l.Upstream("/trade-api/v2/*", "x")
			l.Request("/trade-api/v2/portfolio/*", "x", "BYPASS", false)
			tick()
		},
		want: map[string]string{
			"requests.total": "0", "routes": "[]", "clients": "[]", "advice": "[]",
			"upstream_calls_avoided.share": "null", "hit_ratio.since_start": "null",
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServed(t)
			tc.run(s.c.Ledger(), s.tick)
			doc := s.doc()
			for path, want := range tc.want {
				if got := field(doc, path); got != want {
					t.Errorf("%s = %s, want %s", path, got, want)
				}
			}
		})
	}
}

// The slow-poll rule on both sides of each of its thresholds.
func TestSlowPollRule(t *testing.T) {
	cases := []struct {
		name  string
		route string
		d     routeCounts
		want  bool
	}{
		{"every poll expired and fetched", marketList, routeCounts{stale: 9, miss: 1, expired: 9, upstream: 10}, true},
		{"at the thresholds", marketList, routeCounts{hit: 5, stale: 5, expired: 5, upstream: 8}, true},
		{"just below half expired", marketList, routeCounts{hit: 6, stale: 4, expired: 4, upstream: 8}, false},
		{"upstream 70% of requests", marketList, routeCounts{stale: 10, expired: 10, upstream: 7}, false},
		{"too few requests", marketList, routeCounts{stale: 4, expired: 4, upstream: 4}, false},
		{"a batch endpoint", "/batch", routeCounts{miss: 10, expired: 10, upstream: 10}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := slowPoll(tc.route, tc.d); got != tc.want {
				t.Errorf("slowPoll(%s, %+v) = %v, want %v", tc.route, tc.d, got, tc.want)
			}
		})
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		2 * time.Second: "2s", 1500 * time.Millisecond: "1.5s", time.Minute: "1m", 90 * time.Second: "1m30s", time.Hour: "1h",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
