package upstream

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kproxy/kproxy/breaker"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/metrics"
)

// origin is a counting test upstream whose answer is set per test.
type origin struct {
	srv     *httptest.Server
	hits    atomic.Int64
	handler atomic.Pointer[http.HandlerFunc]
}

func newOrigin(t *testing.T, h http.HandlerFunc) *origin {
	t.Helper()
	o := &origin{}
	o.handler.Store(&h)
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		(*o.handler.Load())(w, r)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) url() *url.URL {
	u, _ := url.Parse(o.srv.URL)
	return u
}

func status(code int, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		io.WriteString(w, `{"error":"`+http.StatusText(code)+`"}`)
	}
}

// newClient builds a Client for u with fast retries; mutate adjusts cfg.
func newClient(t *testing.T, u *url.URL, mutate func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Origin:     u,
		Timeout:    time.Second,
		MaxRetries: 2,
		MaxWait:    time.Second,
		RetryBase:  time.Millisecond,
		RetryCap:   5 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// get sends a GET for path and returns the response (body read) or error,
// and the attempts the client counted.
func get(c *Client, ctx context.Context, path string) (*http.Response, []byte, int, error) {
	call := &Call{Route: "/test"}
	resp, err := c.Get(ctx, call, path, "", http.Header{})
	if err != nil {
		return nil, nil, call.Attempts, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b, call.Attempts, nil
}

func post(c *Client, ctx context.Context, u *url.URL, body string) (*http.Response, int, error) {
	call := &Call{Route: "/test"}
	ctx = WithCall(ctx, call)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u.String()+"/trade-api/v2/portfolio/orders", strings.NewReader(body))
	resp, err := c.RoundTrip(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, call.Attempts, err
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *Error", err, err)
	}
	return e
}

func TestBackoffBounds(t *testing.T) {
	tests := []struct {
		name      string
		base, cap time.Duration
		attempt   int
		want      time.Duration // the ceiling
	}{
		{"first retry", 100 * time.Millisecond, 2 * time.Second, 0, 100 * time.Millisecond},
		{"second retry", 100 * time.Millisecond, 2 * time.Second, 1, 200 * time.Millisecond},
		{"fifth retry", 100 * time.Millisecond, 2 * time.Second, 4, 1600 * time.Millisecond},
		{"capped", 100 * time.Millisecond, 2 * time.Second, 5, 2 * time.Second},
		{"far past the cap", 100 * time.Millisecond, 2 * time.Second, 1000, 2 * time.Second},
		{"huge base does not overflow", time.Hour, 2 * time.Hour, 62, 2 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Client{base: tt.base, cap: tt.cap}
			var hi time.Duration
			for i := 0; i < 2000; i++ {
				d := c.backoff(tt.attempt)
				if d <= 0 || d > tt.want {
					t.Fatalf("backoff(%d) = %v, want within (0, %v]", tt.attempt, d, tt.want)
				}
				hi = max(hi, d)
			}
			// Full jitter: the draws spread over the whole range.
			if hi < tt.want/2 {
				t.Errorf("backoff(%d): largest of 2000 draws = %v, want some above %v (jitter over the whole range)", tt.attempt, hi, tt.want/2)
			}
		})
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Now()
	tests := []struct {
		in       string
		ok       bool
		min, max time.Duration
	}{
		{"", false, 0, 0},
		{"0", true, 0, 0},
		{"1", true, time.Second, time.Second},
		{"120", true, 2 * time.Minute, 2 * time.Minute},
		{"-1", false, 0, 0},
		{"1.5", false, 0, 0},
		{"soon", false, 0, 0},
		{"99999999999999999999", false, 0, 0}, // overflows int64: not a number
		{"9999999999999", true, time.Duration(1<<30) * time.Second, time.Duration(1<<30) * time.Second},
		{now.Add(30 * time.Second).UTC().Format(http.TimeFormat), true, 28 * time.Second, 30 * time.Second},
		{now.Add(-time.Hour).UTC().Format(http.TimeFormat), true, 0, 0},
		{now.Add(time.Hour).UTC().Format(time.RFC850), true, 59 * time.Minute, time.Hour},
	}
	for _, tt := range tests {
		got, ok := retryAfter(tt.in)
		if ok != tt.ok || got < tt.min || got > tt.max {
			t.Errorf("retryAfter(%q) = %v, %v; want %v within [%v, %v]", tt.in, got, ok, tt.ok, tt.min, tt.max)
		}
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		status int
		err    error
		reason string
		retry  bool
	}{
		{200, nil, "", false},
		{400, nil, "", false},
		{404, nil, "", false},
		{429, nil, "429", true},
		{500, nil, "", false},
		{501, nil, "", false},
		{502, nil, "502", true},
		{503, nil, "503", true},
		{504, nil, "504", true},
		{0, &Error{Code: "upstream_unreachable"}, "connection", true},
		{0, &Error{Code: "upstream_timeout"}, "", false},
		{0, &Error{Code: "client_closed"}, "", false},
		{0, &Error{Code: "rate_limited"}, "", false},
		{0, &Error{Code: "breaker_open"}, "", false},
		{0, errors.New("something else"), "", false},
	}
	for _, tt := range tests {
		reason, retry := retryable(tt.status, tt.err)
		if reason != tt.reason || retry != tt.retry {
			t.Errorf("retryable(%d, %v) = %q, %v; want %q, %v", tt.status, tt.err, reason, retry, tt.reason, tt.retry)
		}
	}
}

func TestGetRetriesOnlyTransientStatuses(t *testing.T) {
	tests := []struct {
		status       int
		wantAttempts int
	}{
		{200, 1},
		{404, 1},
		{500, 1},
		{429, 3},
		{502, 3},
		{503, 3},
		{504, 3},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			o := newOrigin(t, status(tt.status))
			m := metrics.New(func() (int, int64) { return 0, 0 })
			c := newClient(t, o.url(), func(c *Config) { c.Metrics = m })
			resp, _, n, err := get(c, context.Background(), "/trade-api/v2/markets")
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			if got := o.hits.Load(); got != int64(tt.wantAttempts) || n != tt.wantAttempts {
				t.Errorf("upstream saw %d requests, client counted %d attempts; want %d", got, n, tt.wantAttempts)
			}
			if got, want := counter(t, m.UpstreamRetries.WithLabelValues(strconv.Itoa(tt.status))), float64(tt.wantAttempts-1); got != want {
				t.Errorf("kproxy_upstream_retries_total{reason=%q} = %v, want %v", strconv.Itoa(tt.status), got, want)
			}
		})
	}
}

func counter(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestRetryAfterIsHonoured(t *testing.T) {
	o := newOrigin(t, status(429, "Retry-After", "1"))
	c := newClient(t, o.url(), func(c *Config) { c.MaxRetries = 1 })
	start := time.Now()
	resp, _, n, err := get(c, context.Background(), "/trade-api/v2/markets")
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 429 || n != 2 || o.hits.Load() != 2 {
		t.Errorf("status %d after %d attempts (%d arrivals), want 429 after 2", resp.StatusCode, n, o.hits.Load())
	}
	if elapsed < time.Second {
		t.Errorf("retried after %v, want at least the 1s Retry-After", elapsed)
	}
}

func TestAbsurdRetryAfterIsNotObeyed(t *testing.T) {
	for _, ra := range []string{"86400", time.Now().Add(24 * time.Hour).UTC().Format(http.TimeFormat)} {
		t.Run(ra, func(t *testing.T) {
			o := newOrigin(t, status(429, "Retry-After", ra))
			c := newClient(t, o.url(), func(c *Config) { c.MaxRetryAfter = 50 * time.Millisecond })
			start := time.Now()
			resp, _, n, err := get(c, context.Background(), "/trade-api/v2/markets")
			if err != nil {
				t.Fatal(err)
			}
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Errorf("answered after %v, want at once", elapsed)
			}
			if resp.StatusCode != 429 || n != 1 || o.hits.Load() != 1 {
				t.Errorf("status %d after %d attempts (%d arrivals), want the 429 after 1", resp.StatusCode, n, o.hits.Load())
			}
		})
	}
}

func TestRetryAfterInThePastRetriesAfterBackoff(t *testing.T) {
	o := newOrigin(t, status(503, "Retry-After", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)))
	c := newClient(t, o.url(), nil)
	resp, _, n, err := get(c, context.Background(), "/trade-api/v2/markets")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || n != 3 {
		t.Errorf("status %d after %d attempts, want 503 after 3", resp.StatusCode, n)
	}
}

func TestWritesAreNeverRetried(t *testing.T) {
	for _, tt := range []struct {
		name   string
		origin http.HandlerFunc
		want   int
	}{
		{"503", status(503), 503},
		{"429 with Retry-After", status(429, "Retry-After", "0"), 429},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := newOrigin(t, tt.origin)
			c := newClient(t, o.url(), nil)
			resp, n, err := post(c, context.Background(), o.url(), `{"ticker":"X"}`)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.want || n != 1 || o.hits.Load() != 1 {
				t.Errorf("status %d after %d attempts (%d arrivals), want %d after 1", resp.StatusCode, n, o.hits.Load(), tt.want)
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		u := closedAddr(t)
		c := newClient(t, u, nil)
		_, n, err := post(c, context.Background(), u, `{"ticker":"X"}`)
		if e := asError(t, err); e.Code != "upstream_unreachable" || e.Status != 502 {
			t.Errorf("error = %d %s, want 502 upstream_unreachable", e.Status, e.Code)
		}
		if n != 1 {
			t.Errorf("attempts = %d, want 1", n)
		}
	})
}

// closedAddr is the URL of a loopback port nobody listens on.
func closedAddr(t *testing.T) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return &url.URL{Scheme: "http", Host: addr}
}

func TestConnectionErrorsAreRetried(t *testing.T) {
	c := newClient(t, closedAddr(t), nil)
	_, _, n, err := get(c, context.Background(), "/trade-api/v2/markets")
	if e := asError(t, err); e.Status != 502 || e.Code != "upstream_unreachable" {
		t.Errorf("error = %d %s, want 502 upstream_unreachable", e.Status, e.Code)
	}
	if n != 3 {
		t.Errorf("attempts = %d, want 3 (1 + max_retries 2)", n)
	}
}

func TestTimeoutsAreNotRetried(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	c := newClient(t, o.url(), func(c *Config) { c.Timeout = 50 * time.Millisecond })
	start := time.Now()
	_, _, n, err := get(c, context.Background(), "/trade-api/v2/markets")
	elapsed := time.Since(start)
	if e := asError(t, err); e.Status != 504 || e.Code != "upstream_timeout" {
		t.Errorf("error = %d %s, want 504 upstream_timeout", e.Status, e.Code)
	}
	if n != 1 || o.hits.Load() != 1 {
		t.Errorf("%d attempts (%d arrivals), want 1", n, o.hits.Load())
	}
	if elapsed < 50*time.Millisecond || elapsed > time.Second {
		t.Errorf("gave up after %v, want about one 50ms timeout", elapsed)
	}
}

func TestCallerDeadlineStopsRetries(t *testing.T) {
	// Retry-After makes the delay at least 1s (the jittered backoff alone
	// may be short).
	o := newOrigin(t, status(503, "Retry-After", "1"))
	c := newClient(t, o.url(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, _, n, err := get(c, ctx, "/trade-api/v2/markets")
	if err == nil && resp.StatusCode != 503 {
		t.Errorf("status = %d, want the 503 or an error", resp.StatusCode)
	}
	if elapsed := time.Since(start); elapsed > 500*time.Millisecond {
		t.Errorf("returned after %v, want within the caller's 100ms deadline", elapsed)
	}
	if n != 1 {
		t.Errorf("attempts = %d, want 1 (the 1s delay outlasts the deadline)", n)
	}
}

func TestLimiterRejectsBeyondMaxWaitAndReturnsTheToken(t *testing.T) {
	o := newOrigin(t, status(200))
	c := newClient(t, o.url(), func(c *Config) { c.ReadRate, c.MaxWait = 2, 0 })
	for i := 0; i < 2; i++ {
		if _, _, _, err := get(c, context.Background(), "/trade-api/v2/markets"); err != nil {
			t.Fatalf("request %d of the 2-token burst: %v", i+1, err)
		}
	}
	start := time.Now()
	_, _, n, err := get(c, context.Background(), "/trade-api/v2/markets")
	e := asError(t, err)
	if e.Status != 429 || e.Code != "rate_limited" || e.RetryAfter < time.Second {
		t.Errorf("error = %d %s Retry-After %v, want 429 rate_limited with Retry-After >= 1s", e.Status, e.Code, e.RetryAfter)
	}
	if elapsed := time.Since(start); elapsed > 50*time.Millisecond {
		t.Errorf("rejected after %v, want at once (max_wait 0)", elapsed)
	}
	if n != 0 || o.hits.Load() != 2 {
		t.Errorf("rejected request made %d attempts (%d arrivals), want 0 (2)", n, o.hits.Load())
	}
	// The rejected reservation was cancelled: after 750ms (1.5 tokens at
	// 2/s) one more request fits. Had it kept its token, the bucket would
	// hold only 0.5.
	time.Sleep(750 * time.Millisecond) // the bucket refills on the wall clock: that is what is tested
	if _, _, _, err := get(c, context.Background(), "/trade-api/v2/markets"); err != nil {
		t.Errorf("request after refill: %v; the rejected request must not keep its token", err)
	}
}

func TestLimiterWaitEndsWithTheCaller(t *testing.T) {
	o := newOrigin(t, status(200))
	c := newClient(t, o.url(), func(c *Config) { c.ReadRate, c.MaxWait = 1, 10*time.Second })
	if _, _, _, err := get(c, context.Background(), "/trade-api/v2/markets"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, n, err := get(c, ctx, "/trade-api/v2/markets")
	if err == nil || n != 0 {
		t.Fatalf("waiting request: attempts %d, err %v; want none and an error", n, err)
	}
	if elapsed := time.Since(start); elapsed > 500*time.Millisecond {
		t.Errorf("returned after %v, want when the caller's 50ms ran out", elapsed)
	}
	// Its reservation was cancelled: the bucket is not in debt.
	if tok := c.read.(*LocalLimiter).lim.Tokens(); tok < -0.01 {
		t.Errorf("tokens after a cancelled wait = %.2f, want >= 0", tok)
	}
}

func TestWritesHaveTheirOwnBucket(t *testing.T) {
	o := newOrigin(t, status(200))
	c := newClient(t, o.url(), func(c *Config) { c.ReadRate, c.WriteRate, c.MaxWait = 1, 1, 0 })
	if _, _, _, err := get(c, context.Background(), "/trade-api/v2/markets"); err != nil {
		t.Fatalf("first GET: %v", err)
	}
	if _, _, err := post(c, context.Background(), o.url(), "{}"); err != nil {
		t.Errorf("POST after the read bucket emptied: %v, want it sent (own bucket)", err)
	}
	if _, _, _, err := get(c, context.Background(), "/trade-api/v2/markets"); asError(t, err).Code != "rate_limited" {
		t.Errorf("second GET: %v, want rate_limited", err)
	}
	if _, _, err := post(c, context.Background(), o.url(), "{}"); asError(t, err).Code != "rate_limited" {
		t.Errorf("second POST: %v, want rate_limited", err)
	}
	if got := o.hits.Load(); got != 2 {
		t.Errorf("upstream saw %d requests, want 2", got)
	}
}

func TestOpenBreakerFailsFastWithoutSpendingATokenOrTouchingUpstream(t *testing.T) {
	o := newOrigin(t, status(500))
	b := breaker.New(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	c := newClient(t, o.url(), func(c *Config) { c.Breaker, c.ReadRate, c.WriteRate, c.MaxWait = b, 2, 2, 10*time.Second })
	if _, _, _, err := get(c, context.Background(), "/trade-api/v2/markets"); err != nil {
		t.Fatal(err)
	}
	if b.State() != breaker.Open {
		t.Fatalf("breaker %v after a 500 with threshold 1, want open", b.State())
	}
	for i := 0; i < 10; i++ {
		start := time.Now()
		_, _, n, err := get(c, context.Background(), "/trade-api/v2/markets")
		e := asError(t, err)
		if e.Status != 503 || e.Code != "breaker_open" || e.RetryAfter < 59*time.Minute {
			t.Errorf("error = %d %s Retry-After %v, want 503 breaker_open with Retry-After ~1h", e.Status, e.Code, e.RetryAfter)
		}
		if elapsed := time.Since(start); elapsed > 50*time.Millisecond || n != 0 {
			t.Errorf("answered after %v with %d attempts, want at once with none (the bucket is empty, so a token wait would show)", elapsed, n)
		}
		if _, n, err := post(c, context.Background(), o.url(), "{}"); asError(t, err).Code != "breaker_open" || n != 0 {
			t.Errorf("POST: %v after %d attempts, want breaker_open after none", err, n)
		}
	}
	if got := o.hits.Load(); got != 1 {
		t.Errorf("upstream saw %d requests, want 1", got)
	}
	if tok := c.write.(*LocalLimiter).lim.Tokens(); tok < 1.99 {
		t.Errorf("write tokens = %.2f, want 2 (breaker rejections spend none)", tok)
	}
}

func TestRetriesStopWhenTheBreakerOpens(t *testing.T) {
	o := newOrigin(t, status(503))
	b := breaker.New(breaker.Config{ConsecutiveFailures: 2, OpenTimeout: time.Hour})
	c := newClient(t, o.url(), func(c *Config) { c.Breaker, c.MaxRetries = b, 5 })
	_, _, n, err := get(c, context.Background(), "/trade-api/v2/markets")
	if e := asError(t, err); e.Code != "breaker_open" {
		t.Errorf("error = %v, want breaker_open", err)
	}
	if n != 2 || o.hits.Load() != 2 {
		t.Errorf("%d attempts (%d arrivals), want 2 (the breaker opens after 2 failures)", n, o.hits.Load())
	}
}

func TestCallerHangingUpDoesNotTripTheBreaker(t *testing.T) {
	arrived := make(chan struct{}, 10)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	b := breaker.New(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	c := newClient(t, o.url(), func(c *Config) { c.Breaker = b })
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-arrived; cancel() }()
		_, _, n, err := get(c, ctx, "/trade-api/v2/markets")
		if e := asError(t, err); e.Code != "client_closed" || n != 1 {
			t.Errorf("error = %v after %d attempts, want client_closed after 1", err, n)
		}
	}
	if got := b.State(); got != breaker.Closed {
		t.Errorf("breaker %v after 3 abandoned requests, want closed", got)
	}
}

func writeKey(t *testing.T, der []byte, typ string) string {
	t.Helper()
	return writeFile(t, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestOwnKeySigning(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen []http.Header
		bad  []string
	)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.Header.Clone())
		if r.Header.Get("KALSHI-ACCESS-KEY") == "kproxy-key" {
			if err := kalshitest.VerifyRequest(&key.PublicKey, r); err != nil {
				bad = append(bad, r.URL.String()+": "+err.Error())
			}
		}
		w.WriteHeader(200)
	})
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	signer, err := LoadSigner("kproxy-key", writeKey(t, pkcs8, "PRIVATE KEY"))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, o.url(), func(c *Config) { c.Signer = signer })
	client := http.Header{
		"Kalshi-Access-Key":       {"client-key"},
		"Kalshi-Access-Signature": {"client-sig"},
		"Kalshi-Access-Timestamp": {"1"},
		"Authorization":           {"Bearer client-token"},
	}
	resp, err := c.Get(context.Background(), &Call{Credentials: OwnKey}, "/trade-api/v2/markets", "limit=5&status=open", client.Clone())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = c.Get(context.Background(), &Call{}, "/trade-api/v2/markets", "", client.Clone())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("upstream saw %d requests, want 2", len(seen))
	}
	own, passed := seen[0], seen[1]
	if got := own.Get("KALSHI-ACCESS-KEY"); got != "kproxy-key" {
		t.Errorf("own-key fetch: KALSHI-ACCESS-KEY = %q, want kproxy-key", got)
	}
	if got := own.Get("Authorization"); got != "" {
		t.Errorf("own-key fetch: Authorization = %q, want none (the client's credentials never go with kproxy's key)", got)
	}
	if ts, err := strconv.ParseInt(own.Get("KALSHI-ACCESS-TIMESTAMP"), 10, 64); err != nil || time.Since(time.UnixMilli(ts)).Abs() > time.Minute {
		t.Errorf("own-key fetch: KALSHI-ACCESS-TIMESTAMP = %q, want now in Unix ms", own.Get("KALSHI-ACCESS-TIMESTAMP"))
	}
	if len(bad) > 0 {
		t.Errorf("signatures that did not verify: %v", bad)
	}
	if got := passed.Get("KALSHI-ACCESS-KEY"); got != "client-key" || passed.Get("Authorization") != "Bearer client-token" {
		t.Errorf("request with Forward credentials: key %q, Authorization %q; want the client's, untouched", got, passed.Get("Authorization"))
	}
	if got := client.Get("KALSHI-ACCESS-KEY"); got != "client-key" {
		t.Errorf("caller's header modified: KALSHI-ACCESS-KEY = %q", got)
	}
}

func TestLoadSigner(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	missing := filepath.Join(t.TempDir(), "nope.pem")
	tests := []struct {
		name    string
		file    string
		wantErr bool
	}{
		{"PKCS#1", writeKey(t, x509.MarshalPKCS1PrivateKey(key), "RSA PRIVATE KEY"), false},
		{"PKCS#8", writeKey(t, pkcs8, "PRIVATE KEY"), false},
		{"missing file", missing, true},
		{"not PEM", writeFile(t, "not a key"), true},
		{"PEM but not a key", writeKey(t, []byte("garbage"), "PRIVATE KEY"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LoadSigner("id", tt.file)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.file) || !strings.Contains(err.Error(), "upstream.private_key_file") {
					t.Errorf("LoadSigner(%q) error = %v, want one naming the key and the file", tt.file, err)
				}
				return
			}
			if err != nil || s == nil {
				t.Errorf("LoadSigner(%q) = %v, %v; want a signer", tt.file, s, err)
			}
		})
	}
}
