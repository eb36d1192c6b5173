package status_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

// withStatus turns the status collector on or off.
func withStatus(on bool) func(*config.Config) {
	return func(c *config.Config) { c.Status.Enabled = on }
}

// benchHit serves a warm key with the status collector sampling in the
// background (on) or absent (off): the page must cost the hit path nothing.
func benchHit(b *testing.B, statusOn bool) {
	a := kproxytest.NewBench(b, withStatus(statusOn))
	req := httptest.NewRequest(http.MethodGet, "/trade-api/v2/series/KXEARNINGSMENTIONMETA", nil)
	kproxytest.BenchHit(b, a.Server, req)
}

func BenchmarkHitStatusOn(b *testing.B)  { benchHit(b, true) }
func BenchmarkHitStatusOff(b *testing.B) { benchHit(b, false) }

// BenchmarkSample is one reading of a busy registry: what the collector
// spends every second.
func BenchmarkSample(b *testing.B) {
	a := kproxytest.NewBench(b, withStatus(true))
	for _, p := range []string{"/trade-api/v2/series/KXFEDDECISION", "/trade-api/v2/markets?series_ticker=KXFEDDECISION",
		"/trade-api/v2/events?series_ticker=KXFEDDECISION", "/trade-api/v2/portfolio/balance", "/trade-api/v2/exchange/status"} {
		for range 3 {
			a.Server.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, p, nil))
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		a.Status.Sample()
	}
}

// BenchmarkReport is building /status.json's body from a full ring.
func BenchmarkReport(b *testing.B) {
	a := kproxytest.NewBench(b, withStatus(true))
	for range 900 {
		a.Status.Sample()
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = a.Status.Report()
	}
}
