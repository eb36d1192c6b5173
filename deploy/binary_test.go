package deploy_test

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/kproxytest"
)

// testVersion is passed as the Dockerfile's VERSION build argument.
const testVersion = "v0.0.0-deploytest"

// workDir holds the build context copy, the binary and the config files the
// binary reads. It and everything in it are world-readable so that the
// binary can run as uid 65532 when the tests run as root.
var workDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kproxy-deploy-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var build struct {
	once sync.Once
	bin  string
	log  string
	err  error
}

// kproxyBinary builds kproxy once, the way the Dockerfile does: its go build
// line, run in a copy of the build context that .dockerignore produces (so
// an ignore rule that drops a needed file fails here too).
func kproxyBinary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() { build.bin, build.log, build.err = buildLikeDockerfile(t) })
	if build.err != nil {
		t.Fatalf("building as the Dockerfile does: %v\n%s", build.err, build.log)
	}
	return build.bin
}

func buildLikeDockerfile(t *testing.T) (bin, log string, err error) {
	root := repoRoot(t)
	run := buildRun(t, dockerfile(t)[0])
	words, err := shellWords(run.Args, map[string]string{"VERSION": testVersion})
	if err != nil {
		return "", "", err
	}
	env, argv := splitEnv(words)
	rules, err := parseDockerignore(readRepoFile(t, ".dockerignore"))
	if err != nil {
		return "", "", err
	}
	ctxDir := filepath.Join(workDir, "context")
	start := time.Now()
	n, err := copyContext(root, ctxDir, rules)
	if err != nil {
		return "", "", fmt.Errorf("copying the build context: %w", err)
	}
	binDir := filepath.Join(workDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", "", err
	}
	bin = filepath.Join(binDir, "kproxy")
	for i := range argv {
		if argv[i] == "-o" && i+1 < len(argv) {
			argv[i+1] = bin
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = ctxDir
	cmd.Env = buildEnv(env)
	out, err := cmd.CombinedOutput()
	t.Logf("built %s from a %d-file context in %v: %s %s", bin, n, time.Since(start).Round(time.Millisecond), strings.Join(envList(env), " "), strings.Join(argv, " "))
	return bin, string(out), err
}

// buildEnv is the test's environment without settings that would make the
// build differ from the Dockerfile's, plus the command's own assignments.
func buildEnv(assign map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOFLAGS", "CGO_ENABLED", "GOOS", "GOARCH", "GOEXPERIMENT", "GOWORK":
			continue
		}
		if _, ok := assign[k]; !ok {
			env = append(env, kv)
		}
	}
	return append(env, envList(assign)...)
}

func envList(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// command prepares the built binary to run with exactly env (nothing
// inherited) in workDir, as uid/gid 65532 when the test runs as root, as the
// image's USER does.
func command(ctx context.Context, t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, kproxyBinary(t), args...)
	cmd.Dir = workDir
	cmd.Env = append([]string{}, env...) // never nil: nil would inherit the test's environment
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nonRootUID, Gid: nonRootUID}}
	}
	return cmd
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// writeWorkFile writes a world-readable file into workDir.
func writeWorkFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(workDir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(kproxyBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Error("binary has a PT_INTERP program header: it needs a dynamic loader, which distroless/static lacks")
		case elf.PT_DYNAMIC:
			t.Error("binary has a PT_DYNAMIC program header: it is dynamically linked")
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Error("binary has a .dynamic section")
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		t.Errorf("binary needs shared libraries (DT_NEEDED) %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Error("binary has a symbol table: -ldflags -s did not apply")
	}
}

func TestBinaryVersionIsStamped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := command(ctx, t, nil, "-version")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kproxy -version: %v\n%s", err, stderr.String())
	}
	if got, want := strings.TrimSpace(stdout.String()), "kproxy "+testVersion; got != want {
		t.Errorf("kproxy -version printed %q, want %q", got, want)
	}
}

// TestShippedConfigChecks runs `kproxy check-config` on the config.yaml the
// image ships and on the sidecar config, as the image would read them.
func TestShippedConfigChecks(t *testing.T) {
	for _, rel := range []string{"config.yaml", "deploy/config.yaml"} {
		t.Run(rel, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p := writeWorkFile(t, "check-"+strings.ReplaceAll(rel, "/", "-"), readRepoFile(t, rel))
			var stdout, stderr bytes.Buffer
			cmd := command(ctx, t, []string{"KPROXY_CONFIG=" + p}, "check-config")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("kproxy check-config with %s: %v\n%s", rel, err, stderr.String())
			}
			if !strings.Contains(stdout.String(), "max_bytes:") {
				t.Errorf("check-config printed no effective config:\n%s", stdout.String())
			}
		})
	}
}

// proc is a running kproxy.
type proc struct {
	cmd    *exec.Cmd
	base   string
	stderr *kproxytest.Buffer
	done   chan error
}

// startProxy runs kproxy as the image does (config from KPROXY_CONFIG, the
// shipped config.yaml), listening on a free loopback port, with its upstream
// pointed at a loopback port nothing listens on.
func startProxy(t *testing.T) *proc {
	t.Helper()
	cfg := writeWorkFile(t, "image-config.yaml", readRepoFile(t, "config.yaml"))
	port, dead := freePort(t), freePort(t)
	env := []string{
		"KPROXY_CONFIG=" + cfg,
		"KPROXY_LISTEN=127.0.0.1:" + strconv.Itoa(port),
		"KPROXY_UPSTREAM=http://127.0.0.1:" + strconv.Itoa(dead),
		"KPROXY_LOG_FORMAT=text",
	}
	p := &proc{base: "http://127.0.0.1:" + strconv.Itoa(port), stderr: &kproxytest.Buffer{}, done: make(chan error, 1)}
	p.cmd = command(context.Background(), t, env)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("kproxy stderr:\n%s", p.stderr.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(p.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case err := <-p.done:
			t.Fatalf("kproxy exited before serving: %v\n%s", err, p.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("kproxy did not answer /healthz within 10s\n%s", p.stderr.String())
		}
	}
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &body); err != nil {
		t.Fatalf("GET %s: %d, body is not JSON: %q", url, resp.StatusCode, data)
	}
	return resp.StatusCode, body
}

func TestBinaryServesAsNonRoot(t *testing.T) {
	p := startProxy(t)

	if os.Geteuid() == 0 {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(status)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" && f[1] != strconv.Itoa(nonRootUID) {
				t.Errorf("kproxy runs as uid %s, want %d", f[1], nonRootUID)
			}
		}
	}

	t.Run("healthcheck command", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := command(ctx, t, nil, "healthcheck", "-url", p.base+"/healthz").CombinedOutput()
		if err != nil {
			t.Errorf("kproxy healthcheck -url %s/healthz: %v, want exit 0\n%s", p.base, err, out)
		}
	})
	t.Run("probe endpoints", func(t *testing.T) {
		if code, body := getJSON(t, p.base+"/healthz"); code != 200 || body["status"] != "ok" {
			t.Errorf("/healthz = %d %v, want 200 status ok", code, body)
		}
		if code, body := getJSON(t, p.base+"/readyz"); code != 200 || body["status"] != "ready" {
			t.Errorf("/readyz = %d %v, want 200 status ready", code, body)
		}
		resp, err := http.Get(p.base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, name := range []string{"kproxy_breaker_state", "kproxy_cache_bytes"} {
			if !bytes.Contains(data, []byte("\n"+name+" ")) {
				t.Errorf("/metrics has no %s sample", name)
			}
		}
	})
	// The error answers the README troubleshooting section describes.
	t.Run("error answers", func(t *testing.T) {
		tests := []struct {
			path   string
			status int
			code   string
		}{
			{"/nope", 404, "not_found"},
			{"/trade-api/v2/markets/%2e%2e/portfolio/balance", 400, "bad_path"},
			{"/trade-api/v2/exchange/status", 502, "upstream_unreachable"},
		}
		for _, tt := range tests {
			code, body := getJSON(t, p.base+tt.path)
			if code != tt.status || body["code"] != tt.code {
				t.Errorf("GET %s = %d %v, want %d with code %q", tt.path, code, body, tt.status, tt.code)
			}
		}
	})
	t.Run("SIGTERM exits 0", func(t *testing.T) {
		start := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-p.done:
			p.done <- err // for the cleanup
			if err != nil {
				t.Errorf("after SIGTERM kproxy exited with %v, want 0", err)
			}
			t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
		case <-time.After(12 * time.Second):
			t.Error("kproxy still running 12s after SIGTERM (shutdown_timeout is 10s)")
		}
	})
}

func TestHealthcheckFailsWithinTimeout(t *testing.T) {
	// A port that accepts connections and never answers: only the timeout
	// ends the check.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	tests := []struct {
		name string
		url  string
	}{
		{"nothing listening", fmt.Sprintf("http://127.0.0.1:%d/healthz", freePort(t))},
		{"never answers", "http://" + silent.Addr().String() + "/healthz"},
	}
	const timeout = 500 * time.Millisecond
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			out, err := command(ctx, t, nil, "healthcheck", "-timeout", timeout.String(), "-url", tt.url).CombinedOutput()
			elapsed := time.Since(start)
			if exitCode(err) <= 0 {
				t.Errorf("kproxy healthcheck -url %s: exit %d (%v), want non-zero", tt.url, exitCode(err), err)
			}
			if elapsed > timeout+2*time.Second {
				t.Errorf("kproxy healthcheck took %v, want about its -timeout %v", elapsed, timeout)
			}
			t.Logf("exit %d after %v: %s", exitCode(err), elapsed.Round(time.Millisecond), bytes.TrimSpace(out))
		})
	}
}

func TestBadConfigExitsWithOneLine(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		file string // config file content, when not empty
		want []string
	}{
		{name: "bad log level from env", env: []string{"KPROXY_LOG_LEVEL=loud"}, want: []string{"log.level", `"loud"`}},
		{name: "negative cache size", file: "cache: {max_bytes: -1}\n", want: []string{"cache.max_bytes", "-1"}},
		{name: "unknown key", file: "cache: {maxbytes: 1MiB}\n", want: []string{"cache.maxbytes", "unknown key"}},
		{name: "bad duration", file: "upstream: {timeout: soon}\n", want: []string{"upstream.timeout", `"soon"`}},
		{name: "bad upstream URL from env", env: []string{"KPROXY_UPSTREAM=ftp://example"}, want: []string{"upstream.url", `"ftp://example"`}},
		{name: "missing named file", env: []string{"KPROXY_CONFIG=/nonexistent/kproxy.yaml"}, want: []string{"/nonexistent/kproxy.yaml"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := append([]string{"KPROXY_LISTEN=127.0.0.1:" + strconv.Itoa(freePort(t))}, tt.env...)
			if tt.file != "" {
				env = append(env, "KPROXY_CONFIG="+writeWorkFile(t, fmt.Sprintf("bad-%d.yaml", i), tt.file))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			cmd := command(ctx, t, env)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatal("kproxy kept running with a bad config")
			}
			if exitCode(err) <= 0 {
				t.Errorf("exit %d (%v), want non-zero", exitCode(err), err)
			}
			lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
			if len(lines) != 1 || lines[0] == "" {
				t.Fatalf("stderr has %d lines, want exactly 1:\n%s", len(lines), stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("stderr %q does not contain %q", lines[0], w)
				}
			}
		})
	}
}
