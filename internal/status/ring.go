package status

import "time"

// sample is one reading of kproxy's counters, all cumulative since start
// except the gauges (cache size, breaker state).
type sample struct {
	at time.Time

	// req is the Ledger's totals: client requests on cached routes and
	// batch endpoints by X-Cache outcome, and the upstream requests made
	// for them.
	req routeCounts
	// bypass counts answers passed through without the cache
	// (X-Cache BYPASS: writes, private routes), from the registry.
	bypass float64
	// upstream counts every attempt sent to Kalshi (pass-throughs
	// included); writes is the part of them that were writes (non-GET
	// pass-throughs). Both from the registry.
	upstream, writes float64
	// from429 counts 429s received from Kalshi, given429 429s answered to
	// clients.
	from429, given429 float64

	cacheItems, cacheBytes, evictions float64
	breaker                           float64
}

func (s sample) when() time.Time { return s.at }

// routeSample is the Ledger's per-route counts at one moment.
type routeSample struct {
	at     time.Time
	routes map[string]routeCounts
}

func (s routeSample) when() time.Time { return s.at }

// ring keeps the newest len(buf) readings in a fixed array: adding to a
// full ring overwrites the oldest. It is not safe for concurrent use.
type ring[T interface{ when() time.Time }] struct {
	buf  []T
	next int // index the next reading goes to
	n    int // readings held, at most len(buf)
}

func newRing[T interface{ when() time.Time }](size int) *ring[T] {
	return &ring[T]{buf: make([]T, max(size, 2))}
}

func (r *ring[T]) add(s T) {
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	if r.n < len(r.buf) {
		r.n++
	}
}

// len is the number of readings held.
func (r *ring[T]) len() int { return r.n }

// at returns the i-th reading held, 0 being the oldest.
func (r *ring[T]) at(i int) T {
	start := (r.next - r.n + len(r.buf)) % len(r.buf)
	return r.buf[(start+i)%len(r.buf)]
}

// last returns the newest reading; ok is false when the ring is empty.
func (r *ring[T]) last() (s T, ok bool) {
	if r.n == 0 {
		return s, false
	}
	return r.at(r.n - 1), true
}

// before returns the newest reading taken at or before t, or the oldest
// reading when all are newer (the process is younger than the window).
func (r *ring[T]) before(t time.Time) T {
	for i := r.n - 1; i > 0; i-- {
		if s := r.at(i); !s.when().After(t) {
			return s
		}
	}
	return r.at(0)
}
