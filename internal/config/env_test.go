package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// load runs Resolve with environ as the whole environment and no file.
func load(t *testing.T, src Sources, environ ...string) (*Loaded, error) {
	t.Helper()
	if src.File == "" {
		t.Chdir(t.TempDir()) // no default config.yaml here
	}
	src.Environ = append([]string{"HOME=/nowhere", "PATH=/bin"}, environ...)
	return Resolve(src)
}

func TestEveryScalarKeyIsSetFromItsVariable(t *testing.T) {
	seven, three := 7.5, Duration(3*time.Second)
	tests := []struct {
		env   string
		check func(*Config) bool
	}{
		{"KPROXY_UPSTREAM_TIMEOUT=1500ms", func(c *Config) bool { return c.Upstream.Timeout == Duration(1500*time.Millisecond) }},
		{"KPROXY_CACHE_MAX_BYTES=64MiB", func(c *Config) bool { return c.Cache.MaxBytes == 64<<20 }},
		{"KPROXY_UPSTREAM_READ_RATE=7.5", func(c *Config) bool { return c.Upstream.ReadRate != nil && *c.Upstream.ReadRate == seven }},
		{"KPROXY_BREAKER_CONSECUTIVE_FAILURES=3", func(c *Config) bool { return c.Breaker.ConsecutiveFailures == 3 }},
		{"KPROXY_LOG_ACCESS=false", func(c *Config) bool { return !c.Log.Access }},
		{"KPROXY_COMPAT_LEGACY_FIELDS=true", func(c *Config) bool { return c.Compat.LegacyFields }},
		{"KPROXY_REDIS_URL=redis://127.0.0.1:6379/0", func(c *Config) bool { return c.Redis.URL == "redis://127.0.0.1:6379/0" }},
		{"KPROXY_REDIS_KEY_PREFIX=kp2:", func(c *Config) bool { return c.Redis.KeyPrefix == "kp2:" }},
		{"KPROXY_DRAIN_DELAY=5s", func(c *Config) bool { return c.DrainDelay == Duration(5*time.Second) }},
		{"KPROXY_CACHE_DEFAULTS_STALE_WHILE_REVALIDATE=3s", func(c *Config) bool {
			return c.Cache.Defaults.StaleWhileRevalidate != nil && *c.Cache.Defaults.StaleWhileRevalidate == three
		}},
		{"KPROXY_UPSTREAM=http://127.0.0.1:9", func(c *Config) bool { return c.Upstream.URL == "http://127.0.0.1:9" }},
		{"KPROXY_UPSTREAM_URL=http://127.0.0.1:9", func(c *Config) bool { return c.Upstream.URL == "http://127.0.0.1:9" }},
		{"KPROXY_LOG_LEVEL=INFO", func(c *Config) bool { return c.Log.Level == "info" }},
		{"KPROXY_UPSTREAM_TIER=Premier", func(c *Config) bool { r, _ := c.Upstream.Rates(); return r == 100 }},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			l, err := load(t, Sources{}, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(l.Config) {
				t.Errorf("%s had no effect:\n%s", tt.env, l.Config.YAML())
			}
			name, _, _ := strings.Cut(tt.env, "=")
			if got := slices.Collect(mapValues(l.From)); !slices.Contains(got, name) {
				t.Errorf("From = %v, want it to record %s", l.From, name)
			}
		})
	}
}

func mapValues(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// TestEveryVariableIsRead sets each listed variable alone to its default
// (so the result is valid) and checks that Load took it from there: a key
// added to Config gets its variable with no other change.
func TestEveryVariableIsRead(t *testing.T) {
	vars := Vars()
	if len(vars) < 35 {
		t.Fatalf("only %d variables", len(vars))
	}
	for _, v := range vars {
		if v.Default == "" {
			continue // empty means unset; the table above covers some of these
		}
		l, err := load(t, Sources{}, v.Name+"="+v.Default)
		if err != nil {
			t.Errorf("%s=%s: %v", v.Name, v.Default, err)
			continue
		}
		if l.From[v.Key] != v.Name {
			t.Errorf("%s=%s was not read into %s (From = %v)", v.Name, v.Default, v.Key, l.From)
		}
	}
	for _, name := range []string{"KPROXY_LISTEN", "KPROXY_ADMIN_TOKEN", "KPROXY_LOG_LEVEL", "KPROXY_LOG_FORMAT", "KPROXY_REDIS_URL", "KPROXY_LIVE_ENABLED", "KPROXY_UPSTREAM_TIMEOUT"} {
		if !slices.ContainsFunc(vars, func(v Var) bool { return v.Name == name }) {
			t.Errorf("Vars() has no %s", name)
		}
	}
	if slices.ContainsFunc(vars, func(v Var) bool { return strings.Contains(v.Key, "routes") || strings.Contains(v.Key, "overrides") }) {
		t.Errorf("Vars() lists a list key: %v", vars)
	}
}

func TestEnvironmentErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    string
	}{
		{"bad duration", []string{"KPROXY_UPSTREAM_TIMEOUT=abc"}, `config: KPROXY_UPSTREAM_TIMEOUT (upstream.timeout): "abc": not a duration`},
		{"bad size", []string{"KPROXY_CACHE_MAX_BYTES=lots"}, `config: KPROXY_CACHE_MAX_BYTES (cache.max_bytes): "lots": not a size`},
		{"bad integer", []string{"KPROXY_BATCH_MAX_ITEMS=many"}, `config: KPROXY_BATCH_MAX_ITEMS (batch.max_items): "many": not an integer`},
		{"bad bool", []string{"KPROXY_LIVE_ENABLED=yes please"}, `config: KPROXY_LIVE_ENABLED (live.enabled): "yes please": not true or false`},
		{"invalid value", []string{"KPROXY_LOG_LEVEL=LOUD"}, `config: KPROXY_LOG_LEVEL (log.level): "LOUD": must be debug, info, warn or error`},
		{"invalid value of an alias", []string{"KPROXY_UPSTREAM=ftp://x"}, `config: KPROXY_UPSTREAM (upstream.url): "ftp://x": scheme must be http or https`},
		{"rule across keys", []string{"KPROXY_LIVE_ENABLED=true"}, `config: KPROXY_LIVE_ENABLED (live.enabled): "true": needs kproxy's own key`},
		{"unknown variable", []string{"KPROXY_UPSTREAM_TIMOUT=1s"}, `config: unknown variable KPROXY_UPSTREAM_TIMOUT (did you mean KPROXY_UPSTREAM_TIMEOUT?)`},
		{"alias and key both", []string{"KPROXY_UPSTREAM=http://a", "KPROXY_UPSTREAM_URL=http://b"}, `config: KPROXY_UPSTREAM_URL: KPROXY_UPSTREAM sets upstream.url too`},
		{"negative duration", []string{"KPROXY_BREAKER_OPEN_TIMEOUT=-1s"}, `config: KPROXY_BREAKER_OPEN_TIMEOUT (breaker.open_timeout): "-1s": must be positive`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, Sources{}, tt.environ...)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to start with %s", err, tt.want)
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Errorf("error %v is not a KeyError", err)
			}
		})
	}
}

func TestFlagErrorsNameTheFlag(t *testing.T) {
	_, err := load(t, Sources{Upstream: "nonsense"})
	if err == nil || !strings.HasPrefix(err.Error(), `config: -upstream (upstream.url): "nonsense"`) {
		t.Errorf("error = %v, want it to name -upstream", err)
	}
}

func TestIgnoredAndEmptyVariables(t *testing.T) {
	l, err := load(t, Sources{}, "KPROXY_URL=http://127.0.0.1:8080", "KPROXY_CACHE_MAX_BYTES=", "KPROXY_NOT_A_THING=")
	if err != nil {
		t.Fatalf("KPROXY_URL (the examples' variable) and empty variables: %v", err)
	}
	if l.Config.Cache.MaxBytes != 256<<20 || len(l.From) != 0 {
		t.Errorf("empty variables changed the config: max_bytes %v, From %v", l.Config.Cache.MaxBytes, l.From)
	}
}

func TestPrecedenceOfAGeneratedVariable(t *testing.T) {
	file := write(t, "upstream: {timeout: 7s}\ncache: {max_bytes: 1MiB}\n")
	l, err := load(t, Sources{File: file}, "KPROXY_UPSTREAM_TIMEOUT=3s")
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.Upstream.Timeout != Duration(3*time.Second) || l.Config.Cache.MaxBytes != 1<<20 || l.Config.Batch.MaxItems != 100 {
		t.Errorf("timeout %v max_bytes %v max_items %d; want env 3s over file 7s, file 1MiB, default 100",
			l.Config.Upstream.Timeout, l.Config.Cache.MaxBytes, l.Config.Batch.MaxItems)
	}
	l, err = load(t, Sources{File: file, Listen: "127.0.0.1:1"}, "KPROXY_LISTEN=127.0.0.1:2")
	if err != nil || l.Config.Listen != "127.0.0.1:1" || l.From["listen"] != "-listen" {
		t.Errorf("flag over env: %v %+v", err, l)
	}
}

func TestVariableNamesAreUnique(t *testing.T) {
	seen := map[string]string{}
	for _, v := range Vars() {
		if k, dup := seen[v.Name]; dup {
			t.Errorf("%s names both %s and %s", v.Name, k, v.Key)
		}
		seen[v.Name] = v.Key
	}
	for alias := range aliases {
		if k, dup := seen[alias]; dup {
			t.Errorf("alias %s is also the variable of %s", alias, k)
		}
	}
}
