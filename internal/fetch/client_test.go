package fetch

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
)

// TestFetcherClientName: the remembering ClientName names every client as
// ClientName does, first and later times, past its bound too, from many
// goroutines.
func TestFetcherClientName(t *testing.T) {
	var f Fetcher // knownNames' zero value is ready
	tests := []struct {
		name string
		h    http.Header
		addr string
	}{
		{"kproxy-client", http.Header{"Kproxy-Client": {"bot-1"}}, "10.0.0.1:1"},
		{"key", http.Header{"Kalshi-Access-Key": {"k1"}}, "10.0.0.1:1"},
		{"other key", http.Header{"Kalshi-Access-Key": {"k2"}}, "10.0.0.1:1"},
		{"address", http.Header{}, "127.0.0.1:5000"},
		{"address equal to a key", http.Header{}, "k1"},
		{"key equal to an address", http.Header{"Kalshi-Access-Key": {"127.0.0.1"}}, ""},
		{"ipv6 address", http.Header{}, "[::1]:80"},
		{"nothing", http.Header{}, ""},
		{"bad kproxy-client", http.Header{"Kproxy-Client": {"a b"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, wantErr := ClientName(tt.h, tt.addr)
			for i := range 3 {
				got, err := f.ClientName(tt.h, tt.addr)
				if got != want || !errors.Is(err, wantErr) {
					t.Fatalf("call %d: f.ClientName = %q, %v; want %q, %v", i, got, err, want, wantErr)
				}
			}
		})
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range maxKnownNames + 50 { // past the bound
				key := fmt.Sprintf("key-%d", (i*7+g)%(maxKnownNames+50))
				h := http.Header{"Kalshi-Access-Key": {key}}
				if got, want := mustFetcherName(&f, h), mustName(key); got != want {
					t.Errorf("key %s: f.ClientName = %q, want %q", key, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(f.names.snap.Load().keys); n != maxKnownNames {
		t.Errorf("remembered %d key tags, want the bound %d", n, maxKnownNames)
	}
}

// TestFetcherClientNameAllocs: a known key or address is named without
// allocating (the hit path names its client for the status page).
func TestFetcherClientNameAllocs(t *testing.T) {
	var f Fetcher
	for _, tt := range []struct {
		name string
		h    http.Header
		addr string
	}{
		{"key", http.Header{"Kalshi-Access-Key": {"k1"}}, ""},
		{"address", http.Header{}, "192.0.2.1:1234"},
		{"kproxy-client", http.Header{"Kproxy-Client": {"bot"}}, ""},
	} {
		mustFetcherName(&f, tt.h)
		f.ClientName(tt.h, tt.addr)
		if got := testing.AllocsPerRun(100, func() { f.ClientName(tt.h, tt.addr) }); got != 0 {
			t.Errorf("%s: %v allocations a call, want 0", tt.name, got)
		}
	}
}

func mustFetcherName(f *Fetcher, h http.Header) string {
	n, _ := f.ClientName(h, "")
	return n
}

// TestResultExpired: the status page's "expired" is every stale answer and
// a miss that refetched an expired copy; nothing else.
func TestResultExpired(t *testing.T) {
	tests := []struct {
		name string
		res  Result
		want bool
	}{
		{"fresh hit", Result{Outcome: Hit}, false},
		{"shared hit", Result{Outcome: SharedHit}, false},
		{"stale while revalidating", Result{Outcome: Revalidating}, true},
		{"stale on error", Result{Outcome: StaleOnError, Fwd: "stale"}, true},
		{"only-if-cached stale", Result{Outcome: StaleOnError, Detail: DetailOnlyIfCached}, true},
		{"miss of an expired copy", Result{Outcome: Stored, Fwd: "stale"}, true},
		{"collapsed on an expired copy", Result{Outcome: Collapsed, Fwd: "stale"}, true},
		{"first miss", Result{Outcome: Stored, Fwd: "uri-miss"}, false},
		{"client no-cache", Result{Outcome: Stored, Fwd: "request"}, false},
		{"failed first miss", Result{Outcome: Failed, Fwd: "uri-miss"}, false},
	}
	for _, tt := range tests {
		if got := tt.res.Expired(); got != tt.want {
			t.Errorf("%s: Expired() = %v, want %v", tt.name, got, tt.want)
		}
	}
}
