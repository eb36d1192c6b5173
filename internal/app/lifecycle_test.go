package app_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
	"github.com/kproxy/kproxy/internal/live"
)

// TestCloseStopsEveryComponentOnce: Close stops the live feed (its
// upstream connection closes), the status collector and the stores, and
// flushes the access log; a second Close does nothing.
func TestCloseStopsEveryComponentOnce(t *testing.T) {
	p := kproxytest.New(t, kproxytest.WithLive(), kproxytest.WithConfig(func(c *config.Config) {
		c.Log.Access = true
		c.Status.Enabled = true
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.App.Live.Wait(ctx, func(st live.Stats) bool { return st.State == "connected" }); err != nil {
		t.Fatal(err)
	}
	if p.App.Status == nil {
		t.Fatal("status collector not built with status.enabled")
	}
	p.Get(metaSeries)

	p.Close()
	p.App.Close() // again: nothing left to do, must not block or panic

	if got := p.App.Live.State(); got != "off" {
		t.Errorf("live state after Close = %q, want off", got)
	}
	if err := p.Fake.WaitWS(ctx, func(st kalshitest.WSState) bool { return st.Connections == 0 }); err != nil {
		t.Errorf("the live feed's upstream connection is still open after Close: %v", err)
	}
	// The access log is buffered; Close flushed it.
	if !strings.Contains(p.Logs.String(), metaSeries) {
		t.Errorf("no access line for %s after Close:\n%s", metaSeries, p.Logs.String())
	}
	if _, ok := p.App.Store.Get(metaSeries); ok {
		t.Errorf("the closed store still answers")
	}
}

// TestFailedNewReleasesWhatItBuilt: when a step of New fails, the
// components built before it are closed (no goroutine of theirs is left).
func TestFailedNewReleasesWhatItBuilt(t *testing.T) {
	base := runtime.NumGoroutine()
	cfg := config.Default()
	cfg.Upstream.URL = "http://127.0.0.1:1"
	cfg.Log.Access = true // a goroutine of its own
	// Not validated: live without kproxy's own key fails in New, after
	// the store, breaker and upstream client are built.
	cfg.Live.Enabled = true
	for range 5 {
		if a, err := app.New(cfg, app.Options{}); err == nil {
			a.Close()
			t.Fatal("app.New with live on and no key: err = nil, want an error")
		}
	}
	kproxytest.Eventually(t, 5*time.Second, "goroutines back to the baseline after failed builds", func() bool {
		return runtime.NumGoroutine() <= base
	})
}
