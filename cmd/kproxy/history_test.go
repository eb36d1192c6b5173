package main

// The history tier with the real binary (docs/history.md): what one
// process wrote to disk is served by the next one on the same directory,
// after kill -9 or SIGTERM, with no request to Kalshi; a directory kproxy
// cannot use never stops it.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

// TestMain keeps the package's tests away from the real ~/.cache/kproxy:
// the default cache.disk.path is under XDG_CACHE_HOME, a directory of the
// test run's own. (Tests of the disk tier name their own directories.)
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kproxy-cache-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CACHE_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	if built.path != "" {
		os.RemoveAll(filepath.Dir(built.path))
	}
	os.Exit(code)
}

// built is the kproxy binary, built once for the package's tests.
var built struct {
	once sync.Once
	path string
	out  []byte
	err  error
}

func kproxyBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "kproxy-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "kproxy")
		built.out, built.err = exec.Command("go", "build", "-o", built.path, ".").CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.out)
	}
	return built.path
}

// process is one kproxy binary running on loopback.
type process struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	stderr *kproxytest.Buffer
	// exited is closed when the process has exited, with waitErr set.
	exited  chan struct{}
	waitErr error
}

// startKproxy runs the binary in front of upstream with the disk tier in
// dir and env's extra KPROXY_* settings, and returns once it is ready.
func startKproxy(t *testing.T, upstream, dir string, env ...string) *process {
	t.Helper()
	addr := kproxytest.ClosedAddr(t) // a free loopback port for the process to take
	cmd := exec.Command(kproxyBinary(t))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KPROXY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "KPROXY_LISTEN="+addr, "KPROXY_UPSTREAM="+upstream, "KPROXY_CACHE_DISK_PATH="+dir,
		"KPROXY_LOG_ACCESS=false", "KPROXY_BATCH_AUTO_WINDOW=0s")
	cmd.Env = append(cmd.Env, env...)
	p := &process{t: t, cmd: cmd, url: "http://" + addr, stderr: &kproxytest.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	p.waitFor(func() bool {
		code, _, _ := p.tryGet("/readyz")
		return code == http.StatusOK
	}, "ready")
	return p
}

// waitFor polls cond (a bounded wait for another process's state, which
// sends no signal of its own) until it holds, or fails the test after 20 s.
func (p *process) waitFor(cond func() bool, what string) {
	p.t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case <-p.exited:
			p.t.Fatalf("kproxy exited (%v) waiting for %s; stderr:\n%s", p.waitErr, what, p.stderr)
		case <-deadline:
			p.t.Fatalf("kproxy not %s after 20s; stderr:\n%s", what, p.stderr)
		case <-tick.C:
		}
	}
}

func (p *process) tryGet(path string) (int, http.Header, []byte) {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, p.url+path, nil)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return 0, nil, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (p *process) get(path string) (http.Header, []byte) {
	p.t.Helper()
	code, h, b := p.tryGet(path)
	if code != http.StatusOK {
		p.t.Fatalf("GET %s: %d %s", path, code, b)
	}
	return h, b
}

// metric is the value of an unlabelled metric on /metrics.
func (p *process) metric(name string) float64 {
	_, _, b := p.tryGet("/metrics")
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// readyDisk is /readyz's "disk".
func (p *process) readyDisk() string {
	_, b := p.get("/readyz")
	var r struct{ Disk string }
	json.Unmarshal(b, &r)
	return r.Disk
}

// backtest are the settled-history answers a backtest reads.
var backtest = []string{
	"/trade-api/v2/markets/KXCPIYOY-26MAR-T3.0",
	"/trade-api/v2/events/KXCPIYOY-26MAR?with_nested_markets=true",
	"/trade-api/v2/historical/trades?ticker=KXCPIYOY-25SEP-T2.8&limit=1000",
	"/trade-api/v2/series/KXCPIYOY/markets/KXCPIYOY-26MAR-T3.0/candlesticks?start_ts=1773400000&end_ts=1773500000&period_interval=60",
	"/trade-api/v2/series/KXCPIYOY",
}

type firstAnswer struct {
	body []byte
	etag string
}

func runBacktest(p *process) map[string]firstAnswer {
	out := map[string]firstAnswer{}
	for _, path := range backtest {
		h, b := p.get(path)
		out[path] = firstAnswer{b, h.Get("ETag")}
	}
	return out
}

func TestRestartServesFromDisk(t *testing.T) {
	for _, c := range []struct {
		name string
		stop func(t *testing.T, p *process)
	}{
		{"kill -9", func(t *testing.T, p *process) {
			// The writes are asynchronous: wait until they are committed,
			// as a backtest's second run would (it starts later).
			p.waitFor(func() bool { return p.metric("kproxy_disk_writes_total") >= float64(len(backtest)) }, "written to disk")
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}},
		{"SIGTERM", func(t *testing.T, p *process) {
			// No wait: a clean stop writes what is queued.
			p.cmd.Process.Signal(syscall.SIGTERM)
			<-p.exited
			if p.waitErr != nil {
				t.Errorf("exit after SIGTERM: %v; stderr:\n%s", p.waitErr, p.stderr)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fake := kalshitest.New()
			up := httptest.NewServer(fake)
			defer up.Close()
			dir := t.TempDir()
			p0 := startKproxy(t, up.URL, dir)
			first := runBacktest(p0)
			c.stop(t, p0)

			fake.Reset()
			p := startKproxy(t, up.URL, dir)
			if got := p.readyDisk(); got != "up" {
				t.Errorf("/readyz disk after restart = %q, want up", got)
			}
			for _, path := range backtest {
				h, body := p.get(path)
				if !bytes.Equal(body, first[path].body) {
					t.Errorf("GET %s after restart: body differs from the first run's", path)
				}
				if got := h.Get("ETag"); got != first[path].etag {
					t.Errorf("GET %s after restart: ETag %q, want %q", path, got, first[path].etag)
				}
				if got := h.Get("Cache-Status"); h.Get("X-Cache") != "HIT" || !strings.HasSuffix(got, "; detail=disk") {
					t.Errorf("GET %s after restart: X-Cache %q, Cache-Status %q, want HIT with detail=disk", path, h.Get("X-Cache"), got)
				}
			}
			if n := fake.Total(); n != 0 {
				t.Errorf("upstream requests after the restart: %d, want 0", n)
			}
		})
	}
}

func TestUnusableDiskNeverStopsTheBinary(t *testing.T) {
	fake := kalshitest.New()
	up := httptest.NewServer(fake)
	defer up.Close()
	dir := t.TempDir()
	holder := startKproxy(t, up.URL, dir)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, dir, why string
	}{
		{"a directory held by another kproxy", dir, "locked by another kproxy (pid " + strconv.Itoa(holder.cmd.Process.Pid) + ")"},
		{"a directory that cannot be created", filepath.Join(notDir, "sub"), "cannot create directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := startKproxy(t, up.URL, c.dir)
			if got := p.readyDisk(); got != "down" {
				t.Errorf("/readyz disk = %q, want down", got)
			}
			if _, b := p.get("/trade-api/v2/series/KXCPIYOY"); !bytes.Contains(b, []byte("KXCPIYOY")) {
				t.Errorf("GET series: %s", b)
			}
			if got := p.metric("kproxy_disk_up"); got != 0 {
				t.Errorf("kproxy_disk_up = %v, want 0", got)
			}
			if n := strings.Count(p.stderr.String(), c.why); n != 1 {
				t.Errorf("stderr names %q %d times, want once:\n%s", c.why, n, p.stderr)
			}
		})
	}
	if got := holder.readyDisk(); got != "up" {
		t.Errorf("the holder's disk = %q, want up", got)
	}
}
