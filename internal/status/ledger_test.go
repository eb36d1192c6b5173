package status

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestLedgerCountsByRouteAndClient(t *testing.T) {
	l := NewLedger(0)
	const mk = "/trade-api/v2/markets/{ticker}"
	l.Request(mk, "poller", "HIT", false)
	l.Request(mk, "poller", "STALE", true)
	l.Upstream(mk, "poller") // the STALE's background refresh
	l.Request(mk, "poller", "MISS", true)
	l.Upstream(mk, "poller")
	l.Request(mk, "", "odd", false) // unknown X-Cache: a MISS, unnamed client
	routes, total := l.routeCounts()
	if got, want := routes[mk], (routeCounts{hit: 1, stale: 1, miss: 2, expired: 2, upstream: 2}); got != want {
		t.Errorf("route counts = %+v, want %+v", got, want)
	}
	if total != routes[mk] {
		t.Errorf("total = %+v, want the one route's %+v", total, routes[mk])
	}
	got := l.clients(10)
	want := []clientRow{{"poller", 3, 2}, {unnamedClient, 1, 0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("clients = %+v, want %+v", got, want)
	}
}

func TestLedgerSkipsPassThroughRoutes(t *testing.T) {
	l := NewLedger(0)
	for _, rt := range []string{"/trade-api/v2/*", "/trade-api/v2/portfolio/*", "other", "/status", "/healthz"} {
		l.Request(rt, "c", "MISS", false)
		l.Upstream(rt, "c")
	}
	l.Request("/batch/markets", "c", "HIT", false)
	routes, total := l.routeCounts()
	if len(routes) != 1 || total.requests() != 1 || total.upstream != 0 {
		t.Errorf("routes = %v, total %+v; want only /batch/markets with 1 request", routes, total)
	}
	if got := l.clients(10); len(got) != 1 || got[0].requests != 1 || got[0].upstream != 0 {
		t.Errorf("clients = %+v, want c with 1 request and no upstream call", got)
	}
}

// A RouteLedger counts exactly as the Ledger's own calls on its route do,
// into the same counters; pass-through routes and a nil Ledger get none.
func TestLedgerRouteHandle(t *testing.T) {
	l := NewLedger(0)
	const mk = "/trade-api/v2/markets/{ticker}"
	h := l.Route(mk)
	if h == nil {
		t.Fatalf("Route(%q) = nil, want a handle", mk)
	}
	h.Request("poller", "HIT", false)
	h.Request("poller", "STALE", true)
	h.Upstream("poller")
	l.Request(mk, "poller", "MISS", false) // by name: the same counters
	h.Request("", "MISS", true)
	routes, total := l.routeCounts()
	if got, want := routes[mk], (routeCounts{hit: 1, stale: 1, miss: 2, expired: 2, upstream: 1}); got != want || len(routes) != 1 {
		t.Errorf("routes = %+v, want only %s with %+v", routes, mk, want)
	}
	if total != routes[mk] {
		t.Errorf("total = %+v, want the one route's %+v", total, routes[mk])
	}
	if got, want := fmt.Sprint(l.clients(10)), fmt.Sprint([]clientRow{{"poller", 3, 1}, {unnamedClient, 1, 0}}); got != want {
		t.Errorf("clients = %s, want %s", got, want)
	}
	for _, rt := range []string{"/trade-api/v2/*", "/trade-api/v2/portfolio/*", "other", "/status"} {
		if h := l.Route(rt); h != nil {
			t.Errorf("Route(%q) = %v, want nil (not counted)", rt, h)
		}
	}
	var nilLedger *Ledger
	if h := nilLedger.Route(mk); h != nil {
		t.Errorf("nil Ledger's Route = %v, want nil", h)
	}
	var nilHandle *RouteLedger // counts nothing, and does not panic
	nilHandle.Request("c", "HIT", false)
	nilHandle.Upstream("c")
}

// Handles and by-name calls from many goroutines, new clients admitted
// while others count and the table is read: every count lands (-race).
func TestLedgerRouteHandleConcurrentAdmission(t *testing.T) {
	l := NewLedger(0) // 32 a shard: the 16 clients always fit
	const mk = "/trade-api/v2/markets/{ticker}"
	h := l.Route(mk)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 400 {
				c := fmt.Sprintf("c%d-%d", g, i%2) // admitted mid-flight
				h.Request(c, "HIT", false)
				if i%4 == 0 {
					l.Upstream(mk, c)
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			l.clients(64)
		}
	})
	wg.Wait()
	_, total := l.routeCounts()
	if total.hit != 3200 || total.upstream != 800 {
		t.Errorf("total = %+v, want 3200 hits and 800 upstream calls", total)
	}
	var req, up int64
	rows := l.clients(64)
	for _, r := range rows {
		req, up = req+r.requests, up+r.upstream
	}
	if len(rows) != 16 || req != 3200 || up != 800 {
		t.Errorf("%d clients with %d requests, %d upstream; want 16 with 3200, 800", len(rows), req, up)
	}
}

func TestNilLedgerDoesNothing(t *testing.T) {
	var l *Ledger
	l.Request("/trade-api/v2/markets", "c", "HIT", false)
	l.Upstream("/trade-api/v2/markets", "c")
}

func TestLedgerRoutesAreBounded(t *testing.T) {
	l := NewLedger(0)
	for i := range maxLedgerRoutes + 10 {
		l.Request(fmt.Sprintf("/trade-api/v2/r%d", i), "c", "MISS", false)
	}
	routes, total := l.routeCounts()
	if len(routes) != maxLedgerRoutes || total.requests() != maxLedgerRoutes+10 {
		t.Errorf("%d routes kept, total %d requests; want %d routes, %d requests", len(routes), total.requests(), maxLedgerRoutes, maxLedgerRoutes+10)
	}
}

// A flood of one-off client names (addresses, say) never evicts the busy
// clients, and the table never grows past its size.
func TestLedgerKeepsTheBusiestClients(t *testing.T) {
	l := NewLedger(64) // 8 a shard
	const rt = "/trade-api/v2/markets"
	busy := []string{"alpha", "bravo", "charlie"}
	for range 50 {
		for _, b := range busy {
			l.Request(rt, b, "HIT", false)
		}
	}
	for i := range 1000 {
		l.Request(rt, fmt.Sprintf("10.0.%d.%d", i/256, i%256), "MISS", false)
		l.Upstream(rt, fmt.Sprintf("10.0.%d.%d", i/256, i%256))
	}
	held := 0
	for i := range l.shards {
		held += len(*l.shards[i].m.Load())
		if n := len(*l.shards[i].m.Load()); n > 8 {
			t.Errorf("shard %d holds %d clients, want at most 8", i, n)
		}
	}
	top := l.clients(3)
	for i, b := range []string{"alpha", "bravo", "charlie"} {
		if i >= len(top) || top[i].name != b || top[i].requests != 50 {
			t.Errorf("busiest clients = %+v, want alpha, bravo, charlie with 50 requests each", top)
			break
		}
	}
	if held > 64 {
		t.Errorf("client table holds %d, want at most 64", held)
	}
}

func TestLedgerCutsLongClientNames(t *testing.T) {
	l := NewLedger(0)
	long := strings.Repeat("é", 100) // 200 bytes
	l.Request("/trade-api/v2/markets", long, "HIT", false)
	l.Request("/trade-api/v2/markets", long, "HIT", false)
	got := l.clients(10)
	if len(got) != 1 || got[0].requests != 2 || len(got[0].name) > maxClientName || got[0].name != strings.Repeat("é", maxClientName/2) {
		t.Errorf("clients = %+v, want one entry, cut at %d bytes on a character boundary, with 2 requests", got, maxClientName)
	}
}

// The ledger is fed from every request goroutine while the collector
// reads it: run with -race.
func TestLedgerConcurrentUse(t *testing.T) {
	l := NewLedger(0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				l.Request("/trade-api/v2/markets/{ticker}", fmt.Sprintf("c%d", g), "HIT", false)
				if i%10 == 0 {
					l.Upstream("/trade-api/v2/markets/{ticker}", fmt.Sprintf("c%d", g))
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			l.routeCounts()
			l.clients(10)
		}
	})
	wg.Wait()
	_, total := l.routeCounts()
	if total.hit != 4000 || total.upstream != 400 {
		t.Errorf("total = %+v, want 4000 hits and 400 upstream calls", total)
	}
}

// BenchmarkLedgerRequest is what a cache hit pays for the status page: one
// Request on a known route by a known client.
func BenchmarkLedgerRequest(b *testing.B) {
	l := NewLedger(0)
	const rt = "/trade-api/v2/markets/{ticker}"
	l.Request(rt, "nvda-poller", "HIT", false)
	b.ReportAllocs()
	for b.Loop() {
		l.Request(rt, "nvda-poller", "HIT", false)
	}
}

// BenchmarkLedgerRouteRequest is what a cache hit pays for the status page
// on the proxy's path: one Request on a pre-resolved route handle.
func BenchmarkLedgerRouteRequest(b *testing.B) {
	h := NewLedger(0).Route("/trade-api/v2/markets/{ticker}")
	h.Request("nvda-poller", "HIT", false)
	b.ReportAllocs()
	for b.Loop() {
		h.Request("nvda-poller", "HIT", false)
	}
}

// BenchmarkLedgerRequestParallel is the same from every core, several
// clients at once.
func BenchmarkLedgerRequestParallel(b *testing.B) {
	l := NewLedger(0)
	const rt = "/trade-api/v2/markets/{ticker}"
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Request(rt, names[i%len(names)], "HIT", false)
			i++
		}
	})
}
