package app_test

// Server limits (issue 11 item 4) and path bytes (the contract's invalid
// UTF-8 rule), sent as raw bytes over TCP to 127.0.0.1. Each shape ends in
// a clear status (or a closed connection) and never reaches the upstream
// off-route.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
	"github.com/kproxy/kproxy/proxy"
)

// limitsHarness is kproxy served by its own http.Server (HTTPServer, with
// its limits), tuned by tune, in front of the fake.
func limitsHarness(t *testing.T, opts app.Options, tune func(*http.Server)) *harness {
	t.Helper()
	return newHarness(t, nil,
		kproxytest.WithAppOptions(func(o *app.Options) { o.BodyTimeout = opts.BodyTimeout }),
		kproxytest.WithServer(tune))
}

func (h *harness) dial() net.Conn {
	h.t.Helper()
	conn, err := net.Dial("tcp", h.Addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return conn
}

// raw sends req byte for byte and reads one response (nil and the error
// when the server closed the connection without one).
func (h *harness) raw(req string) (*http.Response, []byte, error) {
	h.t.Helper()
	conn := h.dial()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body, nil
}

func TestServerLimitDefaults(t *testing.T) {
	h := limitsHarness(t, app.Options{}, nil)
	hs := h.app.Server.HTTPServer(":0")
	if hs.ReadHeaderTimeout != 10*time.Second || hs.IdleTimeout != 120*time.Second || hs.MaxHeaderBytes != 64<<10 {
		t.Errorf("HTTPServer limits: ReadHeaderTimeout %v, IdleTimeout %v, MaxHeaderBytes %d; want 10s, 2m, 64KiB",
			hs.ReadHeaderTimeout, hs.IdleTimeout, hs.MaxHeaderBytes)
	}
	if hs.ReadTimeout != 0 || hs.WriteTimeout != 0 {
		t.Errorf("ReadTimeout %v WriteTimeout %v, want none (they would cut batch streams and WebSockets)", hs.ReadTimeout, hs.WriteTimeout)
	}
}

func TestInvalidUTF8PathsAreRejected(t *testing.T) {
	h := limitsHarness(t, app.Options{}, nil)
	for _, p := range []string{
		"/trade-api/v2/\xc0\xae\xc0\xae/portfolio/balance", // raw overlong dots
		"/trade-api/v2/%c0%ae%c0%ae/portfolio/balance",     // percent-encoded overlong dots
		"/trade-api/v2/%C0%AE%C0%AE/markets",
		"/trade-api/v2/markets/%c0%af",           // overlong slash
		"/trade-api/v2/markets/%e0%80%ae",        // three-byte overlong dot
		"/trade-api/v2/markets/%ed%a0%80",        // UTF-16 surrogate
		"/trade-api/v2/markets/%ff",              // never valid
		"/trade-api/v2/markets/\xff",             // raw
		"/trade-api/v2/markets/KX%e2%82",         // truncated sequence
		"/trade-api/v2/series/%f4%90%80%80/x",    // beyond U+10FFFF
		"/trade-api/v2/markets/%c0%ae%c0%ae?x=1", // with a query
	} {
		resp, body, err := h.raw("GET " + p + " HTTP/1.1\r\nHost: kproxy\r\nConnection: close\r\n\r\n")
		if err != nil {
			t.Errorf("GET %q: %v", p, err)
			continue
		}
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"code":"bad_path"`) {
			t.Errorf("GET %q: %d %s, want 400 bad_path", p, resp.StatusCode, body)
		}
	}
	// Valid multi-byte UTF-8 is not rejected by this rule.
	if resp, body, err := h.raw("GET /trade-api/v2/markets/%C3%A9 HTTP/1.1\r\nHost: kproxy\r\nConnection: close\r\n\r\n"); err != nil || resp.StatusCode == http.StatusBadRequest {
		t.Errorf("GET valid UTF-8 path: %v %v %s, want it forwarded", err, resp, body)
	}
	wantUpstreamTotal(t, h.fake, 1, "only the valid path")
}

func TestOversizedHeadersAndRequestLine(t *testing.T) {
	h := limitsHarness(t, app.Options{}, nil)
	big := strings.Repeat("a", 100<<10)
	for name, req := range map[string]string{
		"header over 64KiB":       "GET " + metaSeries + " HTTP/1.1\r\nHost: kproxy\r\nX-Big: " + big + "\r\n\r\n",
		"request line over 64KiB": "GET " + metaSeries + "?q=" + big + " HTTP/1.1\r\nHost: kproxy\r\n\r\n",
	} {
		resp, _, err := h.raw(req)
		if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s: %v %v, want 431", name, statusOf(resp), err)
		}
	}
	// A path over route.MaxPathLen but within the header limit: kproxy's
	// own JSON 400.
	resp, body, err := h.raw("GET /trade-api/v2/markets/" + strings.Repeat("A", 3000) + " HTTP/1.1\r\nHost: kproxy\r\nConnection: close\r\n\r\n")
	if err != nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "bad_path") {
		t.Errorf("3000-byte path: %v %s %v, want 400 bad_path", statusOf(resp), body, err)
	}
	wantUpstreamTotal(t, h.fake, 0, "")
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	return resp.Status
}

// closedWithin reports whether the server closes conn within d (the read
// ends without a response).
func closedWithin(conn net.Conn, d time.Duration) (closed bool, got []byte) {
	conn.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(conn)
	var ne net.Error
	if err != nil && (errorAs(err, &ne) && ne.Timeout()) {
		return false, b
	}
	return true, b
}

func errorAs(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

func TestSlowlorisHeadersAreCut(t *testing.T) {
	h := limitsHarness(t, app.Options{}, func(hs *http.Server) { hs.ReadHeaderTimeout = 300 * time.Millisecond })
	conn := h.dial()
	io.WriteString(conn, "GET "+metaSeries+" HTTP/1.1\r\nHost: kproxy\r\n")
	start := time.Now()
	// Trickle a header line every 50ms, for up to 3s: the server must cut
	// the connection at ReadHeaderTimeout.
	stop := make(chan struct{})
	go func() {
		for i := 0; i < 60; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := io.WriteString(conn, fmt.Sprintf("X-Drip-%d: 1\r\n", i)); err != nil {
				return
			}
		}
	}()
	closed, _ := closedWithin(conn, 3*time.Second)
	close(stop)
	if !closed {
		t.Fatalf("a client trickling headers was not cut within 3s (ReadHeaderTimeout 300ms)")
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("cut after %v, before ReadHeaderTimeout", took)
	}
	// A connection that sends nothing at all is closed the same way.
	idle := h.dial()
	if closed, _ := closedWithin(idle, 3*time.Second); !closed {
		t.Errorf("a silent connection was not closed at ReadHeaderTimeout")
	}
	wantUpstreamTotal(t, h.fake, 0, "")
}

func TestSlowWriteBodyIsBoundedAndNeverForwarded(t *testing.T) {
	h := limitsHarness(t, app.Options{BodyTimeout: 300 * time.Millisecond}, nil)
	conn := h.dial()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: kproxy\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nKALSHI-ACCESS-KEY: k\r\n\r\n{\"ticker\":", ordersPath)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for range 60 {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := io.WriteString(conn, " "); err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("slow write body: %v, want a 408", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), `"code":"request_timeout"`) {
		t.Errorf("slow write body: %d %s, want 408 request_timeout", resp.StatusCode, body)
	}
	wantUpstreamTotal(t, h.fake, 0, "half a write is never sent")
	// A whole body arriving in time is forwarded once.
	a := send(http.MethodPost, h.url(ordersPath), []byte(`{"ticker":"KXBIGSERIES-26JUN30-M001","side":"yes","count":1}`), "KALSHI-ACCESS-KEY", "k", "KALSHI-ACCESS-TIMESTAMP", "1", "KALSHI-ACCESS-SIGNATURE", "s", "Content-Type", "application/json")
	if a.status/100 != 2 || h.fake.Total() != 1 {
		t.Errorf("write in time: %d %s, upstream saw %d; want 2xx, once", a.status, a.body, h.fake.Total())
	}
	// Over 1 MiB: 413, not forwarded.
	a = send(http.MethodPost, h.url(ordersPath), bytes.Repeat([]byte("x"), proxy.MaxWriteBody+1), "KALSHI-ACCESS-KEY", "k")
	if a.status != http.StatusRequestEntityTooLarge || !strings.Contains(string(a.body), "body_too_large") {
		t.Errorf("write body over 1 MiB: %d %s, want 413 body_too_large", a.status, a.body)
	}
	wantUpstreamTotal(t, h.fake, 1, "")
}

func TestManyIdleConnectionsDoNotBlockOthers(t *testing.T) {
	h := limitsHarness(t, app.Options{}, func(hs *http.Server) {
		hs.ReadHeaderTimeout = 500 * time.Millisecond
		hs.IdleTimeout = 500 * time.Millisecond
	})
	var conns []net.Conn
	for range 200 {
		conns = append(conns, h.dial())
	}
	// Keep-alive connections that finished a request and went idle.
	for range 20 {
		c := h.dial()
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: kproxy\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		conns = append(conns, c)
	}
	start := time.Now()
	if a := h.send(http.MethodGet, metaSeries, nil); a.status != http.StatusOK {
		t.Errorf("GET beside 220 idle connections: %d, want 200", a.status)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("GET beside 220 idle connections took %v", took)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for _, c := range conns {
		wg.Go(func() {
			if closed, _ := closedWithin(c, 5*time.Second); !closed {
				mu.Lock()
				open++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if open > 0 {
		t.Errorf("%d idle connections still open 5s later, want all closed by ReadHeaderTimeout/IdleTimeout (500ms)", open)
	}
}

func TestOversizedBatchBody(t *testing.T) {
	h := limitsHarness(t, app.Options{}, nil)
	body := `{"requests":[{"id":"` + strings.Repeat("x", 2<<20) + `","path":"` + metaSeries + `"}]}`
	a := h.send(http.MethodPost, "/batch", []byte(body))
	wantKproxyError(t, "batch body over 1 MiB", a, http.StatusRequestEntityTooLarge, "body_too_large", "")
	wantUpstreamTotal(t, h.fake, 0, "")
}

func TestSlowReaderHoldsNoSharedFetch(t *testing.T) {
	h := limitsHarness(t, app.Options{}, nil)
	const path = "/trade-api/v2/series/KXSLOWREADER"
	big := `{"series":{"ticker":"KXSLOWREADER","notes":"` + strings.Repeat("z", 16<<20) + `"}}`
	h.fake.Handle("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, big)
	})
	// The slow reader starts the fetch, then reads nothing.
	slow := h.dial()
	fmt.Fprintf(slow, "GET %s HTTP/1.1\r\nHost: kproxy\r\nAccept-Encoding: identity\r\n\r\n", path)
	kproxytest.Eventually(t, 10*time.Second, "the slow reader's fetch is stored", func() bool {
		_, ok := h.app.Store.Get(path)
		return ok
	})
	// Its answer is stuck in a full socket buffer; others are answered.
	for range 3 {
		a := h.send(http.MethodGet, path, nil)
		if a.status != http.StatusOK || a.header.Get("X-Cache") != "HIT" || len(a.body) != len(big) {
			t.Errorf("same key beside a slow reader: %d X-Cache %q, %d bytes; want a whole 200 HIT", a.status, a.header.Get("X-Cache"), len(a.body))
		}
	}
	if a := h.send(http.MethodGet, metaSeries, nil); a.status != http.StatusOK {
		t.Errorf("other key beside a slow reader: %d", a.status)
	}
	if got := h.fake.Count(path); got != 1 {
		t.Errorf("upstream saw %d requests for the key, want 1", got)
	}
}

func TestSmugglingShapesAreNotForwarded(t *testing.T) {
	// Each request carries, as body, a second request that must never
	// reach the upstream.
	const hidden = "GET /trade-api/v2/portfolio/balance HTTP/1.1\r\nHost: kproxy\r\n\r\n"
	chunk := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(hidden), hidden)
	tests := []struct {
		name    string
		req     string
		allowed []int // statuses that are a clear refusal
	}{
		{"duplicate Content-Length, differing", "POST " + ordersPath + " HTTP/1.1\r\nHost: kproxy\r\nContent-Length: 0\r\nContent-Length: " + fmt.Sprint(len(hidden)) + "\r\n\r\n" + hidden, []int{400}},
		{"Transfer-Encoding chunked, identity", "POST " + ordersPath + " HTTP/1.1\r\nHost: kproxy\r\nTransfer-Encoding: chunked, identity\r\n\r\n" + chunk, []int{400, 501}},
		{"two Transfer-Encoding fields", "POST " + ordersPath + " HTTP/1.1\r\nHost: kproxy\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n" + chunk, []int{400, 501}},
		{"Transfer-Encoding identity", "POST " + ordersPath + " HTTP/1.1\r\nHost: kproxy\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello" + hidden, []int{400, 501}},
		{"bad Content-Length", "POST " + ordersPath + " HTTP/1.1\r\nHost: kproxy\r\nContent-Length: -1\r\n\r\n" + hidden, []int{400}},
		{"space before colon", "POST " + ordersPath + " HTTP/1.1\r\nHost: kproxy\r\nContent-Length : 5\r\n\r\nhello" + hidden, []int{400}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := limitsHarness(t, app.Options{}, nil)
			resp, body, err := h.raw(tt.req)
			if err == nil && !containsInt(tt.allowed, resp.StatusCode) {
				t.Errorf("status %d %s, want one of %v", resp.StatusCode, body, tt.allowed)
			}
			if got := h.fake.Total(); got != 0 {
				t.Errorf("upstream saw %d requests (%v), want 0", got, paths(h.fake.Requests()))
			}
		})
	}
	// Both framings, or the same Content-Length twice: net/http keeps one
	// framing (chunked wins and Content-Length is dropped; identical
	// lengths collapse) and kproxy forwards one request with one framing,
	// so nothing hidden in the body is ever a second upstream request.
	for name, req := range map[string]string{
		"Content-Length and Transfer-Encoding": "POST " + ordersPath + " HTTP/1.1\r\nHost: kproxy\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunk,
		"duplicate Content-Length, same value": "POST " + ordersPath + " HTTP/1.1\r\nHost: kproxy\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}" + hidden,
	} {
		t.Run(name, func(t *testing.T) {
			h := limitsHarness(t, app.Options{}, nil)
			if _, _, err := h.raw(req); err != nil {
				t.Logf("no response: %v", err)
			}
			for _, r := range h.fake.Requests() {
				if r.Path != ordersPath {
					t.Errorf("upstream saw %s %s, a request hidden in the body", r.Method, r.Path)
				}
			}
			if got := h.fake.Count(ordersPath); got > 1 {
				t.Errorf("upstream saw the write %d times, want at most once", got)
			}
		})
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func paths(rs []kalshitest.Recorded) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}

func TestHostHeadersSteerNeitherUpstreamNorKey(t *testing.T) {
	h := limitsHarness(t, app.Options{}, nil)
	resp, _, err := h.raw("GET " + metaSeries + " HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nForwarded: host=evil.example\r\nConnection: close\r\n\r\n")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET with a foreign Host: %v %v, want 200 from the configured upstream", statusOf(resp), err)
	}
	if got := h.fake.Count(metaSeries); got != 1 {
		t.Errorf("configured upstream saw %d requests, want 1", got)
	}
	for _, r := range h.fake.Requests() {
		if r.Header.Get("X-Forwarded-Host") == "" && strings.Contains(r.Header.Get("Host"), "evil") {
			t.Errorf("upstream request carried Host %q", r.Header.Get("Host"))
		}
	}
	// A different Host is the same cache entry.
	resp, _, err = h.raw("GET " + metaSeries + " HTTP/1.1\r\nHost: other.example\r\nX-Forwarded-Host: x\r\nConnection: close\r\n\r\n")
	if err != nil || resp.Header.Get("X-Cache") != "HIT" {
		t.Errorf("same path with another Host: %v X-Cache %q, want HIT (Host is not part of the key)", err, resp.Header.Get("X-Cache"))
	}
	// Absolute form naming another host goes to the configured upstream.
	resp, _, err = h.raw("GET http://evil.example" + metaSeries + "?x=1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("absolute-form: %v %v, want 200", statusOf(resp), err)
	}
	if got := h.fake.CountQuery(metaSeries + "?x=1"); got != 1 {
		t.Errorf("configured upstream saw %d absolute-form requests, want 1", got)
	}
	// Absolute form off-route is a 404, never forwarded.
	resp, _, err = h.raw("GET http://evil.example/admin HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("absolute-form off-route: %v %v, want 404", statusOf(resp), err)
	}
	// HTTP/1.0 without Host is served.
	resp, _, err = h.raw("GET " + metaSeries + " HTTP/1.0\r\n\r\n")
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("X-Cache") != "HIT" {
		t.Errorf("HTTP/1.0: %v %v X-Cache %q, want a 200 HIT", statusOf(resp), err, resp.Header.Get("X-Cache"))
	}
	wantUpstreamTotal(t, h.fake, 2, "")
}
