package batch_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/kproxy/kproxy/client"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
)

const (
	tradesPath     = "/trade-api/v2/markets/trades"
	histTradesPath = "/trade-api/v2/historical/trades"
	histMarkets    = "/trade-api/v2/historical/markets"
	cpi            = "KXCPIYOY"
)

// joinedBody is the body of an all_pages item.
type joinedBody struct {
	Trades    []json.RawMessage `json:"trades"`
	Markets   []json.RawMessage `json:"markets"`
	Events    []json.RawMessage `json:"events"`
	Cursor    *string           `json:"cursor"`
	Pages     int               `json:"pages"`
	Truncated *bool             `json:"truncated"`
}

func decodeJoined(t *testing.T, r client.Response) joinedBody {
	t.Helper()
	var b joinedBody
	if err := json.Unmarshal(r.Body, &b); err != nil {
		t.Fatalf("item %s: body %.200s: %v", r.ID, r.Body, err)
	}
	if b.Cursor == nil || b.Truncated == nil {
		t.Fatalf("item %s: body lacks cursor or truncated: %.200s", r.ID, r.Body)
	}
	return b
}

// tradeIDs returns the trade_id of each trade and fails on a duplicate.
func tradeIDs(t *testing.T, trades []json.RawMessage) []string {
	t.Helper()
	seen := map[string]bool{}
	var ids []string
	for _, raw := range trades {
		var tr struct {
			TradeID string `json:"trade_id"`
		}
		if err := json.Unmarshal(raw, &tr); err != nil || tr.TradeID == "" {
			t.Fatalf("trade %s: no trade_id (%v)", raw, err)
		}
		if seen[tr.TradeID] {
			t.Fatalf("trade %s listed twice", tr.TradeID)
		}
		seen[tr.TradeID] = true
		ids = append(ids, tr.TradeID)
	}
	return ids
}

// longTTL keeps the trades and historical routes fresh for the whole test,
// however slow the machine, so that a second run is served from cache.
func longTTL(cfg *config.Config) {
	hour := config.Duration(time.Hour)
	for _, p := range []string{tradesPath, histMarkets, "/trade-api/v2/events"} {
		cfg.Cache.Overrides = append(cfg.Cache.Overrides, config.Override{Pattern: p, TTL: &hour})
	}
}

// afterEverything puts the fake's clock after every market's close, so that
// /markets/trades serves each market's whole life (kalshitest TradeCount).
func afterEverything(e *env) {
	e.fake.SetNow(func() time.Time { return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) })
}

func tradesItem(ticker string) client.Item {
	return client.Item{ID: ticker, Path: tradesPath + "?ticker=" + ticker + "&limit=1000", AllPages: true}
}

func TestBackfillJoinsEveryTradesPageAndSecondRunIsCached(t *testing.T) {
	e := start(t, setup{cfg: longTTL})
	afterEverything(e)
	tickers := e.fake.MarketTickers(fed)
	if len(tickers) < 2 {
		t.Fatalf("fake lists %d %s markets, want several", len(tickers), fed)
	}
	var items []client.Item
	wantPages := 0
	for _, tk := range tickers {
		items = append(items, tradesItem(tk))
		n, _ := e.fake.TradeCount(tk)
		wantPages += (n + 999) / 1000
	}

	first, err := e.c.Batch(t.Context(), items)
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if got := e.fake.Count(tradesPath); got != wantPages {
		t.Errorf("upstream trades requests = %d, want %d (one per page)", got, wantPages)
	}
	for i, r := range first.Responses {
		tk := tickers[i]
		n, ok := e.fake.TradeCount(tk)
		if !ok || n <= 1000 {
			t.Fatalf("TradeCount(%s) = %d, %v: want several pages", tk, n, ok)
		}
		if r.Status != http.StatusOK || r.Cache != "MISS" {
			t.Fatalf("%s: status %d cache %q (%s), want 200 MISS", tk, r.Status, r.Cache, r.Error)
		}
		b := decodeJoined(t, r)
		if got := len(tradeIDs(t, b.Trades)); got != n {
			t.Errorf("%s: %d trades joined, want TradeCount %d", tk, got, n)
		}
		if want := (n + 999) / 1000; b.Pages != want || r.Pages != want {
			t.Errorf("%s: pages = %d (line %d), want %d", tk, b.Pages, r.Pages, want)
		}
		if *b.Truncated || *b.Cursor != "" || r.NextCursor != "" {
			t.Errorf("%s: truncated %v cursor %q next_cursor %q, want a complete listing", tk, *b.Truncated, *b.Cursor, r.NextCursor)
		}
	}

	before := e.fake.Total()
	second, err := e.c.Batch(t.Context(), items)
	if err != nil {
		t.Fatalf("second Batch: %v", err)
	}
	if got := e.fake.Total() - before; got != 0 {
		t.Errorf("second identical batch made %d upstream requests, want 0", got)
	}
	for i, r := range second.Responses {
		if r.Status != http.StatusOK || r.Cache != "HIT" {
			t.Errorf("%s second run: status %d cache %q, want 200 HIT", tickers[i], r.Status, r.Cache)
		}
		if string(r.Body) != string(first.Responses[i].Body) {
			t.Errorf("%s second run: body differs from the first", tickers[i])
		}
	}
}

func TestBackfillStopsAtMaxPagesWithTheCursorToContinue(t *testing.T) {
	e := start(t, setup{cfg: func(cfg *config.Config) { cfg.Batch.MaxPages = 2 }})
	afterEverything(e)
	var tk string
	var n int
	for _, m := range e.fake.MarketTickers(fed) {
		if c, _ := e.fake.TradeCount(m); c > 2000 {
			tk, n = m, c
			break
		}
	}
	if tk == "" {
		t.Fatalf("no %s market has more than 2000 trades", fed)
	}
	b, err := e.c.Batch(t.Context(), []client.Item{tradesItem(tk)})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	r := b.Responses[0]
	head := decodeJoined(t, r)
	if r.Status != http.StatusOK || head.Pages != 2 || len(head.Trades) != 2000 || !*head.Truncated {
		t.Fatalf("status %d pages %d trades %d truncated %v, want 200, 2 pages, 2000 trades, truncated", r.Status, head.Pages, len(head.Trades), *head.Truncated)
	}
	if *head.Cursor == "" || r.NextCursor != *head.Cursor {
		t.Fatalf("cursor %q, next_cursor %q: want the same non-empty cursor", *head.Cursor, r.NextCursor)
	}

	// Continuing from the cursor gives the rest, no trade twice.
	rest := tradesItem(tk)
	rest.Path += "&cursor=" + url.QueryEscape(*head.Cursor)
	b, err = e.c.Batch(t.Context(), []client.Item{rest})
	if err != nil {
		t.Fatalf("Batch from cursor: %v", err)
	}
	tail := decodeJoined(t, b.Responses[0])
	all := append(tradeIDs(t, head.Trades), tradeIDs(t, tail.Trades)...)
	if len(all) != n || len(slices.Compact(slices.Sorted(slices.Values(all)))) != n {
		t.Errorf("head %d + tail %d trades (%d distinct), want %d distinct", len(head.Trades), len(tail.Trades), len(slices.Compact(slices.Sorted(slices.Values(all)))), n)
	}
}

func TestBackfillOfHistoricalAndEventListings(t *testing.T) {
	e := start(t, setup{cfg: longTTL})
	afterEverything(e)
	one, err := e.c.Batch(t.Context(), []client.Item{
		{ID: "hm", Path: histMarkets + "?series_ticker=" + cpi + "&limit=1000"},
		{ID: "ev", Path: "/trade-api/v2/events?limit=200"},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	var hm struct{ Markets []json.RawMessage }
	var ev struct{ Events []json.RawMessage }
	if err := json.Unmarshal(one.Responses[0].Body, &hm); err != nil || len(hm.Markets) < 3 {
		t.Fatalf("historical markets of %s: %d (%v), want at least 3", cpi, len(hm.Markets), err)
	}
	if err := json.Unmarshal(one.Responses[1].Body, &ev); err != nil || len(ev.Events) < 3 {
		t.Fatalf("events: %d (%v), want at least 3", len(ev.Events), err)
	}
	var hTicker string
	if err := json.Unmarshal(hm.Markets[0], &struct {
		Ticker *string `json:"ticker"`
	}{&hTicker}); err != nil {
		t.Fatal(err)
	}
	hTrades, _ := e.fake.TradeCount(hTicker)

	// Small pages: the joined listing equals the one-page listing.
	b, err := e.c.Batch(t.Context(), []client.Item{
		{ID: "hm", Path: histMarkets + "?series_ticker=" + cpi + "&limit=2", AllPages: true},
		{ID: "ev", Path: "/trade-api/v2/events?limit=2", AllPages: true},
		{ID: "ht", Path: histTradesPath + "?ticker=" + hTicker + "&limit=1000", AllPages: true},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	for i, tc := range []struct {
		want  []json.RawMessage
		got   func(joinedBody) []json.RawMessage
		pages int
	}{
		{hm.Markets, func(b joinedBody) []json.RawMessage { return b.Markets }, (len(hm.Markets) + 1) / 2},
		{ev.Events, func(b joinedBody) []json.RawMessage { return b.Events }, (len(ev.Events) + 1) / 2},
	} {
		r := b.Responses[i]
		jb := decodeJoined(t, r)
		got := tc.got(jb)
		if len(got) != len(tc.want) {
			t.Errorf("%s: %d joined, want %d", r.ID, len(got), len(tc.want))
			continue
		}
		for j := range got {
			if string(got[j]) != string(tc.want[j]) {
				t.Errorf("%s: element %d = %.80s, want %.80s", r.ID, j, got[j], tc.want[j])
				break
			}
		}
		if jb.Pages != tc.pages {
			t.Errorf("%s: pages = %d, want %d", r.ID, jb.Pages, tc.pages)
		}
	}
	ht := decodeJoined(t, b.Responses[2])
	if got := len(tradeIDs(t, ht.Trades)); got != hTrades || hTrades == 0 {
		t.Errorf("historical trades of %s: %d, want TradeCount %d", hTicker, got, hTrades)
	}
}

func TestBackfillOnARouteWithoutCursorIsA400NeverFetched(t *testing.T) {
	e := start(t, setup{})
	b, err := e.c.Batch(t.Context(), []client.Item{
		{ID: "all", Path: "/trade-api/v2/series/" + fed, AllPages: true},
		{ID: "one", Path: "/trade-api/v2/series/" + meta},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if r := b.Responses[0]; r.Status != http.StatusBadRequest || r.Code != "not_paginated" || r.Error == "" {
		t.Errorf("all_pages on /series/{s}: %+v, want 400 not_paginated with a message", r)
	}
	if got := e.fake.Count("/trade-api/v2/series/" + fed); got != 0 {
		t.Errorf("upstream requests for the refused item = %d, want 0", got)
	}
	if r := b.Responses[1]; r.Status != http.StatusOK {
		t.Errorf("the other item: status %d, want 200", r.Status)
	}
}

func TestBackfillFailingPageFailsOnlyThatItem(t *testing.T) {
	e := start(t, setup{cfg: longTTL})
	afterEverything(e)
	tk := e.fake.MarketTickers(fed)[0]
	// The first page is cached; every later one fails upstream.
	warm := tradesItem(tk)
	warm.AllPages = false
	b, err := e.c.Batch(t.Context(), []client.Item{warm})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	var page1 struct{ Cursor string }
	if err := json.Unmarshal(b.Responses[0].Body, &page1); err != nil || page1.Cursor == "" {
		t.Fatalf("first page: cursor %q (%v), want one", page1.Cursor, err)
	}
	e.fake.SetFault(kalshitest.Fault{Status: http.StatusInternalServerError, Paths: []string{tradesPath}})

	b, err = e.c.Batch(t.Context(), []client.Item{
		tradesItem(tk),
		{ID: "hm", Path: histMarkets + "?series_ticker=" + cpi + "&limit=2", AllPages: true},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	r := b.Responses[0]
	if r.Status != http.StatusInternalServerError || r.Error == "" || r.Pages != 1 || r.NextCursor != page1.Cursor {
		t.Errorf("failing item: status %d error %q pages %d next_cursor %q, want 500 with an error, 1 page, next_cursor %q",
			r.Status, r.Error, r.Pages, r.NextCursor, page1.Cursor)
	}
	if r := b.Responses[1]; r.Status != http.StatusOK || decodeJoined(t, r).Pages < 2 {
		t.Errorf("the other item: status %d pages %d, want 200 over several pages", r.Status, r.Pages)
	}

	// Resuming from that cursor fails at once, and says where to resume.
	resume := tradesItem(tk)
	resume.Path += "&cursor=" + url.QueryEscape(page1.Cursor)
	b, err = e.c.Batch(t.Context(), []client.Item{resume})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if r := b.Responses[0]; r.Status != http.StatusInternalServerError || r.Pages != 0 || r.NextCursor != page1.Cursor {
		t.Errorf("resumed item: status %d pages %d next_cursor %q, want 500, 0 pages, next_cursor %q", r.Status, r.Pages, r.NextCursor, page1.Cursor)
	}
}

func TestBackfillStreamsOneLinePerItemWhenItsLastPageIsIn(t *testing.T) {
	e := start(t, setup{})
	afterEverything(e)
	tickers := e.fake.MarketTickers(fed)[:2]
	req := client.BatchRequest{Requests: []client.Item{tradesItem(tickers[0]), tradesItem(tickers[1]), {ID: "bad", Path: "/trade-api/v2/series/" + fed, AllPages: true}}}
	lines := map[string]client.Line{}
	done, err := e.c.Stream(t.Context(), client.PathBatch, req, func(l client.Line) error {
		if _, dup := lines[l.ID]; dup {
			t.Errorf("item %s has two lines", l.ID)
		}
		lines[l.ID] = l
		return nil
	})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if done.OK != 2 || done.Failed != 1 || len(lines) != 3 {
		t.Errorf("done %+v after %d lines, want ok 2 failed 1 after 3", *done, len(lines))
	}
	for _, tk := range tickers {
		n, _ := e.fake.TradeCount(tk)
		l := lines[tk]
		if b := decodeJoined(t, l); len(b.Trades) != n || l.Pages != (n+999)/1000 {
			t.Errorf("%s line: %d trades over %d pages, want %d over %d", tk, len(b.Trades), l.Pages, n, (n+999)/1000)
		}
	}
}
