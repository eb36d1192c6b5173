package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/httperr"
)

// Issue 16: an admin route without an admin token said "kproxy forwards
// only /trade-api/v2/*", which sent users looking in the wrong place.
func TestAdminOffSaysHowToEnableIt(t *testing.T) {
	s, _ := newFuzzServerFetcher(t, &recorder{})
	for _, tt := range []struct{ method, target string }{
		{http.MethodGet, "/admin/cache"},
		{http.MethodDelete, "/admin/cache?prefix=/trade-api/v2/"},
		{http.MethodGet, "/admin/other"},
	} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(tt.method, tt.target, nil))
		var body httperr.Body
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON error: %v", tt.method, tt.target, w.Body, err)
		}
		if w.Code != http.StatusNotFound || body.Code != httperr.CodeAdminOff {
			t.Errorf("%s %s = %d %q, want 404 %s", tt.method, tt.target, w.Code, body.Code, httperr.CodeAdminOff)
		}
		for _, want := range []string{"admin.token", "KPROXY_ADMIN_TOKEN"} {
			if !strings.Contains(body.Error, want) {
				t.Errorf("%s %s: message %q does not name %s", tt.method, tt.target, body.Error, want)
			}
		}
	}
}

// A Kproxy-Client value kproxy does not accept is a 400 with its own code,
// on the cached path (when a fetch would start) and the pass-through.
func TestBadClientNameRefused(t *testing.T) {
	rec := &recorder{}
	s, _ := newFuzzServerFetcher(t, rec)
	for _, target := range []string{"/trade-api/v2/markets/KXA-1", "/trade-api/v2/portfolio/balance"} {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.Header.Set("Kproxy-Client", "no spaces allowed")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		var body httperr.Body
		json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != http.StatusBadRequest || body.Code != httperr.CodeBadClient {
			t.Errorf("GET %s = %d %q, want 400 %s", target, w.Code, body.Code, httperr.CodeBadClient)
		}
	}
	if n := len(rec.take()); n != 0 {
		t.Errorf("upstream requests = %d, want 0", n)
	}
}

// Kproxy-Client is kproxy's own header: the pass-through never forwards it.
func TestClientNameNotForwarded(t *testing.T) {
	rec := &recorder{}
	s, _ := newFuzzServerFetcher(t, rec)
	r := httptest.NewRequest(http.MethodGet, "/trade-api/v2/portfolio/balance", nil)
	r.Header.Set("Kproxy-Client", "bot-1")
	r.Header.Set("Authorization", "Bearer client")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	reqs := rec.take()
	if w.Code != http.StatusOK || len(reqs) != 1 {
		t.Fatalf("pass-through = %d with %d upstream requests, want 200 with 1", w.Code, len(reqs))
	}
	if v := reqs[0].Header.Get("Kproxy-Client"); v != "" {
		t.Errorf("upstream Kproxy-Client = %q, want none", v)
	}
	if v := reqs[0].Header.Get("Authorization"); v != "Bearer client" {
		t.Errorf("upstream Authorization = %q, want the client's own", v)
	}
}
