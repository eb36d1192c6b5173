package live

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/upstream"
)

// connected is a rig whose feed is connected to a fake Kalshi.
type connected struct {
	*rig
	t    *testing.T
	fake *kalshitest.Server
}

func newConnected(t *testing.T, maxMarkets int) *connected {
	t.Helper()
	fake := kalshitest.New()
	k := key(t)
	fake.SetPublicKey(&k.PublicKey)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	r := newRig(t, false)
	f, err := New(Config{
		URL: "ws" + strings.TrimPrefix(srv.URL, "http") + kalshitest.WSPath, Signer: upstream.NewSigner("kproxy-key", k),
		Store: r.mem, Routes: r.routes, MaxMarkets: maxMarkets, MaxAge: time.Minute, Now: r.clock,
		BackoffBase: 20 * time.Millisecond, FlushDelay: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.f, r.store = f, f.Store()
	f.Start()
	t.Cleanup(f.Close)
	c := &connected{rig: r, t: t, fake: fake}
	c.wait("connected", func(st Stats) bool { return st.State == "connected" })
	return c
}

func (c *connected) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c.t.Cleanup(cancel)
	return ctx
}

func (c *connected) wait(what string, cond func(Stats) bool) {
	c.t.Helper()
	if err := c.f.Wait(c.ctx(), cond); err != nil {
		c.t.Fatalf("waiting for %s: %v", what, err)
	}
}

func (c *connected) setClock(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// fetched stores the fake's answer for ticker as the fetch path would.
func (c *connected) fetched(ticker string) {
	c.t.Helper()
	rec := httptest.NewRecorder()
	c.fake.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, singlePrefix+ticker, nil))
	if rec.Code != http.StatusOK {
		c.t.Fatalf("fake: %d", rec.Code)
	}
	c.put(singlePrefix+ticker, rec.Body.Bytes(), c.clock())
}

// TestHotSetBoundAndEviction: the hot set holds at most max_markets; a new
// market evicts the least recently requested one, which leaves the ticker
// subscription (delete_markets) and goes back to ttl freshness.
func TestHotSetBoundAndEviction(t *testing.T) {
	c := newConnected(t, 2)
	tickers := c.fake.MarketTickers("KXEARNINGSMENTIONMETA")
	a, b, d := tickers[0], tickers[1], tickers[2]
	step := func(at time.Duration, ticker string, hot int) {
		t.Helper()
		c.setClock(t0.Add(at))
		n := c.f.Stats().Tickers
		c.fetched(ticker)
		c.wait(ticker+" hot", func(st Stats) bool { return st.Hot == hot && st.Tickers > n })
	}
	step(0, a, 1)
	step(time.Second, b, 2)
	// a is requested again after b: b is now the least recently requested.
	c.f.OnRequest(c.f.single, singlePrefix+a, t0.Add(2*time.Second))
	step(3*time.Second, d, 2)
	if err := c.fake.WaitWS(c.ctx(), func(st kalshitest.WSState) bool {
		return len(st.Tickers["ticker"]) == 2 && !slices.Contains(st.Tickers["ticker"], b)
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := c.fake.WSSubscribedTickers("ticker"), []string{a, d}; !slices.Equal(got, sorted(want)) {
		t.Errorf("subscribed %v, want %v", got, sorted(want))
	}
	var deleted bool
	for _, cmd := range c.fake.WSCommands() {
		var v struct {
			Cmd    string
			Params struct {
				Action        string
				MarketTickers []string `json:"market_tickers"`
			}
		}
		json.Unmarshal(cmd.Data, &v)
		if v.Cmd == "update_subscription" && v.Params.Action == "delete_markets" && slices.Equal(v.Params.MarketTickers, []string{b}) {
			deleted = true
		}
	}
	if !deleted {
		t.Errorf("no delete_markets for %s in %d commands", b, len(c.fake.WSCommands()))
	}
	e := c.get(t, singlePrefix+b)
	if !e.FreshUntil.Equal(e.FetchedAt.Add(2 * time.Second)) {
		t.Errorf("evicted market still fresh for %v after its fetch, want its ttl", e.FreshUntil.Sub(e.FetchedAt))
	}
	if e := c.get(t, singlePrefix+a); !e.FreshUntil.Equal(e.FetchedAt.Add(time.Minute)) {
		t.Errorf("hot market fresh for %v, want max_age", e.FreshUntil.Sub(e.FetchedAt))
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

// TestUnknownTickerNeverHot: a request for a market with no stored answer
// (a 404, a typo) never takes a place in the hot set.
func TestUnknownTickerNeverHot(t *testing.T) {
	c := newConnected(t, 2)
	c.f.OnRequest(c.f.single, singlePrefix+"NOPE-1", t0)
	c.fetched(vr)
	c.wait("vr hot", func(st Stats) bool { return st.Hot == 1 && st.Tickers == 1 })
	if got := c.fake.WSSubscribedTickers("ticker"); !slices.Equal(got, []string{vr}) {
		t.Errorf("subscribed %v, want only %s", got, vr)
	}
}

// TestBadInputNeverCorrupts: garbage, unknown types, error frames, tickers
// for markets not cached and prices out of range are counted and logged
// once per kind; the feed stays up and the cached answer is untouched.
func TestBadInputNeverCorrupts(t *testing.T) {
	c := newConnected(t, 10)
	n := c.f.Stats().Tickers
	c.fetched(vr)
	c.wait("snapshot", func(st Stats) bool { return st.Tickers > n })
	before := c.get(t, singlePrefix+vr)
	frames := c.f.Stats().Frames
	bad := []string{
		`not json at all`,
		`{"type":"mystery","msg":{}}`,
		`{"type":"ticker","msg":{"market_ticker":"` + vr + `","yes_bid_dollars":"1.5000","yes_ask_dollars":"1.6000"}}`,
		`{"type":"ticker","msg":{"market_ticker":"` + vr + `","yes_bid_dollars":"-0.1000"}}`,
		`{"type":"ticker","msg":{"market_ticker":"NOT-CACHED","yes_bid_dollars":"0.1000","yes_ask_dollars":"0.2000"}}`,
		`{"type":"ticker","msg":"oops"}`,
		`{"type":"market_lifecycle_v2","msg":{"event_type":"created"}}`,
		`{"type":"error","msg":{"code":99,"msg":"something odd"}}`,
		`{"type":"error","msg":{"code":99,"msg":"something odd"}}`,
		`[1,2,3]`,
		``,
	}
	for _, b := range bad {
		if got := c.fake.PushRaw([]byte(b)); got != 1 {
			t.Fatalf("PushRaw reached %d connections", got)
		}
	}
	c.wait("the frames", func(st Stats) bool { return st.Frames >= frames+len(bad) })
	st := c.f.Stats()
	if st.State != "connected" {
		t.Errorf("state %q after bad input, want connected", st.State)
	}
	if st.Invalid != 3 || st.Unknown != 1 || st.Rejected != 4 || st.Errors != 2 {
		t.Errorf("stats %+v, want 3 invalid, 1 unknown, 4 rejected, 2 errors", st)
	}
	if after := c.get(t, singlePrefix+vr); after != before {
		t.Errorf("cached answer changed by bad input:\n%s", after.Body)
	}
	// Still working: a good push goes through.
	n = c.f.Stats().Tickers
	if _, err := c.fake.Tick(kalshitest.Ticker{Market: vr, YesBid: "0.4000", YesAsk: "0.4100"}); err != nil {
		t.Fatal(err)
	}
	c.wait("the good push", func(st Stats) bool { return st.Tickers > n })
	if e := c.get(t, singlePrefix+vr); !strings.Contains(string(e.Body), `"yes_ask_dollars":"0.4100"`) {
		t.Errorf("good push not applied after bad input")
	}
}

// TestTerminalErrorResubscribes: codes 10 and 25 end a subscription; the
// feed subscribes again (with a snapshot) and pushes flow again.
func TestTerminalErrorResubscribes(t *testing.T) {
	for _, tc := range []struct {
		channel string
		code    int
	}{{"ticker", kalshitest.WSCodeBufferOverflow}, {"ticker", kalshitest.WSCodeChannelError}, {"market_lifecycle_v2", kalshitest.WSCodeChannelError}} {
		t.Run(tc.channel, func(t *testing.T) {
			c := newConnected(t, 10)
			n := c.f.Stats().Tickers
			c.fetched(vr)
			c.wait("snapshot", func(st Stats) bool { return st.Tickers > n })
			errs, n := c.f.Stats().Errors, c.f.Stats().Tickers
			if got := c.fake.PushError(tc.channel, tc.code, ""); got != 1 {
				t.Fatalf("PushError sent %d", got)
			}
			c.wait("the error", func(st Stats) bool { return st.Errors > errs })
			if err := c.fake.WaitWS(c.ctx(), func(st kalshitest.WSState) bool {
				return st.Subscriptions == 2 && len(st.Tickers["ticker"]) == 1 && st.Unfiltered["market_lifecycle_v2"] == 1
			}); err != nil {
				t.Fatal(err)
			}
			if tc.channel == "ticker" {
				c.wait("the new snapshot", func(st Stats) bool { return st.Tickers > n })
			}
			c.wait("pushed-fresh again", func(Stats) bool {
				e, _ := c.store.Get(singlePrefix + vr)
				return e != nil && e.FreshUntil.Equal(e.FetchedAt.Add(time.Minute))
			})
			n = c.f.Stats().Tickers
			if _, err := c.fake.Tick(kalshitest.Ticker{Market: vr, YesBid: "0.2000", YesAsk: "0.2100"}); err != nil {
				t.Fatal(err)
			}
			c.wait("the push", func(st Stats) bool { return st.Tickers > n })
			if e := c.get(t, singlePrefix+vr); !strings.Contains(string(e.Body), `"yes_ask_dollars":"0.2100"`) || e.Detail != "pushed" {
				t.Errorf("push after resubscribing not applied: %s %s", e.Detail, e.Body)
			}
		})
	}
}

// TestCloseEndsConnection: Close closes the upstream connection and turns
// pushed answers back to their ttl; the state is off.
func TestCloseEndsConnection(t *testing.T) {
	c := newConnected(t, 10)
	n := c.f.Stats().Tickers
	c.fetched(vr)
	c.wait("snapshot", func(st Stats) bool { return st.Tickers > n })
	c.f.Close()
	if err := c.fake.WaitWS(c.ctx(), func(st kalshitest.WSState) bool { return st.Connections == 0 }); err != nil {
		t.Fatal(err)
	}
	if s := c.f.State(); s != "off" {
		t.Errorf("state after Close = %q, want off", s)
	}
	if e := c.get(t, singlePrefix+vr); !e.FreshUntil.Equal(e.FetchedAt.Add(2 * time.Second)) {
		t.Errorf("after Close: fresh for %v, want the ttl", e.FreshUntil.Sub(e.FetchedAt))
	}
}
