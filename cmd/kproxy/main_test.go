package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "-version")
	if code != 0 || strings.TrimSpace(out) != "kproxy dev" {
		t.Errorf("-version: exit %d, %q; want 0, \"kproxy dev\"", code, out)
	}
}

func TestCheckConfig(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("KPROXY_LOG_LEVEL", "")
	good := filepath.Join(t.TempDir(), "good.yaml")
	os.WriteFile(good, []byte("listen: \":9000\"\nupstream: {tier: premier}\n"), 0o600)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("cache: {max_bytes: -1}\n"), 0o600)

	code, out, _ := runCLI(t, "check-config", "-config", good)
	if code != 0 || !strings.Contains(out, "listen: :9000") || !strings.Contains(out, "read_rate: 100") {
		t.Errorf("check-config good: exit %d, output %q", code, out)
	}
	code, _, errOut := runCLI(t, "check-config", "-config", bad)
	if code != 1 || !strings.Contains(errOut, "cache.max_bytes") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("check-config bad: exit %d, stderr %q; want 1 and one line naming cache.max_bytes", code, errOut)
	}
	code, _, errOut = runCLI(t, "check-config", "-config", "missing.yaml")
	if code != 1 || !strings.Contains(errOut, "missing.yaml") {
		t.Errorf("check-config missing file: exit %d, stderr %q", code, errOut)
	}
	code, out, _ = runCLI(t, "check-config", "-listen", "127.0.0.1:7777")
	if code != 0 || !strings.Contains(out, "127.0.0.1:7777") || !strings.Contains(out, "built-in defaults") {
		t.Errorf("check-config flags: exit %d, output %q", code, out)
	}
}

func TestHealthcheck(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ok.Close()
	if code, _, errOut := runCLI(t, "healthcheck", "-url", ok.URL+"/healthz"); code != 0 {
		t.Errorf("healthy: exit %d (%s)", code, errOut)
	}
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	if code, _, _ := runCLI(t, "healthcheck", "-url", failing.URL); code != 1 {
		t.Errorf("503: exit %d, want 1", code)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	if code, _, _ := runCLI(t, "healthcheck", "-url", "http://"+dead+"/healthz", "-timeout", "500ms"); code != 1 {
		t.Errorf("dead port: exit %d, want 1", code)
	}
}

func TestBadArguments(t *testing.T) {
	if code, _, errOut := runCLI(t, "serve-forever"); code != 2 || !strings.Contains(errOut, "serve-forever") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := runCLI(t, "-no-such-flag"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	t.Setenv("KPROXY_LOG_LEVEL", "loud")
	t.Chdir(t.TempDir())
	if code, _, errOut := runCLI(t, "-listen", "127.0.0.1:0"); code != 1 || !strings.Contains(errOut, `KPROXY_LOG_LEVEL (log.level): "loud"`) {
		t.Errorf("bad env: exit %d, stderr %q", code, errOut)
	}
}

func TestCheckConfigRedactsTheAdminToken(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("KPROXY_ADMIN_TOKEN", "s3cret-token")
	code, out, _ := runCLI(t, "check-config")
	if code != 0 || strings.Contains(out, "s3cret-token") || !strings.Contains(out, "(redacted)") {
		t.Errorf("check-config printed the admin token: %q", out)
	}
}
