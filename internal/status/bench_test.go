package status_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

func benchApp(b *testing.B, statusOn bool) *app.App {
	return kproxytest.NewBench(b, func(c *config.Config) { c.Status.Enabled = statusOn })
}

// benchHit serves a warm key with the status collector sampling in the
// background (on) or absent (off): the page must cost the hit path nothing.
func benchHit(b *testing.B, statusOn bool) {
	a := benchApp(b, statusOn)
	req := httptest.NewRequest(http.MethodGet, "/trade-api/v2/series/KXEARNINGSMENTIONMETA", nil)
	kproxytest.BenchHit(b, a.Server, req)
}

func BenchmarkHitStatusOn(b *testing.B)  { benchHit(b, true) }
func BenchmarkHitStatusOff(b *testing.B) { benchHit(b, false) }

// BenchmarkSample is one reading of a busy registry: what the collector
// spends every second.
func BenchmarkSample(b *testing.B) {
	a := benchApp(b, true)
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
	a := benchApp(b, true)
	for range 900 {
		a.Status.Sample()
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = a.Status.Report()
	}
}
