package kproxytest

import (
	"net/http"
	"testing"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
)

// NewBench starts kproxy for a benchmark, as New does but on the wall
// clock (a hit reads no test clock), its configuration changed by mutate
// (nil: the test defaults), and returns the App.
func NewBench(b *testing.B, mutate func(*config.Config), options ...Option) *app.App {
	b.Helper()
	first := []Option{WithRealClock()}
	if mutate != nil {
		first = append(first, WithConfig(mutate))
	}
	return New(b, append(first, options...)...).App
}

// DiscardWriter is a reusable http.ResponseWriter that keeps the header
// and status and drops the body, so a benchmark measures the handler
// rather than a recorder. Not safe for concurrent use.
type DiscardWriter struct {
	H      http.Header
	Status int
}

func (w *DiscardWriter) Header() http.Header         { return w.H }
func (w *DiscardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *DiscardWriter) WriteHeader(status int)      { w.Status = status }

// Warm serves req once on h, fails the benchmark unless the answer is
// 200, and returns the writer for the timed loop.
func Warm(b *testing.B, h http.Handler, req *http.Request) *DiscardWriter {
	b.Helper()
	w := &DiscardWriter{H: http.Header{}}
	h.ServeHTTP(w, req) // a miss: fills the cache
	if w.Status != http.StatusOK {
		b.Fatalf("warm-up status %d", w.Status)
	}
	return w
}

// BenchHit measures a cache hit: it warms req on h (Warm), then serves it
// for every b.Loop iteration with a fresh header (as net/http does for
// every request), reporting allocations, and fails unless the last answer
// was X-Cache: HIT. It returns the writer holding the last answer.
func BenchHit(b *testing.B, h http.Handler, req *http.Request) *DiscardWriter {
	b.Helper()
	w := Warm(b, h, req)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w.H = make(http.Header)
		h.ServeHTTP(w, req)
	}
	b.StopTimer()
	if got := w.H.Get("X-Cache"); got != "HIT" {
		b.Fatalf("X-Cache = %q, want HIT", got)
	}
	return w
}
