package kalshitest_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/kalshitest"
)

const api = "/trade-api/v2"

// start serves a new fake on a local HTTP server closed at the end of the test.
func start(t *testing.T) (*kalshitest.Server, *httptest.Server) {
	t.Helper()
	fake := kalshitest.New()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, srv
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request and reads the whole answer; it fails the test on
// transport errors.
func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return response{resp.StatusCode, resp.Header, body}
}

func newRequest(t *testing.T, method, url string, body string, header http.Header) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	return req
}

func get(t *testing.T, url string) response {
	t.Helper()
	return do(t, newRequest(t, http.MethodGet, url, "", nil))
}

// getOK GETs url and decodes its body as a T; anything but a 200 fails the test.
func getOK[T any](t *testing.T, url string) T {
	t.Helper()
	resp := get(t, url)
	if resp.status != http.StatusOK {
		t.Fatalf("GET %s = %d, want 200; body %.300s", url, resp.status, resp.body)
	}
	return decode[T](t, resp.body)
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %.200s: %v", b, err)
	}
	return v
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// keys returns the keys of a JSON object, in order.
func keys(t *testing.T, obj []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(obj))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %.100s", obj)
	}
	var out []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

type marketsPage struct {
	Markets []json.RawMessage `json:"markets"`
	Cursor  string            `json:"cursor"`
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Service string `json:"service"`
	} `json:"error"`
}

func tickerOf(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	return decode[struct {
		Ticker string `json:"ticker"`
	}](t, raw).Ticker
}

func tickersOf(t *testing.T, raws []json.RawMessage) []string {
	t.Helper()
	out := []string{}
	for _, r := range raws {
		out = append(out, tickerOf(t, r))
	}
	return out
}

func TestMarketsPagination(t *testing.T) {
	tests := []struct {
		name      string
		limit     string // "" = default
		wantPages []int
	}{
		{"limit 200", "200", []int{200, 200, 50}},
		{"default limit 100", "", []int{100, 100, 100, 100, 50}},
		{"limit 1000", "1000", []int{450}},
		{"limit 450", "450", []int{450}},
	}
	fake, srv := start(t)
	want := fake.MarketTickers("KXBIGSERIES")
	if got := len(want); got != 450 {
		t.Fatalf("len(MarketTickers(KXBIGSERIES)) = %d, want 450", got)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			var sizes []int
			cursor := ""
			for page := 0; ; page++ {
				if page > 10 {
					t.Fatal("pagination does not terminate")
				}
				q := url.Values{"series_ticker": {"KXBIGSERIES"}}
				if tt.limit != "" {
					q.Set("limit", tt.limit)
				}
				if cursor != "" {
					q.Set("cursor", cursor)
				}
				p := getOK[marketsPage](t, srv.URL+api+"/markets?"+q.Encode())
				sizes = append(sizes, len(p.Markets))
				got = append(got, tickersOf(t, p.Markets)...)
				if p.Cursor == "" {
					break
				}
				cursor = p.Cursor
			}
			if !slices.Equal(sizes, tt.wantPages) {
				t.Errorf("page sizes = %v, want %v", sizes, tt.wantPages)
			}
			if !slices.Equal(got, want) {
				t.Errorf("tickers over all pages differ from MarketTickers: got %d, want %d", len(got), len(want))
			}
			distinct := make(map[string]bool)
			for _, tk := range got {
				distinct[tk] = true
			}
			if len(distinct) != 450 {
				t.Errorf("distinct markets = %d, want 450", len(distinct))
			}
		})
	}
}

func TestMarketsFilters(t *testing.T) {
	meta := "KXEARNINGSMENTIONMETA-26JUN30-"
	tests := []struct {
		name  string
		query string
		want  []string // nil: only check wantN
		wantN int
	}{
		{
			name:  "tickers keep universe order",
			query: "tickers=" + meta + "THRE," + meta + "VR,NOPE",
			want:  []string{meta + "VR", meta + "THRE"},
		},
		{
			name:  "repeated tickers params",
			query: "tickers=KXFEDDECISION-26JUN30-H0&tickers=" + meta + "LLAM",
			want:  []string{meta + "LLAM", "KXFEDDECISION-26JUN30-H0"},
		},
		{
			name:  "series_ticker",
			query: "series_ticker=KXEARNINGSMENTIONMETA&limit=3",
			want:  []string{meta + "VR", meta + "LLAM", meta + "THRE"},
		},
		{name: "series_ticker all", query: "series_ticker=KXEARNINGSMENTIONNFLX", wantN: 12},
		{name: "event_ticker", query: "event_ticker=KXFEDDECISION-26JUN30", wantN: 5},
		{name: "status open", query: "series_ticker=KXEARNINGSMENTIONTSLA&status=open", wantN: 12},
		{name: "status settled", query: "series_ticker=KXEARNINGSMENTIONTSLA&status=settled", want: []string{}},
		{name: "series and foreign tickers", query: "series_ticker=KXEARNINGSMENTIONTSLA&tickers=" + meta + "VR", want: []string{}},
		{name: "unknown series", query: "series_ticker=KXNOPE", want: []string{}},
		{name: "no filter (historical markets left out)", query: "limit=1000", wantN: 8*12 + 5 + 450 + 2*4},
	}
	_, srv := start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := getOK[marketsPage](t, srv.URL+api+"/markets?"+tt.query)
			got := tickersOf(t, p.Markets)
			if tt.want != nil && !slices.Equal(got, tt.want) {
				t.Errorf("tickers = %v, want %v", got, tt.want)
			}
			if tt.want == nil && len(got) != tt.wantN {
				t.Errorf("len(markets) = %d, want %d", len(got), tt.wantN)
			}
			if tt.query != "series_ticker=KXEARNINGSMENTIONMETA&limit=3" && p.Cursor != "" {
				t.Errorf("cursor = %q, want \"\" on the only page", p.Cursor)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	m := "/series/KXFEDDECISION/markets/KXFEDDECISION-26JUN30-H0/candlesticks?"
	ok := "start_ts=1780000000&end_ts=1780036000&period_interval=60"
	many := "x"
	for i := range 100 {
		many += ",T" + strconv.Itoa(i)
	}
	tests := []struct {
		name string
		path string
	}{
		{"limit zero", "/markets?limit=0"},
		{"limit too large", "/markets?limit=1001"},
		{"limit not a number", "/markets?limit=ten"},
		{"cursor not base64", "/markets?cursor=!!!"},
		{"cursor not ours", "/markets?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("foo"))},
		{"response status used as filter", "/markets?status=active"},
		{"unknown status", "/markets?status=resolved"},
		{"events limit too large", "/events?limit=201"},
		{"events paused status", "/events?status=paused"},
		{"events bad cursor", "/events?cursor=%25%25"},
		{"events bad nested flag", "/events?with_nested_markets=maybe"},
		{"event bad nested flag", "/events/KXFEDDECISION-26JUN30?with_nested_markets=maybe"},
		{"orderbook bad depth", "/markets/KXFEDDECISION-26JUN30-H0/orderbook?depth=deep"},
		{"orderbook depth too large", "/markets/KXFEDDECISION-26JUN30-H0/orderbook?depth=101"},
		{"candles missing start_ts", m + "end_ts=1780036000&period_interval=60"},
		{"candles missing end_ts", m + "start_ts=1780000000&period_interval=60"},
		{"candles missing period", m + "start_ts=1780000000&end_ts=1780036000"},
		{"candles bad period", m + "start_ts=1780000000&end_ts=1780036000&period_interval=5"},
		{"candles start after end", m + "start_ts=1780036000&end_ts=1780000000&period_interval=60"},
		{"candles bad ts", m + "start_ts=yesterday&end_ts=1780036000&period_interval=60"},
		{"candles bad include flag", m + ok + "&include_latest_before_start=maybe"},
		{"candles too many", m + "start_ts=1770000000&end_ts=1790000000&period_interval=1"},
		{"event candles missing period", "/series/KXFEDDECISION/events/KXFEDDECISION-26JUN30/candlesticks?start_ts=1&end_ts=2"},
		{"batch without tickers", "/markets/candlesticks?" + ok},
		{"batch over 100 tickers", "/markets/candlesticks?market_tickers=" + many + "&" + ok},
		{"batch bad period", "/markets/candlesticks?market_tickers=KXFEDDECISION-26JUN30-H0&start_ts=1&end_ts=2&period_interval=2"},
		{"historical candles missing start", "/historical/markets/KXCPIYOY-25SEP-T2.6/candlesticks?end_ts=2&period_interval=60"},
		{"trades limit too large", "/markets/trades?limit=1001"},
		{"trades bad min_ts", "/markets/trades?min_ts=soon"},
		{"trades bad cursor", "/markets/trades?cursor=abc"},
		{"trades markets cursor", "/markets/trades?cursor=a2Fsc2hpdGVzdDo1"},
		{"historical trades limit zero", "/historical/trades?limit=0"},
		{"historical markets bad mve_filter", "/historical/markets?mve_filter=all"},
		{"historical markets bad cursor", "/historical/markets?cursor=!!"},
	}
	_, srv := start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, srv.URL+api+tt.path)
			if resp.status != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400; body %s", resp.status, resp.body)
			}
			e := decode[apiError](t, resp.body)
			if got, want := e.Error.Code, "bad_request"; got != want {
				t.Errorf("error code = %q, want %q", got, want)
			}
			if got, want := resp.header.Get("Content-Type"), "application/json"; got != want {
				t.Errorf("Content-Type = %q, want %q", got, want)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	want := readTestdata(t, "error_404.json")
	tests := []struct {
		name, method, path string
	}{
		{"unknown market", "GET", "/markets/KXNOPE-1"},
		{"unknown market orderbook", "GET", "/markets/KXNOPE-1/orderbook"},
		{"unknown event", "GET", "/events/KXNOPE-26JUN30"},
		{"unknown series", "GET", "/series/KXNOPE"},
		{"unknown route", "GET", "/markets/trades/extra/segments"},
		{"outside the API", "GET", "/"},
		{"trailing slash", "GET", "/markets/"},
		{"POST on a GET route", "POST", "/markets"},
		{"DELETE on a POST route", "DELETE", "/portfolio/orders"},
		{"GET on a POST route", "GET", "/portfolio/orders"},
		{"unknown portfolio route", "GET", "/portfolio/positions"},
	}
	_, srv := start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := api + tt.path
			if tt.path == "/" {
				path = "/"
			}
			resp := do(t, newRequest(t, tt.method, srv.URL+path, "", nil))
			if resp.status != http.StatusNotFound {
				t.Fatalf("status = %d, want 404; body %s", resp.status, resp.body)
			}
			if !bytes.Equal(resp.body, want) {
				t.Errorf("body = %s, want %s", resp.body, want)
			}
		})
	}
}

func TestSampleShapes(t *testing.T) {
	_, srv := start(t)
	sampleMarkets := decode[marketsPage](t, readTestdata(t, "markets_page.json")).Markets
	wantKeys := keys(t, sampleMarkets[0])

	t.Run("markets page equals sample", func(t *testing.T) {
		resp := get(t, srv.URL+api+"/markets?series_ticker=KXEARNINGSMENTIONMETA&limit=3")
		got := decode[marketsPage](t, resp.body)
		if len(got.Markets) != len(sampleMarkets) {
			t.Fatalf("len(markets) = %d, want %d", len(got.Markets), len(sampleMarkets))
		}
		for i := range got.Markets {
			if g, w := []byte(got.Markets[i]), compact(t, sampleMarkets[i]); !bytes.Equal(g, w) {
				t.Errorf("market %d =\n%s\nwant\n%s", i, g, w)
			}
		}
		if got.Cursor == "" {
			t.Error("cursor = \"\", want a cursor to the 4th market")
		}
	})

	t.Run("every market has the sample's fields in order", func(t *testing.T) {
		got := decode[marketsPage](t, get(t, srv.URL+api+"/markets?limit=1000").body)
		// Settled markets carry settlement_ts after settlement_value_dollars.
		settledKeys := slices.Clone(wantKeys)
		i := slices.Index(settledKeys, "settlement_value_dollars")
		settledKeys = slices.Insert(settledKeys, i+1, "settlement_ts")
		for _, m := range got.Markets {
			want := wantKeys
			if st := decode[struct{ Status string }](t, m).Status; st == "determined" || st == "finalized" {
				want = settledKeys
			}
			if k := keys(t, m); !slices.Equal(k, want) {
				t.Fatalf("market %s keys = %v, want %v", tickerOf(t, m), k, want)
			}
		}
	})

	exact := []struct {
		name, path, sample string
	}{
		{"series equals sample", "/series/KXEARNINGSMENTIONMETA", "series.json"},
		{"orderbook equals sample", "/markets/KXEARNINGSMENTIONMETA-26JUN30-VR/orderbook", "orderbook.json"},
		{"single market equals sample", "/markets/KXEARNINGSMENTIONMETA-26JUN30-VR", ""},
	}
	for _, tt := range exact {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, srv.URL+api+tt.path)
			var want []byte
			if tt.sample != "" {
				want = compact(t, readTestdata(t, tt.sample))
			} else {
				want = append(append([]byte(`{"market":`), compact(t, sampleMarkets[0])...), '}')
			}
			if resp.status != http.StatusOK || !bytes.Equal(resp.body, want) {
				t.Errorf("GET %s = %d\n%s\nwant 200\n%s", tt.path, resp.status, resp.body, want)
			}
			for _, h := range []string{"ETag", "Cache-Control", "Last-Modified"} {
				if v := resp.header.Get(h); v != "" {
					t.Errorf("%s = %q, want none (Kalshi sends none)", h, v)
				}
			}
		})
	}

	events := []struct {
		name, query, sample string
		nested              bool
	}{
		{"event with nested markets", "?with_nested_markets=true", "event_with_nested_markets.json", true},
		{"event without nested markets", "?with_nested_markets=false", "event_without_nested_markets.json", false},
		{"event default", "", "event_without_nested_markets.json", false},
	}
	for _, tt := range events {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, srv.URL+api+"/events/KXEARNINGSMENTIONMETA-26JUN30"+tt.query)
			if resp.status != http.StatusOK {
				t.Fatalf("status = %d, want 200", resp.status)
			}
			sample := readTestdata(t, tt.sample)
			type body struct {
				Event   json.RawMessage   `json:"event"`
				Markets []json.RawMessage `json:"markets"`
			}
			got, want := decode[body](t, resp.body), decode[body](t, sample)
			if k, w := keys(t, resp.body), keys(t, sample); !slices.Equal(k, w) {
				t.Errorf("top-level keys = %v, want %v", k, w)
			}
			if k, w := keys(t, got.Event), keys(t, want.Event); !slices.Equal(k, w) {
				t.Errorf("event keys = %v, want %v", k, w)
			}
			if len(got.Markets) != 12 {
				t.Fatalf("len(markets) = %d, want 12", len(got.Markets))
			}
			// The sample holds the first three markets of the event.
			gotEvent := decode[map[string]any](t, got.Event)
			wantEvent := decode[map[string]any](t, want.Event)
			if tt.nested {
				nested, _ := gotEvent["markets"].([]any)
				if len(nested) != 12 {
					t.Fatalf("len(event.markets) = %d, want 12", len(nested))
				}
				gotEvent["markets"] = nested[:3]
			}
			if !reflect.DeepEqual(gotEvent, wantEvent) {
				t.Errorf("event = %v\nwant %v", gotEvent, wantEvent)
			}
			for i := range want.Markets {
				if g, w := []byte(got.Markets[i]), compact(t, want.Markets[i]); !bytes.Equal(g, w) {
					t.Errorf("markets[%d] = %s, want %s", i, g, w)
				}
			}
		})
	}
}

func TestUniverse(t *testing.T) {
	fake := kalshitest.New()
	tests := []struct {
		series    string
		wantN     int
		wantFirst string
	}{
		{"KXEARNINGSMENTIONMETA", 12, "KXEARNINGSMENTIONMETA-26JUN30-VR"},
		{"KXEARNINGSMENTIONTSLA", 12, "KXEARNINGSMENTIONTSLA-26JUN30-"},
		{"KXEARNINGSMENTIONNVDA", 12, "KXEARNINGSMENTIONNVDA-26JUN30-"},
		{"KXEARNINGSMENTIONAAPL", 12, "KXEARNINGSMENTIONAAPL-26JUN30-"},
		{"KXEARNINGSMENTIONMSFT", 12, "KXEARNINGSMENTIONMSFT-26JUN30-"},
		{"KXEARNINGSMENTIONAMZN", 12, "KXEARNINGSMENTIONAMZN-26JUN30-"},
		{"KXEARNINGSMENTIONGOOGL", 12, "KXEARNINGSMENTIONGOOGL-26JUN30-"},
		{"KXEARNINGSMENTIONNFLX", 12, "KXEARNINGSMENTIONNFLX-26JUN30-"},
		{"KXFEDDECISION", 5, "KXFEDDECISION-26JUN30-"},
		{"KXBIGSERIES", 450, "KXBIGSERIES-26JUN30-M001"},
	}
	for _, tt := range tests {
		t.Run(tt.series, func(t *testing.T) {
			got := fake.MarketTickers(tt.series)
			if len(got) != tt.wantN {
				t.Fatalf("len(MarketTickers) = %d, want %d", len(got), tt.wantN)
			}
			if !strings.HasPrefix(got[0], tt.wantFirst) {
				t.Errorf("first ticker = %q, want prefix %q", got[0], tt.wantFirst)
			}
			if len(slices.Compact(slices.Sorted(slices.Values(got)))) != len(got) {
				t.Errorf("tickers are not distinct: %v", got)
			}
		})
	}
	if got := fake.MarketTickers("KXNOPE"); got != nil {
		t.Errorf("MarketTickers(KXNOPE) = %v, want nil", got)
	}
}

func TestDeterministic(t *testing.T) {
	a, b := kalshitest.New(), kalshitest.New()
	for _, path := range []string{"/markets?limit=1000", "/events?with_nested_markets=true", "/series"} {
		ra, rb := httptest.NewRecorder(), httptest.NewRecorder()
		a.ServeHTTP(ra, httptest.NewRequest("GET", api+path, nil))
		b.ServeHTTP(rb, httptest.NewRequest("GET", api+path, nil))
		if ra.Code != http.StatusOK || !bytes.Equal(ra.Body.Bytes(), rb.Body.Bytes()) {
			t.Errorf("GET %s: two Servers answer differently (status %d)", path, ra.Code)
		}
	}
}

func TestEventsAndSeries(t *testing.T) {
	_, srv := start(t)
	type eventsPage struct {
		Events []map[string]any `json:"events"`
		Cursor string           `json:"cursor"`
	}
	tests := []struct {
		name       string
		query      string
		wantN      int
		wantNested bool
		wantCursor bool
	}{
		{"all events", "", 14, false, false},
		{"nested", "?with_nested_markets=true", 14, true, false},
		{"by series", "?series_ticker=KXFEDDECISION&with_nested_markets=true", 1, true, false},
		{"by series with several events", "?series_ticker=KXCPIYOY", 4, false, false},
		{"open", "?status=open", 10, false, false},
		{"settled", "?status=settled", 4, false, false},
		{"closed", "?status=closed", 1, false, false},
		{"first page", "?limit=4", 4, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := getOK[eventsPage](t, srv.URL+api+"/events"+tt.query)
			if len(p.Events) != tt.wantN {
				t.Errorf("len(events) = %d, want %d", len(p.Events), tt.wantN)
			}
			for _, e := range p.Events {
				if _, nested := e["markets"]; nested != tt.wantNested {
					t.Errorf("event %v has markets = %v, want %v", e["event_ticker"], nested, tt.wantNested)
				}
			}
			if got := p.Cursor != ""; got != tt.wantCursor {
				t.Errorf("cursor = %q, want non-empty = %v", p.Cursor, tt.wantCursor)
			}
		})
	}

	t.Run("series list", func(t *testing.T) {
		resp := get(t, srv.URL+api+"/series")
		got := decode[struct {
			Series []struct {
				Ticker string `json:"ticker"`
			} `json:"series"`
		}](t, resp.body)
		var tickers []string
		for _, s := range got.Series {
			tickers = append(tickers, s.Ticker)
		}
		want := []string{
			"KXEARNINGSMENTIONMETA", "KXEARNINGSMENTIONTSLA", "KXEARNINGSMENTIONNVDA", "KXEARNINGSMENTIONAAPL",
			"KXEARNINGSMENTIONMSFT", "KXEARNINGSMENTIONAMZN", "KXEARNINGSMENTIONGOOGL", "KXEARNINGSMENTIONNFLX",
			"KXFEDDECISION", "KXBIGSERIES", "KXCPIYOY",
		}
		if !slices.Equal(tickers, want) {
			t.Errorf("series = %v, want %v", tickers, want)
		}
	})

	t.Run("exchange status", func(t *testing.T) {
		resp := get(t, srv.URL+api+"/exchange/status")
		if got, want := string(resp.body), `{"exchange_active":true,"trading_active":true}`; resp.status != 200 || got != want {
			t.Errorf("GET /exchange/status = %d %s, want 200 %s", resp.status, got, want)
		}
	})

	t.Run("orderbook depth", func(t *testing.T) {
		resp := get(t, srv.URL+api+"/markets/KXEARNINGSMENTIONMETA-26JUN30-VR/orderbook?depth=1")
		want := `{"orderbook_fp":{"yes_dollars":[["0.3300","150.00"]],"no_dollars":[["0.6300","42.00"]]}}`
		if got := string(resp.body); got != want {
			t.Errorf("body = %s, want %s", got, want)
		}
	})
}

func authHeader(key string) http.Header {
	return http.Header{
		"Kalshi-Access-Key":       {key},
		"Kalshi-Access-Timestamp": {"1703123456789"},
		"Kalshi-Access-Signature": {"c2ln"},
	}
}

func TestPortfolio(t *testing.T) {
	_, srv := start(t)
	type balance struct {
		Balance        int64  `json:"balance"`
		PortfolioValue int64  `json:"portfolio_value"`
		UpdatedTS      int64  `json:"updated_ts"`
		KeyID          string `json:"key_id"`
	}
	getBalance := func(t *testing.T, header http.Header) (response, balance) {
		resp := do(t, newRequest(t, "GET", srv.URL+api+"/portfolio/balance", "", header))
		var b balance
		if resp.status == http.StatusOK {
			b = decode[balance](t, resp.body)
		}
		return resp, b
	}

	t.Run("balance requires auth headers", func(t *testing.T) {
		h := authHeader("key-a")
		h.Del("Kalshi-Access-Signature")
		for name, header := range map[string]http.Header{"none": nil, "no signature": h} {
			resp, _ := getBalance(t, header)
			want := `{"error":{"code":"unauthorized","message":"missing auth headers","service":"exchange"}}`
			if resp.status != http.StatusUnauthorized || string(resp.body) != want {
				t.Errorf("%s: got %d %s, want 401 %s", name, resp.status, resp.body, want)
			}
		}
	})

	t.Run("balance derives from the key id", func(t *testing.T) {
		_, a1 := getBalance(t, authHeader("key-a"))
		_, a2 := getBalance(t, authHeader("key-a"))
		_, b := getBalance(t, authHeader("key-b"))
		if a1 != a2 {
			t.Errorf("same key: balances %+v and %+v, want equal", a1, a2)
		}
		if a1.Balance == b.Balance {
			t.Errorf("keys a and b: balance %d for both, want different", a1.Balance)
		}
		if a1.KeyID != "key-a" || b.KeyID != "key-b" {
			t.Errorf("key ids = %q, %q, want key-a, key-b", a1.KeyID, b.KeyID)
		}
	})

	orders := []struct {
		name       string
		path       string
		header     http.Header
		body       string
		wantStatus int
		wantClient string
	}{
		{"v1 order with client id", "/portfolio/orders", authHeader("k"), `{"ticker":"T","side":"yes","client_order_id":"c-1"}`, 201, "c-1"},
		{"v2 order without client id", "/portfolio/events/orders", authHeader("k"), `{"ticker":"T"}`, 201, ""},
		{"missing auth", "/portfolio/orders", nil, `{"ticker":"T"}`, 401, ""},
		{"body not an object", "/portfolio/orders", authHeader("k"), `[1]`, 400, ""},
		{"empty body", "/portfolio/events/orders", authHeader("k"), ``, 400, ""},
	}
	for _, tt := range orders {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(t, newRequest(t, "POST", srv.URL+api+tt.path, tt.body, tt.header))
			if resp.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", resp.status, tt.wantStatus, resp.body)
			}
			if resp.status != http.StatusCreated {
				return
			}
			got := decode[struct {
				Order map[string]any `json:"order"`
			}](t, resp.body).Order
			if got["client_order_id"] != tt.wantClient {
				t.Errorf("client_order_id = %v, want %q", got["client_order_id"], tt.wantClient)
			}
			if got["ticker"] != "T" || got["order_id"] == "" || got["status"] != "resting" {
				t.Errorf("order = %v, want ticker T, an order_id and status resting", got)
			}
		})
	}
}

func TestCountsAndRecording(t *testing.T) {
	fake, srv := start(t)
	reqs := []struct{ method, path, query, body string }{
		{"GET", api + "/markets", "limit=5", ""},
		{"GET", api + "/markets", "limit=5", ""},
		{"GET", api + "/markets", "limit=6", ""},
		{"GET", api + "/markets/KXNOPE", "", ""},
		{"POST", api + "/portfolio/orders", "", `{"ticker":"T"}`},
	}
	for _, r := range reqs {
		uri := r.path
		if r.query != "" {
			uri += "?" + r.query
		}
		do(t, newRequest(t, r.method, srv.URL+uri, r.body, http.Header{"X-Test": {"yes"}}))
	}

	counts := []struct {
		name string
		got  int
		want int
	}{
		{"Count(markets)", fake.Count(api + "/markets"), 3},
		{"Count(market)", fake.Count(api + "/markets/KXNOPE"), 1},
		{"Count(orders) any method", fake.Count(api + "/portfolio/orders"), 1},
		{"Count with query", fake.Count(api + "/markets?limit=5"), 0},
		{"CountQuery(limit=5)", fake.CountQuery(api + "/markets?limit=5"), 2},
		{"CountQuery(limit=6)", fake.CountQuery(api + "/markets?limit=6"), 1},
		{"CountQuery without query", fake.CountQuery(api + "/markets"), 0},
		{"Total", fake.Total(), 5},
	}
	for _, c := range counts {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}

	recs := fake.Requests()
	if len(recs) != len(reqs) {
		t.Fatalf("len(Requests()) = %d, want %d", len(recs), len(reqs))
	}
	for i, r := range reqs {
		got := recs[i]
		if got.Method != r.method || got.Path != r.path || got.RawQuery != r.query {
			t.Errorf("Requests()[%d] = %s %s ? %s, want %s %s ? %s", i, got.Method, got.Path, got.RawQuery, r.method, r.path, r.query)
		}
		if string(got.Body) != r.body {
			t.Errorf("Requests()[%d].Body = %q, want %q", i, got.Body, r.body)
		}
		if got.Header.Get("X-Test") != "yes" {
			t.Errorf("Requests()[%d].Header[X-Test] = %q, want yes", i, got.Header.Get("X-Test"))
		}
		if got.At.IsZero() || (i > 0 && got.At.Before(recs[i-1].At)) {
			t.Errorf("Requests()[%d].At = %v, want non-zero and not before the previous", i, got.At)
		}
	}
	recs[4].Body[0] = 'X'
	recs[4].Header.Set("X-Test", "mutated")
	if again := fake.Requests()[4]; string(again.Body) != reqs[4].body || again.Header.Get("X-Test") != "yes" {
		t.Error("mutating the result of Requests() changed the recorded requests")
	}

	fake.Reset()
	if got := fake.Total() + fake.Count(api+"/markets") + fake.CountQuery(api+"/markets?limit=5") + len(fake.Requests()); got != 0 {
		t.Errorf("after Reset: counters sum to %d, want 0", got)
	}
	if resp := get(t, srv.URL+api+"/series/KXFEDDECISION"); resp.status != http.StatusOK {
		t.Errorf("after Reset: status = %d, want 200 (data unchanged)", resp.status)
	}
	if got := fake.Total(); got != 1 {
		t.Errorf("after Reset and one request: Total = %d, want 1", got)
	}
}

func TestFault(t *testing.T) {
	type step struct {
		path       string
		wantStatus int
	}
	tests := []struct {
		name       string
		fault      kalshitest.Fault
		steps      []step
		wantBody   string // checked on the first faulty answer, if set
		wantHeader http.Header
	}{
		{
			name: "times and paths",
			fault: kalshitest.Fault{Status: 503, Times: 2, Paths: []string{api + "/markets"},
				Header: http.Header{"Retry-After": {"7"}}},
			steps: []step{
				{"/series", 200}, // not matching: neither faulty nor consuming Times
				{"/markets", 503},
				{"/markets/KXFEDDECISION-26JUN30-H0", 503},
				{"/markets", 200},
				{"/markets", 200},
			},
			wantBody:   `{"error":{"code":"service_unavailable","message":"service unavailable","service":"exchange"}}`,
			wantHeader: http.Header{"Retry-After": {"7"}, "Content-Type": {"application/json"}},
		},
		{
			name:     "429 uses the sample body",
			fault:    kalshitest.Fault{Status: 429, Times: 1},
			steps:    []step{{"/exchange/status", 429}, {"/exchange/status", 200}},
			wantBody: string(readTestdata(t, "error_429.json")),
		},
		{
			name:     "custom body",
			fault:    kalshitest.Fault{Status: 500, Body: `{"error":"boom"}`},
			steps:    []step{{"/markets", 500}, {"/series", 500}, {"/nope", 500}},
			wantBody: `{"error":"boom"}`,
		},
		{
			name:  "several path prefixes",
			fault: kalshitest.Fault{Status: 502, Paths: []string{api + "/events", api + "/series/"}},
			steps: []step{{"/events", 502}, {"/series", 200}, {"/series/KXFEDDECISION", 502}, {"/markets", 200}},
		},
		{
			name:  "no effect without status, hang or close",
			fault: kalshitest.Fault{Header: http.Header{"X-Ignored": {"1"}}},
			steps: []step{{"/markets", 200}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, srv := start(t)
			fake.SetFault(tt.fault)
			checked := false
			for i, s := range tt.steps {
				resp := get(t, srv.URL+api+s.path)
				if resp.status != s.wantStatus {
					t.Fatalf("step %d GET %s: status = %d, want %d", i, s.path, resp.status, s.wantStatus)
				}
				if s.wantStatus == 200 || checked {
					continue
				}
				checked = true
				if tt.wantBody != "" && string(resp.body) != tt.wantBody {
					t.Errorf("faulty body = %s, want %s", resp.body, tt.wantBody)
				}
				for k := range tt.wantHeader {
					if got, want := resp.header.Get(k), tt.wantHeader.Get(k); got != want {
						t.Errorf("faulty header %s = %q, want %q", k, got, want)
					}
				}
			}
			if got, want := fake.Total(), len(tt.steps); got != want {
				t.Errorf("Total = %d, want %d (faulty requests are counted too)", got, want)
			}
		})
	}

	t.Run("cleared by SetFault(Fault{})", func(t *testing.T) {
		fake, srv := start(t)
		fake.SetFault(kalshitest.Fault{Status: 500})
		for range 3 {
			if got := get(t, srv.URL+api+"/markets").status; got != 500 {
				t.Fatalf("status = %d, want 500 until cleared", got)
			}
		}
		fake.SetFault(kalshitest.Fault{})
		if got := get(t, srv.URL+api+"/markets").status; got != 200 {
			t.Errorf("status after clearing = %d, want 200", got)
		}
	})

	t.Run("close resets the connection", func(t *testing.T) {
		fake, srv := start(t)
		fake.SetFault(kalshitest.Fault{Close: true, Times: 1})
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get(srv.URL + api + "/markets")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET with Close fault: status %d, want a transport error", resp.StatusCode)
		}
		if got := get(t, srv.URL+api+"/markets").status; got != 200 {
			t.Errorf("status after the Close fault was used up = %d, want 200", got)
		}
		if got := fake.Count(api + "/markets"); got != 2 {
			t.Errorf("Count = %d, want 2", got)
		}
	})

	t.Run("hang respects the request context", func(t *testing.T) {
		fake, srv := start(t)
		fake.SetFault(kalshitest.Fault{Hang: true})
		start := time.Now()
		err := getWithTimeout(srv.URL+api+"/markets", 100*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("GET with Hang fault: err = %v, want context.DeadlineExceeded", err)
		}
		if elapsed := time.Since(start); elapsed > 5*time.Second {
			t.Errorf("GET with Hang fault took %v, want about 100ms", elapsed)
		}
		// srv.Close (cleanup) waits for the handler: it must have returned.
	})
}

// getWithTimeout sends a GET that is cancelled after d and returns its error.
func getWithTimeout(url string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return err
}

func TestStall(t *testing.T) {
	fake, srv := start(t)
	release := fake.Stall()

	const n = 3
	done := make(chan int, n)
	for range n {
		go func() {
			resp, err := http.Get(srv.URL + api + "/exchange/status")
			if err != nil {
				done <- -1
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	waitFor(t, "stalled requests to arrive", func() bool { return fake.Total() == n })
	select {
	case code := <-done:
		t.Fatalf("a request completed (%d) while stalled", code)
	case <-time.After(100 * time.Millisecond):
	}

	t.Run("stalled request respects its context", func(t *testing.T) {
		err := getWithTimeout(srv.URL+api+"/markets", 50*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want context.DeadlineExceeded", err)
		}
	})

	release()
	release() // idempotent
	for range n {
		if code := <-done; code != http.StatusOK {
			t.Errorf("stalled request finished with %d, want 200", code)
		}
	}
	if got := get(t, srv.URL+api+"/exchange/status").status; got != 200 {
		t.Errorf("status after release = %d, want 200", got)
	}

	t.Run("nested stalls", func(t *testing.T) {
		r1, r2 := fake.Stall(), fake.Stall()
		done := make(chan error, 1)
		go func() { done <- getWithTimeout(srv.URL+api+"/series", 10*time.Second) }()
		r1()
		select {
		case err := <-done:
			t.Fatalf("request finished (%v) with one stall outstanding", err)
		case <-time.After(50 * time.Millisecond):
		}
		r2()
		if err := <-done; err != nil {
			t.Errorf("request after both releases: %v", err)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // bounded poll of the fake's state, which raises no event
	}
}

func TestLatency(t *testing.T) {
	tests := []struct {
		name       string
		latency    time.Duration
		timeout    time.Duration
		wantErr    bool
		minElapsed time.Duration
		maxElapsed time.Duration
	}{
		{"answers after the latency", 150 * time.Millisecond, 10 * time.Second, false, 150 * time.Millisecond, 5 * time.Second},
		{"client gives up first", time.Minute, 100 * time.Millisecond, true, 0, 5 * time.Second},
		{"zero latency", 0, 10 * time.Second, false, 0, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, srv := start(t)
			fake.SetLatency(tt.latency)
			start := time.Now()
			err := getWithTimeout(srv.URL+api+"/exchange/status", tt.timeout)
			elapsed := time.Since(start)
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v, want error: %v", err, tt.wantErr)
			}
			if elapsed < tt.minElapsed || elapsed > tt.maxElapsed {
				t.Errorf("elapsed = %v, want in [%v, %v]", elapsed, tt.minElapsed, tt.maxElapsed)
			}
			if got := fake.Total(); got != 1 {
				t.Errorf("Total = %d, want 1 (counted before latency)", got)
			}
		})
	}
}

func TestSignature(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const ts = "1703123456789"
	sign := func(k *rsa.PrivateKey, method, path string) string {
		sig, err := kalshitest.Sign(k, ts, method, path)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	signed := func(k *rsa.PrivateKey, method, path string) http.Header {
		return http.Header{
			"Kalshi-Access-Key":       {"key-id"},
			"Kalshi-Access-Timestamp": {ts},
			"Kalshi-Access-Signature": {sign(k, method, path)},
		}
	}

	t.Run("Sign follows Kalshi's scheme", func(t *testing.T) {
		sig, err := base64.StdEncoding.DecodeString(sign(key, "GET", api+"/portfolio/balance?limit=5"))
		if err != nil {
			t.Fatalf("signature is not standard base64: %v", err)
		}
		digest := sha256.Sum256([]byte(ts + "GET" + api + "/portfolio/balance"))
		opts := &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256}
		if err := rsa.VerifyPSS(&key.PublicKey, crypto.SHA256, digest[:], sig, opts); err != nil {
			t.Errorf("VerifyPSS(salt 32, message without query) = %v, want nil", err)
		}
		if _, err := kalshitest.Sign(nil, ts, "GET", "/"); err == nil {
			t.Error("Sign(nil key) succeeded, want an error")
		}
	})

	tests := []struct {
		name         string
		method, path string
		body         string
		header       http.Header
		wantStatus   int
		wantCode     string // error code when wantStatus is 401
		wantVerified int
		wantFailed   int
	}{
		{"valid on balance", "GET", "/portfolio/balance", "", signed(key, "GET", api+"/portfolio/balance"), 200, "", 1, 0},
		{"valid on public route, query not signed", "GET", "/markets?limit=1", "", signed(key, "GET", api+"/markets"), 200, "", 1, 0},
		{"valid on order", "POST", "/portfolio/orders", `{"ticker":"T"}`, signed(key, "POST", api+"/portfolio/orders"), 201, "", 1, 0},
		{"valid on unknown route", "GET", "/nope", "", signed(key, "GET", api+"/nope"), 404, "", 1, 0},
		{"unsigned public route", "GET", "/markets?limit=1", "", nil, 200, "", 0, 0},
		{"query included in signed message", "GET", "/markets?limit=1", "", signedRaw(ts, sigOver(t, key, ts+"GET"+api+"/markets?limit=1")), 401, "invalid_signature", 0, 1},
		{"signed by another key", "GET", "/portfolio/balance", "", signed(other, "GET", api+"/portfolio/balance"), 401, "invalid_signature", 0, 1},
		{"method mismatch", "POST", "/portfolio/orders", `{}`, signed(key, "GET", api+"/portfolio/orders"), 401, "invalid_signature", 0, 1},
		{"path without prefix", "GET", "/portfolio/balance", "", signed(key, "GET", "/portfolio/balance"), 401, "invalid_signature", 0, 1},
		{"not base64", "GET", "/markets", "", signedRaw(ts, "%%%"), 401, "invalid_signature", 0, 1},
		{"unsigned portfolio request", "GET", "/portfolio/balance", "", nil, 401, "unauthorized", 0, 0},
		{"unsigned unknown portfolio route", "GET", "/portfolio/positions", "", nil, 401, "unauthorized", 0, 0},
		{"signature without timestamp", "GET", "/markets", "", http.Header{"Kalshi-Access-Key": {"k"}, "Kalshi-Access-Signature": {"c2ln"}}, 401, "unauthorized", 0, 0},
	}
	fake, srv := start(t)
	fake.SetPublicKey(&key.PublicKey)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake.Reset()
			resp := do(t, newRequest(t, tt.method, srv.URL+api+tt.path, tt.body, tt.header))
			if resp.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", resp.status, tt.wantStatus, resp.body)
			}
			if tt.wantCode != "" {
				if got := decode[apiError](t, resp.body).Error.Code; got != tt.wantCode {
					t.Errorf("error code = %q, want %q", got, tt.wantCode)
				}
			}
			if got := fake.VerifiedSignatures(); got != tt.wantVerified {
				t.Errorf("VerifiedSignatures = %d, want %d", got, tt.wantVerified)
			}
			if got := fake.SignatureFailures(); got != tt.wantFailed {
				t.Errorf("SignatureFailures = %d, want %d", got, tt.wantFailed)
			}
		})
	}

	t.Run("disabled without a public key", func(t *testing.T) {
		fake, srv := start(t)
		resp := do(t, newRequest(t, "GET", srv.URL+api+"/portfolio/balance", "", signedRaw(ts, "bogus")))
		if resp.status != http.StatusOK {
			t.Errorf("status = %d, want 200 (no verification)", resp.status)
		}
		fake.SetPublicKey(&key.PublicKey)
		fake.SetPublicKey(nil)
		if resp := do(t, newRequest(t, "GET", srv.URL+api+"/portfolio/balance", "", signedRaw(ts, "bogus"))); resp.status != http.StatusOK {
			t.Errorf("after SetPublicKey(nil): status = %d, want 200", resp.status)
		}
	})
}

func signedRaw(ts, sig string) http.Header {
	return http.Header{
		"Kalshi-Access-Key":       {"key-id"},
		"Kalshi-Access-Timestamp": {ts},
		"Kalshi-Access-Signature": {sig},
	}
}

// sigOver signs msg exactly, bypassing Sign's query stripping.
func sigOver(t *testing.T, key *rsa.PrivateKey, msg string) string {
	t.Helper()
	digest := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPSS(rand.Reader, key, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func TestHandle(t *testing.T) {
	fake, srv := start(t)
	fake.Handle("GET "+api+"/markets/{ticker}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "override %s", r.PathValue("ticker"))
	})
	fake.Handle("GET "+api+"/foo/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "foo %s", r.PathValue("id"))
	})

	tests := []struct {
		name       string
		path       string
		wantStatus int
		wantBody   string // prefix
	}{
		{"override wins over built-in", "/markets/KXFEDDECISION-26JUN30-H0", 200, "override KXFEDDECISION-26JUN30-H0"},
		{"override of an unknown ticker", "/markets/ANY", 200, "override ANY"},
		{"built-in still serves other routes", "/markets/KXFEDDECISION-26JUN30-H0/orderbook", 200, `{"orderbook_fp"`},
		{"new route", "/foo/42", 200, "foo 42"},
		{"unmatched stays 404", "/foo", 404, "{"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, srv.URL+api+tt.path)
			if resp.status != tt.wantStatus || !strings.HasPrefix(string(resp.body), tt.wantBody) {
				t.Errorf("GET %s = %d %q, want %d %q...", tt.path, resp.status, resp.body, tt.wantStatus, tt.wantBody)
			}
		})
	}

	t.Run("re-registering replaces", func(t *testing.T) {
		fake.Handle("GET "+api+"/foo/{id}", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTeapot)
		})
		if got := get(t, srv.URL+api+"/foo/1").status; got != http.StatusTeapot {
			t.Errorf("status = %d, want 418", got)
		}
	})

	t.Run("counted and faulted like built-ins", func(t *testing.T) {
		fake.Reset()
		fake.SetFault(kalshitest.Fault{Status: 503, Times: 1})
		if got := get(t, srv.URL+api+"/foo/1").status; got != 503 {
			t.Errorf("status with fault = %d, want 503", got)
		}
		if got := fake.Count(api + "/foo/1"); got != 1 {
			t.Errorf("Count = %d, want 1", got)
		}
	})

	t.Run("conflicting pattern panics and changes nothing", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Error("Handle with a conflicting pattern did not panic")
			}
			if got := get(t, srv.URL+api+"/foo/1").status; got != http.StatusTeapot {
				t.Errorf("status after failed Handle = %d, want 418", got)
			}
		}()
		fake.Handle("GET "+api+"/foo/{other}", func(http.ResponseWriter, *http.Request) {})
	})
}

func TestAddSeries(t *testing.T) {
	tests := []struct {
		name      string
		ticker    string
		n         int
		wantFirst string
		wantLast  string
	}{
		{"small", "KXTEST", 5, "KXTEST-26JUN30-M001", "KXTEST-26JUN30-M005"},
		{"wide numbering", "KXHUGE", 1000, "KXHUGE-26JUN30-M0001", "KXHUGE-26JUN30-M1000"},
		{"empty", "KXEMPTY", 0, "", ""},
		{"replaces a default series", "KXFEDDECISION", 2, "KXFEDDECISION-26JUN30-M001", "KXFEDDECISION-26JUN30-M002"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, srv := start(t)
			fake.AddSeries(tt.ticker, tt.n)
			got := fake.MarketTickers(tt.ticker)
			if got == nil || len(got) != tt.n {
				t.Fatalf("MarketTickers = %d tickers (nil: %v), want %d", len(got), got == nil, tt.n)
			}
			if tt.n > 0 && (got[0] != tt.wantFirst || got[len(got)-1] != tt.wantLast) {
				t.Errorf("tickers = %s ... %s, want %s ... %s", got[0], got[len(got)-1], tt.wantFirst, tt.wantLast)
			}
			if !slices.Equal(allTickers(t, srv.URL, "series_ticker="+tt.ticker), got) {
				t.Errorf("GET /markets?series_ticker=%s differs from MarketTickers", tt.ticker)
			}
			for _, path := range []string{"/series/" + tt.ticker, "/events/" + tt.ticker + "-26JUN30?with_nested_markets=true"} {
				if resp := get(t, srv.URL+api+path); resp.status != http.StatusOK {
					t.Errorf("GET %s = %d, want 200", path, resp.status)
				}
			}
			series := decode[struct {
				Series []struct {
					Ticker string `json:"ticker"`
				} `json:"series"`
			}](t, get(t, srv.URL+api+"/series").body).Series
			if n := len(series); n != 11 && n != 12 {
				t.Errorf("len(series) = %d, want 11 (replaced) or 12 (added)", n)
			}
		})
	}

	t.Run("bad arguments panic", func(t *testing.T) {
		for _, args := range []struct {
			ticker string
			n      int
		}{{"", 1}, {"KXNEG", -1}} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("AddSeries(%q, %d) did not panic", args.ticker, args.n)
					}
				}()
				kalshitest.New().AddSeries(args.ticker, args.n)
			}()
		}
	})
}

// allTickers follows the cursors of GET /markets?query and returns the
// tickers of all pages.
func allTickers(t *testing.T, base, query string) []string {
	t.Helper()
	out := []string{}
	cursor := ""
	for {
		q := query + "&limit=1000"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		p := decode[marketsPage](t, get(t, base+api+"/markets?"+q).body)
		out = append(out, tickersOf(t, p.Markets)...)
		if p.Cursor == "" {
			return out
		}
		cursor = p.Cursor
	}
}

// TestConcurrentUse exercises every method concurrently; run with -race.
func TestConcurrentUse(t *testing.T) {
	fake, srv := start(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				path := []string{"/markets?limit=7", "/events?with_nested_markets=true", "/series", "/markets/KXTEST" + strconv.Itoa(j) + "-26JUN30-M001"}[j%4]
				resp, err := http.Get(srv.URL + api + path)
				if err != nil {
					t.Errorf("worker %d: %v", i, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Go(func() {
		for j := range 20 {
			fake.AddSeries("KXTEST"+strconv.Itoa(j), 3)
			fake.SetFault(kalshitest.Fault{Status: 500, Times: 2, Paths: []string{api + "/series"}})
			fake.SetLatency(time.Duration(j%2) * time.Millisecond)
			fake.Handle("GET "+api+"/x/{id}", func(http.ResponseWriter, *http.Request) {})
			release := fake.Stall()
			time.Sleep(time.Millisecond) // a race test: hold the stall while the other goroutines run (any interleaving will do)
			release()
			_ = fake.Requests()
			_ = fake.Count(api + "/series")
			_ = fake.MarketTickers("KXTEST0")
			if j == 10 {
				fake.Reset()
			}
		}
	})
	wg.Wait()
	fake.SetFault(kalshitest.Fault{})
	if got := len(fake.MarketTickers("KXTEST19")); got != 3 {
		t.Errorf("len(MarketTickers(KXTEST19)) = %d, want 3", got)
	}
}

func ExampleServer() {
	fake := kalshitest.New()
	srv := httptest.NewServer(fake)
	defer srv.Close()

	fake.SetFault(kalshitest.Fault{Status: http.StatusTooManyRequests, Times: 1})
	for range 2 {
		resp, err := http.Get(srv.URL + "/trade-api/v2/markets?series_ticker=KXEARNINGSMENTIONMETA&limit=2")
		if err != nil {
			panic(err)
		}
		var page struct {
			Markets []struct {
				Ticker string `json:"ticker"`
			} `json:"markets"`
		}
		json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, len(page.Markets))
	}
	fmt.Println(fake.Count("/trade-api/v2/markets"), "requests")
	// Output:
	// 429 0
	// 200 2
	// 2 requests
}
