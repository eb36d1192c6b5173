package config

import (
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/route"
)

func specOf(t *testing.T, c *Config, pattern string) route.Spec {
	t.Helper()
	for _, s := range c.Cache.Specs(c.Compat.LegacyFields) {
		if s.Pattern == pattern {
			return s
		}
	}
	t.Fatalf("no route %s", pattern)
	return route.Spec{}
}

func TestRouteOverridesAndDefaults(t *testing.T) {
	const (
		market  = "/trade-api/v2/markets/{ticker}"
		markets = "/trade-api/v2/markets"
		series  = "/trade-api/v2/series/{series_ticker}"
	)
	s, m := time.Second, time.Minute
	type windows struct {
		ttl, swr, sie time.Duration
		legacy        bool
	}
	tests := []struct {
		name string
		yaml string
		want map[string]windows
	}{
		{"built-in", "", map[string]windows{
			market: {2 * s, 1 * s, 10 * m, false}, series: {10 * m, 10 * m, 10 * m, false},
		}},
		{"one route's ttl and window, the rest untouched", `
cache:
  overrides:
    - {pattern: "/trade-api/v2/markets/{ticker}", ttl: 1s, stale_while_revalidate: 5s}`, map[string]windows{
			market: {1 * s, 5 * s, 10 * m, false}, markets: {2 * s, 1 * s, 10 * m, false}, series: {10 * m, 10 * m, 10 * m, false},
		}},
		{"default windows for every route", `
cache:
  defaults: {stale_while_revalidate: 30s, stale_if_error: 1h}`, map[string]windows{
			market: {2 * s, 30 * s, 1 * time.Hour, false}, series: {10 * m, 30 * s, 1 * time.Hour, false},
		}},
		{"an override beats the defaults, the defaults fill the rest", `
cache:
  defaults: {stale_while_revalidate: 30s}
  overrides:
    - {pattern: "/trade-api/v2/markets/{ticker}", stale_while_revalidate: 0s, legacy_fields: true}`, map[string]windows{
			market: {2 * s, 0, 10 * m, true}, markets: {2 * s, 30 * s, 10 * m, false},
		}},
		{"legacy_fields on a route overrides compat", `
compat: {legacy_fields: true}
cache:
  overrides:
    - {pattern: /trade-api/v2/markets, legacy_fields: false}`, map[string]windows{
			markets: {2 * s, 1 * s, 10 * m, false}, market: {2 * s, 1 * s, 10 * m, true},
		}},
		{"overrides apply to a given route list", `
cache:
  routes:
    - {pattern: /trade-api/v2/markets, ttl: 5s, stale_if_error: 1m}
  overrides:
    - {pattern: /trade-api/v2/markets, ttl: 3s}`, map[string]windows{
			markets: {3 * s, 1 * s, 1 * m, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			if err := Decode([]byte(tt.yaml), c); err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			for pattern, w := range tt.want {
				got := specOf(t, c, pattern)
				if got.TTL != w.ttl || got.StaleWhileRevalidate != w.swr || got.StaleIfError != w.sie || got.LegacyFields != w.legacy {
					t.Errorf("%s = ttl %v swr %v sie %v legacy %v, want %v %v %v %v", pattern,
						got.TTL, got.StaleWhileRevalidate, got.StaleIfError, got.LegacyFields, w.ttl, w.swr, w.sie, w.legacy)
				}
			}
			if n := len(c.Cache.Specs(false)); tt.yaml == "" && n != len(DefaultRoutes()) {
				t.Errorf("%d routes, want %d", n, len(DefaultRoutes()))
			}
		})
	}
}

// TestEffectiveYAMLReadsBackTheSame: what check-config prints is itself a
// config that gives the same routes, and lists each route on one line.
func TestEffectiveYAMLReadsBackTheSame(t *testing.T) {
	c := Default()
	err := Decode([]byte(`
cache:
  defaults: {stale_if_error: 2m}
  overrides:
    - {pattern: "/trade-api/v2/markets/{ticker}", ttl: 1s, stale_while_revalidate: 5s}
admin: {token: s3cret}
`), c)
	if err != nil {
		t.Fatal(err)
	}
	out := c.YAML()
	if strings.Contains(out, "s3cret") {
		t.Errorf("YAML shows the admin token")
	}
	if !strings.Contains(out, "- {pattern: '/trade-api/v2/markets/{ticker}', ttl: 1s, stale_while_revalidate: 5s, stale_if_error: 2m, legacy_fields: false}") {
		t.Errorf("effective routes are not one line each with their windows:\n%s", out)
	}
	back := Default()
	if err := Decode([]byte(out), back); err != nil {
		t.Fatalf("effective YAML does not read back: %v\n%s", err, out)
	}
	got, want := back.Cache.Specs(false), c.Cache.Specs(false)
	if len(got) != len(want) {
		t.Fatalf("%d routes read back, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("route %d read back as %+v, want %+v", i, got[i], want[i])
		}
	}
}
