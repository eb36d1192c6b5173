package kalshitest_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/kalshitest"
)

// tradeObj is a Kalshi Trade object as these tests read it: its other
// fields are in raw (all its keys are checked by the "fields" case).
type tradeObj struct {
	TradeID         string `json:"trade_id"`
	Ticker          string `json:"ticker"`
	YesPriceDollars string `json:"yes_price_dollars"`
	NoPriceDollars  string `json:"no_price_dollars"`
	CreatedTime     string `json:"created_time"`
	IsBlockTrade    bool   `json:"is_block_trade"`
	raw             string // the object as served
}

type tradesPage struct {
	Trades []json.RawMessage `json:"trades"`
	Cursor string            `json:"cursor"`
}

// walkTrades follows cursors from path?query (which must not hold cursor)
// until the cursor is empty, and returns the trades and the number of pages.
func walkTrades(t *testing.T, base, pathQuery string) ([]tradeObj, int) {
	t.Helper()
	var out []tradeObj
	cursor := ""
	for pages := 1; pages <= 1000; pages++ {
		u := base + pathQuery
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		p := getOK[tradesPage](t, u)
		for _, raw := range p.Trades {
			tr := decode[tradeObj](t, raw)
			tr.raw = string(raw)
			out = append(out, tr)
		}
		if p.Cursor == "" {
			return out, pages
		}
		if len(p.Trades) == 0 {
			t.Fatalf("GET %s: empty page with cursor %q", u, p.Cursor)
		}
		cursor = p.Cursor
	}
	t.Fatal("more than 1000 pages")
	return nil, 0
}

func createdUnix(t *testing.T, tr tradeObj) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, tr.CreatedTime)
	if err != nil {
		t.Fatalf("trade %s created_time %q: %v", tr.TradeID, tr.CreatedTime, err)
	}
	return at
}

func TestTradesPagination(t *testing.T) {
	fake, srv := start(t)
	tests := []struct {
		name      string
		pathQuery string
		wantPages int // minimum
		wantN     int // 0: not checked
	}{
		{"live fed market", api + "/markets/trades?ticker=KXFEDDECISION-26JUN30-H0&limit=1000", 4, 3728},
		{"live earnings market default limit", api + "/markets/trades?ticker=KXEARNINGSMENTIONMETA-26JUN30-VR", 9, 885},
		{"historical CPI market", api + "/historical/trades?ticker=KXCPIYOY-25SEP-T2.8&limit=1000", 3, 2353},
		{"all markets", api + "/markets/trades?limit=1000&min_ts=1781222400&max_ts=1781308800", 2, 0}, // 2026-06-12 .. 06-13
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			trades, pages := walkTrades(t, srv.URL, tt.pathQuery)
			if pages < tt.wantPages {
				t.Errorf("pages = %d, want >= %d", pages, tt.wantPages)
			}
			if tt.wantN != 0 && len(trades) != tt.wantN {
				t.Errorf("trades = %d, want %d", len(trades), tt.wantN)
			}
			if tt.wantN != 0 {
				if n, ok := fake.TradeCount(trades[0].Ticker); !ok || n != tt.wantN {
					t.Errorf("TradeCount(%s) = %d, %v; want %d, true", trades[0].Ticker, n, ok, tt.wantN)
				}
			}
			seen := map[string]bool{}
			for i, tr := range trades {
				if seen[tr.TradeID] {
					t.Fatalf("trade %s served twice", tr.TradeID)
				}
				seen[tr.TradeID] = true
				if i > 0 && createdUnix(t, tr).After(createdUnix(t, trades[i-1])) {
					t.Fatalf("trade %d (%s) is newer than trade %d (%s): want newest first", i, tr.CreatedTime, i-1, trades[i-1].CreatedTime)
				}
			}
			// Walking with an odd page size gives the same sequence: no gaps.
			small, _ := walkTrades(t, srv.URL, tt.pathQuery+"&limit=997")
			if !slices.Equal(small, trades) {
				t.Errorf("walk with limit=997: %d trades, want the same %d as with the first walk", len(small), len(trades))
			}
		})
	}
}

func TestTradesShapeAndFilters(t *testing.T) {
	_, srv := start(t)
	const ticker = "KXFEDDECISION-26JUN30-H25"
	all, _ := walkTrades(t, srv.URL, api+"/markets/trades?limit=1000&ticker="+ticker)
	if len(all) < 2000 {
		t.Fatalf("len(trades) = %d, want >= 2000", len(all))
	}

	t.Run("fields", func(t *testing.T) {
		raw := decode[tradesPage](t, get(t, srv.URL+api+"/markets/trades?limit=1&ticker="+ticker).body).Trades[0]
		want := []string{"trade_id", "ticker", "count_fp", "yes_price_dollars", "no_price_dollars", "taker_side",
			"taker_outcome_side", "taker_book_side", "created_time", "is_block_trade"}
		if got := keys(t, raw); !slices.Equal(got, want) {
			t.Errorf("keys = %v, want %v", got, want)
		}
		tr := decode[tradeObj](t, raw)
		yes, _ := strconv.ParseFloat(tr.YesPriceDollars, 64)
		no, _ := strconv.ParseFloat(tr.NoPriceDollars, 64)
		if tr.Ticker != ticker || yes+no < 0.9999 || yes+no > 1.0001 {
			t.Errorf("trade = %+v, want ticker %s and yes+no = 1", tr, ticker)
		}
	})

	t.Run("min_ts and max_ts", func(t *testing.T) {
		mid := createdUnix(t, all[len(all)/2]).Unix()
		lo, hi := mid-86400, mid+86400
		got, _ := walkTrades(t, srv.URL, api+"/markets/trades?limit=100&ticker="+ticker+
			"&min_ts="+strconv.FormatInt(lo, 10)+"&max_ts="+strconv.FormatInt(hi, 10))
		var want []tradeObj
		for _, tr := range all {
			if s := createdUnix(t, tr).Unix(); s >= lo && s <= hi {
				want = append(want, tr)
			}
		}
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("filtered walk = %d trades, want the %d of the full walk within [%d, %d]", len(got), len(want), lo, hi)
		}
	})

	t.Run("is_block_trade", func(t *testing.T) {
		got, _ := walkTrades(t, srv.URL, api+"/markets/trades?limit=1000&is_block_trade=true&ticker="+ticker)
		var want []tradeObj
		for _, tr := range all {
			if tr.IsBlockTrade {
				want = append(want, tr)
			}
		}
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("block trades = %d, want %d", len(got), len(want))
		}
	})

	t.Run("unknown ticker is empty", func(t *testing.T) {
		p := decode[tradesPage](t, get(t, srv.URL+api+"/markets/trades?ticker=KXNOPE").body)
		if len(p.Trades) != 0 || p.Cursor != "" {
			t.Errorf("page = %d trades, cursor %q; want none", len(p.Trades), p.Cursor)
		}
	})
}

func TestTradesClockAndCutoff(t *testing.T) {
	const ticker = "KXEARNINGSMENTIONMETA-26JUN30-VR"
	var now atomic.Int64
	now.Store(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).Unix())
	fake := kalshitest.New(kalshitest.WithNow(func() time.Time { return time.Unix(now.Load(), 0) }))
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)

	before, _ := walkTrades(t, srv.URL, api+"/markets/trades?limit=1000&ticker="+ticker)
	for _, tr := range before {
		if createdUnix(t, tr).Unix() > now.Load() {
			t.Fatalf("trade at %s served before it happened (now %d)", tr.CreatedTime, now.Load())
		}
	}
	now.Add(30 * 86400)
	after, _ := walkTrades(t, srv.URL, api+"/markets/trades?limit=1000&ticker="+ticker)
	if len(after) <= len(before) || !slices.Equal(after[len(after)-len(before):], before) {
		t.Errorf("after the clock moved: %d trades, want more than %d ending with the earlier ones", len(after), len(before))
	}

	// Moving the cutoff into the market's life splits its trades.
	cut := time.Date(2026, 5, 20, 0, 0, 0, 0, time.UTC)
	fake.SetHistoricalCutoff(cut)
	live, _ := walkTrades(t, srv.URL, api+"/markets/trades?limit=1000&ticker="+ticker)
	hist, _ := walkTrades(t, srv.URL, api+"/historical/trades?limit=1000&ticker="+ticker)
	if len(live) == 0 || len(hist) == 0 || !slices.Equal(append(live, hist...), after) {
		t.Errorf("live %d + historical %d trades, want both non-empty and together the %d trades", len(live), len(hist), len(after))
	}
	for _, tr := range hist {
		if !createdUnix(t, tr).Before(cut) {
			t.Fatalf("historical trade at %s is not before the cutoff %s", tr.CreatedTime, cut)
		}
	}
}

type candle struct {
	EndPeriodTS int64 `json:"end_period_ts"`
	Price       struct {
		Open  string `json:"open_dollars"`
		Close string `json:"close_dollars"`
	} `json:"price"`
	VolumeFP string `json:"volume_fp"`
}

func TestCandlesticks(t *testing.T) {
	const (
		series = "KXEARNINGSMENTIONNVDA"
		ticker = "KXEARNINGSMENTIONNVDA-26JUN30-CUDA"
		open   = 1777644000 // 2026-05-01T14:00:00Z
		close  = 1785355200 // 2026-07-29T20:00:00Z
	)
	var now atomic.Int64
	now.Store(1782820830) // 2026-06-30T12:00:30Z
	fake := kalshitest.New(kalshitest.WithNow(func() time.Time { return time.Unix(now.Load(), 0) }))
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	single := func(q string) response {
		return get(t, srv.URL+api+"/series/"+series+"/markets/"+ticker+"/candlesticks?"+q)
	}

	t.Run("window bounds", func(t *testing.T) {
		tests := []struct {
			name      string
			query     string
			wantN     int
			wantFirst int64
			wantLast  int64
			period    int64
		}{
			{"hourly inside", "start_ts=1780000000&end_ts=1780036000&period_interval=60", 10, 1780002000, 1780034400, 3600},
			{"daily from before open", "start_ts=1700000000&end_ts=1778000000&period_interval=1440", 4, 1777680000, 1777939200, 86400},
			{"minute window ending at now includes the partial candle", "start_ts=1782820000&end_ts=1782821000&period_interval=1", 15, 1782820020, 1782820860, 60},
			{"after now is empty", "start_ts=1783000000&end_ts=1784000000&period_interval=60", 0, 0, 0, 3600},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp := single(tt.query)
				if resp.status != http.StatusOK {
					t.Fatalf("status = %d; body %s", resp.status, resp.body)
				}
				body := decode[struct {
					Ticker       string   `json:"ticker"`
					Candlesticks []candle `json:"candlesticks"`
				}](t, resp.body)
				cs := body.Candlesticks
				if body.Ticker != ticker || len(cs) != tt.wantN {
					t.Fatalf("ticker %q, %d candles; want %q, %d", body.Ticker, len(cs), ticker, tt.wantN)
				}
				for i, c := range cs {
					if c.EndPeriodTS%tt.period != 0 || c.EndPeriodTS <= open || c.EndPeriodTS-tt.period >= close {
						t.Errorf("candle %d ends at %d: not aligned to %d or outside the market's life", i, c.EndPeriodTS, tt.period)
					}
				}
				if tt.wantN > 0 && (cs[0].EndPeriodTS != tt.wantFirst || cs[len(cs)-1].EndPeriodTS != tt.wantLast) {
					t.Errorf("candles end at %d..%d, want %d..%d", cs[0].EndPeriodTS, cs[len(cs)-1].EndPeriodTS, tt.wantFirst, tt.wantLast)
				}
			})
		}
	})

	t.Run("candle fields", func(t *testing.T) {
		resp := single("start_ts=1780000000&end_ts=1780003600&period_interval=60")
		raw := decode[struct {
			Candlesticks []json.RawMessage `json:"candlesticks"`
		}](t, resp.body).Candlesticks[0]
		if got, want := keys(t, raw), []string{"end_period_ts", "yes_bid", "yes_ask", "price", "volume_fp", "open_interest_fp"}; !slices.Equal(got, want) {
			t.Errorf("keys = %v, want %v", got, want)
		}
		parts := decode[map[string]json.RawMessage](t, raw)
		if got, want := keys(t, parts["yes_bid"]), []string{"open_dollars", "low_dollars", "high_dollars", "close_dollars"}; !slices.Equal(got, want) {
			t.Errorf("yes_bid keys = %v, want %v", got, want)
		}
		if got, want := keys(t, parts["price"]), []string{"open_dollars", "low_dollars", "high_dollars", "close_dollars",
			"mean_dollars", "previous_dollars", "min_dollars", "max_dollars"}; !slices.Equal(got, want) {
			t.Errorf("price keys = %v, want %v", got, want)
		}
	})

	t.Run("past windows are stable, the window holding now moves", func(t *testing.T) {
		past := "start_ts=1782000000&end_ts=1782600000&period_interval=60"
		current := "start_ts=1782810000&end_ts=1782900000&period_interval=60"
		p1, c1 := single(past).body, single(current).body
		now.Add(1200)
		defer now.Add(-1200)
		if p2 := single(past).body; string(p2) != string(p1) {
			t.Error("a window entirely before now changed when the clock moved")
		}
		if c2 := single(current).body; string(c2) == string(c1) {
			t.Error("the window holding now did not change when the clock moved")
		}
	})

	t.Run("include_latest_before_start", func(t *testing.T) {
		cs := decode[struct {
			Candlesticks []candle `json:"candlesticks"`
		}](t, single("start_ts=1780002001&end_ts=1780009200&period_interval=60&include_latest_before_start=true").body).Candlesticks
		if len(cs) == 0 || cs[0].EndPeriodTS != 1780002000 {
			t.Errorf("candles = %v, want the first to end at 1780002000", cs)
		}
	})

	t.Run("event route", func(t *testing.T) {
		resp := get(t, srv.URL+api+"/series/KXFEDDECISION/events/KXFEDDECISION-26JUN30/candlesticks?start_ts=1780000000&end_ts=1780036000&period_interval=60")
		body := decode[struct {
			MarketTickers      []string   `json:"market_tickers"`
			MarketCandlesticks [][]candle `json:"market_candlesticks"`
			AdjustedEndTS      int64      `json:"adjusted_end_ts"`
		}](t, resp.body)
		if len(body.MarketTickers) != 5 || len(body.MarketCandlesticks) != 5 || body.AdjustedEndTS != 1780036000 {
			t.Fatalf("body = %d tickers, %d lists, adjusted_end_ts %d; want 5, 5, 1780036000", len(body.MarketTickers), len(body.MarketCandlesticks), body.AdjustedEndTS)
		}
		for i, cs := range body.MarketCandlesticks {
			if len(cs) != 10 {
				t.Errorf("market %s: %d candles, want 10", body.MarketTickers[i], len(cs))
			}
		}
		big := decode[struct {
			MarketCandlesticks [][]candle `json:"market_candlesticks"`
			AdjustedEndTS      int64      `json:"adjusted_end_ts"`
		}](t, get(t, srv.URL+api+"/series/KXBIGSERIES/events/KXBIGSERIES-26JUN30/candlesticks?start_ts=1780000000&end_ts=1782000000&period_interval=1").body)
		total := 0
		for _, cs := range big.MarketCandlesticks {
			total += len(cs)
		}
		if total == 0 || total > 10000 || big.AdjustedEndTS >= 1782000000 {
			t.Errorf("big event: %d candles, adjusted_end_ts %d; want 1..10000 and an earlier end", total, big.AdjustedEndTS)
		}
	})

	t.Run("batch route", func(t *testing.T) {
		resp := get(t, srv.URL+api+"/markets/candlesticks?market_tickers="+ticker+",KXFEDDECISION-26JUN30-H0,KXNOPE,KXCPIYOY-25SEP-T2.6&start_ts=1780000000&end_ts=1780036000&period_interval=60")
		body := decode[struct {
			Markets []struct {
				MarketTicker string   `json:"market_ticker"`
				Candlesticks []candle `json:"candlesticks"`
			} `json:"markets"`
		}](t, resp.body)
		var got []string
		for _, m := range body.Markets {
			got = append(got, m.MarketTicker)
			if len(m.Candlesticks) != 10 {
				t.Errorf("%s: %d candles, want 10", m.MarketTicker, len(m.Candlesticks))
			}
		}
		if want := []string{ticker, "KXFEDDECISION-26JUN30-H0"}; !slices.Equal(got, want) {
			t.Errorf("markets = %v, want %v (unknown and historical left out)", got, want)
		}
	})

	t.Run("deterministic", func(t *testing.T) {
		other := httptest.NewServer(kalshitest.New(kalshitest.WithNow(func() time.Time { return time.Unix(now.Load(), 0) })))
		defer other.Close()
		path := api + "/series/" + series + "/markets/" + ticker + "/candlesticks?start_ts=1777000000&end_ts=1782000000&period_interval=60"
		if a, b := get(t, srv.URL+path).body, get(t, other.URL+path).body; string(a) != string(b) {
			t.Error("two fakes serve different candles")
		}
	})
}

type marketObj struct {
	Ticker                 string `json:"ticker"`
	EventTicker            string `json:"event_ticker"`
	Status                 string `json:"status"`
	Result                 string `json:"result"`
	SettlementValueDollars string `json:"settlement_value_dollars"`
	SettlementTS           string `json:"settlement_ts"`
	ExpirationValue        string `json:"expiration_value"`
}

func TestFinalizedAndHistoricalMarkets(t *testing.T) {
	fake, srv := start(t)

	t.Run("cutoff", func(t *testing.T) {
		got := decode[map[string]string](t, get(t, srv.URL+api+"/historical/cutoff").body)
		want := map[string]string{
			"market_settled_ts": "2026-01-01T00:00:00Z", "trades_created_ts": "2026-01-01T00:00:00Z",
			"orders_updated_ts": "2026-01-01T00:00:00Z", "market_positions_last_updated_ts": "2026-01-01T00:00:00Z",
		}
		if !maps.Equal(got, want) {
			t.Errorf("cutoff = %v, want %v", got, want)
		}
	})

	statuses := func(eventTicker string) []string {
		body := decode[struct {
			Event struct {
				Markets []marketObj `json:"markets"`
			} `json:"event"`
		}](t, get(t, srv.URL+api+"/events/"+eventTicker+"?with_nested_markets=true").body)
		var out []string
		for _, m := range body.Event.Markets {
			out = append(out, m.Status)
			if (m.Status == "finalized" || m.Status == "determined") && (m.Result == "" || m.SettlementTS == "" || m.ExpirationValue == "") {
				t.Errorf("settled market %+v lacks result, settlement_ts or expiration_value", m)
			}
		}
		return out
	}
	events := []struct {
		event string
		want  []string
	}{
		{"KXCPIYOY-25SEP", []string{"finalized", "finalized", "finalized", "finalized"}},
		{"KXCPIYOY-25OCT", []string{"finalized", "finalized", "finalized", "finalized"}},
		{"KXCPIYOY-26MAR", []string{"finalized", "finalized", "finalized", "finalized"}},
		{"KXCPIYOY-26APR", []string{"finalized", "finalized", "determined", "closed"}},
	}
	for _, tt := range events {
		if got := statuses(tt.event); !slices.Equal(got, tt.want) {
			t.Errorf("%s statuses = %v, want %v", tt.event, got, tt.want)
		}
	}

	histList := func(q string) []string {
		p := decode[marketsPage](t, get(t, srv.URL+api+"/historical/markets?"+q).body)
		return tickersOf(t, p.Markets)
	}
	t.Run("historical tier", func(t *testing.T) {
		want := []string{"KXCPIYOY-25SEP-T2.6", "KXCPIYOY-25SEP-T2.8", "KXCPIYOY-25SEP-T3.0", "KXCPIYOY-25SEP-T3.2",
			"KXCPIYOY-25OCT-T2.6", "KXCPIYOY-25OCT-T2.8", "KXCPIYOY-25OCT-T3.0", "KXCPIYOY-25OCT-T3.2"}
		if got := histList(""); !slices.Equal(got, want) {
			t.Errorf("historical markets = %v, want %v", got, want)
		}
		if got := histList("event_ticker=KXCPIYOY-25OCT&tickers=KXCPIYOY-25OCT-T3.0,KXCPIYOY-25SEP-T3.0"); !slices.Equal(got, []string{"KXCPIYOY-25OCT-T3.0"}) {
			t.Errorf("filtered historical markets = %v", got)
		}
		var walked []string
		cursor := ""
		for range 10 {
			p := decode[marketsPage](t, get(t, srv.URL+api+"/historical/markets?series_ticker=KXCPIYOY&limit=3&cursor="+cursor).body)
			walked = append(walked, tickersOf(t, p.Markets)...)
			if cursor = p.Cursor; cursor == "" {
				break
			}
		}
		if !slices.Equal(walked, want) || cursor != "" {
			t.Errorf("walk with limit=3 = %v (last cursor %q), want %v", walked, cursor, want)
		}
		checks := []struct {
			path string
			want int
		}{
			{"/historical/markets/KXCPIYOY-25SEP-T2.6", 200},
			{"/historical/markets/KXCPIYOY-25SEP-T2.6/candlesticks?start_ts=1757000000&end_ts=1761000000&period_interval=1440", 200},
			{"/markets/KXCPIYOY-25SEP-T2.6", 404},
			{"/markets/KXCPIYOY-25SEP-T2.6/orderbook", 404},
			{"/series/KXCPIYOY/markets/KXCPIYOY-25SEP-T2.6/candlesticks?start_ts=1757000000&end_ts=1761000000&period_interval=1440", 404},
			{"/historical/markets/KXCPIYOY-26MAR-T2.6", 404},
			{"/markets/KXCPIYOY-26MAR-T2.6", 200},
			{"/historical/markets/KXNOPE", 404},
		}
		for _, c := range checks {
			if got := get(t, srv.URL+api+c.path).status; got != c.want {
				t.Errorf("GET %s = %d, want %d", c.path, got, c.want)
			}
		}
		hc := decode[struct {
			Candlesticks []candle `json:"candlesticks"`
		}](t, get(t, srv.URL+api+checks[1].path).body).Candlesticks
		if len(hc) < 30 {
			t.Errorf("historical daily candles = %d, want >= 30", len(hc))
		}
	})

	t.Run("moving the cutoff moves markets between tiers", func(t *testing.T) {
		fake.SetHistoricalCutoff(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
		defer fake.SetHistoricalCutoff(time.Unix(kalshitest.DefaultHistoricalCutoffUnix, 0))
		if got := len(histList("")); got != 12 {
			t.Errorf("historical markets = %d, want 12 (25SEP, 25OCT, 26MAR)", got)
		}
		if got := get(t, srv.URL+api+"/markets/KXCPIYOY-26MAR-T2.6").status; got != 404 {
			t.Errorf("live GET of a now-historical market = %d, want 404", got)
		}
	})
}

// TestHistoryPipeline checks that the new routes go through counting, faults
// and signature verification like every route.
func TestHistoryPipeline(t *testing.T) {
	fake, srv := start(t)
	paths := []string{
		"/markets/trades?ticker=KXFEDDECISION-26JUN30-H0",
		"/markets/candlesticks?market_tickers=KXFEDDECISION-26JUN30-H0&start_ts=1780000000&end_ts=1780036000&period_interval=60",
		"/series/KXFEDDECISION/markets/KXFEDDECISION-26JUN30-H0/candlesticks?start_ts=1780000000&end_ts=1780036000&period_interval=60",
		"/series/KXFEDDECISION/events/KXFEDDECISION-26JUN30/candlesticks?start_ts=1780000000&end_ts=1780036000&period_interval=60",
		"/historical/cutoff",
		"/historical/markets",
		"/historical/markets/KXCPIYOY-25SEP-T2.6",
		"/historical/markets/KXCPIYOY-25SEP-T2.6/candlesticks?start_ts=1757000000&end_ts=1761000000&period_interval=1440",
		"/historical/trades?ticker=KXCPIYOY-25SEP-T2.6",
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			fake.Reset()
			if got := get(t, srv.URL+api+p).status; got != 200 {
				t.Fatalf("status = %d, want 200", got)
			}
			path, query, _ := strings.Cut(p, "?")
			if got := fake.Count(api + path); got != 1 {
				t.Errorf("Count = %d, want 1", got)
			}
			if query != "" && fake.CountQuery(api+p) != 1 {
				t.Errorf("CountQuery(%s) = %d, want 1", p, fake.CountQuery(api+p))
			}

			fake.SetFault(kalshitest.Fault{Status: http.StatusTooManyRequests, Times: 1, Paths: []string{api + path}})
			if got := get(t, srv.URL+api+p).status; got != 429 {
				t.Errorf("with a 429 fault: status = %d, want 429", got)
			}

			fake.SetPublicKey(&key.PublicKey)
			defer fake.SetPublicKey(nil)
			bad := http.Header{"Kalshi-Access-Key": {"k"}, "Kalshi-Access-Timestamp": {"1"}, "Kalshi-Access-Signature": {"AAAA"}}
			if got := do(t, newRequest(t, "GET", srv.URL+api+p, "", bad)).status; got != 401 {
				t.Errorf("bad signature: status = %d, want 401", got)
			}
			sig, err := kalshitest.Sign(key, "1", "GET", api+p)
			if err != nil {
				t.Fatal(err)
			}
			good := http.Header{"Kalshi-Access-Key": {"k"}, "Kalshi-Access-Timestamp": {"1"}, "Kalshi-Access-Signature": {sig}}
			if got := do(t, newRequest(t, "GET", srv.URL+api+p, "", good)).status; got != 200 {
				t.Errorf("good signature: status = %d, want 200", got)
			}
		})
	}
}
