package app_test

// The fault matrix (issue 11, item 2): every upstream behaviour x every
// request kind, each cell asserted against CONTRACT.md: the client's status
// and JSON code, what is stored, the upstream attempts, the breaker effect,
// and that a write never reaches the upstream twice. docs/faults.md is the
// same matrix in prose.
//
// Each cell runs on its own kproxy and fake Kalshi. The upstream timeout is
// 400ms, cache.stale_wait 150ms and retries back off by at most 5ms, so the
// whole matrix runs in well under a minute with -race. TTLs are real (50ms)
// because neither the cache nor the proxy takes an injected clock.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

const (
	fmTimeout   = 400 * time.Millisecond // upstream.timeout
	fmStaleWait = 150 * time.Millisecond // cache.stale_wait
	fmTicker    = "KXFEDDECISION-26JUN30-H25"
	fmSeries    = "KXFEDDECISION"
	fmMarket    = "/trade-api/v2/markets/" + fmTicker
	fmOrders    = "/trade-api/v2/portfolio/orders"
	fmMaxBody   = 64 << 20 // fetch's default bound of a body read into memory
)

// mode is how an override handler misbehaves.
type mode int

const (
	modeNone mode = iota
	modeResetMid
	modeHeadersHang
	modeSlowDrip
	modeTruncated
	modeInvalidJSON
	modeTooLarge
	modeSetCookie
	modePrivate
)

// behaviour is one upstream behaviour and what it means for one GET fetch
// (a cold GET): the contract's answer.
type behaviour struct {
	name  string
	fault kalshitest.Fault // injected with Paths set to the cell's routes
	mode  mode
	down  bool // connection refused
	// The answer to a GET fetch: status, and kproxy's code when kproxy
	// answers itself ("" = the upstream answer passes through).
	status int
	code   string
	// stored: a 200 kproxy keeps. attempts: upstream attempts of one
	// fetch. failures: the breaker counts them as failures.
	stored   bool
	attempts int
	failures bool
	// stale: a copy within stale_if_error is served instead (5xx, 429,
	// no answer at all).
	stale bool
	// penalizes: the answer holds the bucket back (Retry-After).
	penalizes bool
	// writeStatus is what a write's client sees (pass-through), 0 =
	// status; writeCode kproxy's code for it.
	writeStatus int
	writeCode   string
	writeBody   string // "complete", "broken" (the body ends early), "hangs"
	// writeHealthy: a pass-through that keeps receiving bytes is no
	// failure, however slowly they come (only a silence of
	// upstream.timeout inside the body is, as nginx's proxy_read_timeout).
	writeHealthy bool
	// typed is the status of the ticker in a typed batch ("" code: the
	// upstream's status).
	typedStatus int
	typedCode   string
}

var behaviours = []behaviour{
	{name: "200", status: 200, stored: true, attempts: 1, writeStatus: 201, writeBody: "complete", typedStatus: 200},
	{name: "404", fault: kalshitest.Fault{Status: 404}, status: 404, attempts: 1, writeBody: "complete", typedStatus: 404},
	{name: "429", fault: kalshitest.Fault{Status: 429}, status: 429, attempts: 3, stale: true, writeBody: "complete", typedStatus: 429},
	// Retry-After 2s is honoured: no retry sooner, and none fits in what
	// is left of the fetch's time (1.25s), so the 429 goes back after one
	// attempt; the bucket then waits 2s, so a second write gets kproxy's
	// own 429 without reaching the upstream.
	{name: "429 Retry-After", fault: kalshitest.Fault{Status: 429, Header: http.Header{"Retry-After": {"2"}}}, status: 429, attempts: 1, stale: true, penalizes: true, writeBody: "complete", typedStatus: 429},
	{name: "500", fault: kalshitest.Fault{Status: 500}, status: 500, attempts: 1, failures: true, stale: true, writeBody: "complete", typedStatus: 500},
	{name: "503", fault: kalshitest.Fault{Status: 503}, status: 503, attempts: 3, failures: true, stale: true, writeBody: "complete", typedStatus: 503},
	{name: "refused", down: true, status: 502, code: "upstream_unreachable", attempts: 3, failures: true, stale: true, writeCode: "upstream_unreachable", typedStatus: 502, typedCode: "upstream_unreachable"},
	{name: "reset before headers", fault: kalshitest.Fault{Close: true}, status: 502, code: "upstream_unreachable", attempts: 3, failures: true, stale: true, writeCode: "upstream_unreachable", typedStatus: 502, typedCode: "upstream_unreachable"},
	// After the headers, no retry: the status is in, the body is lost.
	{name: "reset mid-body", mode: modeResetMid, status: 502, code: "upstream_read_failed", attempts: 1, failures: true, stale: true, writeStatus: 201, writeBody: "broken", typedStatus: 502, typedCode: "upstream_read_failed"},
	{name: "headers then hang", mode: modeHeadersHang, status: 502, code: "upstream_read_failed", attempts: 1, failures: true, stale: true, writeStatus: 201, writeBody: "broken", typedStatus: 502, typedCode: "upstream_read_failed"},
	{name: "slow drip past the timeout", mode: modeSlowDrip, status: 502, code: "upstream_read_failed", attempts: 1, failures: true, stale: true, writeStatus: 201, writeBody: "complete", writeHealthy: true, typedStatus: 502, typedCode: "upstream_read_failed"},
	{name: "truncated body", mode: modeTruncated, status: 502, code: "upstream_read_failed", attempts: 1, failures: true, stale: true, writeStatus: 201, writeBody: "broken", typedStatus: 502, typedCode: "upstream_read_failed"},
	// kproxy stores bytes, it does not vouch for them; a typed batch reads
	// them and says so.
	{name: "invalid JSON", mode: modeInvalidJSON, status: 200, stored: true, attempts: 1, writeStatus: 201, writeBody: "complete", typedStatus: 502, typedCode: "bad_upstream_answer"},
	{name: "body over the size limit", mode: modeTooLarge, status: 502, code: "upstream_too_large", attempts: 1, stale: true, writeStatus: 201, writeBody: "complete", typedStatus: 502, typedCode: "upstream_too_large"},
	{name: "200 with Set-Cookie", mode: modeSetCookie, status: 200, attempts: 1, writeStatus: 201, writeBody: "complete", typedStatus: 200},
	{name: "200 with Cache-Control: private", mode: modePrivate, status: 200, attempts: 1, writeStatus: 201, writeBody: "complete", typedStatus: 200},
}

var kinds = []string{"cold GET", "hot GET", "expired GET within stale_if_error", "expired GET past it", "coalesced GET (20)", "write (POST+DELETE)", "batch item", "typed batch page"}

// cellResult is one row of the summary table.
type cellResult struct {
	behaviour, kind, got, stored string
	attempts                     int
	breaker                      string
}

func TestFaultMatrix(t *testing.T) {
	var mu sync.Mutex
	var rows []cellResult
	t.Cleanup(func() {
		var b strings.Builder
		fmt.Fprintf(&b, "\n%-34s | %-34s | %-44s | %-9s | %-3s | %s\n", "upstream", "request", "client got", "stored", "att", "breaker")
		for _, r := range rows {
			fmt.Fprintf(&b, "%-34s | %-34s | %-44s | %-9s | %3d | %s\n", r.behaviour, r.kind, r.got, r.stored, r.attempts, r.breaker)
		}
		fmt.Fprintf(&b, "%d cells", len(rows))
		t.Log(b.String())
	})
	for _, bh := range behaviours {
		for _, kind := range kinds {
			t.Run(bh.name+"/"+kind, func(t *testing.T) {
				r := runCell(t, bh, kind)
				mu.Lock()
				rows = append(rows, r)
				mu.Unlock()
			})
		}
	}
}

// fmGate holds every upstream attempt until it is opened (coalesced cells).
type fmGate struct {
	rt   http.RoundTripper
	open chan struct{}
}

func (g *fmGate) RoundTrip(r *http.Request) (*http.Response, error) {
	select {
	case <-g.open:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	return g.rt.RoundTrip(r)
}

// cellHarness is a kproxy for one cell: the fake on a switchable address,
// short timeouts, the breaker threshold given, optionally a gated upstream.
func cellHarness(t *testing.T, threshold int, kind string, g *fmGate) (*harness, *switchable) {
	t.Helper()
	up := newSwitchable(t)
	fake := kalshitest.New()
	up.handler.Store(fake)
	opts := []kproxytest.Option{kproxytest.WithFake(fake), kproxytest.WithUpstreamURL("http://" + up.addr)}
	if g != nil {
		g.rt = upstream.NewTransport(fmTimeout)
		opts = append(opts, kproxytest.WithAppOptions(func(o *app.Options) { o.Transport = g }))
	}
	h := newHarness(t, func(cfg *config.Config) {
		cfg.Upstream.Timeout = config.Duration(fmTimeout)
		cfg.Upstream.MaxWait = config.Duration(50 * time.Millisecond)
		cfg.Upstream.MaxRetries = 2
		cfg.Breaker.ConsecutiveFailures = uint32(threshold)
		cfg.Breaker.OpenTimeout = config.Duration(time.Minute)
		cfg.Cache.StaleWait = config.Duration(fmStaleWait)
		switch kind {
		case "hot GET":
			setRoute(cfg, marketPattern, time.Minute, 0, 10*time.Minute)
			setRoute(cfg, "/trade-api/v2/markets", time.Minute, 0, 10*time.Minute)
		case "expired GET within stale_if_error":
			setRoute(cfg, marketPattern, 50*time.Millisecond, 0, 10*time.Minute)
		case "expired GET past it":
			setRoute(cfg, marketPattern, 50*time.Millisecond, 0, 0)
		}
	}, opts...)
	t.Cleanup(func() { fake.SetFault(kalshitest.Fault{}) })
	return h, up
}

// misbehave is the override handler of a mode: it answers what the route
// would (a market, a markets page, an order) and breaks the answer as the
// mode says.
func misbehave(m mode, status int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body := []byte(`{"market":{"ticker":"` + fmTicker + `","status":"active","yes_bid_dollars":"0.4200"}}`)
		switch {
		case r.Method != http.MethodGet:
			body = []byte(`{"order":{"order_id":"fm-1","status":"resting"}}`)
		case r.URL.Path == "/trade-api/v2/markets":
			body = []byte(`{"markets":[{"ticker":"` + fmTicker + `","series_ticker":"` + fmSeries + `"}],"cursor":""}`)
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		rc := http.NewResponseController(w)
		switch m {
		case modeResetMid:
			h.Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(status)
			w.Write(body[:len(body)/2])
			rc.Flush()
			if conn, _, err := rc.Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				conn.Close()
			}
		case modeHeadersHang:
			h.Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(status)
			rc.Flush()
			<-r.Context().Done()
		case modeSlowDrip:
			// 40 bytes, one every 40ms: 1.6s, past the fetch's whole time.
			body = append(body[:0:0], bytes.Repeat([]byte(" "), 40-len(`{}`))...)
			body = append(append([]byte("{"), body...), '}')
			h.Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(status)
			for _, c := range body {
				w.Write([]byte{c})
				rc.Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(40 * time.Millisecond):
				}
			}
		case modeTruncated:
			h.Set("Content-Length", strconv.Itoa(len(body)+50))
			w.WriteHeader(status)
			w.Write(body)
		case modeInvalidJSON:
			w.WriteHeader(status)
			w.Write([]byte(`{"market": oops`))
		case modeTooLarge:
			h.Set("Content-Length", strconv.Itoa((fmMaxBody>>20+1)<<20))
			w.WriteHeader(status)
			chunk := bytes.Repeat([]byte(" "), 1<<20)
			for range fmMaxBody>>20 + 1 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case modeSetCookie, modePrivate:
			if m == modeSetCookie {
				h.Set("Set-Cookie", "session=abc; Path=/")
			} else {
				h.Set("Cache-Control", "private")
			}
			w.WriteHeader(status)
			w.Write(body)
		}
	}
}

// inject applies bh to the fake: for the market routes and the writes.
func inject(h *harness, up *switchable, bh behaviour) {
	if bh.down {
		up.down()
		return
	}
	if bh.mode != modeNone {
		for _, p := range []string{"GET " + fmMarket, "GET /trade-api/v2/markets", "POST " + fmOrders, "DELETE " + fmOrders + "/{id}"} {
			status := 200
			if !strings.HasPrefix(p, "GET") {
				status = 201
			}
			h.fake.Handle(p, misbehave(bh.mode, status))
		}
		return
	}
	if bh.fault.Status != 0 || bh.fault.Close {
		f := bh.fault
		f.Paths = []string{"/trade-api/v2/markets", "/trade-api/v2/portfolio"}
		h.fake.SetFault(f)
	}
}

// arrivals counts requests that reached the fake with method and path.
func arrivals(h *harness, method, path string) int {
	n := 0
	for _, r := range h.fake.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

// wantGot checks an answer against bh's GET outcome and describes it.
func wantAnswer(t *testing.T, what string, a answer, status int, code string) string {
	t.Helper()
	if a.err != nil {
		t.Errorf("%s: %v", what, a.err)
		return "error: " + a.err.Error()
	}
	if a.status != status {
		t.Errorf("%s: status %d (%s), want %d", what, a.status, trim(a.body), status)
	}
	var e struct{ Error, Code string }
	json.Unmarshal(a.body, &e)
	if code != "" && (e.Code != code || e.Error == "") {
		t.Errorf("%s: body %s, want a JSON error with code %q", what, trim(a.body), code)
	}
	return fmt.Sprintf("%d %s %s", a.status, a.header.Get("X-Cache"), e.Code)
}

func trim(b []byte) string {
	if len(b) > 120 {
		return string(b[:120]) + "..."
	}
	return string(b)
}

func runCell(t *testing.T, bh behaviour, kind string) cellResult {
	res := cellResult{behaviour: bh.name, kind: kind}
	fails := kind != "hot GET" && bh.failures && !(kind == "write (POST+DELETE)" && bh.writeHealthy)
	attempts := bh.attempts
	switch kind {
	case "hot GET":
		attempts = 0
	case "write (POST+DELETE)":
		attempts = 2 // one POST and one DELETE, each sent once, never retried
		if bh.penalizes {
			attempts = 1
		}
	}
	threshold := 1 // any failure would open it
	if fails {
		threshold = attempts // opens on exactly the last failed attempt
	}
	var g *fmGate
	if kind == "coalesced GET (20)" {
		g = &fmGate{open: make(chan struct{})}
	}
	h, up := cellHarness(t, threshold, kind, g)
	key := fmMarket
	// Prime the kinds that need a cached copy.
	var primed []byte
	switch kind {
	case "hot GET", "expired GET within stale_if_error", "expired GET past it":
		a := h.send(http.MethodGet, fmMarket, nil)
		if a.err != nil || a.status != 200 || a.header.Get("X-Cache") != "MISS" {
			t.Fatalf("priming: %d %q %v", a.status, a.header.Get("X-Cache"), a.err)
		}
		primed = a.body
		if kind != "hot GET" {
			h.clock.Advance(50*time.Millisecond + 30*time.Millisecond) // past the ttl
		}
	}
	base := attempts0(t, h)
	inject(h, up, bh)

	switch kind {
	case "cold GET", "expired GET past it":
		a := h.send(http.MethodGet, fmMarket, nil)
		res.got = wantAnswer(t, kind, a, bh.status, bh.code)
		if a.err == nil && a.header.Get("X-Cache") != "MISS" {
			t.Errorf("%s: X-Cache %q, want MISS", kind, a.header.Get("X-Cache"))
		}
		if kind == "expired GET past it" {
			// The new entry lives only 50ms: read "stored" off the answer.
			key = ""
			if got := strings.HasSuffix(a.header.Get("Cache-Status"), "; stored"); got != bh.stored {
				t.Errorf("%s: Cache-Status %q, want stored: %v", kind, a.header.Get("Cache-Status"), bh.stored)
			}
			res.stored = map[bool]string{true: "new", false: "nothing"}[bh.stored]
		}
	case "hot GET":
		a := h.send(http.MethodGet, fmMarket, nil)
		res.got = wantAnswer(t, kind, a, 200, "")
		if a.header.Get("X-Cache") != "HIT" || !bytes.Equal(a.body, primed) {
			t.Errorf("hot GET: X-Cache %q, want a HIT with the cached body", a.header.Get("X-Cache"))
		}
	case "expired GET within stale_if_error":
		a := h.send(http.MethodGet, fmMarket, nil)
		if bh.stale {
			res.got = wantAnswer(t, kind, a, 200, "")
			if a.header.Get("X-Cache") != "STALE" || !bytes.Equal(a.body, primed) {
				t.Errorf("expired GET: X-Cache %q Cache-Status %q, want STALE with the cached body", a.header.Get("X-Cache"), a.header.Get("Cache-Status"))
			}
			// At once when an attempt fails, within stale_wait when the
			// upstream is slow; never the attempt timeout.
			if bound := fmStaleWait + 200*time.Millisecond; a.took > bound {
				t.Errorf("expired GET: STALE after %v, want within %v (cache.stale_wait %v + slack)", a.took, bound, fmStaleWait)
			}
		} else {
			res.got = wantAnswer(t, kind, a, bh.status, bh.code)
			if a.header.Get("X-Cache") != "MISS" {
				t.Errorf("expired GET: X-Cache %q, want MISS (the upstream answered)", a.header.Get("X-Cache"))
			}
		}
	case "coalesced GET (20)":
		answers := make(chan answer, 20)
		for range 20 {
			go func() { answers <- h.send(http.MethodGet, fmMarket, nil) }()
		}
		// The gate holds the leader's attempt: all 20 in flight at once
		// are the leader and its followers.
		h.AwaitCollapsed(fmMarket, 20)
		close(g.open)
		collapsed := 0
		for i := range 20 {
			a := <-answers
			got := wantAnswer(t, fmt.Sprintf("coalesced request %d", i), a, bh.status, bh.code)
			if i == 0 {
				res.got = got
			}
			if strings.Contains(a.header.Get("Cache-Status"), "collapsed") {
				collapsed++
			}
		}
		if bh.code == "" && collapsed == 0 {
			t.Errorf("coalesced: no answer marked collapsed")
		}
	case "write (POST+DELETE)":
		key = ""
		res.got = writeCell(t, h, bh)
	case "batch item":
		a := h.send(http.MethodPost, "/batch", []byte(`{"requests":[{"id":"m","path":"`+fmMarket+`"}]}`))
		var out struct {
			Responses []struct {
				ID     string
				Status int
				Code   string
				Cache  string
			}
		}
		if a.err != nil || a.status != 200 || json.Unmarshal(a.body, &out) != nil || len(out.Responses) != 1 {
			t.Fatalf("batch: %d %s %v", a.status, trim(a.body), a.err)
		}
		it := out.Responses[0]
		if it.Status != bh.status || (bh.code != "" && it.Code != bh.code) {
			t.Errorf("batch item: status %d code %q, want %d %q", it.Status, it.Code, bh.status, bh.code)
		}
		res.got = fmt.Sprintf("item %d %s %s", it.Status, it.Cache, it.Code)
	case "typed batch page":
		key = route.Key("/trade-api/v2/markets", "limit=200&series_ticker="+fmSeries)
		a := h.send(http.MethodPost, "/batch/markets", []byte(`{"series_tickers":["`+fmSeries+`"]}`))
		var out struct {
			Markets map[string]json.RawMessage `json:"markets_by_series"`
			Errors  map[string]struct {
				Status int
				Code   string
			}
		}
		if a.err != nil || a.status != 200 || json.Unmarshal(a.body, &out) != nil {
			t.Fatalf("typed batch: %d %s %v", a.status, trim(a.body), a.err)
		}
		if bh.typedStatus == 200 {
			if _, ok := out.Markets[fmSeries]; !ok {
				t.Errorf("typed batch: %s, want the series' markets", trim(a.body))
			}
			res.got = "200 markets"
		} else {
			e, ok := out.Errors[fmSeries]
			if !ok || e.Status != bh.typedStatus || (bh.typedCode != "" && e.Code != bh.typedCode) {
				t.Errorf("typed batch: %s, want errors.%s = %d %q", trim(a.body), fmSeries, bh.typedStatus, bh.typedCode)
			}
			res.got = fmt.Sprintf("error %d %s", e.Status, e.Code)
		}
	}

	// The shared fetch (and a background one after an early STALE) ends.
	h.app.Fetcher.Wait()
	res.attempts = attempts0(t, h) - base
	if res.attempts != attempts {
		t.Errorf("upstream attempts = %d, want %d", res.attempts, attempts)
	}
	// What is stored.
	if key != "" {
		e, ok := h.app.Store.Get(key)
		switch {
		case kind == "hot GET" || (kind == "expired GET within stale_if_error" && !bh.stored):
			if !ok || !bytes.Equal(e.Body, primed) {
				t.Errorf("store: %v, want the primed copy kept", ok)
			}
			res.stored = "kept"
		case bh.stored:
			if !ok || e.Status != 200 || (bh.mode == modeInvalidJSON && string(e.Body) != `{"market": oops`) {
				t.Errorf("store: %v, want the new 200 stored", ok)
			}
			res.stored = "new"
		default:
			if ok {
				t.Errorf("store: an entry for %s (status %d), want none", key, e.Status)
			}
			res.stored = "nothing"
		}
	} else if res.stored == "" {
		res.stored = "never"
	}
	// The breaker: open exactly when every attempt failed.
	wantState := "closed"
	if fails && attempts > 0 {
		wantState = "open"
	}
	got := h.app.Breaker.State().String()
	if got != wantState {
		t.Errorf("breaker %s, want %s (threshold %d)", got, wantState, threshold)
	}
	res.breaker = got
	if fails {
		res.breaker += " (want open)"
	}
	return res
}

func attempts0(t *testing.T, h *harness) int {
	t.Helper()
	return int(metric(t, h, "kproxy_upstream_requests_total"))
}

// writeCell sends one POST and one DELETE with credentials and checks each
// reached the upstream at most once (exactly once unless it was refused)
// and what the client saw.
func writeCell(t *testing.T, h *harness, bh behaviour) string {
	t.Helper()
	status := bh.writeStatus
	if status == 0 {
		status = bh.status
	}
	var got string
	for _, m := range []struct{ method, path string }{{http.MethodPost, fmOrders}, {http.MethodDelete, fmOrders + "/fm-1"}} {
		wantStatus, wantCode, want := status, bh.writeCode, 1
		if bh.down {
			want = 0
		}
		if bh.penalizes && m.method == http.MethodDelete {
			// The POST's Retry-After holds the write bucket.
			wantStatus, wantCode, want = 429, "rate_limited", 0
		}
		if m.method == http.MethodDelete && bh.mode == modeNone && bh.fault.Status == 0 && !bh.down && !bh.fault.Close {
			wantStatus = 404 // the fake has no DELETE route
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		req, _ := http.NewRequestWithContext(ctx, m.method, h.url(m.path), strings.NewReader(`{"ticker":"`+fmTicker+`","client_order_id":"fm-1"}`))
		req.Header.Set("KALSHI-ACCESS-KEY", "k1")
		req.Header.Set("KALSHI-ACCESS-TIMESTAMP", "1")
		req.Header.Set("KALSHI-ACCESS-SIGNATURE", "s")
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			cancel()
			t.Errorf("%s: %v", m.method, err)
			continue
		}
		var body []byte
		readDone := make(chan error, 1)
		go func() {
			var rerr error
			body, rerr = io.ReadAll(resp.Body)
			readDone <- rerr
		}()
		var rerr error
		hung := false
		patience := 15 * time.Second // a 65 MiB pass-through under -race
		if bh.writeBody == "hangs" {
			patience = 2 * time.Second
		}
		select {
		case rerr = <-readDone:
		case <-time.After(patience):
			hung = true
			cancel()
			<-readDone
		}
		resp.Body.Close()
		cancel()
		if resp.StatusCode != wantStatus {
			t.Errorf("%s: status %d (%s), want %d", m.method, resp.StatusCode, trim(body), wantStatus)
		}
		if wantCode != "" {
			var e struct{ Error, Code string }
			if json.Unmarshal(body, &e) != nil || e.Code != wantCode {
				t.Errorf("%s: body %s, want JSON error code %q", m.method, trim(body), wantCode)
			}
		}
		if x := resp.Header.Get("X-Cache"); x != "BYPASS" {
			t.Errorf("%s: X-Cache %q, want BYPASS", m.method, x)
		}
		switch bh.writeBody {
		case "complete":
			if wantCode != "" {
				break
			}
			if rerr != nil || hung {
				t.Errorf("%s: body read: %v (hung %v), want the whole body", m.method, rerr, hung)
			}
		case "broken":
			if rerr == nil {
				t.Errorf("%s: body read completed (%d bytes), want it cut short like the upstream's", m.method, len(body))
			}
		case "hangs":
			if !hung {
				t.Errorf("%s: body read ended (%v), want it to wait on the upstream like a pass-through", m.method, rerr)
			}
		}
		if n := arrivals(h, m.method, m.path); n != want {
			t.Errorf("%s %s reached the upstream %d times, want %d: a write is never sent twice", m.method, m.path, n, want)
		}
		if got == "" {
			got = fmt.Sprintf("%d BYPASS %s (body %s)", resp.StatusCode, bh.writeCode, bh.writeBody)
		}
	}
	return got
}
