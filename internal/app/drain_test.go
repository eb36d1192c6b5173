package app_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

// TestDrainDelayKeepsServingWhileReadinessIsDraining: after the signal,
// /readyz is 503 at once while new connections are still accepted and
// answered (each told to close, so pooled clients move on) for
// drain_delay; only then does the listener close.
func TestDrainDelayKeepsServingWhileReadinessIsDraining(t *testing.T) {
	const delay = 2 * time.Second
	p := kproxytest.New(t, kproxytest.WithServe(), kproxytest.WithConfig(func(c *config.Config) {
		c.DrainDelay = config.Duration(delay)
		c.ShutdownTimeout = config.Duration(5 * time.Second)
	}))
	base, cancel, served := p.URL, p.Drain, p.Served()

	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func(path string) (*http.Response, string, error) {
		resp, err := fresh.Get(base + path)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp, b.String(), nil
	}
	if resp, body, err := get("/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz before the signal: %v %v %s", resp, err, body)
	}

	start := time.Now()
	cancel() // what SIGTERM does in main
	resp, body, err := get("/readyz")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"status":"draining"`) {
		t.Fatalf("readyz just after the signal: %v %v %s; want 503 draining", resp, err, body)
	}
	resp, body, err = get(marketPath(1))
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(body, `"market"`) {
		t.Fatalf("a request on a new connection during drain_delay: %v %v %.80s; want its 200", resp, err, body)
	}
	if !resp.Close {
		t.Errorf("answers during drain_delay do not close their connection (Connection: %q)", resp.Header.Get("Connection"))
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) %v after the signal, before drain_delay %v", err, time.Since(start), delay)
	default:
	}

	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil (exit 0)", err)
		}
		if d := time.Since(start); d < delay {
			t.Errorf("Serve returned %v after the signal, want at least drain_delay %v", d, delay)
		}
	case <-time.After(delay + 5*time.Second):
		t.Fatal("Serve did not return after drain_delay and the drain")
	}
	if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts after the drain")
	}
}
