package live_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
	"github.com/kproxy/kproxy/internal/live"
)

// rig is kproxy with live.enabled in front of a fake Kalshi that checks
// every signature, REST and WebSocket.
type rig struct {
	*kproxytest.Proxy
	t    testing.TB
	fake *kalshitest.Server
	a    *app.App
	logs *kproxytest.Buffer
}

func start(t testing.TB, mutate func(*config.Config), extra ...kproxytest.Option) *rig {
	t.Helper()
	opts := append([]kproxytest.Option{kproxytest.WithLive()}, extra...)
	if mutate != nil {
		opts = append(opts, kproxytest.WithConfig(mutate))
	}
	p := kproxytest.New(t, opts...)
	return &rig{Proxy: p, t: t, fake: p.Fake, a: p.App, logs: p.Logs}
}

func (r *rig) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	r.t.Cleanup(cancel)
	return ctx
}

// wait is a barrier on the feed's stats.
func (r *rig) wait(what string, cond func(live.Stats) bool) {
	r.t.Helper()
	if err := r.a.Live.Wait(r.ctx(), cond); err != nil {
		r.t.Fatalf("waiting for %s: %v\nlogs:\n%s", what, err, r.logs.String())
	}
}

func (r *rig) get(path string) (*http.Response, []byte) {
	r.t.Helper()
	return r.Get(path)
}

// direct is the fake's own answer, bypassing kproxy (it counts as an
// upstream request).
func (r *rig) direct(path string) []byte {
	r.t.Helper()
	resp, err := http.Get(r.UpstreamURL + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

const (
	vr   = "KXEARNINGSMENTIONMETA-26JUN30-VR"
	llam = "KXEARNINGSMENTIONMETA-26JUN30-LLAM"
	vrP  = "/trade-api/v2/markets/" + vr
)

// hot requests path's market and waits until its subscription's snapshot
// has been applied.
func (r *rig) hot(tickers ...string) {
	r.t.Helper()
	before := r.a.Live.Stats().Tickers
	for _, t := range tickers {
		if resp, _ := r.get("/trade-api/v2/markets/" + t); resp.StatusCode != http.StatusOK {
			r.t.Fatalf("GET %s: %d", t, resp.StatusCode)
		}
	}
	r.wait("the snapshots", func(st live.Stats) bool { return st.Tickers >= before+len(tickers) })
}

var newQuote = kalshitest.Ticker{Market: vr, YesBid: "0.4500", YesAsk: "0.5300", Price: "0.4800", Volume: "33896.00", OpenInterest: "20422.00", YesBidSize: "300.00", YesAskSize: "150.00"}

// tick changes the fake's REST data and pushes the ticker message, then
// waits for kproxy to apply it.
func (r *rig) tick(q kalshitest.Ticker) {
	r.t.Helper()
	before := r.a.Live.Stats().Tickers
	if n, err := r.fake.Tick(q); err != nil || n != 1 {
		r.t.Fatalf("Tick: %d messages, %v", n, err)
	}
	r.wait("the push", func(st live.Stats) bool { return st.Tickers > before })
}

func field(t *testing.T, body []byte, path ...string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	for _, p := range path {
		v = v.(map[string]any)[p]
	}
	return v
}

// TestPushReachesNextGet: after a push, the next GET of the market is a
// HIT with exactly the body the upstream now serves, without any REST call.
func TestPushReachesNextGet(t *testing.T) {
	r := start(t, nil)
	r.hot(vr)
	_, before := r.get(vrP)
	calls := r.fake.Count(vrP)
	r.tick(newQuote)
	resp, body := r.get(vrP)
	if n := r.fake.Count(vrP); n != calls {
		t.Errorf("upstream asked %d more times for the market, want 0", n-calls)
	}
	if got := resp.Header.Get("X-Cache"); got != "HIT" {
		t.Errorf("X-Cache = %q, want HIT", got)
	}
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "detail=pushed") {
		t.Errorf("Cache-Status = %q, want detail=pushed", cs)
	}
	if bytes.Equal(body, before) {
		t.Fatal("body unchanged after the push")
	}
	if want := r.direct(vrP); !bytes.Equal(body, want) {
		t.Errorf("pushed body differs from the upstream's new body:\n got %s\nwant %s", body, want)
	}
	if got := field(t, body, "market", "yes_bid_dollars"); got != "0.4500" {
		t.Errorf("yes_bid_dollars = %v, want 0.4500", got)
	}
	if r.fake.SignatureFailures() != 0 {
		t.Errorf("%d signatures refused by the fake", r.fake.SignatureFailures())
	}
}

// TestListNotHitWithOldPrice: a cached list and event that hold a pushed
// market never come back as a HIT with its old price.
func TestListNotHitWithOldPrice(t *testing.T) {
	r := start(t, nil)
	list := "/trade-api/v2/markets?series_ticker=KXEARNINGSMENTIONMETA&limit=5"
	ev := "/trade-api/v2/events/KXEARNINGSMENTIONMETA-26JUN30?with_nested_markets=true"
	r.get(list)
	r.get(ev)
	r.hot(vr)
	r.tick(newQuote)
	for _, p := range []string{list, ev} {
		resp, body := r.get(p)
		var v struct {
			Markets []map[string]any
			Event   struct{ Markets []map[string]any }
		}
		json.Unmarshal(body, &v)
		found := 0
		for _, m := range append(v.Markets, v.Event.Markets...) {
			if m["ticker"] == vr {
				found++
				if resp.Header.Get("X-Cache") == "HIT" && m["yes_bid_dollars"] != "0.4500" {
					t.Errorf("%s: HIT with the old price %v", p, m["yes_bid_dollars"])
				}
			}
		}
		if found == 0 {
			t.Errorf("%s: %s not in the answer", p, vr)
		}
	}
}

// TestLifecycleRemovesEntries: a lifecycle message removes the market's
// answer and the lists and events that hold it.
func TestLifecycleRemovesEntries(t *testing.T) {
	r := start(t, nil)
	list := "/trade-api/v2/markets?series_ticker=KXEARNINGSMENTIONMETA&limit=5"
	other := "/trade-api/v2/markets?series_ticker=KXFEDDECISION"
	r.get(list)
	r.get(other)
	r.hot(vr)
	before := r.a.Live.Stats().Lifecycles
	if err := r.fake.SetMarketStatus(vr, "closed"); err != nil {
		t.Fatal(err)
	}
	if n := r.fake.PushLifecycle(kalshitest.Lifecycle{Market: vr, EventType: "deactivated", Fields: map[string]any{"is_deactivated": true}}); n != 1 {
		t.Fatalf("PushLifecycle reached %d connections", n)
	}
	r.wait("the lifecycle message", func(st live.Stats) bool { return st.Lifecycles > before })
	for _, p := range []string{vrP, list} {
		resp, body := r.get(p)
		if got := resp.Header.Get("X-Cache"); got != "MISS" {
			t.Errorf("%s after the lifecycle message: X-Cache %q, want MISS", p, got)
		}
		if !bytes.Contains(body, []byte(`"status":"closed"`)) {
			t.Errorf("%s: no closed status in %s", p, body)
		}
	}
	if resp, _ := r.get(other); resp.Header.Get("X-Cache") != "HIT" {
		t.Errorf("an unrelated list was removed too")
	}
}

// TestFeedDroppedTTLRulesAndResubscribes: when the upstream connection
// dies, the pushed answer is back on its ttl at once; kproxy reconnects
// within a second, subscribes again, and pushes flow again.
func TestFeedDroppedTTLRulesAndResubscribes(t *testing.T) {
	r := start(t, nil)
	r.hot(vr)
	e, _ := r.a.Store.Get(vrP)
	if !e.FreshUntil.After(e.FetchedAt.Add(2 * time.Second)) {
		t.Fatalf("not pushed-fresh before the drop: fresh for %v", e.FreshUntil.Sub(e.FetchedAt))
	}
	connects, tickers := r.a.Live.Stats().Connects, r.a.Live.Stats().Tickers
	dropped := time.Now()
	if n := r.fake.DropWS(); n != 1 {
		t.Fatalf("DropWS closed %d connections", n)
	}
	r.wait("the feed to notice", func(st live.Stats) bool { return st.State == "connecting" || st.Connects > connects })
	e, _ = r.a.Store.Get(vrP)
	if want := e.FetchedAt.Add(2 * time.Second); !e.FreshUntil.Equal(want) {
		t.Errorf("after the drop: fresh for %v after the fetch, want the ttl (2s)", e.FreshUntil.Sub(e.FetchedAt))
	}
	// The resubscription's snapshot is one more ticker message.
	r.wait("the reconnect", func(st live.Stats) bool { return st.Connects > connects && st.Tickers > tickers })
	if d := time.Since(dropped); d > 2*time.Second {
		t.Errorf("reconnected after %v, want about a second at most", d)
	}
	if err := r.fake.WaitWSTickers(r.ctx(), kalshitest.ChannelTicker, 1); err != nil {
		t.Fatal(err)
	}
	if got := r.fake.WSSubscribedTickers(kalshitest.ChannelTicker); len(got) != 1 || got[0] != vr {
		t.Errorf("resubscribed to %v, want [%s]", got, vr)
	}
	r.tick(newQuote)
	resp, body := r.get(vrP)
	if field(t, body, "market", "yes_bid_dollars") != "0.4500" || !strings.Contains(resp.Header.Get("Cache-Status"), "detail=pushed") {
		t.Errorf("after the reconnect: %s %s", resp.Header.Get("Cache-Status"), body)
	}
	if _, body := r.get("/readyz"); !strings.Contains(string(body), `"live":"connected"`) {
		t.Errorf("readyz = %s, want live connected", body)
	}
}

// TestRefusedHandshake: a key Kalshi refuses is a clear log line, readyz
// says connecting, and kproxy keeps serving by ttl.
func TestRefusedHandshake(t *testing.T) {
	r := start(t, func(*config.Config) {})
	r.fake.RefuseWS(http.StatusUnauthorized, `{"error":{"code":"invalid_signature","message":"bad key"}}`)
	r.fake.DropWS()
	r.wait("a refused handshake", func(st live.Stats) bool { return st.Refused > 0 })
	if _, body := r.get("/readyz"); !strings.Contains(string(body), `"live":"connecting"`) {
		t.Errorf("readyz = %s, want live connecting", body)
	}
	if !strings.Contains(r.logs.String(), "refused the WebSocket handshake") || !strings.Contains(r.logs.String(), "401") {
		t.Errorf("no clear log line for the refusal:\n%s", r.logs.String())
	}
	resp, _ := r.get(vrP)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET while the feed is refused: %d", resp.StatusCode)
	}
	e, _ := r.a.Store.Get(vrP)
	if !e.FreshUntil.Equal(e.FetchedAt.Add(2 * time.Second)) {
		t.Errorf("fresh for %v without a feed, want the ttl", e.FreshUntil.Sub(e.FetchedAt))
	}
}

// TestSubscribedWithinASecond: a market's first request gets it on the
// ticker subscription within a second, with its snapshot.
func TestSubscribedWithinASecond(t *testing.T) {
	r := start(t, nil)
	r.wait("connected", func(st live.Stats) bool { return st.State == "connected" })
	begin := time.Now()
	if resp, _ := r.get(vrP); resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("first GET: X-Cache %q", resp.Header.Get("X-Cache"))
	}
	if err := r.fake.WaitWSTickers(r.ctx(), kalshitest.ChannelTicker, 1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("subscribed %v after the first request, want within 1s", d)
	}
	r.wait("the snapshot", func(st live.Stats) bool { return st.Tickers >= 1 })
	resp, _ := r.get(vrP)
	if cs := resp.Header.Get("Cache-Status"); resp.Header.Get("X-Cache") != "HIT" || !strings.HasSuffix(cs, "; detail=pushed") {
		t.Errorf("after the snapshot: %s %s, want a pushed HIT", resp.Header.Get("X-Cache"), cs)
	}
	if got := r.fake.WSState().Unfiltered[kalshitest.ChannelTicker]; got != 0 {
		t.Errorf("%d ticker subscriptions without a market filter (the whole exchange), want 0", got)
	}
}

// TestPushWithLegacyFields: an old script reading yes_bid and volume
// through the shim sees the pushed values too.
func TestPushWithLegacyFields(t *testing.T) {
	r := start(t, func(c *config.Config) { c.Compat.LegacyFields = true })
	r.hot(vr)
	if _, body := r.get(vrP); field(t, body, "market", "yes_bid") != 33.0 {
		t.Fatalf("shim: yes_bid = %v, want 33", field(t, body, "market", "yes_bid"))
	}
	r.tick(newQuote)
	_, body := r.get(vrP)
	for name, want := range map[string]float64{"yes_bid": 45, "yes_ask": 53, "no_bid": 47, "no_ask": 55, "last_price": 48, "volume": 33896, "open_interest": 20422} {
		if got := field(t, body, "market", name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
