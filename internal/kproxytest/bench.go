package kproxytest

import (
	"net/http"
	"testing"
)

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
