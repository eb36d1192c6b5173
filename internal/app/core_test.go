package app_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

const (
	metaSeries = "/trade-api/v2/series/KXEARNINGSMENTIONMETA"
	metaMarket = "/trade-api/v2/markets/KXEARNINGSMENTIONMETA-26JUN30-VR"
	marketList = "/trade-api/v2/markets"
)

func TestMissThenHit(t *testing.T) {
	h := newHarness(t, nil)
	path := marketList + "?series_ticker=KXEARNINGSMENTIONMETA&limit=3"

	resp, first := h.get(path)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first GET: status %d, body %s", resp.StatusCode, first)
	}
	wantHeader(t, resp, "X-Cache", "MISS")
	wantHeader(t, resp, "Cache-Status", "kproxy; fwd=uri-miss; stored")

	h.clock.Advance(500 * time.Millisecond) // 1.5s of the 2s ttl left
	resp, second := h.get(path)
	wantHeader(t, resp, "X-Cache", "HIT")
	wantHeader(t, resp, "Cache-Status", "kproxy; hit; ttl=1")
	wantHeader(t, resp, "Age", "0")
	if !bytes.Equal(first, second) {
		t.Errorf("hit body differs from miss body")
	}
	if resp.Header.Get("ETag") == "" {
		t.Errorf("hit has no ETag")
	}
	if got := h.fake.Count(marketList); got != 1 {
		t.Errorf("upstream requests = %d, want 1", got)
	}
}

func TestKeyNormalizationSharesOneEntry(t *testing.T) {
	h := newHarness(t, nil)
	spellings := []string{
		"?series_ticker=KXEARNINGSMENTIONMETA&status=open&limit=5",
		"?limit=5&status=open&series_ticker=KXEARNINGSMENTIONMETA",
		"?status=open&limit=5&series_ticker=KXEARNINGSMENTIONMETA&",
		"?status=%6Fpen&limit=5&series_ticker=KXEARNINGSMENTIONMETA",
	}
	for i, q := range spellings {
		resp, body := h.get(marketList + q)
		want := "HIT"
		if i == 0 {
			want = "MISS"
		}
		if got := resp.Header.Get("X-Cache"); got != want {
			t.Errorf("GET %s: X-Cache = %q, want %q (body %.80s)", q, got, want, body)
		}
	}
	if got := h.fake.Count(marketList); got != 1 {
		t.Errorf("upstream requests = %d, want 1", got)
	}
	// Order inside repeated values is meaning, not spelling.
	h.get(marketList + "?tickers=A&tickers=B")
	resp, _ := h.get(marketList + "?tickers=B&tickers=A")
	wantHeader(t, resp, "X-Cache", "MISS")
}

func TestConcurrentMissesMakeOneUpstreamRequest(t *testing.T) {
	h := newHarness(t, nil)
	h.fake.SetLatency(200 * time.Millisecond)
	const n = 200
	var wg sync.WaitGroup
	statuses := make([]string, n)
	bodies := make([][]byte, n)
	for i := range n {
		wg.Go(func() {
			resp, body := h.get(metaSeries)
			statuses[i] = resp.Header.Get("X-Cache") + " " + resp.Header.Get("Cache-Status")
			bodies[i] = body
		})
	}
	wg.Wait()
	if got := h.fake.Count(metaSeries); got != 1 {
		t.Fatalf("upstream requests = %d, want 1", got)
	}
	collapsed := 0
	for i, s := range statuses {
		if !bytes.Equal(bodies[i], bodies[0]) {
			t.Fatalf("request %d got a different body", i)
		}
		switch {
		case s == "MISS kproxy; fwd=uri-miss; collapsed":
			collapsed++
		case s == "MISS kproxy; fwd=uri-miss; stored", strings.HasPrefix(s, "HIT "):
		default:
			t.Errorf("request %d: X-Cache/Cache-Status = %q", i, s)
		}
	}
	if collapsed == 0 {
		t.Errorf("no request was marked collapsed")
	}
}

func TestClientDisconnectDoesNotCancelSharedFetch(t *testing.T) {
	h := newHarness(t, nil)
	release := h.fake.Stall()
	defer release()

	// The first client starts the fetch, then gives up.
	ctx, cancel := context.WithCancel(context.Background())
	leaderDone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url(metaSeries), nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		leaderDone <- err
	}()
	kproxytest.Eventually(t, 5*time.Second, "the condition", func() bool { return h.fake.Count(metaSeries) == 1 })

	const followers = 5
	results := make(chan int, followers)
	for range followers {
		go func() {
			resp, _ := h.get(metaSeries)
			results <- resp.StatusCode
		}()
	}
	h.AwaitCollapsed(metaSeries, 1+followers) // the followers joined the held fetch
	cancel()
	if err := <-leaderDone; err == nil {
		t.Errorf("canceled leader got an answer")
	}
	release()
	for range followers {
		if got := <-results; got != http.StatusOK {
			t.Errorf("follower status = %d, want 200", got)
		}
	}
	if got := h.fake.Count(metaSeries); got != 1 {
		t.Errorf("upstream requests = %d, want 1", got)
	}
}

func TestPrivateRoutesAreNeverCachedOrShared(t *testing.T) {
	h := newHarness(t, nil)
	const path = "/trade-api/v2/portfolio/balance"
	auth := func(key string) []string {
		return []string{"KALSHI-ACCESS-KEY", key, "KALSHI-ACCESS-TIMESTAMP", "1700000000000", "KALSHI-ACCESS-SIGNATURE", "sig-" + key}
	}
	respA, bodyA := h.get(path, auth("key-a")...)
	respB, bodyB := h.get(path, auth("key-b")...)
	respA2, bodyA2 := h.get(path, auth("key-a")...)
	for _, r := range []*http.Response{respA, respB, respA2} {
		if r.StatusCode != http.StatusOK {
			t.Fatalf("status = %d", r.StatusCode)
		}
		wantHeader(t, r, "X-Cache", "BYPASS")
	}
	if bytes.Equal(bodyA, bodyB) || !strings.Contains(string(bodyA), "key-a") || !strings.Contains(string(bodyB), "key-b") {
		t.Errorf("key-a and key-b saw each other's balance: %s / %s", bodyA, bodyB)
	}
	if !bytes.Equal(bodyA, bodyA2) {
		t.Errorf("same key, different answers")
	}
	if got := h.fake.Count(path); got != 3 {
		t.Errorf("upstream requests = %d, want 3 (never cached)", got)
	}
	if st := h.app.Store.Stats(); st.Items != 0 {
		t.Errorf("cache holds %d items after private requests, want 0", st.Items)
	}
}

func TestWritesAreForwardedExactlyOnce(t *testing.T) {
	h := newHarness(t, nil)
	h.fake.SetFault(kalshitest.Fault{Status: http.StatusServiceUnavailable})
	body := []byte(`{"ticker":"KXEARNINGSMENTIONMETA-26JUN30-VR","side":"yes","count":1,"client_order_id":"abc-123"}`)
	headers := []string{
		"KALSHI-ACCESS-KEY", "k1", "KALSHI-ACCESS-TIMESTAMP", "1700000000000",
		"KALSHI-ACCESS-SIGNATURE", "c2lnbmF0dXJl+/==", "Content-Type", "application/json",
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		h.fake.Reset()
		resp, _ := h.do(method, "/trade-api/v2/portfolio/orders", body, headers...)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s: status = %d, want the upstream's 503", method, resp.StatusCode)
		}
		reqs := h.fake.Requests()
		if len(reqs) != 1 {
			t.Fatalf("%s: upstream saw %d requests, want exactly 1", method, len(reqs))
		}
		got := reqs[0]
		if got.Method != method || !bytes.Equal(got.Body, body) {
			t.Errorf("%s: upstream got %s %q, want the same method and body", method, got.Method, got.Body)
		}
		for i := 0; i < len(headers); i += 2 {
			if v := got.Header.Get(headers[i]); v != headers[i+1] {
				t.Errorf("%s: upstream header %s = %q, want %q", method, headers[i], v, headers[i+1])
			}
		}
	}
}

func TestPassThroughHeaders(t *testing.T) {
	h := newHarness(t, nil)
	resp, _ := h.get("/trade-api/v2/portfolio/balance",
		"KALSHI-ACCESS-KEY", "key-a", "KALSHI-ACCESS-TIMESTAMP", "1700000000000",
		"KALSHI-ACCESS-SIGNATURE", "abc+/=", "Connection", "X-Hop", "X-Hop", "drop me",
		"X-End-To-End", "keep me")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	got := h.fake.Requests()[0]
	if v := got.Header.Get("X-Hop"); v != "" {
		t.Errorf("hop-by-hop header X-Hop forwarded: %q", v)
	}
	if v := got.Header.Get("X-End-To-End"); v != "keep me" {
		t.Errorf("X-End-To-End = %q, want kept", v)
	}
	if v := got.Header.Get("KALSHI-ACCESS-SIGNATURE"); v != "abc+/=" {
		t.Errorf("signature = %q, want byte-identical", v)
	}
	if v := got.Header.Get("X-Forwarded-For"); v != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want 127.0.0.1", v)
	}
	// A shared fetch carries the starting request's credentials too.
	h.get(metaSeries, "KALSHI-ACCESS-KEY", "key-z", "KALSHI-ACCESS-SIGNATURE", "zz==")
	reqs := h.fake.Requests()
	last := reqs[len(reqs)-1]
	if last.Header.Get("KALSHI-ACCESS-KEY") != "key-z" || last.Header.Get("KALSHI-ACCESS-SIGNATURE") != "zz==" {
		t.Errorf("shared fetch credentials = %v, want the client's", last.Header)
	}
	if last.Path != metaSeries {
		t.Errorf("upstream path = %q, want %q unchanged", last.Path, metaSeries)
	}
}

func TestUpstreamNotFoundPassesThrough(t *testing.T) {
	h := newHarness(t, nil)
	for range 2 {
		resp, body := h.get("/trade-api/v2/markets/NO-SUCH-MARKET")
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"not_found"`) {
			t.Errorf("status %d body %s, want the upstream's 404 body", resp.StatusCode, body)
		}
		wantHeader(t, resp, "X-Cache", "MISS")
	}
	if got := h.fake.Count("/trade-api/v2/markets/NO-SUCH-MARKET"); got != 2 {
		t.Errorf("upstream requests = %d, want 2 (404s not stored with negative_ttl 0)", got)
	}
}

func TestNegativeTTLStoresNotFound(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Cache.NegativeTTL = config.Duration(time.Minute) })
	h.get("/trade-api/v2/markets/NO-SUCH-MARKET")
	resp, _ := h.get("/trade-api/v2/markets/NO-SUCH-MARKET")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("status = %d, want 404", resp.StatusCode)
	}
	wantHeader(t, resp, "X-Cache", "HIT")
}

func TestNonAPIPathsAreNeverForwarded(t *testing.T) {
	h := newHarness(t, nil)
	for _, path := range []string{"/", "/foo", "/trade-api/v1/markets", "/trade-api/v2", "/trade-api/ws/v2"} {
		resp, body := h.get(path)
		wantJSONError(t, resp, body, http.StatusNotFound, "not_found")
	}
	resp, body := h.get("/admin/cache") // no admin token: the admin API is off
	wantJSONError(t, resp, body, http.StatusNotFound, "admin_off")
	bad := []string{
		"/trade-api/v2/../admin",
		"/trade-api/v2/markets/..",
		"/trade-api/v2/./markets",
		"/trade-api/v2/markets%2fKX",
		"/trade-api/v2/markets%2FKX",
		"/trade-api/v2/markets%5cKX",
		"/trade-api/v2/markets\\KX",
		"/trade-api/v2/markets%00",
		"/trade-api/v2/markets%0d%0aX-Evil:%201",
		"/trade-api/v2//evil.example/markets",
		"/trade-api/v2/markets/" + strings.Repeat("A", 3000),
	}
	for _, path := range bad {
		resp, body := rawGet(t, h, path)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %q: status = %d, want 400 (body %s)", path, resp.StatusCode, body)
		}
	}
	wantUpstreamTotal(t, h.fake, 0, "")
}

func TestAbsoluteFormTargetGoesOnlyToConfiguredUpstream(t *testing.T) {
	h := newHarness(t, nil)
	resp, _ := rawRequest(t, h, "http://evil.example"+metaSeries, "evil.example")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200 from the configured upstream", resp.StatusCode)
	}
	if got := h.fake.Count(metaSeries); got != 1 {
		t.Errorf("configured upstream saw %d requests, want 1", got)
	}
}

func TestETagAndConditionalRequests(t *testing.T) {
	h := newHarness(t, nil)
	resp, _ := h.get(metaSeries)
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
		resp, body := h.get(metaSeries, "If-None-Match", inm)
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Errorf("If-None-Match %s: status %d, %d body bytes; want 304 and none", inm, resp.StatusCode, len(body))
		}
		wantHeader(t, resp, "ETag", etag)
	}
	resp, body := h.get(metaSeries, "If-None-Match", `"stale"`)
	if resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Errorf("non-matching If-None-Match: status %d, want 200 with body", resp.StatusCode)
	}
}

func TestGzipRoundTrip(t *testing.T) {
	h := newHarness(t, nil)
	path := marketList + "?series_ticker=KXEARNINGSMENTIONMETA"
	_, plain := h.get(path)
	resp, zipped := h.get(path, "Accept-Encoding", "br, gzip;q=0.8")
	wantHeader(t, resp, "Content-Encoding", "gzip")
	wantHeader(t, resp, "Vary", "Accept-Encoding")
	wantHeader(t, resp, "X-Cache", "HIT")
	if resp.Header.Get("Content-Length") != fmt.Sprint(len(zipped)) {
		t.Errorf("Content-Length = %s, body %d bytes", resp.Header.Get("Content-Length"), len(zipped))
	}
	zr, err := gzip.NewReader(bytes.NewReader(zipped))
	if err != nil {
		t.Fatal(err)
	}
	unzipped, _ := io.ReadAll(zr)
	if !bytes.Equal(unzipped, plain) {
		t.Errorf("gunzipped body differs from identity body")
	}
	if len(zipped) >= len(plain) {
		t.Errorf("gzip body %d bytes, identity %d: no gain", len(zipped), len(plain))
	}
	resp, _ = h.get(path, "Accept-Encoding", "gzip;q=0")
	wantHeader(t, resp, "Content-Encoding", "")
	resp, _ = h.get(path)
	wantHeader(t, resp, "Content-Encoding", "")
	if got := h.fake.Count(marketList); got != 1 {
		t.Errorf("upstream requests = %d, want 1 (one entry for both encodings)", got)
	}
}

func TestHeadIsAnsweredFromTheSameEntry(t *testing.T) {
	h := newHarness(t, nil)
	_, body := h.get(metaSeries)
	resp, headBody := h.do(http.MethodHead, metaSeries, nil)
	if resp.StatusCode != http.StatusOK || len(headBody) != 0 {
		t.Errorf("HEAD: status %d, %d body bytes", resp.StatusCode, len(headBody))
	}
	wantHeader(t, resp, "X-Cache", "HIT")
	wantHeader(t, resp, "Content-Length", fmt.Sprint(len(body)))
	if got := h.fake.Count(metaSeries); got != 1 {
		t.Errorf("upstream requests = %d, want 1", got)
	}
}

func TestClientNoCacheForcesRefetch(t *testing.T) {
	h := newHarness(t, nil)
	h.get(metaSeries)
	resp, _ := h.get(metaSeries, "Cache-Control", "no-cache")
	wantHeader(t, resp, "X-Cache", "MISS")
	wantHeader(t, resp, "Cache-Status", "kproxy; fwd=request; stored")
	if got := h.fake.Count(metaSeries); got != 2 {
		t.Errorf("upstream requests = %d, want 2", got)
	}
	resp, _ = h.get(metaSeries)
	wantHeader(t, resp, "X-Cache", "HIT")
}

func TestCredentialFailuresAreNotShared(t *testing.T) {
	h := newHarness(t, nil)
	const path = "/trade-api/v2/exchange/status"
	// The upstream answers once every good request has reached kproxy:
	// they arrive while the bad key's fetch is under way.
	answer := make(chan struct{})
	h.fake.Handle("GET "+path, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-answer:
		case <-r.Context().Done():
			return
		}
		if r.Header.Get("KALSHI-ACCESS-KEY") == "bad" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"code":"unauthorized"}}`)
			return
		}
		io.WriteString(w, `{"exchange_active":true,"trading_active":true}`)
	})
	badDone := make(chan int, 1)
	go func() {
		resp, _ := h.get(path, "KALSHI-ACCESS-KEY", "bad")
		badDone <- resp.StatusCode
	}()
	kproxytest.Eventually(t, 5*time.Second, "the condition", func() bool { return h.fake.Count(path) == 1 })
	const good = 5
	results := make(chan int, good)
	for range good {
		go func() {
			resp, _ := h.get(path, "KALSHI-ACCESS-KEY", "good")
			results <- resp.StatusCode
		}()
	}
	h.AwaitCollapsed(path, 1+good)
	close(answer)
	if got := <-badDone; got != http.StatusUnauthorized {
		t.Errorf("bad key: status = %d, want 401", got)
	}
	for range good {
		if got := <-results; got != http.StatusOK {
			t.Errorf("good key: status = %d, want 200 (another client's 401 must not be shared)", got)
		}
	}
}

func TestServerErrorsAreSharedButNotStored(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Upstream.MaxRetries = 0 })
	h.fake.SetFault(kalshitest.Fault{Status: http.StatusServiceUnavailable})
	h.fake.SetLatency(100 * time.Millisecond)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			resp, _ := h.get(metaSeries)
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("status = %d, want the upstream's 503", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if got := h.fake.Count(metaSeries); got != 1 {
		t.Errorf("upstream requests = %d, want 1 (shared)", got)
	}
	h.fake.SetFault(kalshitest.Fault{})
	resp, _ := h.get(metaSeries)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("after recovery: status = %d, want 200 (the 503 was not stored)", resp.StatusCode)
	}
}

func TestUnreachableUpstreamIsAQuickJSONError(t *testing.T) {
	dead := kproxytest.ClosedAddr(t)
	h := newHarness(t, func(c *config.Config) {
		c.Upstream.URL = "http://" + dead
		c.Upstream.MaxRetries = 0
	})
	start := time.Now()
	resp, body := h.get(metaSeries)
	wantJSONError(t, resp, body, http.StatusBadGateway, "upstream_unreachable")
	if !strings.Contains(string(body), dead) {
		t.Errorf("error %s does not name the upstream", body)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v, want well under a second", d)
	}
}

func TestPanicBecomesJSON500(t *testing.T) {
	h := newHarness(t, nil)
	h.app.Server.Handle(http.MethodGet, "/boom", func(echo.Context) error { panic("kaboom") })
	resp, body := h.get("/boom")
	wantJSONError(t, resp, body, http.StatusInternalServerError, "internal_error")
	// The server keeps serving.
	resp, _ = h.get("/healthz")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz after panic = %d", resp.StatusCode)
	}
}

func TestAdminPurge(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Admin.Token = "s3cret" })
	h.get(metaSeries)
	h.get(metaMarket)
	resp, body := h.do(http.MethodDelete, "/admin/cache?prefix=/trade-api/v2/series", nil)
	wantJSONError(t, resp, body, http.StatusUnauthorized, "unauthorized")
	resp, body = h.do(http.MethodDelete, "/admin/cache?prefix=/trade-api/v2/series", nil, "Authorization", "Bearer wrong")
	wantJSONError(t, resp, body, http.StatusUnauthorized, "unauthorized")
	resp, body = h.do(http.MethodDelete, "/admin/cache?prefix=/trade-api/v2/series", nil, "Authorization", "Bearer s3cret")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"purged":1`) {
		t.Fatalf("purge: %d %s", resp.StatusCode, body)
	}
	resp, _ = h.get(metaSeries)
	wantHeader(t, resp, "X-Cache", "MISS")
	resp, _ = h.get(metaMarket)
	wantHeader(t, resp, "X-Cache", "HIT")

	noToken := newHarness(t, nil)
	resp, body = noToken.do(http.MethodDelete, "/admin/cache", nil, "Authorization", "Bearer ")
	wantJSONError(t, resp, body, http.StatusNotFound, "admin_off")
}

func TestAutoBatchingMergesSingleMarketMisses(t *testing.T) {
	// A wide window, so that a loaded test machine still delivers all 20
	// misses inside one or two windows.
	h := newHarness(t, func(c *config.Config) { c.Batch.AutoWindow = config.Duration(100 * time.Millisecond) })
	tickers := h.fake.MarketTickers("KXBIGSERIES")[:20]
	direct := map[string][]byte{}
	for _, tk := range tickers[:3] {
		resp, err := http.Get(h.UpstreamURL + "/trade-api/v2/markets/" + tk)
		if err != nil {
			t.Fatal(err)
		}
		direct[tk], _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	h.fake.Reset()
	var wg sync.WaitGroup
	got := make([][]byte, len(tickers))
	for i, tk := range tickers {
		wg.Go(func() {
			resp, body := h.get("/trade-api/v2/markets/" + tk)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d", tk, resp.StatusCode)
			}
			got[i] = body
		})
	}
	wg.Wait()
	calls := h.fake.Total()
	if calls > 2 {
		t.Errorf("upstream calls = %d for 20 single-market misses, want 1 or 2", calls)
	}
	if h.fake.Count(marketList) == 0 {
		t.Errorf("no combined /markets?tickers= call was made")
	}
	for i, tk := range tickers {
		var m struct {
			Market struct {
				Ticker string `json:"ticker"`
			} `json:"market"`
		}
		if err := json.Unmarshal(got[i], &m); err != nil || m.Market.Ticker != tk {
			t.Errorf("%s: body %.100s is not {\"market\":{...%s...}}", tk, got[i], tk)
		}
		if want, ok := direct[tk]; ok && !bytes.Equal(bytes.TrimSpace(got[i]), bytes.TrimSpace(want)) {
			t.Errorf("%s: auto-batched body differs from the single-market route's:\n got %.200s\nwant %.200s", tk, got[i], want)
		}
	}
	// Each market is now cached under its own key.
	resp, _ := h.get("/trade-api/v2/markets/" + tickers[7])
	wantHeader(t, resp, "X-Cache", "HIT")
	// An unknown ticker in a window still gets its real 404.
	var wg2 sync.WaitGroup
	for _, tk := range []string{"NOPE-1", tickers[0] + "X"} {
		wg2.Go(func() {
			resp, _ := h.get("/trade-api/v2/markets/" + tk)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s: status %d, want 404", tk, resp.StatusCode)
			}
		})
	}
	wg2.Wait()
}

func TestHealthAndReadiness(t *testing.T) {
	h := newHarness(t, nil)
	resp, body := h.get("/healthz")
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
		t.Errorf("healthz: %d %s", resp.StatusCode, body)
	}
	h.get(metaSeries)
	resp, body = h.get("/readyz")
	var r struct {
		Status, Breaker, Upstream string
		Cache                     struct{ Items, Bytes int64 }
	}
	json.Unmarshal(body, &r)
	if resp.StatusCode != http.StatusOK || r.Status != "ready" || r.Breaker != "closed" || r.Cache.Items != 1 || r.Cache.Bytes <= 0 || r.Upstream != h.UpstreamURL {
		t.Errorf("readyz: %d %s", resp.StatusCode, body)
	}
	h.app.Server.SetDraining()
	resp, body = h.get("/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"status":"draining"`) {
		t.Errorf("readyz while draining: %d %s", resp.StatusCode, body)
	}
}

// rawGet sends path byte for byte (no client-side cleaning or escaping).
func rawGet(t *testing.T, h *harness, path string) (*http.Response, []byte) {
	t.Helper()
	return rawRequest(t, h, path, "kproxy")
}

// rawRequest sends a GET of target, byte for byte, with Host: host, and
// reads the whole answer.
func rawRequest(t *testing.T, h *harness, target, host string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %q: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func TestAutoBatchingStretchesARateLimit(t *testing.T) {
	// 40 scripts each ask for a different market at once, on an account
	// limited to 5 reads/s with at most 1s of waiting.
	run := func(window time.Duration) (ok, limited, upstream int) {
		h := newHarness(t, func(c *config.Config) {
			rate := 5.0
			c.Upstream.ReadRate = &rate
			c.Upstream.MaxWait = config.Duration(time.Second)
			c.Batch.AutoWindow = config.Duration(window)
		})
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, tk := range h.fake.MarketTickers("KXBIGSERIES")[:40] {
			wg.Go(func() {
				resp, _ := h.get("/trade-api/v2/markets/" + tk)
				mu.Lock()
				defer mu.Unlock()
				switch resp.StatusCode {
				case http.StatusOK:
					ok++
				case http.StatusTooManyRequests:
					limited++
				}
			})
		}
		wg.Wait()
		return ok, limited, h.fake.Total()
	}
	ok, limited, calls := run(0)
	t.Logf("auto-batching off: %d answered, %d rate limited, %d upstream calls", ok, limited, calls)
	if limited == 0 || calls != ok {
		t.Errorf("without auto-batching: %d ok, %d limited, %d upstream calls; want some 429s and one call per answer", ok, limited, calls)
	}
	ok, limited, calls = run(100 * time.Millisecond)
	t.Logf("auto-batching on: %d answered, %d rate limited, %d upstream calls", ok, limited, calls)
	if ok != 40 || limited != 0 || calls > 2 {
		t.Errorf("with auto-batching: %d ok, %d limited, %d upstream calls; want 40 ok in 1-2 calls", ok, limited, calls)
	}
}

func TestStaleCopyServedWhileAFetchIsUnderWay(t *testing.T) {
	zero, minute := config.Duration(0), config.Duration(time.Minute)
	h := newHarness(t, func(c *config.Config) {
		c.Cache.Routes = []config.Route{{
			Pattern: "/trade-api/v2/series/{series_ticker}", TTL: config.Duration(50 * time.Millisecond),
			StaleWhileRevalidate: &zero, StaleIfError: &minute,
		}}
	})
	_, cached := h.get(metaSeries)
	h.clock.Advance(100 * time.Millisecond) // past ttl, and there is no revalidate window
	release := h.fake.Stall()
	defer release()
	leader := make(chan *http.Response, 1)
	go func() {
		resp, _ := h.get(metaSeries)
		leader <- resp
	}()
	kproxytest.Eventually(t, 5*time.Second, "the condition", func() bool { return h.fake.Count(metaSeries) == 2 })

	start := time.Now()
	resp, body := h.get(metaSeries)
	took := time.Since(start)
	wantHeader(t, resp, "X-Cache", "STALE")
	if !bytes.Equal(body, cached) {
		t.Errorf("stale body differs from the stored copy")
	}
	if took > 500*time.Millisecond {
		t.Errorf("stale answer took %v while the upstream hangs, want at once", took)
	}
	release()
	if got := (<-leader).Header.Get("X-Cache"); got != "MISS" {
		t.Errorf("the request that started the fetch: X-Cache %q, want MISS", got)
	}
	if got := h.fake.Count(metaSeries); got != 2 {
		t.Errorf("upstream requests = %d, want 2", got)
	}
}
