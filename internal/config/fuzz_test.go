package config_test

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kproxy/kproxy/internal/config"
)

// FuzzDecode (issue 11, item 1): config.Decode never panics; an error is
// either YAML that does not parse at all or a KeyError naming the key (a
// dotted path, or "(top level)") and a message; a file that decodes and
// validates renders (YAML) into a file that decodes and validates to the
// same rendering.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"", "listen: \":9090\"\n", "upstream:\n  timeout: 1500ms\n  max_retries: 3\n",
		"upstream:\n  timeout: soon\n", "cache:\n  max_bytes: 64MiB\n  routes:\n    - pattern: /trade-api/v2/markets\n      ttl: 2s\n",
		"cache:\n  routes:\n    - pattern: /trade-api/v2/portfolio\n      ttl: 1s\n", "nope: 1\n", "upstream: [1, 2]\n",
		"a: &x {b: *x}\n", "upstream: &u {timeout: 1s}\nbreaker: *u\n", "- 1\n- 2\n", "log: {level: DEBUG, format: text}\n",
		"cache:\n  max_bytes: -1\n", "batch:\n  max_items: 99999999999999999999\n", "admin:\n  token: s3cret\n",
		"redis:\n  url: redis://u:p@127.0.0.1:6379/0\n", "upstream: {offline: true}\ncache: {disk: {path: off, max_bytes: 2GiB}}\n", "cache: {max_byte: 1}\n", "upstream:\n  url: ftp://x\n", "\t\x00", "{{{",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := config.Default()
		err := config.Decode(data, cfg)
		if err != nil {
			var ke *config.KeyError
			if errors.As(err, &ke) {
				if ke.Key == "" || ke.Err == nil || !strings.Contains(err.Error(), ke.Key) {
					t.Fatalf("Decode(%q) = %v: a KeyError must name its key", data, err)
				}
				return
			}
			var n yaml.Node
			if yaml.Unmarshal(data, &n) == nil {
				t.Fatalf("Decode(%q) = %v: YAML that parses must fail with a KeyError naming the key", data, err)
			}
			return
		}
		if cfg.Validate() != nil {
			return
		}
		out := cfg.YAML()
		again := config.Default()
		if err := config.Decode([]byte(out), again); err != nil {
			t.Fatalf("Decode(YAML()) = %v for the rendering %q of %q", err, out, data)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("the rendering %q of a valid config (%q) does not validate: %v", out, data, err)
		}
		if out2 := again.YAML(); out2 != out {
			t.Fatalf("rendering is not stable:\n%s\nthen\n%s", out, out2)
		}
	})
}

// TestDecodeEmptyKeyIsNamed is the regression test of what FuzzDecode
// found: an empty mapping key (here behind an anchor) gave the error
// "config: : unknown key", naming nothing.
func TestDecodeEmptyKeyIsNamed(t *testing.T) {
	for _, in := range []string{"&0000000:\n  0000000: 00000\n000: 00", `"": 1`, "upstream:\n  \"\": 1\n"} {
		err := config.Decode([]byte(in), config.Default())
		var ke *config.KeyError
		if !errors.As(err, &ke) || !strings.Contains(ke.Key, `""`) {
			t.Errorf("Decode(%q) = %v, want a KeyError naming the empty key as \"\"", in, err)
		}
	}
}
