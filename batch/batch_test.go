package batch_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/client"
	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
)

const (
	marketsPath = "/trade-api/v2/markets"
	meta        = "KXEARNINGSMENTIONMETA"
	fed         = "KXFEDDECISION"
	big         = "KXBIGSERIES"
)

var earnings = []string{
	"KXEARNINGSMENTIONMETA", "KXEARNINGSMENTIONTSLA", "KXEARNINGSMENTIONNVDA", "KXEARNINGSMENTIONAAPL",
	"KXEARNINGSMENTIONMSFT", "KXEARNINGSMENTIONAMZN", "KXEARNINGSMENTIONGOOGL", "KXEARNINGSMENTIONNFLX",
}

// env is a fake Kalshi behind a full kproxy, both on real listeners.
type env struct {
	fake *kalshitest.Server
	app  *app.App
	url  string
	c    *client.Client
}

type setup struct {
	cfg  func(*config.Config)
	wrap func(http.Handler) http.Handler
}

func start(t testing.TB, s setup) *env {
	t.Helper()
	fake := kalshitest.New()
	up := httptest.NewServer(fake)
	t.Cleanup(up.Close)
	cfg := config.Default()
	cfg.Cache.Disk.Path = "" // tests never write the real ~/.cache/kproxy
	cfg.Upstream.URL = up.URL
	rate := 1000.0
	cfg.Upstream.ReadRate = &rate
	cfg.Log.Access = false
	if s.cfg != nil {
		s.cfg(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	a, err := app.New(cfg, app.Options{RetryBase: time.Millisecond, RetryCap: 5 * time.Millisecond})
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	t.Cleanup(a.Close)
	var h http.Handler = a.Server
	if s.wrap != nil {
		h = s.wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{fake: fake, app: a, url: srv.URL, c: client.New(srv.URL, srv.Client())}
}

// gate makes the fake hold GET requests for pattern until release is
// called or the test ends, then answer them with then. Each held request is
// announced on arrived. Other requests are served as usual.
func gate(t *testing.T, e *env, pattern string, then http.HandlerFunc) (arrived <-chan string, release func()) {
	t.Helper()
	ch := make(chan string, 100)
	open := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(open) }) }
	t.Cleanup(release) // runs before the servers close: held handlers return
	e.fake.Handle(pattern, func(w http.ResponseWriter, r *http.Request) {
		ch <- r.URL.Path
		select {
		case <-open:
		case <-r.Context().Done():
			return
		}
		then(w, r)
	})
	return ch, release
}

// answer serves a fixed JSON body.
func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func postRaw(t *testing.T, url, body string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// scrape returns kproxy's /metrics text.
func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tickersOf(t *testing.T, markets []json.RawMessage) []string {
	t.Helper()
	out := make([]string, len(markets))
	for i, raw := range markets {
		var m struct {
			Ticker string `json:"ticker"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("market %d: %v", i, err)
		}
		out[i] = m.Ticker
	}
	return out
}

func ids(rs []client.Response) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

func TestMarketsFetchesSeriesInParallel(t *testing.T) {
	e := start(t, setup{})
	const latency = 500 * time.Millisecond
	e.fake.SetLatency(latency)
	series := earnings[:7]

	began := time.Now()
	got, err := e.c.Markets(t.Context(), client.MarketsRequest{SeriesTickers: series, Status: "open"})
	elapsed := time.Since(began)
	if err != nil {
		t.Fatalf("Markets: %v", err)
	}
	t.Logf("7 series in %v", elapsed)
	if elapsed >= 3*latency {
		t.Errorf("7 series took %v, want < %v (3x the upstream latency)", elapsed, 3*latency)
	}
	if n := e.fake.Count(marketsPath); n != 7 {
		t.Errorf("upstream GET /markets count = %d, want 7", n)
	}
	if len(got.Errors) != 0 {
		t.Errorf("errors = %v, want none", got.Errors)
	}
	for _, s := range series {
		if n := len(got.MarketsBySeries[s]); n != 12 {
			t.Errorf("len(markets_by_series[%s]) = %d, want 12", s, n)
		}
	}
	for _, r := range e.fake.Requests() {
		if !strings.Contains(r.RawQuery, "status=open") || !strings.Contains(r.RawQuery, "limit=200") {
			t.Errorf("upstream query %q, want status=open and the default limit=200", r.RawQuery)
		}
	}
}

func TestMarketsPaging(t *testing.T) {
	tests := []struct {
		name          string
		maxPages      int
		allPages      bool
		wantMarkets   int
		wantCalls     int
		wantTruncated bool
	}{
		{name: "all pages until the cursor is empty", maxPages: 50, allPages: true, wantMarkets: 450, wantCalls: 3},
		{name: "max pages stops and reports the cursor", maxPages: 2, allPages: true, wantMarkets: 400, wantCalls: 2, wantTruncated: true},
		{name: "one page without all_pages", maxPages: 50, allPages: false, wantMarkets: 200, wantCalls: 1, wantTruncated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, setup{cfg: func(c *config.Config) { c.Batch.MaxPages = tt.maxPages }})
			got, err := e.c.Markets(t.Context(), client.MarketsRequest{SeriesTickers: []string{big}, Limit: 200, AllPages: tt.allPages})
			if err != nil {
				t.Fatalf("Markets: %v", err)
			}
			tickers := tickersOf(t, got.MarketsBySeries[big])
			slices.Sort(tickers)
			if n := len(slices.Compact(tickers)); n != tt.wantMarkets || len(tickers) != tt.wantMarkets {
				t.Errorf("distinct tickers = %d of %d, want %d", n, len(tickers), tt.wantMarkets)
			}
			if n := e.fake.Count(marketsPath); n != tt.wantCalls {
				t.Errorf("upstream GET /markets count = %d, want %d", n, tt.wantCalls)
			}
			if cursor := got.Truncated[big]; (cursor != "") != tt.wantTruncated {
				t.Errorf("truncated[%s] = %q, want truncated = %v", big, cursor, tt.wantTruncated)
			}
		})
	}
}

func TestMarketsUnknownSeriesIsA404ThatFailsOnlyItself(t *testing.T) {
	e := start(t, setup{})
	got, err := e.c.Markets(t.Context(), client.MarketsRequest{SeriesTickers: []string{meta, "KXNOSUCHSERIES", fed}})
	if err != nil {
		t.Fatalf("Markets: %v", err)
	}
	if ie, ok := got.Errors["KXNOSUCHSERIES"]; !ok || ie.Status != http.StatusNotFound || ie.Error == "" {
		t.Errorf("errors[KXNOSUCHSERIES] = %+v (present %v), want status 404 with a message", ie, ok)
	}
	if _, ok := got.MarketsBySeries["KXNOSUCHSERIES"]; ok {
		t.Errorf("markets_by_series has the unknown series, want it only in errors")
	}
	if n := len(got.MarketsBySeries[meta]); n != 12 {
		t.Errorf("len(markets_by_series[%s]) = %d, want 12", meta, n)
	}
	if n := len(got.MarketsBySeries[fed]); n != 5 {
		t.Errorf("len(markets_by_series[%s]) = %d, want 5", fed, n)
	}
}

func TestUpstreamFaultOnOnePathFailsOnlyThatItem(t *testing.T) {
	e := start(t, setup{})
	e.fake.SetFault(kalshitest.Fault{Status: http.StatusInternalServerError, Paths: []string{"/trade-api/v2/series/" + fed}})

	got, err := e.c.Series(t.Context(), client.SeriesRequest{SeriesTickers: []string{meta, fed}})
	if err != nil {
		t.Fatalf("Series: %v", err)
	}
	if ie := got.Errors[fed]; ie.Status != http.StatusInternalServerError || ie.Error == "" {
		t.Errorf("errors[%s] = %+v, want status 500 with a message", fed, ie)
	}
	var s struct{ Ticker string }
	if err := json.Unmarshal(got.Series[meta], &s); err != nil || s.Ticker != meta {
		t.Errorf("series[%s] = %s (%v), want the series object with ticker %s", meta, got.Series[meta], err, meta)
	}

	b, err := e.c.Batch(t.Context(), []client.Item{
		{ID: "fed", Path: "/trade-api/v2/series/" + fed},
		{ID: "tsla", Path: "/trade-api/v2/series/KXEARNINGSMENTIONTSLA"},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if r := b.Responses[0]; r.Status != http.StatusInternalServerError || r.Error == "" {
		t.Errorf("fed item = %+v, want status 500 with an error", r)
	}
	if r := b.Responses[1]; r.Status != http.StatusOK || r.Error != "" || len(r.Body) == 0 {
		t.Errorf("tsla item = %+v, want 200 with a body", r)
	}
}

func TestBatchAnswersInRequestOrder(t *testing.T) {
	e := start(t, setup{})
	items := []client.Item{
		{ID: "slow", Path: "/trade-api/v2/series/" + fed},
		{ID: "m", Path: "/trade-api/v2/markets?series_ticker=" + meta},
		{Path: "/trade-api/v2/portfolio/balance"}, // no id: its index
		{ID: "s", Path: "/trade-api/v2/series/" + meta},
		{ID: "x", Path: "/trade-api/v2/exchange/status"},
	}
	// The other items are cache hits and the first is held upstream until
	// it has arrived there, so the first item completes last: the order of
	// the answer must still be the order of the request.
	if _, err := e.c.Batch(t.Context(), items[1:]); err != nil {
		t.Fatalf("warming Batch: %v", err)
	}
	arrived, release := gate(t, e, "GET /trade-api/v2/series/"+fed, answer(http.StatusOK, `{"series":{"ticker":"`+fed+`"}}`))
	done := make(chan struct{})
	var (
		got *client.BatchResponse
		err error
	)
	go func() {
		defer close(done)
		got, err = e.c.Batch(context.Background(), items)
	}()
	<-arrived
	release()
	<-done
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	want := []string{"slow", "m", "2", "s", "x"}
	if g := ids(got.Responses); !slices.Equal(g, want) {
		t.Errorf("response ids = %v, want %v", g, want)
	}
	for i, wantStatus := range []int{200, 200, 400, 200, 200} {
		if got.Responses[i].Status != wantStatus {
			t.Errorf("responses[%d].status = %d, want %d", i, got.Responses[i].Status, wantStatus)
		}
	}
	var body struct {
		Markets []json.RawMessage `json:"markets"`
	}
	if err := json.Unmarshal(got.Responses[1].Body, &body); err != nil || len(body.Markets) != 12 {
		t.Errorf("markets item body: %d markets (%v), want the upstream JSON object with 12", len(body.Markets), err)
	}
}

func TestSecondIdenticalBatchIsServedFromCache(t *testing.T) {
	e := start(t, setup{})
	items := []client.Item{
		{ID: "m", Path: "/trade-api/v2/markets?series_ticker=" + meta + "&status=open"},
		{ID: "s", Path: "/trade-api/v2/series/" + meta},
	}
	first, err := e.c.Batch(t.Context(), items)
	if err != nil {
		t.Fatalf("first Batch: %v", err)
	}
	for _, r := range first.Responses {
		if r.Cache != "MISS" {
			t.Errorf("first batch: %s cache = %q, want MISS", r.ID, r.Cache)
		}
	}
	calls := e.fake.Total()
	second, err := e.c.Batch(t.Context(), items)
	if err != nil {
		t.Fatalf("second Batch: %v", err)
	}
	if got := e.fake.Total(); got != calls {
		t.Errorf("upstream requests after the second batch = %d, want %d (unchanged)", got, calls)
	}
	for i, r := range second.Responses {
		if r.Cache != "HIT" || r.Status != http.StatusOK {
			t.Errorf("second batch: %s = %d %q, want 200 HIT", r.ID, r.Status, r.Cache)
		}
		if string(r.Body) != string(first.Responses[i].Body) {
			t.Errorf("second batch: %s body differs from the first", r.ID)
		}
	}
}

func TestStreamSendsFirstLineBeforeSlowestItemFinishes(t *testing.T) {
	e := start(t, setup{})
	arrived, release := gate(t, e, "GET /trade-api/v2/series/"+fed, answer(http.StatusOK, `{"series":{"ticker":"`+fed+`"}}`))
	body := `{"requests":[{"id":"slow","path":"/trade-api/v2/series/` + fed + `"},{"id":"fast","path":"/trade-api/v2/series/` + meta + `"}]}`
	resp := postRaw(t, e.url+"/batch", body, http.Header{"Accept": {"application/x-ndjson"}})
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("Content-Type = %q, want application/x-ndjson", ct)
	}
	<-arrived // the slow item is held upstream from here on
	br := bufio.NewReader(resp.Body)
	first := readLine[client.Line](t, br)
	if first.ID != "fast" || first.Status != http.StatusOK {
		t.Errorf("first line = %+v, want the fast item, 200, while the slow one is held", first)
	}
	release()
	second := readLine[client.Line](t, br)
	if second.ID != "slow" || second.Status != http.StatusOK {
		t.Errorf("second line = %+v, want the slow item, 200", second)
	}
	done := readLine[client.Done](t, br)
	if !done.Done || done.OK != 2 || done.Failed != 0 {
		t.Errorf("done line = %+v, want done, ok 2, failed 0", done)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after the done line: %v, want EOF", err)
	}
}

func readLine[T any](t *testing.T, br *bufio.Reader) T {
	t.Helper()
	line, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading a line: %v (got %q)", err, line)
	}
	var v T
	if err := json.Unmarshal(line, &v); err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	return v
}

func TestStreamDoneLineCountsOKAndFailed(t *testing.T) {
	e := start(t, setup{})
	var lines []client.Line
	done, err := e.c.Stream(t.Context(), client.PathBatch, client.BatchRequest{Requests: []client.Item{
		{ID: "a", Path: "/trade-api/v2/series/" + meta},
		{ID: "b", Path: "/trade-api/v2/series/KXNOSUCHSERIES"},
		{ID: "c", Path: "/trade-api/v2/markets/KXEARNINGSMENTIONMETA-26JUN30-VR"},
		{ID: "d", Path: "/trade-api/v2/portfolio/balance"},
		{ID: "e", Path: "/trade-api/v2/exchange/status"},
	}}, func(l client.Line) error {
		lines = append(lines, l)
		return nil
	})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if !done.Done || done.OK != 3 || done.Failed != 2 {
		t.Errorf("done = %+v, want ok 3, failed 2", done)
	}
	got := ids(lines)
	slices.Sort(got)
	if want := []string{"a", "b", "c", "d", "e"}; !slices.Equal(got, want) {
		t.Errorf("line ids = %v, want one line per item %v", got, want)
	}
	for _, l := range lines {
		if l.ID == "b" && (l.Status != http.StatusNotFound || l.Error == "" || len(l.Body) == 0) {
			t.Errorf("line b = %+v, want 404 with an error and the upstream body", l)
		}
	}
}

func TestTypedStreamLinesCarryTickerResults(t *testing.T) {
	e := start(t, setup{})
	got := map[string]client.Line{}
	done, err := e.c.Stream(t.Context(), client.PathMarkets,
		client.MarketsRequest{SeriesTickers: []string{meta, big, "KXNOSUCHSERIES"}, AllPages: true},
		func(l client.Line) error { got[l.ID] = l; return nil })
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if done.OK != 2 || done.Failed != 1 {
		t.Errorf("done = %+v, want ok 2, failed 1", done)
	}
	var markets []json.RawMessage
	if err := json.Unmarshal(got[big].Body, &markets); err != nil || len(markets) != 450 {
		t.Errorf("line %s body: %d markets (%v), want the list of all 450", big, len(markets), err)
	}
	if l := got["KXNOSUCHSERIES"]; l.Status != http.StatusNotFound {
		t.Errorf("line KXNOSUCHSERIES status = %d, want 404", l.Status)
	}
}

func TestEventsDefaultToNestedMarkets(t *testing.T) {
	e := start(t, setup{})
	ev := meta + "-26JUN30"
	got, err := e.c.Events(t.Context(), client.EventsRequest{EventTickers: []string{ev, "KXNOSUCH-26JUN30"}})
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	if n := e.fake.CountQuery("/trade-api/v2/events/" + ev + "?with_nested_markets=true"); n != 1 {
		t.Errorf("upstream GET /events/%s?with_nested_markets=true count = %d, want 1", ev, n)
	}
	r := got.Events[ev]
	var event struct {
		EventTicker string `json:"event_ticker"`
	}
	if err := json.Unmarshal(r.Event, &event); err != nil || event.EventTicker != ev {
		t.Errorf("events[%s].event = %s (%v), want the event object", ev, r.Event, err)
	}
	if len(r.Markets) != 12 {
		t.Errorf("len(events[%s].markets) = %d, want 12", ev, len(r.Markets))
	}
	if ie := got.Errors["KXNOSUCH-26JUN30"]; ie.Status != http.StatusNotFound {
		t.Errorf("errors[KXNOSUCH-26JUN30] = %+v, want status 404", ie)
	}

	if _, err := e.c.Events(t.Context(), client.EventsRequest{EventTickers: []string{ev}, WithNestedMarkets: client.Bool(false)}); err != nil {
		t.Fatalf("Events without nested markets: %v", err)
	}
	if n := e.fake.CountQuery("/trade-api/v2/events/" + ev + "?with_nested_markets=false"); n != 1 {
		t.Errorf("upstream GET /events/%s?with_nested_markets=false count = %d, want 1", ev, n)
	}
}

func TestDuplicatesAreFetchedOnce(t *testing.T) {
	e := start(t, setup{})
	got, err := e.c.Series(t.Context(), client.SeriesRequest{SeriesTickers: []string{meta, fed, meta, meta}})
	if err != nil {
		t.Fatalf("Series: %v", err)
	}
	if n := e.fake.Count("/trade-api/v2/series/" + meta); n != 1 {
		t.Errorf("upstream GET /series/%s count = %d, want 1", meta, n)
	}
	if len(got.Series) != 2 {
		t.Errorf("len(series) = %d, want 2", len(got.Series))
	}

	// Same cache key spelled two ways: one fetch, two answers.
	b, err := e.c.Batch(t.Context(), []client.Item{
		{ID: "a", Path: "/trade-api/v2/markets?status=open&series_ticker=" + fed},
		{ID: "b", Path: "/trade-api/v2/markets?series_ticker=" + fed + "&status=open"},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if n := e.fake.Count(marketsPath); n != 1 {
		t.Errorf("upstream GET /markets count = %d, want 1", n)
	}
	if g := ids(b.Responses); !slices.Equal(g, []string{"a", "b"}) {
		t.Errorf("ids = %v, want [a b]", g)
	}
	if string(b.Responses[0].Body) != string(b.Responses[1].Body) || b.Responses[1].Status != http.StatusOK {
		t.Errorf("duplicate items answered differently: %d vs %d", b.Responses[0].Status, b.Responses[1].Status)
	}
}

func TestUnsafeItemPathsAreRefusedAndNeverFetched(t *testing.T) {
	e := start(t, setup{})
	items := []client.Item{
		{ID: "private", Path: "/trade-api/v2/portfolio/balance"},
		{ID: "absolute", Path: "http://evil.com/trade-api/v2/markets"},
		{ID: "host", Path: "//evil.com/x"},
		{ID: "host-prefixed", Path: "//evil.com/trade-api/v2/markets"},
		{ID: "dotdot", Path: "/trade-api/v2/../admin"},
		{ID: "dot", Path: "/trade-api/v2/./markets"},
		{ID: "encoded-slash", Path: "/trade-api/v2/markets%2f.."},
		{ID: "encoded-backslash", Path: "/trade-api/v2/markets%5cx"},
		{ID: "backslash", Path: `/trade-api/v2/markets\x`},
		{ID: "nul", Path: "/trade-api/v2/markets\x00"},
		{ID: "encoded-nul", Path: "/trade-api/v2/markets/A%00"},
		{ID: "long", Path: "/trade-api/v2/markets/" + strings.Repeat("A", 5000)},
		{ID: "fragment", Path: "/trade-api/v2/markets#x"},
		{ID: "space-in-query", Path: "/trade-api/v2/markets?series_ticker=A B"},
		{ID: "empty-segment", Path: "/trade-api/v2//markets"},
		{ID: "outside-prefix", Path: "/admin/cache"},
		{ID: "relative", Path: "trade-api/v2/markets"},
		{ID: "empty", Path: ""},
		{ID: "unknown-route", Path: "/trade-api/v2/no_such_route"},
		{ID: "user-data", Path: "/trade-api/v2/exchange/user_data_timestamp"},
		{ID: "post", Path: "/trade-api/v2/markets", Method: "POST"},
		{ID: "lower-get", Path: "/trade-api/v2/markets", Method: "get"},
	}
	got, err := e.c.Batch(t.Context(), items)
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	for i, r := range got.Responses {
		if r.ID != items[i].ID || r.Status != http.StatusBadRequest || r.Error == "" || r.Code == "" || r.Cache != "" {
			t.Errorf("%s: got %+v, want a per-item 400 with error and code, never fetched", items[i].ID, r)
		}
	}
	if n := e.fake.Total(); n != 0 {
		t.Errorf("upstream received %d requests, want 0", n)
	}
	want := fmt.Sprintf(`kproxy_batch_items_total{status="400"} %d`, len(items))
	if m := scrape(t, e.url); !strings.Contains(m, want+"\n") {
		t.Errorf("/metrics lacks %q", want)
	}
}

func TestBadInputIsRefusedWithJSONError(t *testing.T) {
	e := start(t, setup{})
	item := `{"path":"/trade-api/v2/series/` + meta + `"}`
	many := func(n int, s string) string { return strings.TrimSuffix(strings.Repeat(s+",", n), ",") }
	tests := []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"malformed JSON", "/batch", `{"requests":[`, 400, "bad_json"},
		{"empty body", "/batch", ``, 400, "bad_json"},
		{"unknown top-level field", "/batch", `{"requests":[` + item + `],"extra":1}`, 400, "bad_json"},
		{"unknown item field", "/batch", `{"requests":[{"path":"/trade-api/v2/series/A","url":"x"}]}`, 400, "bad_json"},
		{"trailing value", "/batch", `{"requests":[` + item + `]}{}`, 400, "bad_json"},
		{"trailing garbage", "/batch", `{"requests":[` + item + `]} garbage`, 400, "bad_json"},
		{"wrong type", "/batch", `{"requests":{"path":"/x"}}`, 400, "bad_json"},
		{"empty list", "/batch", `{"requests":[]}`, 400, "bad_request"},
		{"missing list", "/batch", `{}`, 400, "bad_request"},
		{"null body", "/batch", `null`, 400, "bad_request"},
		{"missing path", "/batch", `{"requests":[{"id":"a"}]}`, 400, "bad_request"},
		{"too many items", "/batch", `{"requests":[` + many(101, item) + `]}`, 413, "too_many_items"},
		{"body over 1 MiB", "/batch", `{"requests":[{"id":"` + strings.Repeat("x", 1<<20) + `","path":"/x"}]}`, 413, "body_too_large"},
		{"markets: empty list", "/batch/markets", `{"series_tickers":[]}`, 400, "bad_request"},
		{"markets: missing list", "/batch/markets", `{"status":"open"}`, 400, "bad_request"},
		{"markets: limit 0", "/batch/markets", `{"series_tickers":["A"],"limit":0}`, 400, "bad_request"},
		{"markets: limit 1001", "/batch/markets", `{"series_tickers":["A"],"limit":1001}`, 400, "bad_request"},
		{"markets: fractional limit", "/batch/markets", `{"series_tickers":["A"],"limit":2.5}`, 400, "bad_json"},
		{"markets: bad status", "/batch/markets", `{"series_tickers":["A"],"status":"active"}`, 400, "bad_request"},
		{"markets: ticker with slash", "/batch/markets", `{"series_tickers":["A/B"]}`, 400, "bad_ticker"},
		{"markets: dot-dot ticker", "/batch/markets", `{"series_tickers":[".."]}`, 400, "bad_ticker"},
		{"markets: empty ticker", "/batch/markets", `{"series_tickers":[""]}`, 400, "bad_ticker"},
		{"markets: ticker with query", "/batch/markets", `{"series_tickers":["A?x=1"]}`, 400, "bad_ticker"},
		{"markets: 129-byte ticker", "/batch/markets", `{"series_tickers":["` + strings.Repeat("A", 129) + `"]}`, 400, "bad_ticker"},
		{"markets: too many tickers", "/batch/markets", `{"series_tickers":[` + many(101, `"A"`) + `]}`, 413, "too_many_items"},
		{"markets: tickers not a list", "/batch/markets", `{"series_tickers":"A"}`, 400, "bad_json"},
		{"events: empty list", "/batch/events", `{"event_tickers":[]}`, 400, "bad_request"},
		{"events: nested not a bool", "/batch/events", `{"event_tickers":["E"],"with_nested_markets":"yes"}`, 400, "bad_json"},
		{"events: unknown field", "/batch/events", `{"event_tickers":["E"],"status":"open"}`, 400, "bad_json"},
		{"series: wrong field name", "/batch/series", `{"tickers":["A"]}`, 400, "bad_json"},
		{"series: control char ticker", "/batch/series", `{"series_tickers":["A\u0000"]}`, 400, "bad_ticker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := postRaw(t, e.url+tt.path, tt.body, http.Header{"Content-Type": {"application/json"}})
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var body struct{ Error, Code string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if body.Code != tt.code || body.Error == "" {
				t.Errorf("body = %+v, want code %q and a message", body, tt.code)
			}
		})
	}
	if n := e.fake.Total(); n != 0 {
		t.Errorf("upstream received %d requests, want 0", n)
	}
}

func TestClientGetsRefusalsAsError(t *testing.T) {
	e := start(t, setup{})
	_, err := e.c.Markets(t.Context(), client.MarketsRequest{SeriesTickers: []string{meta}, Limit: 5000})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || ce.Code != "bad_request" || ce.Message == "" {
		t.Errorf("Markets with limit 5000: err = %v, want *client.Error 400 bad_request", err)
	}
}

func TestAcceptsJSONWhateverTheContentType(t *testing.T) {
	e := start(t, setup{})
	resp := postRaw(t, e.url+"/batch/series", `{"series_tickers":["`+meta+`"]}`, http.Header{"Content-Type": {"text/plain"}})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200", resp.StatusCode)
	}
}

func TestNonJSONUpstreamBodyIsEmbeddedAsString(t *testing.T) {
	e := start(t, setup{})
	e.fake.Handle("GET /trade-api/v2/exchange/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "down for maintenance")
	})
	got, err := e.c.Batch(t.Context(), []client.Item{{ID: "x", Path: "/trade-api/v2/exchange/status"}})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	r := got.Responses[0]
	var s string
	if err := json.Unmarshal(r.Body, &s); err != nil || s != "down for maintenance" {
		t.Errorf("body = %s (%v), want the JSON string \"down for maintenance\"", r.Body, err)
	}
	if r.Status != http.StatusServiceUnavailable || r.Error == "" {
		t.Errorf("item = %d %q, want 503 with an error", r.Status, r.Error)
	}
}

func TestClientDisconnectStopsRemainingWork(t *testing.T) {
	handled := make(chan struct{}, 1)
	e := start(t, setup{
		cfg: func(c *config.Config) { c.Batch.Concurrency = 2 },
		wrap: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				next.ServeHTTP(w, r)
				if r.URL.Path == "/batch/series" {
					handled <- struct{}{}
				}
			})
		},
	})
	// Every series but the first is held upstream until the test ends.
	// Abandoned shared fetches then get a 500, which is neither retried
	// nor stored, so none of them touches the store after the app closes.
	for _, s := range earnings[1:] {
		gate(t, e, "GET /trade-api/v2/series/"+s, answer(http.StatusInternalServerError, `{}`))
	}
	tickers := append(slices.Clone(earnings), fed, big)
	errStop := errors.New("stop")
	_, err := e.c.Stream(t.Context(), client.PathSeries, client.SeriesRequest{SeriesTickers: tickers}, func(l client.Line) error {
		if l.ID != meta {
			t.Errorf("first line id = %q, want %s (the only series not held)", l.ID, meta)
		}
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Stream: %v, want errStop", err)
	}
	<-handled // the batch handler has returned: no job starts any more
	if n := e.fake.Total(); n >= len(tickers) {
		t.Errorf("upstream received %d requests for %d series, want fewer after the client left", n, len(tickers))
	} else {
		t.Logf("upstream received %d of %d series requests", n, len(tickers))
	}
}

func TestItemsDoNotCarryTheBatchSignature(t *testing.T) {
	e := start(t, setup{})
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e.fake.SetPublicKey(&key.PublicKey)
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	sig, err := kalshitest.Sign(key, ts, http.MethodPost, "/batch")
	if err != nil {
		t.Fatal(err)
	}
	e.c.Header = http.Header{
		"Kalshi-Access-Key":       {"key-id"},
		"Kalshi-Access-Timestamp": {ts},
		"Kalshi-Access-Signature": {sig},
		"Authorization":           {"Bearer user-token"},
	}
	got, err := e.c.Batch(t.Context(), []client.Item{{ID: "s", Path: "/trade-api/v2/series/" + meta}})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if r := got.Responses[0]; r.Status != http.StatusOK {
		t.Errorf("item = %d %q, want 200 (a POST /batch signature must not reach the upstream)", r.Status, r.Error)
	}
	if n := e.fake.SignatureFailures(); n != 0 {
		t.Errorf("upstream signature failures = %d, want 0", n)
	}
	reqs := e.fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream requests = %d, want 1", len(reqs))
	}
	h := reqs[0].Header
	if got := h.Get("X-Forwarded-For"); got == "" {
		t.Errorf("upstream X-Forwarded-For is empty, want the client's address")
	}
	// An item is a call kproxy composed: without kproxy's own key it goes
	// with no client credentials at all.
	for _, name := range []string{"Kalshi-Access-Key", "Kalshi-Access-Signature", "Kalshi-Access-Timestamp", "Authorization", "Content-Type", "Accept"} {
		if v := h.Get(name); v != "" {
			t.Errorf("upstream %s = %q, want it not forwarded (it belongs to the POST /batch call)", name, v)
		}
	}
}

func Example_markets() {
	fake := kalshitest.New()
	up := httptest.NewServer(fake)
	defer up.Close()
	cfg := config.Default()
	cfg.Cache.Disk.Path = "" // tests never write the real ~/.cache/kproxy
	cfg.Upstream.URL = up.URL
	a, _ := app.New(cfg, app.Options{})
	defer a.Close()
	srv := httptest.NewServer(a.Server)
	defer srv.Close()

	c := client.New(srv.URL, nil)
	got, err := c.Markets(context.Background(), client.MarketsRequest{
		SeriesTickers: []string{"KXEARNINGSMENTIONMETA", "KXEARNINGSMENTIONTSLA"},
		Status:        "open",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range []string{"KXEARNINGSMENTIONMETA", "KXEARNINGSMENTIONTSLA"} {
		fmt.Printf("%s: %d markets\n", s, len(got.MarketsBySeries[s]))
	}
	// Output:
	// KXEARNINGSMENTIONMETA: 12 markets
	// KXEARNINGSMENTIONTSLA: 12 markets
}
