package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Issue 16: a call kproxy composed goes without any client credential when
// kproxy has no key of its own; a forwarded call keeps them.
func TestOwnKeyWithoutSignerSendsNoCredentials(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.WriteHeader(200)
	})
	c := newClient(t, o.url(), nil)
	client := http.Header{
		"Kalshi-Access-Key": {"k"}, "Kalshi-Access-Signature": {"s"}, "Kalshi-Access-Timestamp": {"1"},
		"Authorization": {"Bearer t"}, "Cookie": {"a=b"}, "X-Other": {"kept"},
	}
	for _, cred := range []Credentials{OwnKey, Forward} {
		resp, err := c.Get(context.Background(), &Call{Credentials: cred}, "/trade-api/v2/markets", "", client)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	for _, k := range clientCredentials {
		if v := seen[0].Get(k); v != "" {
			t.Errorf("OwnKey call without a signer: %s = %q, want none", k, v)
		}
		if v := seen[1].Get(k); v == "" {
			t.Errorf("Forward call: %s missing, want the client's", k)
		}
	}
	if seen[0].Get("X-Other") != "kept" {
		t.Error("OwnKey call dropped a header that is no credential")
	}
	if client.Get("Authorization") == "" {
		t.Error("the caller's header was modified")
	}
}

func TestConfigOnAttemptSeesEveryAttempt(t *testing.T) {
	o := newOrigin(t, status(503))
	type attempt struct {
		route, charge string
		status        int
	}
	var mu sync.Mutex
	var got []attempt
	c := newClient(t, o.url(), func(cfg *Config) {
		cfg.OnAttempt = func(call *Call, status int, err error) {
			mu.Lock()
			got = append(got, attempt{call.Route, call.ChargedTo(), status})
			mu.Unlock()
		}
	})
	call := &Call{Route: "/trade-api/v2/markets", Charge: "/batch"}
	resp, err := c.Get(context.Background(), call, "/trade-api/v2/markets", "", http.Header{})
	if err == nil {
		resp.Body.Close()
	}
	// The pass-through's way in: RoundTrip with the call in the context.
	pt := &Call{Route: "/trade-api/v2/portfolio/orders"}
	req := httptest.NewRequest(http.MethodPost, o.url().String()+"/trade-api/v2/portfolio/orders", strings.NewReader("{}"))
	req.RequestURI = ""
	if resp, err := c.RoundTrip(req.WithContext(WithCall(context.Background(), pt))); err == nil {
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 4 || int64(len(got)) != o.hits.Load() {
		t.Fatalf("OnAttempt calls = %v, want one per upstream arrival (%d)", got, o.hits.Load())
	}
	for i, a := range got[:3] {
		if a != (attempt{"/trade-api/v2/markets", "/batch", 503}) {
			t.Errorf("attempt %d = %+v, want the GET's route, charged to /batch, 503", i, a)
		}
	}
	if a := got[3]; a.route != pt.Route || a.charge != pt.Route {
		t.Errorf("pass-through attempt = %+v, want route and charge %s", a, pt.Route)
	}
	if call.Attempts != 3 || pt.Attempts != 1 {
		t.Errorf("Attempts = %d, %d; want 3 (2 retries), 1", call.Attempts, pt.Attempts)
	}
}

// Issue 16: kproxy's own 429 says it is kproxy's budget, which one, its
// rate and tier, and what to do.
func TestOwnRateLimitNamesTheBudget(t *testing.T) {
	o := newOrigin(t, status(200))
	c := newClient(t, o.url(), func(c *Config) { c.ReadRate, c.MaxWait, c.Tier = 1, 0, "basic" })
	get(c, context.Background(), "/trade-api/v2/markets")
	_, _, _, err := get(c, context.Background(), "/trade-api/v2/markets")
	if !errors.Is(err, ErrRateLimited) {
		t.Fatalf("error = %v, want rate_limited", err)
	}
	e := asError(t, err)
	want := "kproxy's read budget (1 requests/s, upstream.tier basic) is spent; retry after 1 s, use /batch, or set upstream.tier to your account's tier"
	if e.Msg != want || e.RetryAfter < time.Second {
		t.Errorf("message = %q, Retry-After %v; want %q, >= 1s", e.Msg, e.RetryAfter, want)
	}
}
