package app_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
)

// harness is a whole kproxy in front of a fake Kalshi, both on loopback.
type harness struct {
	t    *testing.T
	fake *kalshitest.Server
	up   *httptest.Server
	app  *app.App
	srv  *httptest.Server
	logs *syncBuffer

	stopped sync.Once
}

// syncBuffer collects logs from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newHarness starts the fake upstream and kproxy with the default
// configuration (generous rate limits, fast retries), adjusted by mutate.
func newHarness(t *testing.T, mutate func(*config.Config)) *harness {
	t.Helper()
	fake := kalshitest.New()
	up := httptest.NewServer(fake)
	t.Cleanup(up.Close)
	return newHarnessOn(t, fake, up, mutate)
}

// newHarnessOn is newHarness in front of a fake Kalshi already running (a
// restart: several kproxys, one after the other, in front of one fake).
func newHarnessOn(t *testing.T, fake *kalshitest.Server, up *httptest.Server, mutate func(*config.Config)) *harness {
	t.Helper()
	h := &harness{t: t, fake: fake, up: up, logs: &syncBuffer{}}
	cfg := config.Default()
	cfg.Cache.Disk.Path = "" // tests never write the real ~/.cache/kproxy
	cfg.Upstream.URL = h.up.URL
	rate := 10000.0
	cfg.Upstream.ReadRate, cfg.Upstream.WriteRate = &rate, &rate
	cfg.Upstream.Timeout = config.Duration(2 * time.Second)
	cfg.Batch.AutoWindow = 0
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	a, err := app.New(cfg, app.Options{LogOutput: h.logs, RetryBase: time.Millisecond, RetryCap: 5 * time.Millisecond})
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	h.app = a
	h.srv = httptest.NewServer(a.Server)
	t.Cleanup(h.stop)
	return h
}

// stop stops serving and closes the App (once; the test's cleanup calls
// it too).
func (h *harness) stop() {
	h.stopped.Do(func() {
		h.srv.Close()
		h.app.Fetcher.Wait()
		h.app.Close()
	})
}

// url is kproxy's URL for path.
func (h *harness) url(path string) string { return h.srv.URL + path }

// get sends a GET with header pairs ("Name", "value", ...) and returns the
// response with its body read.
func (h *harness) get(path string, header ...string) (*http.Response, []byte) {
	h.t.Helper()
	return h.do(http.MethodGet, path, nil, header...)
}

func (h *harness) do(method, path string, body []byte, header ...string) (*http.Response, []byte) {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url(path), rd)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// No transparent gzip: tests look at exactly what kproxy sends.
	req.Header.Set("Accept-Encoding", req.Header.Get("Accept-Encoding"))
	if req.Header.Get("Accept-Encoding") == "" {
		req.Header.Set("Accept-Encoding", "identity")
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

// wantHeader fails the test unless resp's header name has value want.
func wantHeader(t *testing.T, resp *http.Response, name, want string) {
	t.Helper()
	if got := resp.Header.Get(name); got != want {
		t.Errorf("%s %s: header %s = %q, want %q", resp.Request.Method, resp.Request.URL.Path, name, got, want)
	}
}

// wantJSONError fails the test unless resp is a kproxy JSON error with
// status and code.
func wantJSONError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("%s %s: status = %d, want %d (body %s)", resp.Request.Method, resp.Request.URL, resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type = %q, want application/json", resp.Request.URL, ct)
	}
	if !strings.Contains(string(body), `"code":"`+code+`"`) || !strings.Contains(string(body), `"error":`) {
		t.Errorf("%s: body = %s, want a JSON error with code %q", resp.Request.URL, body, code)
	}
}
