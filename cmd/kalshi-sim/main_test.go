package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

// TestMain lets the test binary act as the kalshi-sim command, so that
// TestSignals can run it as a real process.
func TestMain(m *testing.M) {
	if os.Getenv("KALSHI_SIM_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// keyFiles writes one RSA key in every supported PEM encoding, plus invalid
// files, and returns their paths by name.
func keyFiles(t *testing.T) (map[string]string, *rsa.PrivateKey) {
	t.Helper()
	key := kalshitest.TestKey(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ecPKIX, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]*pem.Block{
		"pkix":    {Type: "PUBLIC KEY", Bytes: pkix},
		"pkcs1":   {Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&key.PublicKey)},
		"pkcs8":   {Type: "PRIVATE KEY", Bytes: pkcs8},
		"private": {Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)},
		"ec":      {Type: "PUBLIC KEY", Bytes: ecPKIX},
		"cert":    {Type: "CERTIFICATE", Bytes: []byte("x")},
		"garbled": {Type: "PUBLIC KEY", Bytes: []byte("x")},
	}
	dir := t.TempDir()
	paths := map[string]string{"missing": filepath.Join(dir, "missing.pem")}
	for name, b := range blocks {
		paths[name] = filepath.Join(dir, name+".pem")
		if err := os.WriteFile(paths[name], pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	paths["not-pem"] = filepath.Join(dir, "not.pem")
	if err := os.WriteFile(paths["not-pem"], []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	return paths, key
}

func TestParseFlags(t *testing.T) {
	keys, key := keyFiles(t)
	tests := []struct {
		name       string
		args       []string
		want       config // publicKey compared by presence only
		wantKey    bool
		wantErr    bool
		wantErrMsg string // substring, if set
	}{
		{name: "defaults", args: nil, want: config{listen: "127.0.0.1:9090"}},
		{
			name: "all flags",
			args: []string{"-listen", ":0", "-latency", "150ms", "-series", "KXA:10", "-series", "KXB:0,KXC.1:3", "-v", "-public-key", keys["pkix"]},
			want: config{listen: ":0", latency: 150 * time.Millisecond, verbose: true,
				series: []seriesArg{{"KXA", 10}, {"KXB", 0}, {"KXC.1", 3}}},
			wantKey: true,
		},
		{name: "historical cutoff", args: []string{"-historical-cutoff", "2026-05-01T00:00:00Z"},
			want: config{listen: "127.0.0.1:9090", cutoff: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}},
		{name: "bad historical cutoff", args: []string{"-historical-cutoff", "May 1"}, wantErr: true},
		{name: "PKCS#1 public key", args: []string{"-public-key", keys["pkcs1"]}, want: config{listen: "127.0.0.1:9090"}, wantKey: true},
		{name: "PKCS#8 private key", args: []string{"-public-key", keys["pkcs8"]}, want: config{listen: "127.0.0.1:9090"}, wantKey: true},
		{name: "PKCS#1 private key", args: []string{"-public-key", keys["private"]}, want: config{listen: "127.0.0.1:9090"}, wantKey: true},
		{name: "help", args: []string{"-h"}, wantErr: true},
		{name: "series without count", args: []string{"-series", "KXA"}, wantErr: true},
		{name: "series negative", args: []string{"-series", "KXA:-1"}, wantErr: true},
		{name: "series too large", args: []string{"-series", "KXA:100001"}, wantErr: true},
		{name: "series not a number", args: []string{"-series", "KXA:ten"}, wantErr: true},
		{name: "series empty ticker", args: []string{"-series", ":3"}, wantErr: true},
		{name: "series with slash", args: []string{"-series", "KX/A:3"}, wantErr: true},
		{name: "negative latency", args: []string{"-latency", "-1s"}, wantErr: true, wantErrMsg: "negative"},
		{name: "bad latency", args: []string{"-latency", "soon"}, wantErr: true},
		{name: "extra argument", args: []string{"serve"}, wantErr: true, wantErrMsg: "unexpected"},
		{name: "missing key file", args: []string{"-public-key", keys["missing"]}, wantErr: true, wantErrMsg: "-public-key"},
		{name: "not PEM", args: []string{"-public-key", keys["not-pem"]}, wantErr: true, wantErrMsg: "no PEM block"},
		{name: "EC key", args: []string{"-public-key", keys["ec"]}, wantErr: true, wantErrMsg: "not an RSA key"},
		{name: "certificate", args: []string{"-public-key", keys["cert"]}, wantErr: true, wantErrMsg: "unsupported PEM block"},
		{name: "garbled key", args: []string{"-public-key", keys["garbled"]}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseFlags(%q) error = %v, want error: %v", tt.args, err, tt.wantErr)
			}
			if err != nil {
				if tt.wantErrMsg != "" && !strings.Contains(err.Error(), tt.wantErrMsg) {
					t.Errorf("error = %q, want it to contain %q", err, tt.wantErrMsg)
				}
				return
			}
			if (got.publicKey != nil) != tt.wantKey {
				t.Errorf("publicKey set = %v, want %v", got.publicKey != nil, tt.wantKey)
			}
			if got.publicKey != nil && !got.publicKey.Equal(&key.PublicKey) {
				t.Error("publicKey differs from the key written to the file")
			}
			got.publicKey = nil
			wantCutoff := tt.want.cutoff
			if wantCutoff.IsZero() {
				wantCutoff = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			}
			if !got.cutoff.Equal(wantCutoff) {
				t.Errorf("cutoff = %v, want %v", got.cutoff, wantCutoff)
			}
			if got.listen != tt.want.listen || got.latency != tt.want.latency || got.verbose != tt.want.verbose ||
				!slices.Equal(got.series, tt.want.series) {
				t.Errorf("parseFlags(%q) = %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("parseFlags(-h) error = %v, want flag.ErrHelp", err)
	}
}

// sim is a simulator serving on 127.0.0.1 inside the test process.
type sim struct {
	addr string             // where it listens, host:port
	logs *kproxytest.Buffer // what it logged
	stop context.CancelFunc // ends serve; also called when the test ends
	done chan error         // serve's result, once it returned
}

// startSim runs serve with the flags args on a fresh loopback port.
func startSim(t *testing.T, args ...string) *sim {
	t.Helper()
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := &sim{addr: ln.Addr().String(), logs: &kproxytest.Buffer{}, stop: cancel, done: make(chan error, 1)}
	go func() { s.done <- serve(ctx, cfg, ln, log.New(s.logs, "", 0)) }()
	return s
}

func TestServe(t *testing.T) {
	keys, key := keyFiles(t)
	s := startSim(t, "-series", "KXSIM:7", "-latency", "20ms", "-public-key", keys["pkix"], "-v")
	base := "http://" + s.addr + "/trade-api/v2"

	sig, err := kalshitest.Sign(key, "1700000000000", "GET", "/trade-api/v2/portfolio/balance")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		path       string
		header     http.Header
		wantStatus int
	}{
		{"added series", "/series/KXSIM", nil, 200},
		{"added markets", "/markets/KXSIM-26JUN30-M007", nil, 200},
		{"default universe", "/events/KXEARNINGSMENTIONMETA-26JUN30?with_nested_markets=true", nil, 200},
		{"historical market before the default cutoff", "/historical/markets/KXCPIYOY-25SEP-T2.6", nil, 200},
		{"trades", "/markets/trades?ticker=KXFEDDECISION-26JUN30-H0&limit=1000", nil, 200},
		{"candlesticks", "/series/KXFEDDECISION/markets/KXFEDDECISION-26JUN30-H0/candlesticks?start_ts=1780000000&end_ts=1780036000&period_interval=60", nil, 200},
		{"signature required", "/portfolio/balance", nil, 401},
		{"signature verified", "/portfolio/balance", http.Header{
			"Kalshi-Access-Key": {"k"}, "Kalshi-Access-Timestamp": {"1700000000000"}, "Kalshi-Access-Signature": {sig},
		}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range tt.header {
				req.Header[k] = vs
			}
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("GET %s = %d, want %d", tt.path, resp.StatusCode, tt.wantStatus)
			}
			if elapsed := time.Since(start); elapsed < 20*time.Millisecond {
				t.Errorf("GET %s took %v, want >= 20ms (-latency)", tt.path, elapsed)
			}
		})
	}

	s.stop()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("serve returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	out := s.logs.String()
	if want := "kalshi-sim listening on " + base + "\n"; !strings.HasPrefix(out, want) {
		t.Errorf("log starts with %q, want %q", out, want)
	}
	if want := "GET /trade-api/v2/series/KXSIM -> 200"; !strings.Contains(out, want) {
		t.Errorf("-v log = %q, want a line containing %q", out, want)
	}
}

func TestSignals(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGINT/SIGTERM delivery on Windows")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	listening := regexp.MustCompile(`kalshi-sim listening on (http://\S+/trade-api/v2)$`)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(exe, "-listen", "127.0.0.1:0")
			cmd.Env = append(os.Environ(), "KALSHI_SIM_RUN_MAIN=1")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill() })

			lines := make(chan string)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					lines <- sc.Text()
				}
			}()
			var base string
			select {
			case line, ok := <-lines:
				m := listening.FindStringSubmatch(line)
				if !ok || m == nil {
					t.Fatalf("first log line = %q, want one matching %v", line, listening)
				}
				base = m[1]
			case <-time.After(20 * time.Second):
				t.Fatal("no start line within 20s")
			}
			go func() {
				for range lines { // drain
				}
			}()

			resp, err := http.Get(base + "/exchange/status")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /exchange/status = %d, want 200", resp.StatusCode)
			}

			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			select {
			case err := <-waited:
				if err != nil {
					t.Errorf("kalshi-sim exited with %v after %v, want exit status 0", err, sig)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("kalshi-sim still running 20s after %v", sig)
			}
		})
	}
}
