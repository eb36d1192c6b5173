package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

func TestHelpEverywhereExitsZero(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"-h"}, []string{"caching proxy for Kalshi", "check-config", "healthcheck", "-listen ADDR", "KPROXY_UPSTREAM_TIMEOUT", "docs/configuration.md"}},
		{[]string{"-help"}, []string{"caching proxy for Kalshi"}},
		{[]string{"--help"}, []string{"caching proxy for Kalshi"}},
		{[]string{"help"}, []string{"caching proxy for Kalshi"}},
		{[]string{"check-config", "-h"}, []string{"kproxy check-config", "exactly as startup does", "-config FILE"}},
		{[]string{"check-config", "--help"}, []string{"kproxy check-config"}},
		{[]string{"healthcheck", "-help"}, []string{"kproxy healthcheck", "-url URL", "-timeout"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.args...)
			if code != 0 || errOut != "" {
				t.Errorf("exit %d, stderr %q; want 0 and nothing on stderr", code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("help does not contain %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestHelpListsEveryVariable: the list is generated from the config
// struct, so a new key shows up in -h by itself.
func TestHelpListsEveryVariable(t *testing.T) {
	_, out, _ := runCLI(t, "-h")
	for _, v := range config.Vars() {
		if !regexp.MustCompile(`(?m)^  ` + v.Name + ` `).MatchString(out) {
			t.Errorf("-h does not list %s", v.Name)
		}
	}
	for _, name := range []string{"KPROXY_CONFIG", "KPROXY_UPSTREAM", "KPROXY_URL"} {
		if !strings.Contains(out, "  "+name+" ") {
			t.Errorf("-h does not list %s", name)
		}
	}
	if !strings.Contains(out, "cache.routes") || !strings.Contains(out, "only be set in the file") {
		t.Errorf("-h does not say that lists are not settable from the environment")
	}
}

func TestBadArgumentsPointToHelp(t *testing.T) {
	for _, args := range [][]string{{"-no-such-flag"}, {"check-config", "-nope"}, {"healthcheck", "-x"}} {
		code, _, errOut := runCLI(t, args...)
		if code != 2 || !strings.Contains(errOut, "-h' for help") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a pointer to -h", args, code, errOut)
		}
	}
}

// TestCheckConfigFailsExactlyWhenStartupFails runs check-config and then
// startup itself with the same arguments and environment: both fail with
// the same one-line error.
func TestCheckConfigFailsExactlyWhenStartupFails(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	badKey := filepath.Join(t.TempDir(), "key.pem")
	os.WriteFile(badKey, []byte("not a key"), 0o600)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"listen address that is not one", []string{"-listen", "nonsense"}, nil, `config: -listen (listen): "nonsense": cannot listen`},
		{"listen address in use", []string{"-listen", taken.Addr().String()}, nil, "address already in use"},
		{"listen from the environment", nil, map[string]string{"KPROXY_LISTEN": "256.0.0.1:1"}, `config: KPROXY_LISTEN (listen): "256.0.0.1:1": cannot listen`},
		{"missing key file", []string{"-listen", "127.0.0.1:0"}, map[string]string{"KPROXY_UPSTREAM_API_KEY_ID": "k", "KPROXY_UPSTREAM_PRIVATE_KEY_FILE": "/nonexistent/key.pem"}, `KPROXY_UPSTREAM_PRIVATE_KEY_FILE (upstream.private_key_file): "/nonexistent/key.pem"`},
		{"unparsable key file", []string{"-listen", "127.0.0.1:0"}, map[string]string{"KPROXY_UPSTREAM_API_KEY_ID": "k", "KPROXY_UPSTREAM_PRIVATE_KEY_FILE": badKey}, "no PEM block"},
		{"bad value from the environment", []string{"-listen", "127.0.0.1:0"}, map[string]string{"KPROXY_UPSTREAM_TIMEOUT": "abc"}, `config: KPROXY_UPSTREAM_TIMEOUT (upstream.timeout): "abc": not a duration`},
		{"unknown variable", []string{"-listen", "127.0.0.1:0"}, map[string]string{"KPROXY_CACHE_MAXBYTES": "1MiB"}, "config: unknown variable KPROXY_CACHE_MAXBYTES (did you mean KPROXY_CACHE_MAX_BYTES?)"},
		{"unknown key in the file", []string{"-listen", "127.0.0.1:0", "-config", "typo.yaml"}, nil, "config: unknown key cache.max_byte (did you mean cache.max_bytes?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			os.WriteFile("typo.yaml", []byte("cache: {max_byte: 1MiB}\n"), 0o600)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			code, _, checkErr := runCLI(t, append([]string{"check-config"}, tt.args...)...)
			if code != 1 || strings.Count(checkErr, "\n") != 1 || !strings.Contains(checkErr, tt.want) {
				t.Errorf("check-config: exit %d, stderr %q; want 1 and one line with %q", code, checkErr, tt.want)
			}
			code, _, runErr := runCLI(t, tt.args...)
			if code != 1 || runErr != checkErr {
				t.Errorf("startup: exit %d, stderr %q; want 1 and check-config's line %q", code, runErr, checkErr)
			}
		})
	}
}

func TestCheckConfigPassesAndReleasesTheAddress(t *testing.T) {
	t.Chdir(t.TempDir())
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv("KPROXY_CACHE_MAX_BYTES", "64MiB")
	code, out, errOut := runCLI(t, "check-config", "-listen", addr)
	if code != 0 || !strings.Contains(out, "max_bytes: 64MiB") || !strings.Contains(out, "kproxy would start") {
		t.Fatalf("check-config: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("check-config kept %s: %v", addr, err)
	}
	ln.Close()
}

func TestCheckConfigPrintsEffectiveRoutes(t *testing.T) {
	t.Chdir(t.TempDir())
	os.WriteFile("config.yaml", []byte(`
cache:
  overrides:
    - {pattern: "/trade-api/v2/markets/{ticker}", ttl: 1s, stale_while_revalidate: 5s}
`), 0o600)
	code, out, errOut := runCLI(t, "check-config", "-listen", "127.0.0.1:0")
	want := "- {pattern: '/trade-api/v2/markets/{ticker}', ttl: 1s, stale_while_revalidate: 5s, stale_if_error: 10m, legacy_fields: false}"
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "file: config.yaml") {
		t.Errorf("check-config: exit %d, stderr %q; want the overridden route %q in:\n%s", code, errOut, want, out)
	}
	os.WriteFile("config.yaml", []byte("cache: {overrides: [{pattern: /trade-api/v2/marketz, ttl: 1s}]}\n"), 0o600)
	code, _, errOut = runCLI(t, "check-config", "-listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errOut, `cache.overrides[0].pattern: "/trade-api/v2/marketz"`) {
		t.Errorf("unknown override pattern: exit %d, stderr %q", code, errOut)
	}
}

// TestSIGTERMDrainsForDrainDelayThenExitsZero sends the process a real
// SIGTERM while run serves: readiness turns 503 at once while requests are
// still answered, then run returns 0.
func TestSIGTERMDrainsForDrainDelayThenExitsZero(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("KPROXY_DRAIN_DELAY", "2s")
	t.Setenv("KPROXY_LOG_FORMAT", "text")
	var stderr kproxytest.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- run([]string{"-listen", "127.0.0.1:0", "-upstream", "http://127.0.0.1:1"}, io.Discard, &stderr)
	}()
	addrRE := regexp.MustCompile(`msg="kproxy listening" addr=(127\.0\.0\.1:\d+)`)
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == ""; {
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			base = "http://" + m[1]
			break
		}
		select {
		case code := <-exit:
			t.Fatalf("run exited %d before serving: %s", code, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("kproxy did not start: %s", stderr.String())
		}
	}
	get := func(path string) (int, string) {
		// A new connection each time: the listener must still accept.
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, err := c.Get(base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Fatalf("readyz before SIGTERM: %d %s", code, body)
	}
	start := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		code, body := get("/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, `"status":"draining"`) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("readyz never turned 503 draining: %d %s", code, body)
		}
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("a request during drain_delay: %d %s, want it served", code, body)
	}
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0: %s", code, stderr.String())
		}
		if d := time.Since(start); d < 2*time.Second {
			t.Errorf("exited %v after SIGTERM, before drain_delay 2s", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after SIGTERM")
	}
	if code, _ := get("/healthz"); code != 0 {
		t.Errorf("still serving after exit: %d", code)
	}
}

// TestCheckConfigOutputLoadsBackWithItsSources: check-config marks each
// value with where it came from, and its output, used as the only config
// file with no flags or variables, gives the same effective configuration.
func TestCheckConfigOutputLoadsBackWithItsSources(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	os.WriteFile("config.yaml", []byte("batch: {max_items: 9}\nadmin: {token: s3cret}\n"), 0o600)
	t.Setenv("KPROXY_UPSTREAM_TIMEOUT", "1500ms")
	t.Setenv("KPROXY_UPSTREAM_OFFLINE", "true")
	code, out, errOut := runCLI(t, "check-config", "-listen", "127.0.0.1:0", "-upstream", "http://127.0.0.1:9")
	if code != 0 {
		t.Fatalf("check-config: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"listen: 127.0.0.1:0 # from flag -listen",
		"url: http://127.0.0.1:9 # from flag -upstream",
		"timeout: 1.5s # from KPROXY_UPSTREAM_TIMEOUT",
		"offline: true # from KPROXY_UPSTREAM_OFFLINE",
		"max_items: 9 # from file",
		"token: (redacted) # from file",
		"max_pages: 50 # default",
		"ws_url: ws://127.0.0.1:9/trade-api/ws/v2 # derived from upstream.url",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("check-config shows the admin token")
	}
	t.Setenv("KPROXY_UPSTREAM_TIMEOUT", "")
	t.Setenv("KPROXY_UPSTREAM_OFFLINE", "")
	os.WriteFile("effective.yaml", []byte(out), 0o600)
	code, again, errOut := runCLI(t, "check-config", "-config", "effective.yaml")
	if code != 0 {
		t.Fatalf("check-config of its own output: exit %d, stderr %q\n%s", code, errOut, out)
	}
	var first, second map[string]any
	if err := yaml.Unmarshal([]byte(out), &first); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(again), &second); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, second) {
		t.Errorf("read back, the effective configuration changed:\nfirst  %s\nsecond %s", out, again)
	}
	if !strings.Contains(again, "timeout: 1.5s # from file") {
		t.Errorf("read back, upstream.timeout is not marked as from the file:\n%s", again)
	}
}
