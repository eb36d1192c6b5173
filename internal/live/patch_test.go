package live

import (
	"bytes"
	"compress/gzip"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/legacy"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

func key(t testing.TB) *rsa.PrivateKey { return kalshitest.TestKey(t) }

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

const (
	vr   = "KXEARNINGSMENTIONMETA-26JUN30-VR"
	llam = "KXEARNINGSMENTIONMETA-26JUN30-LLAM"
)

var t0 = time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)

// rig is a Feed that is never started: tests drive its state directly.
type rig struct {
	f      *Feed
	mem    *cache.Memory
	store  cache.Store
	routes *route.Table
	now    time.Time
	mu     sync.Mutex
}

func newRig(t testing.TB, legacyFields bool) *rig {
	t.Helper()
	mem, err := cache.NewMemory(cache.Config{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mem.Close)
	routes, err := route.NewTable(config.Default().Cache.Specs(legacyFields))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{mem: mem, routes: routes, now: t0}
	r.f, err = New(Config{
		URL: "ws://127.0.0.1:1/trade-api/ws/v2", Signer: upstream.NewSigner("k", key(t)), Store: mem, Routes: routes,
		MaxMarkets: 10, MaxAge: time.Minute, Now: r.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.store = r.f.Store()
	return r
}

func (r *rig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

// put stores body under key as the fetch path would, fetched at at.
func (r *rig) put(key string, body []byte, at time.Time) *cache.Entry {
	path, _, _ := strings.Cut(key, "?")
	rt := r.routes.Match(path)
	if rt.LegacyFields {
		body = legacy.Transform(rt, body)
	}
	e := cache.NewEntry(key, http.StatusOK, http.Header{"Content-Type": {"application/json"}}, body, at,
		cache.Windows{TTL: rt.TTL, StaleWhileRevalidate: rt.StaleWhileRevalidate, StaleIfError: rt.StaleIfError}, true)
	r.store.Set(e, rt.Retention())
	return e
}

// hot makes tickers hot with the states given (nil: no snapshot yet) and
// the feed healthy.
func (r *rig) hot(states map[string]*state) {
	view := map[string]*market{}
	for t, st := range states {
		m := &market{ticker: t}
		m.st.Store(st)
		view[t] = m
	}
	r.f.hot.Store(&view)
	r.f.healthy.Store(true)
}

func (r *rig) get(t testing.TB, key string) *cache.Entry {
	t.Helper()
	e, ok := r.store.Get(key)
	if !ok {
		t.Fatalf("%s not in the store", key)
	}
	return e
}

// tick is a ticker message's msg.
func tickerJSON(t testing.TB, ticker, bid, ask, price, volume, oi string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"market_id": "9b0f6b43", "market_ticker": ticker, "price_dollars": price, "yes_bid_dollars": bid, "yes_ask_dollars": ask,
		"volume_fp": volume, "open_interest_fp": oi, "dollar_volume": 16948, "dollar_open_interest": 10211,
		"yes_bid_size_fp": "300.00", "yes_ask_size_fp": "150.00", "last_trade_size_fp": "25.00", "ts": 1669149841, "ts_ms": 1669149841000,
	})
	return b
}

func parsed(t testing.TB, raw json.RawMessage) *state {
	t.Helper()
	_, st, err := parseTicker(raw, func(string) *state { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestParseTicker(t *testing.T) {
	_, st, err := parseTicker(tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.00", "20422.00"), func(string) *state { return nil })
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"yes_bid_dollars": "0.4500", "yes_ask_dollars": "0.5300", "last_price_dollars": "0.4800", "volume_fp": "33896.00",
		"open_interest_fp": "20422.00", "yes_bid_size_fp": "300.00", "yes_ask_size_fp": "150.00",
		"no_bid_dollars": "0.4700", "no_ask_dollars": "0.5500",
	}
	for f, name := range fieldNames {
		if got := string(st.values[f]); got != want[name] {
			t.Errorf("%s = %q, want %q", name, got, want[name])
		}
	}
}

func TestParseTickerRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  string
		want error
	}{
		{"price above 1", `{"market_ticker":"A","yes_bid_dollars":"1.0100","yes_ask_dollars":"1.0200"}`, errBadPrice},
		{"negative price", `{"market_ticker":"A","yes_bid_dollars":"-0.1000"}`, errBadPrice},
		{"price not a number", `{"market_ticker":"A","price_dollars":"abc"}`, errBadPrice},
		{"too precise", `{"market_ticker":"A","price_dollars":"0.1234567"}`, errBadPrice},
		{"negative count", `{"market_ticker":"A","volume_fp":"-1.00"}`, errBadCount},
		{"exponent count", `{"market_ticker":"A","volume_fp":"1e5"}`, errBadCount},
		{"crossed book", `{"market_ticker":"A","yes_bid_dollars":"0.6000","yes_ask_dollars":"0.5000"}`, errCrossBook},
		{"no ticker", `{"yes_bid_dollars":"0.5000"}`, errNoTicker},
	} {
		if _, _, err := parseTicker(json.RawMessage(tc.msg), func(string) *state { return nil }); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, msg := range []string{`{"market_ticker":"A","price_dollars":0.5}`, `[1]`, `"x"`, `{"market_ticker":7}`} {
		if _, _, err := parseTicker(json.RawMessage(msg), func(string) *state { return nil }); err == nil {
			t.Errorf("parseTicker(%s): no error", msg)
		}
	}
}

func TestParseTickerKeepsWhatIsMissing(t *testing.T) {
	prev := parsed(t, tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.00", "20422.00"))
	_, st, err := parseTicker(json.RawMessage(`{"market_ticker":"`+vr+`","yes_bid_dollars":"0.4600","price_dollars":""}`), func(string) *state { return prev })
	if err != nil {
		t.Fatal(err)
	}
	for f, want := range map[int]string{fYesBid: "0.4600", fNoAsk: "0.5400", fYesAsk: "0.5300", fLast: "0.4800", fVolume: "33896.00"} {
		if got := string(st.values[f]); got != want {
			t.Errorf("%s = %q, want %q", fieldNames[f], got, want)
		}
	}
}

func TestComplement(t *testing.T) {
	for in, want := range map[string]string{"0.3300": "0.6700", "1.0000": "0.0000", "0": "1.0000", "0.12345": "0.8766", "0.999999": "0.0000", "0.5": "0.5000"} {
		x, ok := micros([]byte(in))
		if !ok {
			t.Fatalf("micros(%q) failed", in)
		}
		if got := string(complement(x)); got != want {
			t.Errorf("1 - %s = %s, want %s", in, got, want)
		}
	}
}

// replaceValues is body with each "name":"old" member value set to new.
func replaceValues(t *testing.T, body []byte, kv ...string) []byte {
	t.Helper()
	out := body
	for i := 0; i+1 < len(kv); i += 2 {
		name := []byte(`"` + kv[i] + `":"`)
		at := bytes.Index(out, name)
		if at < 0 {
			t.Fatalf("no %s in the body", kv[i])
		}
		start := at + len(name)
		end := start + bytes.IndexByte(out[start:], '"')
		out = append(append(append([]byte{}, out[:start]...), kv[i+1]...), out[end:]...)
	}
	return out
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPushPatchesSingleMarketExactly: a push rewrites exactly the listed
// fields of the cached /markets/{ticker} answer, with a new ETag, a gzip
// copy of the new body, detail=pushed, and freshness to max_age.
func TestPushPatchesSingleMarketExactly(t *testing.T) {
	r := newRig(t, false)
	body := readFile(t, "market.json")
	key := singlePrefix + vr
	old := r.put(key, body, t0)
	r.hot(map[string]*state{vr: parsed(t, tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.00", "20422.00"))})
	r.f.push(vr)
	e := r.get(t, key)
	want := replaceValues(t, body, "yes_bid_dollars", "0.4500", "yes_bid_size_fp", "300.00", "yes_ask_dollars", "0.5300",
		"yes_ask_size_fp", "150.00", "no_bid_dollars", "0.4700", "no_ask_dollars", "0.5500", "last_price_dollars", "0.4800",
		"volume_fp", "33896.00", "open_interest_fp", "20422.00")
	if !bytes.Equal(e.Body, want) {
		t.Errorf("patched body:\n got %s\nwant %s", e.Body, want)
	}
	if !bytes.Equal(old.Body, body) {
		t.Error("the old entry's body changed: entries must stay immutable")
	}
	if e.ETag == old.ETag {
		t.Errorf("ETag unchanged (%s) after a patch", e.ETag)
	}
	if e.Gzip == nil || !bytes.Equal(gunzip(t, e.Gzip), e.Body) {
		t.Error("gzip copy is not the patched body")
	}
	if !e.FetchedAt.Equal(t0) || !e.FreshUntil.Equal(t0.Add(time.Minute)) {
		t.Errorf("fetched %v fresh until %v, want %v and %v", e.FetchedAt, e.FreshUntil, t0, t0.Add(time.Minute))
	}
	if _, cs := e.HitHeaders(t0.Add(10*time.Second), fetch.HitStatus); cs[0] != "kproxy; hit; ttl=50; detail=pushed" {
		t.Errorf("Cache-Status = %q, want kproxy; hit; ttl=50; detail=pushed", cs[0])
	}
	// The same push again changes nothing (the entry is not rebuilt).
	r.f.push(vr)
	if again := r.get(t, key); again != e {
		t.Error("a push with the values already there rebuilt the entry")
	}
}

// TestPushUpdatesLegacyFields: with the shim on, the integer fields move
// with the pushed ones.
func TestPushUpdatesLegacyFields(t *testing.T) {
	r := newRig(t, true)
	key := singlePrefix + vr
	r.put(key, readFile(t, "market.json"), t0)
	if !bytes.Contains(r.get(t, key).Body, []byte(`"yes_bid":33`)) {
		t.Fatal("shim did not run")
	}
	r.hot(map[string]*state{vr: parsed(t, tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.41", "20422.00"))})
	r.f.push(vr)
	var v struct {
		Market map[string]any `json:"market"`
	}
	if err := json.Unmarshal(r.get(t, key).Body, &v); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{"yes_bid": 45, "yes_ask": 53, "no_bid": 47, "no_ask": 55, "last_price": 48, "volume": 33896, "open_interest": 20422, "previous_price": 35} {
		if got := v.Market[name]; got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestPushedFreshnessBounds: pushed freshness ends at max_age after the
// fetch, or earlier at the market's next open_time or close_time, and is
// never shorter than the ttl.
func TestPushedFreshnessBounds(t *testing.T) {
	body := readFile(t, "market.json")
	st := parsed(t, tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.00", "20422.00"))
	for _, tc := range []struct {
		name       string
		open, clos time.Time
		want       time.Time
	}{
		{"both past", t0.Add(-48 * time.Hour), t0.Add(-time.Hour), t0.Add(time.Minute)},
		{"closes in 10s", t0.Add(-48 * time.Hour), t0.Add(10 * time.Second), t0.Add(10 * time.Second)},
		{"opens in 20s", t0.Add(20 * time.Second), t0.Add(48 * time.Hour), t0.Add(20 * time.Second)},
		{"closes within the ttl", t0.Add(-48 * time.Hour), t0.Add(time.Second), t0.Add(2 * time.Second)},
		{"closes after max_age", t0.Add(-48 * time.Hour), t0.Add(time.Hour), t0.Add(time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, false)
			b := replaceValues(t, body, "open_time", tc.open.Format(time.RFC3339), "close_time", tc.clos.Format(time.RFC3339))
			r.hot(map[string]*state{vr: st})
			r.put(singlePrefix+vr, b, t0)
			e := r.get(t, singlePrefix+vr)
			if !e.FreshUntil.Equal(tc.want) {
				t.Errorf("fresh until %v, want %v", e.FreshUntil.Sub(t0), tc.want.Sub(t0))
			}
			if e.Fresh(tc.want) {
				t.Errorf("still fresh at %v", tc.want.Sub(t0))
			}
			if !e.Revalidatable(tc.want) {
				t.Error("not servable as stale right after pushed freshness ends")
			}
		})
	}
}

// TestListsAndEventsPatched: a cached list or event holding the market
// never shows the old values after a push; it keeps its own ttl.
func TestListsAndEventsPatched(t *testing.T) {
	r := newRig(t, false)
	page := route.Prefix + "markets?limit=3&series_ticker=KXEARNINGSMENTIONMETA"
	ev := route.Prefix + "events/KXEARNINGSMENTIONMETA-26JUN30?with_nested_markets=true"
	pageEntry := r.put(page, readFile(t, "markets_page.json"), t0)
	r.put(ev, readFile(t, "event_with_nested_markets.json"), t0)
	r.hot(map[string]*state{vr: parsed(t, tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.00", "20422.00")), llam: nil})
	r.f.push(vr)
	for _, key := range []string{page, ev} {
		e := r.get(t, key)
		var v struct {
			Markets []map[string]any `json:"markets"`
			Event   struct {
				Markets []map[string]any `json:"markets"`
			} `json:"event"`
		}
		if err := json.Unmarshal(e.Body, &v); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		n := 0
		for _, m := range append(v.Markets, v.Event.Markets...) {
			switch m["ticker"] {
			case vr:
				n++
				if m["yes_bid_dollars"] != "0.4500" || m["no_ask_dollars"] != "0.5500" {
					t.Errorf("%s: %s yes_bid %v no_ask %v, want 0.4500 0.5500", key, vr, m["yes_bid_dollars"], m["no_ask_dollars"])
				}
			case llam:
				if m["yes_bid_dollars"] != "0.8600" {
					t.Errorf("%s: %s changed without a push: %v", key, llam, m["yes_bid_dollars"])
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: %s not found", key, vr)
		}
		if e.Detail != "pushed" {
			t.Errorf("%s: detail %q, want pushed", key, e.Detail)
		}
	}
	if e := r.get(t, page); !e.FreshUntil.Equal(pageEntry.FreshUntil) {
		t.Errorf("list freshness moved from %v to %v", pageEntry.FreshUntil, e.FreshUntil)
	}
}

// TestArrivingAnswerGetsLatestPush: an answer stored after a push (a REST
// refetch, or a copy from the shared tier, fetched before the push) holds
// the pushed values at once.
func TestArrivingAnswerGetsLatestPush(t *testing.T) {
	r := newRig(t, false)
	r.hot(map[string]*state{vr: parsed(t, tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.00", "20422.00"))})
	page := route.Prefix + "markets?limit=3&series_ticker=KXEARNINGSMENTIONMETA"
	r.put(page, readFile(t, "markets_page.json"), t0.Add(-time.Second))
	if b := r.get(t, page).Body; !bytes.Contains(b, []byte(`"yes_bid_dollars": "0.4500"`)) {
		t.Errorf("stored list without the pushed price:\n%s", b)
	}
}

// TestNothingAppliedWhileUnhealthy: with the feed down, answers are stored
// as the upstream sent them, on their ttl.
func TestNothingAppliedWhileUnhealthy(t *testing.T) {
	r := newRig(t, false)
	r.hot(map[string]*state{vr: parsed(t, tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.00", "20422.00"))})
	r.f.healthy.Store(false)
	body := readFile(t, "market.json")
	e := r.put(singlePrefix+vr, body, t0)
	if got := r.get(t, singlePrefix+vr); got != e {
		t.Errorf("entry rewritten while the feed is down: %s", got.Body)
	}
}

// TestRevertAll: when the feed goes down, pushed answers are back on their
// ttl (keeping the last pushed values).
func TestRevertAll(t *testing.T) {
	r := newRig(t, false)
	r.hot(map[string]*state{vr: parsed(t, tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.00", "20422.00"))})
	r.put(singlePrefix+vr, readFile(t, "market.json"), t0)
	if e := r.get(t, singlePrefix+vr); !e.FreshUntil.Equal(t0.Add(time.Minute)) {
		t.Fatalf("not pushed: fresh until %v", e.FreshUntil)
	}
	r.f.healthy.Store(false)
	r.f.revertAll()
	e := r.get(t, singlePrefix+vr)
	if !e.FreshUntil.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("after the feed went down: fresh until +%v, want +2s (the ttl)", e.FreshUntil.Sub(t0))
	}
	if !bytes.Contains(e.Body, []byte(`"yes_bid_dollars":"0.4500"`)) {
		t.Error("reverted entry lost the last pushed values")
	}
}

// TestRemoveMarket: a lifecycle event removes the market's answers and
// every list and event holding it, and nothing else.
func TestRemoveMarket(t *testing.T) {
	r := newRig(t, false)
	page := route.Prefix + "markets?limit=3&series_ticker=KXEARNINGSMENTIONMETA"
	ev := route.Prefix + "events/KXEARNINGSMENTIONMETA-26JUN30?with_nested_markets=true"
	other := route.Prefix + "markets?tickers=OTHER"
	r.put(singlePrefix+vr, readFile(t, "market.json"), t0)
	r.put(page, readFile(t, "markets_page.json"), t0)
	r.put(ev, readFile(t, "event_with_nested_markets.json"), t0)
	r.put(other, []byte(`{"markets":[{"ticker":"OTHER"}],"cursor":""}`), t0)
	if n := r.f.remove(vr); n != 3 {
		t.Errorf("removed %d answers, want 3", n)
	}
	for _, key := range []string{singlePrefix + vr, page, ev} {
		if _, ok := r.store.Get(key); ok {
			t.Errorf("%s still cached", key)
		}
	}
	if _, ok := r.store.Get(other); !ok {
		t.Error("an answer without the market was removed")
	}
}

// TestPatchNeverResurrectsOlderBody: pushes racing REST refetches always
// leave the newest fetch in the store, with the latest pushed values.
func TestPatchNeverResurrectsOlderBody(t *testing.T) {
	r := newRig(t, false)
	body := readFile(t, "market.json")
	key := singlePrefix + vr
	prices := []string{"0.4000", "0.4100", "0.4200", "0.4300", "0.4400"}
	var last *state
	r.hot(map[string]*state{vr: nil})
	m := (*r.f.hot.Load())[vr]
	var wg sync.WaitGroup
	wg.Add(2)
	const n = 200
	go func() {
		defer wg.Done()
		for i := range n {
			r.put(key, replaceValues(t, body, "updated_time", t0.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano)), t0.Add(time.Duration(i)*time.Millisecond))
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			st := parsed(t, tickerJSON(t, vr, prices[i%len(prices)], "0.5300", "0.4800", "1.00", "1.00"))
			m.st.Store(st)
			r.f.push(vr)
			last = st
		}
	}()
	wg.Wait()
	e := r.get(t, key)
	if want := t0.Add((n - 1) * time.Millisecond); !e.FetchedAt.Equal(want) {
		t.Errorf("stored fetch time %v, want the newest, %v", e.FetchedAt, want)
	}
	if !bytes.Contains(e.Body, []byte(`"yes_bid_dollars":"`+string(last.values[fYesBid])+`"`)) {
		t.Errorf("stored body lacks the last pushed price %s", last.values[fYesBid])
	}
}

// TestRevertRestoresRouteWindows: when the feed goes down, a pushed entry
// is back on its route's ttl and both stale windows, counted from its
// fetch, not on windows stretched from the pushed freshness: a route's
// stale_while_revalidate is obeyed exactly.
func TestRevertRestoresRouteWindows(t *testing.T) {
	r := newRig(t, false)
	key := singlePrefix + vr
	rt := r.routes.Match(singlePrefix + vr)
	r.hot(map[string]*state{vr: parsed(t, tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.00", "20422.00"))})
	r.put(key, readFile(t, "market.json"), t0)
	if e := r.get(t, key); !e.RevalidateUntil.After(t0.Add(rt.TTL + rt.StaleWhileRevalidate)) {
		t.Fatalf("not pushed: revalidatable until +%v", e.RevalidateUntil.Sub(t0))
	}
	r.f.healthy.Store(false)
	r.f.revertAll()
	e := r.get(t, key)
	for _, w := range []struct {
		name      string
		got, want time.Time
	}{
		{"fresh", e.FreshUntil, t0.Add(rt.TTL)},
		{"revalidatable", e.RevalidateUntil, t0.Add(rt.TTL + rt.StaleWhileRevalidate)},
		{"servable on error", e.ErrorUntil, t0.Add(rt.TTL + rt.StaleIfError)},
	} {
		if !w.got.Equal(w.want) {
			t.Errorf("%s until +%v, want +%v", w.name, w.got.Sub(t0), w.want.Sub(t0))
		}
	}
}

// TestPushResetsAge: Age counts from the push that last changed the body;
// a revert (no new body) keeps it.
func TestPushResetsAge(t *testing.T) {
	r := newRig(t, false)
	key := singlePrefix + vr
	r.put(key, readFile(t, "market.json"), t0)
	if got := r.get(t, key).AgeSeconds(t0.Add(7 * time.Second)); got != 7 {
		t.Fatalf("Age before any push = %d, want 7", got)
	}
	r.mu.Lock()
	r.now = t0.Add(30 * time.Second)
	r.mu.Unlock()
	r.hot(map[string]*state{vr: parsed(t, tickerJSON(t, vr, "0.4500", "0.5300", "0.4800", "33896.00", "20422.00"))})
	r.f.push(vr)
	e := r.get(t, key)
	if got := e.AgeSeconds(t0.Add(35 * time.Second)); got != 5 {
		t.Errorf("Age 5s after the push = %d, want 5", got)
	}
	if !e.FetchedAt.Equal(t0) {
		t.Errorf("FetchedAt moved to +%v, want the fetch time", e.FetchedAt.Sub(t0))
	}
	r.f.healthy.Store(false)
	r.f.revertAll()
	if got := r.get(t, key).AgeSeconds(t0.Add(35 * time.Second)); got != 5 {
		t.Errorf("Age after the revert = %d, want 5 (the body is the pushed one)", got)
	}
}
