package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestUnknownKeySuggestsTheClosestKnownOne(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"one letter short", "cache: {max_byte: 1MiB}", "config: unknown key cache.max_byte (did you mean cache.max_bytes?)"},
		{"letters swapped", "upstream: {timeuot: 1s}", "config: unknown key upstream.timeuot (did you mean upstream.timeout?)"},
		{"a section misspelt", "upstrem: {timeout: 1s}", "config: unknown key upstrem (did you mean upstream?)"},
		{"a new key misspelt", "cache: {disk: {pth: /tmp/x}}", "config: unknown key cache.disk.pth (did you mean cache.disk.path?)"},
		{"in a list item, index kept", "cache: {overrides: [{pattern: /trade-api/v2/markets}, {pattern: /trade-api/v2/events, tll: 1s}]}",
			"config: unknown key cache.overrides[1].tll (did you mean cache.overrides[1].ttl?)"},
		{"a key in the wrong section", "offline: true", "config: unknown key offline (did you mean upstream.offline?)"},
		{"nothing close", "nope: 1", "config: unknown key nope"},
		{"ambiguous section", "max_bytes: 1MiB", "config: unknown key max_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Decode([]byte(tt.yaml), Default())
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v, want %s", err, tt.want)
			}
			if !errors.Is(err, ErrUnknownKey) {
				t.Errorf("%v is not ErrUnknownKey", err)
			}
		})
	}
}

func TestUnknownVariableSuggestsTheClosestKnownOne(t *testing.T) {
	tests := []struct{ env, want string }{
		{"KPROXY_CACHE_MAX_BYTE=1MiB", "config: unknown variable KPROXY_CACHE_MAX_BYTE (did you mean KPROXY_CACHE_MAX_BYTES?)"},
		{"KPROXY_CACHE_MAXBYTES=1MiB", "config: unknown variable KPROXY_CACHE_MAXBYTES (did you mean KPROXY_CACHE_MAX_BYTES?)"},
		{"KPROXY_UPSTREAM_OFLINE=true", "config: unknown variable KPROXY_UPSTREAM_OFLINE (did you mean KPROXY_UPSTREAM_OFFLINE?)"},
		{"KPROXY_CONFG=x.yaml", "config: unknown variable KPROXY_CONFG (did you mean KPROXY_CONFIG?)"},
		{"KPROXY_WHATEVER=1", "config: unknown variable KPROXY_WHATEVER: no configuration key has this name (kproxy -h lists them)"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			_, err := load(t, Sources{}, tt.env)
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v, want %s", err, tt.want)
			}
			if !errors.Is(err, ErrUnknownVariable) {
				t.Errorf("%v is not ErrUnknownVariable", err)
			}
		})
	}
}

func TestLevenshtein(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "ab", 2}, {"kitten", "sitting", 3},
		{"cache.max_byte", "cache.max_bytes", 1}, {"ttl", "tll", 1}, {"flaw", "lawn", 2},
	}
	for _, tt := range tests {
		if got := levenshtein(tt.a, tt.b); got != tt.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := levenshtein(tt.b, tt.a); got != tt.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", tt.b, tt.a, got, tt.want)
		}
	}
}

// lineComments parses YAML and returns each scalar's (or list's) line
// comment by dotted key.
func lineComments(t *testing.T, out string) map[string]string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("output is not YAML: %v\n%s", err, out)
	}
	got := map[string]string{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := joinKey(prefix, k.Value)
			switch v.Kind {
			case yaml.MappingNode:
				walk(v, key)
			case yaml.SequenceNode:
				got[key] = k.LineComment
			default:
				got[key] = v.LineComment
			}
		}
	}
	walk(doc.Content[0], "")
	return got
}

// TestEffectiveYAMLSaysWhereEachValueCameFrom: check-config's rendering
// marks each value with its source (flag, variable, file, default, or how
// it was derived), and the annotated text still loads back to the same
// configuration.
func TestEffectiveYAMLSaysWhereEachValueCameFrom(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "/var/cache/someone")
	file := write(t, "log: {level: warn}\nadmin: {token: s3cret}\nbatch: {max_items: 7}\ncache:\n  overrides:\n    - {pattern: /trade-api/v2/markets, ttl: 3s}\n")
	l, err := load(t, Sources{File: file, Listen: "127.0.0.1:0"},
		"KPROXY_UPSTREAM_TIMEOUT=1500ms", "KPROXY_UPSTREAM=http://127.0.0.1:9", "KPROXY_CACHE_DISK_MAX_BYTES=2GiB")
	if err != nil {
		t.Fatal(err)
	}
	out := l.YAML()
	got := lineComments(t, out)
	want := map[string]string{
		"listen":               "# from flag -listen",
		"upstream.timeout":     "# from KPROXY_UPSTREAM_TIMEOUT",
		"upstream.url":         "# from KPROXY_UPSTREAM",
		"cache.disk.max_bytes": "# from KPROXY_CACHE_DISK_MAX_BYTES",
		"log.level":            "# from file",
		"batch.max_items":      "# from file",
		"admin.token":          "# from file",
		"log.format":           "# default",
		"upstream.offline":     "# default",
		"upstream.ws_url":      "# derived from upstream.url",
		"upstream.read_rate":   "# from upstream.tier",
		"cache.disk.path":      "# default: the user cache directory + /kproxy",
		"cache.routes":         "# default: the built-in list, with cache.defaults and cache.overrides merged in",
	}
	for key, w := range want {
		if got[key] != w {
			t.Errorf("%s: comment %q, want %q", key, got[key], w)
		}
	}
	for key, c := range got {
		if c == "" {
			t.Errorf("%s has no source comment", key)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("the admin token is shown:\n%s", out)
	}
	for _, line := range []string{
		"ws_url: ws://127.0.0.1:9/trade-api/ws/v2 #",
		"path: " + filepath.Join("/var/cache/someone", "kproxy") + " #",
		"- {pattern: /trade-api/v2/markets, ttl: 3s, stale_while_revalidate: 1s, stale_if_error: 10m, legacy_fields: false}",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
	back := Default()
	if err := Decode([]byte(out), back); err != nil {
		t.Fatalf("the output does not load back: %v\n%s", err, out)
	}
	if err := back.Validate(); err != nil {
		t.Fatalf("the output loads back invalid: %v", err)
	}
	if a, b := back.YAML(), l.Config.YAML(); a != b {
		t.Errorf("loaded back, it renders differently:\n got %s\nwant %s", a, b)
	}
}

// TestDiskPathDefault: the disk tier defaults to the user cache directory
// + /kproxy; without one it is off by default, and check-config says why.
// "" (file) and off (file or variable) turn it off.
func TestDiskPathDefault(t *testing.T) {
	t.Run("user cache directory", func(t *testing.T) {
		t.Setenv("XDG_CACHE_HOME", "/srv/cache")
		if got, want := Default().Cache.Disk.Path, filepath.Join("/srv/cache", "kproxy"); got != want {
			t.Errorf("cache.disk.path = %q, want %q", got, want)
		}
		if got := Default().Cache.Disk.MaxBytes; got != 1<<30 {
			t.Errorf("cache.disk.max_bytes = %v, want 1GiB", got)
		}
	})
	t.Run("none", func(t *testing.T) {
		t.Setenv("XDG_CACHE_HOME", "")
		t.Setenv("HOME", "")
		l, err := load(t, Sources{})
		if err != nil {
			t.Fatal(err)
		}
		if l.Config.Cache.Disk.Path != "" {
			t.Errorf("cache.disk.path = %q, want off", l.Config.Cache.Disk.Path)
		}
		if c := lineComments(t, l.YAML())["cache.disk.path"]; !strings.HasPrefix(c, "# default: off, no user cache directory (") {
			t.Errorf("cache.disk.path comment %q does not say why the disk tier is off", c)
		}
	})
	for _, tt := range []struct {
		name, file string
		env        []string
	}{
		{"empty in the file", "cache: {disk: {path: \"\"}}", nil},
		{"off in the file", "cache: {disk: {path: off}}", nil},
		{"off from the variable", "", []string{"KPROXY_CACHE_DISK_PATH=off"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("XDG_CACHE_HOME", "/srv/cache")
			l, err := load(t, Sources{File: write(t, tt.file)}, tt.env...)
			if err != nil {
				t.Fatal(err)
			}
			if l.Config.Cache.Disk.Path != "" {
				t.Errorf("cache.disk.path = %q, want off", l.Config.Cache.Disk.Path)
			}
		})
	}
}

// TestOfflineWithoutLiveAndDiskOffAreValid: the rules across keys reject
// only what they must (TestConfigErrorsNameKeyAndValue has the rejections).
func TestOfflineWithoutLiveAndDiskOffAreValid(t *testing.T) {
	c := Default()
	if err := Decode([]byte("upstream: {offline: true}\ncache: {disk: {path: \"\", max_bytes: 0}}\n"), c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || !c.Upstream.Offline {
		t.Errorf("offline without live, disk off with max_bytes 0: err %v, offline %v; want valid and offline", err, c.Upstream.Offline)
	}
}
