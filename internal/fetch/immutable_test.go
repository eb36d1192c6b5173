package fetch

import (
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/route"
)

// readSample reads a real-shaped Kalshi body from testdata/history (copied
// from the shared samples) as generic JSON.
func readSample(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile("testdata/history/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// marketBody is GET /markets/{ticker} of the sample's first market with
// its status set.
func marketBody(t *testing.T, status string) []byte {
	page := readSample(t, "markets_page.json")
	m := page["markets"].([]any)[0].(map[string]any)
	m["status"] = status
	return mustJSON(t, map[string]any{"market": m})
}

// eventBody is GET /events/{event_ticker} from sample with the markets'
// statuses set (both the nested and the top-level copies).
func eventBody(t *testing.T, sample string, statuses ...string) []byte {
	ev := readSample(t, sample)
	set := func(list any) {
		ms, _ := list.([]any)
		for i, m := range ms {
			m.(map[string]any)["status"] = statuses[i%len(statuses)]
		}
	}
	set(ev["event"].(map[string]any)["markets"])
	set(ev["markets"])
	return mustJSON(t, ev)
}

// eventNoMarkets is an event answer that lists no markets at all.
func eventNoMarkets(t *testing.T) []byte {
	ev := readSample(t, "event_without_nested_markets.json")
	delete(ev, "markets")
	return mustJSON(t, ev)
}

func ts(tm time.Time) string { return strconv.FormatInt(tm.Unix(), 10) }

func TestImmutableRules(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	trades := []byte(`{"trades":[{"trade_id":"t1","ticker":"KXCPIYOY-25SEP-T3.0","count_fp":"10.00","yes_price_dollars":"0.4200","created_time":"2025-10-01T00:00:00Z"}],"cursor":""}`)
	candles := []byte(`{"ticker":"KXCPIYOY-25SEP-T3.0","candlesticks":[]}`)
	cases := []struct {
		name, pattern, query string
		status               int
		body                 []byte
		want                 bool
	}{
		{"historical market", "historical/markets/{ticker}", "", 200, marketBody(t, "finalized"), true},
		{"historical market candles", "historical/markets/{ticker}/candlesticks", "end_ts=" + ts(now) + "&period_interval=60&start_ts=1", 200, candles, true},
		{"historical trades with ticker", "historical/trades", "ticker=KXCPIYOY-25SEP-T3.0", 200, trades, true},
		{"historical trades without ticker", "historical/trades", "limit=100", 200, trades, false},
		{"historical markets list by series grows", "historical/markets", "series_ticker=KXCPIYOY", 200, []byte(`{"markets":[],"cursor":""}`), false},
		{"historical cutoff moves", "historical/cutoff", "", 200, []byte(`{"market_settled_ts":"2026-01-01T00:00:00Z"}`), false},
		{"market finalized", "markets/{ticker}", "", 200, marketBody(t, "finalized"), true},
		{"market active", "markets/{ticker}", "", 200, marketBody(t, "active"), false},
		{"market determined (not yet final)", "markets/{ticker}", "", 200, marketBody(t, "determined"), false},
		{"market finalized but a 404", "markets/{ticker}", "", 404, marketBody(t, "finalized"), false},
		{"market not JSON", "markets/{ticker}", "", 200, []byte("<html>"), false},
		{"event nested all finalized", "events/{event_ticker}", "with_nested_markets=true", 200, eventBody(t, "event_with_nested_markets.json", "finalized"), true},
		{"event nested mixed", "events/{event_ticker}", "with_nested_markets=true", 200, eventBody(t, "event_with_nested_markets.json", "finalized", "closed"), false},
		{"event top-level markets all finalized", "events/{event_ticker}", "", 200, eventBody(t, "event_without_nested_markets.json", "finalized"), true},
		{"event top-level markets active", "events/{event_ticker}", "", 200, eventBody(t, "event_without_nested_markets.json", "active"), false},
		{"event without markets info", "events/{event_ticker}", "", 200, eventNoMarkets(t), false},
		{"market candles ended a period and a minute ago", "series/{series_ticker}/markets/{ticker}/candlesticks",
			"end_ts=" + ts(now.Add(-61*time.Minute)) + "&period_interval=60&start_ts=1", 200, candles, true},
		{"market candles ended a period ago, inside the margin", "series/{series_ticker}/markets/{ticker}/candlesticks",
			"end_ts=" + ts(now.Add(-60*time.Minute)) + "&period_interval=60&start_ts=1", 200, candles, false},
		{"market candles a second short of the margin", "series/{series_ticker}/markets/{ticker}/candlesticks",
			"end_ts=" + ts(now.Add(-61*time.Minute).Add(time.Second)) + "&period_interval=60&start_ts=1", 200, candles, false},
		{"market candles ending now", "series/{series_ticker}/markets/{ticker}/candlesticks",
			"end_ts=" + ts(now) + "&period_interval=1&start_ts=1", 200, candles, false},
		{"market candles without end_ts", "series/{series_ticker}/markets/{ticker}/candlesticks",
			"period_interval=1&start_ts=1", 200, candles, false},
		{"event candles daily, ended two days ago", "series/{series_ticker}/events/{ticker}/candlesticks",
			"end_ts=" + ts(now.Add(-48*time.Hour)) + "&period_interval=1440&start_ts=1", 200, candles, true},
		{"event candles daily, ended an hour ago", "series/{series_ticker}/events/{ticker}/candlesticks",
			"end_ts=" + ts(now.Add(-time.Hour)) + "&period_interval=1440&start_ts=1", 200, candles, false},
		{"batch candles in the past", "markets/candlesticks",
			"end_ts=" + ts(now.Add(-2*time.Minute)) + "&market_tickers=A,B&period_interval=1&start_ts=1", 200, candles, true},
		{"batch candles bad period", "markets/candlesticks",
			"end_ts=" + ts(now.Add(-2*time.Hour)) + "&period_interval=x&start_ts=1", 200, candles, false},
		{"trades with ticker and max_ts a minute ago", "markets/trades",
			"max_ts=" + ts(now.Add(-time.Minute)) + "&ticker=KXCPIYOY-25SEP-T3.0", 200, trades, true},
		{"trades with max_ts just now", "markets/trades",
			"max_ts=" + ts(now.Add(-59*time.Second)) + "&ticker=KXCPIYOY-25SEP-T3.0", 200, trades, false},
		{"trades without max_ts (a growing list)", "markets/trades", "ticker=KXCPIYOY-25SEP-T3.0", 200, trades, false},
		{"trades without ticker", "markets/trades", "max_ts=" + ts(now.Add(-time.Hour)), 200, trades, false},
		{"a route without a rule", "series/{series_ticker}", "", 200, []byte(`{"series":{}}`), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := &route.Route{Pattern: route.Prefix + c.pattern}
			key := route.Key(route.Prefix+"x", c.query)
			if got := isImmutable(rt, key, c.status, c.body, now); got != c.want {
				t.Errorf("isImmutable(%s?%s) = %v, want %v", c.pattern, c.query, got, c.want)
			}
		})
	}
}

// finalizedServe answers GET /markets/{ticker} with a finalized market for
// ticker FIN and an active one otherwise.
func finalizedServe(t *testing.T) func(string) (int, string) {
	fin, act := string(marketBody(t, "finalized")), string(marketBody(t, "active"))
	return func(path string) (int, string) {
		if path == route.Prefix+"markets/FIN" {
			return http.StatusOK, fin
		}
		return http.StatusOK, act
	}
}

func TestImmutableFreshForever(t *testing.T) {
	e, d := newDiskEnv(t, finalizedServe(t), nil)
	res := e.f.Get(t.Context(), request("FIN"))
	if res.Outcome != Stored {
		t.Fatalf("first: outcome %v, want stored", res.Outcome)
	}
	e.clock.Add(365 * 24 * time.Hour)
	res = e.f.Get(t.Context(), request("FIN"))
	if res.Outcome != Hit {
		t.Fatalf("a year on: outcome %v, want hit", res.Outcome)
	}
	if got, want := HitStatus(0, res.Entry.Detail), "kproxy; hit; detail=immutable"; got != want {
		t.Errorf("Cache-Status %q, want %q", got, want)
	}
	if got := e.up.fills(); got != 1 {
		t.Errorf("upstream fills %d, want 1", got)
	}
	if it, ok := d.get(request("FIN").Key); !ok || !it.Immutable {
		t.Errorf("on disk: %v (immutable %v), want an immutable item", ok, it.Immutable)
	}
	// A client no-cache still refetches.
	r := request("FIN")
	r.NoCache = true
	if res := e.f.Get(t.Context(), r); res.Outcome != Stored {
		t.Errorf("no-cache: outcome %v, want stored", res.Outcome)
	}
	if got := e.up.fills(); got != 2 {
		t.Errorf("upstream fills after no-cache %d, want 2", got)
	}
	// An active market keeps its ttl (10s on the test route).
	e.f.Get(t.Context(), request("ACT"))
	e.clock.Add(time.Hour)
	if res := e.f.Get(t.Context(), request("ACT")); res.Outcome == Hit {
		t.Errorf("active market an hour on: outcome %v, want a refetch", res.Outcome)
	}
}
