package app_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/clock"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

// harness is a whole kproxy in front of a fake Kalshi, both on loopback
// (kproxytest), with the short names these tests use.
type harness struct {
	*kproxytest.Proxy
	t     *testing.T
	fake  *kalshitest.Server
	app   *app.App
	logs  *kproxytest.Buffer
	clock *clock.Fake
}

// newHarness starts the fake upstream and kproxy with the test defaults
// (generous rate limits, fast retries, a fake clock), adjusted by mutate
// and then by opts.
func newHarness(t *testing.T, mutate func(*config.Config), opts ...kproxytest.Option) *harness {
	t.Helper()
	if mutate != nil {
		opts = append([]kproxytest.Option{kproxytest.WithConfig(mutate)}, opts...)
	}
	p := kproxytest.New(t, opts...)
	return &harness{Proxy: p, t: t, fake: p.Fake, app: p.App, logs: p.Logs, clock: p.Clock}
}

// url is kproxy's URL for path.
func (h *harness) url(path string) string { return h.URL + path }

// get sends a GET with header pairs ("Name", "value", ...) and returns the
// response with its body read.
func (h *harness) get(path string, header ...string) (*http.Response, []byte) {
	h.t.Helper()
	return h.Do(http.MethodGet, path, nil, header...)
}

func (h *harness) do(method, path string, body []byte, header ...string) (*http.Response, []byte) {
	h.t.Helper()
	return h.Do(method, path, body, header...)
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

// wantUpstreamTotal checks that fake received want requests in all; why,
// if not empty, says why that many.
func wantUpstreamTotal(t testing.TB, fake *kalshitest.Server, want int, why string) {
	t.Helper()
	if why != "" {
		why = " (" + why + ")"
	}
	if got := fake.Total(); got != want {
		t.Errorf("upstream saw %d requests, want %d%s", got, want, why)
	}
}
