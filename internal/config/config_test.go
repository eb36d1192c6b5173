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
	c := Default()
	specs := c.Cache.Specs(false)
	for _, s := range specs {
		if s.StaleWhileRevalidate != s.TTL || s.StaleIfError != DefaultStaleIfError {
			t.Errorf("%s: windows %v/%v, want ttl and 10m by default", s.Pattern, s.StaleWhileRevalidate, s.StaleIfError)
		}
	}
	if len(specs) < 35 {
		t.Errorf("only %d default routes", len(specs))
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
	if len(s) != 1 || s[0].TTL != 3*time.Second || s[0].StaleWhileRevalidate != 3*time.Second || s[0].StaleIfError != time.Minute {
		t.Errorf("specs = %+v", s)
	}
}
