package app_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/config"
)

const adminAuth = "Bearer s3cret"

func adminHarness(t *testing.T) *harness {
	return newHarness(t, func(c *config.Config) { c.Admin.Token = "s3cret" })
}

func TestAdminPurgeByExactKey(t *testing.T) {
	h := adminHarness(t)
	const (
		open5 = marketList + "?status=open&limit=5"
		open  = marketList + "?status=open"
	)
	h.get(open5)
	h.get(open)
	h.get(metaSeries)
	// The key as a client would write it, parameters in another order:
	// normalized like a request, it names the entry of open5.
	key := url.QueryEscape(marketList + "?limit=5&status=open")
	resp, body := h.do(http.MethodDelete, "/admin/cache?key="+key, nil, "Authorization", adminAuth)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"purged":1`) || !strings.Contains(string(body), `"key":"/trade-api/v2/markets?limit=5\u0026status=open"`) {
		t.Fatalf("purge by key: %d %s", resp.StatusCode, body)
	}
	resp, _ = h.get(open5)
	wantHeader(t, resp, "X-Cache", "MISS")
	for _, p := range []string{open, metaSeries} {
		resp, _ = h.get(p)
		wantHeader(t, resp, "X-Cache", "HIT")
	}
	resp, body = h.do(http.MethodDelete, "/admin/cache?key="+url.QueryEscape(marketList+"?status=closed"), nil, "Authorization", adminAuth)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"purged":0`) {
		t.Errorf("purge of a key not cached: %d %s, want 200 purged 0", resp.StatusCode, body)
	}
}

func TestAdminRefusesAmbiguousQueries(t *testing.T) {
	h := adminHarness(t)
	for _, q := range []string{
		"key=/trade-api/v2/markets?status=open&limit=5", // the key's own & not encoded
		"key=/a&prefix=/b",
		"prefix=/a&prefix=/b",
	} {
		resp, body := h.do(http.MethodDelete, "/admin/cache?"+q, nil, "Authorization", adminAuth)
		wantJSONError(t, resp, body, http.StatusBadRequest, "bad_request")
	}
	resp, body := h.do(http.MethodGet, "/admin/cache?limit=-1", nil, "Authorization", adminAuth)
	wantJSONError(t, resp, body, http.StatusBadRequest, "bad_request")
}

func TestAdminListsEntries(t *testing.T) {
	h := adminHarness(t)
	h.get(metaSeries)
	h.get(metaMarket)
	h.get(marketList + "?status=open")
	resp, body := h.get("/admin/cache?prefix=/trade-api/v2/markets")
	wantJSONError(t, resp, body, http.StatusUnauthorized, "unauthorized")
	resp, body = h.get("/admin/cache?prefix=/trade-api/v2/markets", "Authorization", "Bearer s3cre")
	wantJSONError(t, resp, body, http.StatusUnauthorized, "unauthorized")

	type entry struct {
		Key    string `json:"key"`
		Status int    `json:"status"`
		State  string `json:"state"`
		Age    *int64 `json:"age"`
		TTL    *int64 `json:"ttl"`
		Bytes  int64  `json:"bytes"`
	}
	var list struct {
		Prefix  string  `json:"prefix"`
		Limit   int     `json:"limit"`
		Matched int     `json:"matched"`
		Entries []entry `json:"entries"`
		Cache   struct {
			Items int   `json:"items"`
			Bytes int64 `json:"bytes"`
		} `json:"cache"`
	}
	resp, body = h.get("/admin/cache?prefix=/trade-api/v2/markets&limit=1", "Authorization", adminAuth)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("list is not JSON: %v %s", err, body)
	}
	if list.Matched != 2 || list.Limit != 1 || len(list.Entries) != 1 || list.Cache.Items != 3 || list.Cache.Bytes <= 0 {
		t.Errorf("list = %s; want 2 matched under /trade-api/v2/markets, 1 shown, 3 items in all", body)
	}
	if len(list.Entries) == 1 {
		e := list.Entries[0]
		// Key order: "/trade-api/v2/markets/KX..." sorts after "/trade-api/v2/markets?...".
		if e.Key != metaMarket || e.Status != 200 || e.State != "fresh" || e.Age == nil || e.TTL == nil || *e.TTL > 2 || e.Bytes <= 0 {
			t.Errorf("entry = %+v, want %s, status 200, fresh, ttl <= 2s, bytes > 0", e, metaMarket)
		}
	}
	resp, body = h.get("/admin/cache", "Authorization", adminAuth)
	if err := json.Unmarshal(body, &list); err != nil || list.Matched != 3 || len(list.Entries) != 3 || list.Limit != 100 {
		t.Errorf("list of everything: %d %s; want 3 entries, limit 100", resp.StatusCode, body)
	}
}

func TestWrongMethodOnAKproxyPathIs405(t *testing.T) {
	h := adminHarness(t)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/batch/markets", 405, "POST"},
		{http.MethodGet, "/batch", 405, "POST"},
		{http.MethodPost, "/healthz", 405, "GET, HEAD"},
		{http.MethodDelete, "/readyz", 405, "GET, HEAD"},
		{http.MethodPut, "/admin/cache", 405, "DELETE, GET, HEAD"},
		{http.MethodOptions, "/batch/events", 204, "POST"},
		{http.MethodHead, "/healthz", 200, ""},
		{http.MethodGet, "/batch/nope", 404, ""},
		{http.MethodPost, "/nope", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := h.do(tt.method, tt.path, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			if got := resp.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
			switch tt.status {
			case 405:
				wantJSONError(t, resp, body, 405, "method_not_allowed")
			case 404:
				wantJSONError(t, resp, body, 404, "not_found")
			}
		})
	}
}

func TestAccessLogHasThePathWithItsQuery(t *testing.T) {
	h := newHarness(t, nil)
	const path = marketList + "?series_ticker=KXEARNINGSMENTIONMETA&status=open"
	h.get(path, "KALSHI-ACCESS-KEY", "secret-key-id", "KALSHI-ACCESS-SIGNATURE", "secret-sig")
	h.get("/batch/markets?x=1")
	h.app.Close() // flushes the access log
	var paths []string
	for _, raw := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		var l struct{ Msg, Path string }
		if json.Unmarshal([]byte(raw), &l) == nil && l.Msg == "request" {
			paths = append(paths, l.Path)
		}
	}
	if len(paths) != 2 || paths[0] != path || paths[1] != "/batch/markets?x=1" {
		t.Errorf("access log paths = %q, want %q and the 405's path with its query", paths, path)
	}
	if strings.Contains(h.logs.String(), "secret-") {
		t.Errorf("the log holds a credential")
	}
}
