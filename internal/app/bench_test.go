package app_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

func benchApp(b *testing.B, observe bool) *app.App {
	return kproxytest.NewBench(b, func(c *config.Config) { c.Log.Access = observe },
		kproxytest.WithAppOptions(func(o *app.Options) { o.NoMetrics = !observe }))
}

// benchHit serves a warm key through the whole Echo handler.
func benchHit(b *testing.B, observe bool, path, acceptEncoding string) {
	a := benchApp(b, observe)
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	kproxytest.BenchHit(b, a.Server, req)
}

const benchSeries = "/trade-api/v2/series/KXEARNINGSMENTIONMETA"
const benchPage = "/trade-api/v2/markets?series_ticker=KXEARNINGSMENTIONMETA&limit=9"

func BenchmarkHitSeries(b *testing.B)     { benchHit(b, true, benchSeries, "") }
func BenchmarkHitSeriesGzip(b *testing.B) { benchHit(b, true, benchSeries, "gzip") }
func BenchmarkHitPage(b *testing.B)       { benchHit(b, true, benchPage, "") }
func BenchmarkHitPageGzip(b *testing.B)   { benchHit(b, true, benchPage, "gzip") }

// The pair below measures what observability (metrics and the access log)
// costs a hit: compare ns/op side by side.
func BenchmarkHitObservabilityOn(b *testing.B)  { benchHit(b, true, benchSeries, "") }
func BenchmarkHitObservabilityOff(b *testing.B) { benchHit(b, false, benchSeries, "") }

// BenchmarkBareGo is the floor: net/http writing the same bytes from memory
// through the same ResponseWriter.
func BenchmarkBareGo(b *testing.B) {
	body := make([]byte, 900)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"application/json"}
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	})
	req := httptest.NewRequest(http.MethodGet, benchSeries, nil)
	w := &kproxytest.DiscardWriter{H: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		w.H = make(http.Header)
		h.ServeHTTP(w, req)
	}
}

// benchHitHTTP serves a warm key over real loopback HTTP with parallel
// keep-alive clients: what a user's scripts see, syscalls included.
func benchHitHTTP(b *testing.B, observe bool) {
	a := benchApp(b, observe)
	srv := httptest.NewServer(a.Server)
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	get := func() {
		resp, err := client.Get(srv.URL + benchSeries)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			get()
		}
	})
}

func BenchmarkHitHTTPObservabilityOn(b *testing.B)  { benchHitHTTP(b, true) }
func BenchmarkHitHTTPObservabilityOff(b *testing.B) { benchHitHTTP(b, false) }
