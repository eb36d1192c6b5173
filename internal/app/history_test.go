package app_test

// The history tier end to end (docs/history.md): what a run stored on disk
// is served after a restart without an upstream request, byte-identical;
// offline answers from it; the admin routes and /readyz see it.

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

// historyPaths are answers a backtest reads, all settled history in the
// fake Kalshi (KXCPIYOY: 25SEP before the historical cutoff, 26MAR
// finalized after it). immutable marks those the rules table names.
var historyPaths = []struct {
	path      string
	immutable bool
}{
	{"/trade-api/v2/markets/KXCPIYOY-26MAR-T3.0", true},
	{"/trade-api/v2/events/KXCPIYOY-26MAR?with_nested_markets=true", true},
	{"/trade-api/v2/historical/markets/KXCPIYOY-25SEP-T3.0", true},
	{"/trade-api/v2/historical/trades?ticker=KXCPIYOY-25SEP-T2.8&limit=1000", true},
	{"/trade-api/v2/historical/markets/KXCPIYOY-25SEP-T3.0/candlesticks?start_ts=1758000000&end_ts=1760400000&period_interval=1440", true},
	{"/trade-api/v2/series/KXCPIYOY/markets/KXCPIYOY-26MAR-T3.0/candlesticks?start_ts=1773400000&end_ts=1773500000&period_interval=60", true},
	{"/trade-api/v2/markets/trades?ticker=KXCPIYOY-26MAR-T3.0&max_ts=1775000000&limit=100", true},
	// Kept on disk for their long ttl, not immutable.
	{"/trade-api/v2/series/KXCPIYOY", false},
	{"/trade-api/v2/historical/markets?series_ticker=KXCPIYOY", false},
}

// shortLived is a 2 s answer: never written to disk.
const shortLived = "/trade-api/v2/markets/KXCPIYOY-26APR-T3.2"

type storedAnswer struct {
	body []byte
	etag string
}

// fetchHistory GETs every history path once and returns the answers.
func fetchHistory(t *testing.T, h *harness) map[string]storedAnswer {
	t.Helper()
	out := map[string]storedAnswer{}
	for _, p := range historyPaths {
		resp, body := h.get(p.path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p.path, resp.StatusCode, body)
		}
		out[p.path] = storedAnswer{body, resp.Header.Get("ETag")}
	}
	return out
}

func withDisk(dir string, more ...func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		c.Cache.Disk.Path = dir
		c.Admin.Token = "s3cret"
		for _, m := range more {
			m(c)
		}
	}
}

func TestHistoryServedFromDiskAfterRestart(t *testing.T) {
	dir := t.TempDir()
	h1 := newHarness(t, withDisk(dir))
	first := fetchHistory(t, h1)
	for _, p := range historyPaths {
		resp, _ := h1.get(p.path)
		want := "kproxy; hit; detail=immutable"
		if !p.immutable {
			want = "kproxy; hit; ttl="
		}
		if got := resp.Header.Get("Cache-Status"); !strings.HasPrefix(got, want) {
			t.Errorf("second GET %s: Cache-Status %q, want %q...", p.path, got, want)
		}
	}
	if resp, _ := h1.get(shortLived); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", shortLived, resp.StatusCode)
	}
	h1.Close()

	h1.fake.Reset()
	h2 := newHarness(t, withDisk(dir), kproxytest.WithFake(h1.fake))
	for _, p := range historyPaths {
		resp, body := h2.get(p.path)
		want := first[p.path]
		if resp.StatusCode != http.StatusOK || string(body) != string(want.body) {
			t.Errorf("after restart GET %s: %d, body differs from the first run's: %v", p.path, resp.StatusCode, string(body) != string(want.body))
		}
		wantHeader(t, resp, "ETag", want.etag)
		wantHeader(t, resp, "X-Cache", "HIT")
		if got := resp.Header.Get("Cache-Status"); !strings.HasSuffix(got, "; detail=disk") {
			t.Errorf("after restart GET %s: Cache-Status %q, want detail=disk", p.path, got)
		}
		if resp.Header.Get("Age") == "" {
			t.Errorf("after restart GET %s: no Age", p.path)
		}
		if p.immutable {
			resp, _ := h2.get(p.path)
			wantHeader(t, resp, "Cache-Status", "kproxy; hit; detail=immutable")
		}
	}
	if n := h2.fake.Total(); n != 0 {
		t.Errorf("upstream requests after the restart: %d, want 0", n)
	}
	if resp, _ := h2.get(shortLived); resp.Header.Get("X-Cache") != "MISS" {
		t.Errorf("short-lived answer after restart: X-Cache %q, want MISS (never on disk)", resp.Header.Get("X-Cache"))
	}
	h2.Close()

	// Offline on the same directory: byte-identical, Kalshi never asked.
	h2.fake.Reset()
	h3 := newHarness(t, withDisk(dir, func(c *config.Config) { c.Upstream.Offline = true }), kproxytest.WithFake(h1.fake))
	for _, p := range historyPaths {
		resp, body := h3.get(p.path)
		if resp.StatusCode != http.StatusOK || string(body) != string(first[p.path].body) {
			t.Errorf("offline GET %s: %d, body differs: %v", p.path, resp.StatusCode, string(body) != string(first[p.path].body))
		}
		wantHeader(t, resp, "ETag", first[p.path].etag)
		wantHeader(t, resp, "X-Cache", "HIT")
		if got := resp.Header.Get("Cache-Status"); !strings.HasSuffix(got, "; detail=offline") {
			t.Errorf("offline GET %s: Cache-Status %q, want detail=offline", p.path, got)
		}
	}
	resp, body := h3.get("/trade-api/v2/markets/KXCPIYOY-26APR-T2.6")
	wantJSONError(t, resp, body, http.StatusGatewayTimeout, "not_cached")
	resp, body = h3.get("/trade-api/v2/portfolio/balance")
	wantJSONError(t, resp, body, http.StatusServiceUnavailable, "offline")
	resp, body = h3.do(http.MethodPost, "/trade-api/v2/portfolio/orders", []byte(`{"ticker":"X"}`), "Content-Type", "application/json")
	wantJSONError(t, resp, body, http.StatusServiceUnavailable, "offline")
	resp, body = h3.get("/trade-api/ws/v2", "Connection", "Upgrade", "Upgrade", "websocket",
		"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	wantJSONError(t, resp, body, http.StatusServiceUnavailable, "offline")
	resp, body = h3.do(http.MethodPost, "/batch", []byte(`{"requests":[{"id":"held","path":"/trade-api/v2/series/KXCPIYOY"},{"id":"not","path":"/trade-api/v2/series/KXNOPE"}]}`),
		"Content-Type", "application/json")
	var batch struct {
		Responses []struct {
			ID     string `json:"id"`
			Status int    `json:"status"`
			Cache  string `json:"cache"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(body, &batch); err != nil || resp.StatusCode != http.StatusOK || len(batch.Responses) != 2 {
		t.Fatalf("offline batch: %d %s (%v)", resp.StatusCode, body, err)
	}
	if r := batch.Responses[0]; r.Status != http.StatusOK || r.Cache != "HIT" {
		t.Errorf("offline batch item held: %+v, want 200 HIT", r)
	}
	if r := batch.Responses[1]; r.Status != http.StatusGatewayTimeout {
		t.Errorf("offline batch item not held: %+v, want 504", r)
	}
	if n := h3.fake.Total(); n != 0 {
		t.Errorf("upstream requests offline: %d, want 0", n)
	}
}

// readyDisk is /readyz's "disk".
func readyDisk(t *testing.T, h *harness) string {
	t.Helper()
	resp, body := h.get("/readyz")
	var r struct {
		Status, Disk string
	}
	if err := json.Unmarshal(body, &r); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	return r.Disk
}

func TestDiskUnusableNeverStopsKproxy(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	const series = "/trade-api/v2/series/KXCPIYOY"
	cases := []struct {
		name  string
		path  string
		state string
		why   string
	}{
		{"off", "", "off", ""},
		{"held by another kproxy", dir, "down", "locked by another kproxy"},
		{"a directory that cannot be created", filepath.Join(notDir, "sub"), "down", "cannot create directory"},
	}
	holder := newHarness(t, withDisk(dir))
	if got := readyDisk(t, holder); got != "up" {
		t.Fatalf("first kproxy on %s: disk %q, want up", dir, got)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, withDisk(c.path))
			if got := readyDisk(t, h); got != c.state {
				t.Errorf("/readyz disk = %q, want %q", got, c.state)
			}
			for i, want := range []string{"MISS", "HIT"} {
				resp, body := h.get(series)
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Cache") != want {
					t.Errorf("GET %d: %d %s %s, want 200 %s", i, resp.StatusCode, resp.Header.Get("X-Cache"), body, want)
				}
			}
			if c.why != "" && strings.Count(h.logs.String(), c.why) != 1 {
				t.Errorf("logs name %q %d times, want once:\n%s", c.why, strings.Count(h.logs.String(), c.why), h.logs)
			}
			_, metrics := h.get("/metrics")
			if !strings.Contains(string(metrics), "\nkproxy_disk_up 0\n") {
				t.Errorf("/metrics lacks kproxy_disk_up 0")
			}
		})
	}
}

// listing is GET /admin/cache's body, as far as the tests read it.
type listing struct {
	Matched int `json:"matched"`
	Entries []struct {
		Key   string `json:"key"`
		Tier  string `json:"tier"`
		State string `json:"state"`
	} `json:"entries"`
}

func TestAdminReachesTheDisk(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, withDisk(dir))
	const (
		market = "/trade-api/v2/markets/KXCPIYOY-26MAR-T3.0"
		series = "/trade-api/v2/series/KXCPIYOY"
	)
	for _, p := range []string{market, series, shortLived} {
		if resp, body := h.get(p); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, body)
		}
	}
	h.app.Disk.Flush()
	h.app.Store.Delete(series) // memory only: now held on disk alone
	list := func() map[string]string {
		t.Helper()
		resp, body := h.get("/admin/cache?prefix=/trade-api/v2/", "Authorization", "Bearer s3cret")
		var l listing
		if err := json.Unmarshal(body, &l); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /admin/cache: %d %s", resp.StatusCode, body)
		}
		tiers := map[string]string{}
		for _, e := range l.Entries {
			tiers[e.Key] = e.Tier + "/" + e.State
		}
		if l.Matched != len(l.Entries) {
			t.Errorf("matched %d, listed %d", l.Matched, len(l.Entries))
		}
		return tiers
	}
	got := list()
	want := map[string]string{market: "both/immutable", series: "disk/fresh", shortLived: "memory/fresh"}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("listed %s as %q, want %q", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("listed %v, want %v", got, want)
	}

	// Purges reach the disk: the next GET goes upstream.
	resp, body := h.do(http.MethodDelete, "/admin/cache?key="+market, nil, "Authorization", "Bearer s3cret")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"disk":1`) {
		t.Errorf("DELETE ?key=: %d %s, want the disk entry purged", resp.StatusCode, body)
	}
	resp, body = h.do(http.MethodDelete, "/admin/cache?prefix=/trade-api/v2/series/", nil, "Authorization", "Bearer s3cret")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"disk":1`) {
		t.Errorf("DELETE ?prefix=: %d %s, want the disk entry purged", resp.StatusCode, body)
	}
	h.fake.Reset()
	for _, p := range []string{market, series} {
		if resp, _ := h.get(p); resp.Header.Get("X-Cache") != "MISS" {
			t.Errorf("GET %s after purge: X-Cache %q, want MISS", p, resp.Header.Get("X-Cache"))
		}
	}
	if n := h.fake.Total(); n != 2 {
		t.Errorf("upstream requests after the purges: %d, want 2", n)
	}
}
