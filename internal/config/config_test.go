package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestShippedConfigMatchesDefaults(t *testing.T) {
	data, err := os.ReadFile("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := Default()
	got.Cache.Routes = nil
	if err := Decode(data, got); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("config.yaml differs from the built-in defaults:\n got %s\nwant %s", got.YAML(), want.YAML())
	}
}

func TestDefaultRoutesCoverThePublicSet(t *testing.T) {
	if n := len(Default().Cache.Specs(false)); n < 35 {
		t.Errorf("only %d default routes", n)
	}
}

// tradingData lists, independently of MovesWithTrading, the routes the
// freshness promise covers: /markets*, /events*, order books, trades,
// candlesticks, live data; never historical ones.
func tradingData(pattern string) bool {
	p := strings.TrimPrefix(pattern, "/trade-api/v2/")
	if strings.HasPrefix(p, "historical/") {
		return false
	}
	for _, w := range []string{"markets", "events", "orderbook", "trades", "candlesticks", "live_data", "exchange/status"} {
		if strings.HasPrefix(p, w) || strings.Contains(p, "/"+w) {
			return true
		}
	}
	return false
}

// TestShippedDefaultsKeepTheFreshnessPromise: with the built-in route
// table, and with the shipped config.yaml, no answer on a route whose data
// moves with trading is served more than 1s past its ttl while the
// upstream answers (stale_while_revalidate <= 1s); stale_if_error stays
// 10m; metadata routes keep their longer windows.
func TestShippedDefaultsKeepTheFreshnessPromise(t *testing.T) {
	shipped := Default()
	data, err := os.ReadFile("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := Decode(data, shipped); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*Config{"built-in": Default(), "config.yaml": shipped} {
		trading := 0
		for _, s := range c.Cache.Specs(false) {
			if s.StaleIfError != 10*time.Minute {
				t.Errorf("%s: %s stale_if_error = %v, want 10m", name, s.Pattern, s.StaleIfError)
			}
			switch {
			case tradingData(s.Pattern):
				trading++
				if s.StaleWhileRevalidate > time.Second {
					t.Errorf("%s: %s (ttl %v) stale_while_revalidate = %v, want <= 1s: a price could be served %v past its ttl",
						name, s.Pattern, s.TTL, s.StaleWhileRevalidate, s.StaleWhileRevalidate)
				}
			case s.StaleWhileRevalidate != s.TTL:
				t.Errorf("%s: metadata route %s stale_while_revalidate = %v, want its ttl %v", name, s.Pattern, s.StaleWhileRevalidate, s.TTL)
			}
		}
		if trading < 15 {
			t.Errorf("%s: only %d trading routes checked", name, trading)
		}
	}
}

// TestStaleWhileRevalidateZeroIsObeyed: 0 set anywhere (route, override,
// cache.defaults, its variable) is kept as 0, not taken for "unset".
func TestStaleWhileRevalidateZeroIsObeyed(t *testing.T) {
	const markets = "/trade-api/v2/markets"
	tests := []struct {
		name, yaml string
		env        []string
		want       time.Duration
	}{
		{"omitted in a given list", "cache: {routes: [{pattern: /trade-api/v2/markets, ttl: 5s}]}", nil, time.Second},
		{"omitted, metadata route", "cache: {routes: [{pattern: /trade-api/v2/series, ttl: 5m}, {pattern: /trade-api/v2/markets, ttl: 5s}]}", nil, time.Second},
		{"route sets 0", "cache: {routes: [{pattern: /trade-api/v2/markets, ttl: 5s, stale_while_revalidate: 0s}]}", nil, 0},
		{"route sets bare 0", "cache: {routes: [{pattern: /trade-api/v2/markets, ttl: 5s, stale_while_revalidate: 0}]}", nil, 0},
		{"override sets 0", "cache: {overrides: [{pattern: /trade-api/v2/markets, stale_while_revalidate: 0s}]}", nil, 0},
		{"defaults set 0", "cache: {defaults: {stale_while_revalidate: 0s}}", nil, 0},
		{"variable sets 0", "", []string{"KPROXY_CACHE_DEFAULTS_STALE_WHILE_REVALIDATE=0s"}, 0},
		{"route sets more than the promise", "cache: {overrides: [{pattern: /trade-api/v2/markets, stale_while_revalidate: 7s}]}", nil, 7 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := load(t, Sources{File: write(t, tt.yaml)}, tt.env...)
			if err != nil {
				t.Fatal(err)
			}
			if got := specOf(t, l.Config, markets).StaleWhileRevalidate; got != tt.want {
				t.Errorf("stale_while_revalidate = %v, want %v", got, tt.want)
			}
		})
	}
}

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kproxy.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	file := write(t, "listen: \":7000\"\nupstream: {url: http://file.example}\nlog: {level: warn}\nadmin: {token: filetoken}\n")
	tests := []struct {
		name       string
		src        Sources
		env        map[string]string
		listen     string
		upstream   string
		level      string
		adminToken string
	}{
		{"defaults", Sources{File: ""}, nil, ":8080", "https://external-api.kalshi.com", "info", ""},
		{"file", Sources{File: file}, nil, ":7000", "http://file.example", "warn", "filetoken"},
		{"env over file", Sources{File: file}, map[string]string{"KPROXY_LISTEN": ":7100", "KPROXY_LOG_LEVEL": "debug", "KPROXY_ADMIN_TOKEN": "envtoken"}, ":7100", "http://file.example", "debug", "envtoken"},
		{"flag over env", Sources{File: file, Listen: ":7200", Upstream: "http://flag.example"}, map[string]string{"KPROXY_LISTEN": ":7100", "KPROXY_UPSTREAM": "http://env.example"}, ":7200", "http://flag.example", "warn", "filetoken"},
		{"env names the file", Sources{}, map[string]string{"KPROXY_CONFIG": file}, ":7000", "http://file.example", "warn", "filetoken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.src.Getenv = env(tt.env)
			if tt.src.File == "" && tt.env["KPROXY_CONFIG"] == "" {
				t.Chdir(t.TempDir()) // no default config.yaml here
			}
			c, _, err := Load(tt.src)
			if err != nil {
				t.Fatal(err)
			}
			if c.Listen != tt.listen || c.Upstream.URL != tt.upstream || c.Log.Level != tt.level || c.Admin.Token != tt.adminToken {
				t.Errorf("got listen=%q upstream=%q level=%q token=%q; want %q %q %q %q",
					c.Listen, c.Upstream.URL, c.Log.Level, c.Admin.Token, tt.listen, tt.upstream, tt.level, tt.adminToken)
			}
		})
	}
}

func TestMissingFiles(t *testing.T) {
	t.Chdir(t.TempDir())
	if _, file, err := Load(Sources{Getenv: env(nil)}); err != nil || file != "" {
		t.Errorf("absent default file: file=%q err=%v; want defaults", file, err)
	}
	if _, _, err := Load(Sources{File: "nope.yaml", Getenv: env(nil)}); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("absent named file: err = %v, want an error naming it", err)
	}
}

func TestConfigErrorsNameKeyAndValue(t *testing.T) {
	tests := []struct{ yaml, key, value string }{
		{"cache: {max_bytes: -5MiB}", "cache.max_bytes", "-5MiB"},
		{"cache: {max_bytes: lots}", "cache.max_bytes", "lots"},
		{"cache: {maxbytes: 5}", "cache.maxbytes", ""},
		{"nope: 1", "nope", ""},
		{"upstream: {timeout: 5x}", "upstream.timeout", "5x"},
		{"upstream: {url: 'ftp://x'}", "upstream.url", "ftp://x"},
		{"upstream: {url: 'not a url'}", "upstream.url", "not a url"},
		{"upstream: {tier: gold}", "upstream.tier", "gold"},
		{"upstream: {max_retries: abc}", "upstream.max_retries", "abc"},
		{"upstream: {read_rate: -1}", "upstream.read_rate", "-1"},
		{"breaker: {open_timeout: -1s}", "breaker.open_timeout", "-1s"},
		{"log: {level: loud}", "log.level", "loud"},
		{"batch: {auto_window: 2h}", "batch.auto_window", "2h"},
		{"cache: {overrides: [{pattern: /trade-api/v2/nope, ttl: 1s}]}", "cache.overrides[0].pattern", "/trade-api/v2/nope"},
		{"cache: {overrides: [{pattern: /trade-api/v2/markets, ttl: 0s}]}", "cache.overrides[0].ttl", "0s"},
		{"cache: {overrides: [{pattern: /trade-api/v2/markets, stale_if_error: -1s}]}", "cache.overrides[0].stale_if_error", "-1s"},
		{"cache: {defaults: {stale_while_revalidate: -2s}}", "cache.defaults.stale_while_revalidate", "-2s"},
		{"cache: {overrides: [{pattern: /trade-api/v2/markets, tll: 1s}]}", "cache.overrides[0].tll", ""},
		{"cache: {routes: [{pattern: /trade-api/v2/markets, ttl: soon}]}", "cache.routes[0].ttl", "soon"},
		{"cache: {routes: [{pattern: /trade-api/v2/portfolio/balance, ttl: 1s}]}", "cache.routes", ""},
		{"cache: {routes: [{pattern: /trade-api/v2/markets, ttl: 1s, stale_if_error: -1s}]}", "cache.routes[0].stale_if_error", "-1s"},
		{"upstream: {offline: true}\nlive: {enabled: true}", "upstream.offline", "true"},
		{"cache: {disk: {path: /tmp/x, max_bytes: 0}}", "cache.disk.max_bytes", "0"},
		{"cache: {disk: {max_bytes: lots}}", "cache.disk.max_bytes", "lots"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			c := Default()
			err := Decode([]byte(tt.yaml), c)
			if err == nil {
				err = c.Validate()
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("%s: err = %v, want a KeyError", tt.yaml, err)
			}
			if ke.Key != tt.key || ke.Value != tt.value {
				t.Errorf("%s: error names key %q value %q, want %q %q (%v)", tt.yaml, ke.Key, ke.Value, tt.key, tt.value, err)
			}
			if !strings.Contains(err.Error(), tt.key) {
				t.Errorf("message %q does not name %s", err, tt.key)
			}
		})
	}
}

func TestTierSetsRatesUnlessGiven(t *testing.T) {
	c := Default()
	if r, w := c.Upstream.Rates(); r != 20 || w != 10 {
		t.Errorf("basic = %v/%v, want 20/10", r, w)
	}
	if err := Decode([]byte("upstream: {tier: premier}"), c); err != nil {
		t.Fatal(err)
	}
	if r, w := c.Upstream.Rates(); r != 100 || w != 100 {
		t.Errorf("premier = %v/%v, want 100/100", r, w)
	}
	if err := Decode([]byte("upstream: {read_rate: 7.5}"), c); err != nil {
		t.Fatal(err)
	}
	if r, w := c.Upstream.Rates(); r != 7.5 || w != 100 {
		t.Errorf("explicit read_rate = %v/%v, want 7.5/100", r, w)
	}
}

func TestParseSize(t *testing.T) {
	tests := map[string]Size{"1048576": 1 << 20, "64MiB": 64 << 20, "512KiB": 512 << 10, "1GiB": 1 << 30, "10MB": 10_000_000, "0": 0}
	for in, want := range tests {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseSize("-1"); err == nil {
		t.Errorf("ParseSize(-1) accepted")
	}
}

func TestRouteStaleWindowDefaults(t *testing.T) {
	c := Default()
	if err := Decode([]byte("cache: {routes: [{pattern: /trade-api/v2/markets, ttl: 3s, stale_if_error: 1m}]}"), c); err != nil {
		t.Fatal(err)
	}
	s := c.Cache.Specs(false)
	if len(s) != 1 || s[0].TTL != 3*time.Second || s[0].StaleWhileRevalidate != time.Second || s[0].StaleIfError != time.Minute {
		t.Errorf("specs = %+v", s)
	}
}
