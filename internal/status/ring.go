package status

import "time"

// sample is one reading of kproxy's counters, all cumulative since start
// except the gauges (cache size, breaker state).
type sample struct {
	at time.Time

	// Answers on /trade-api/v2/* by X-Cache outcome.
	hit, stale, miss, bypass float64
	// collapsed counts requests that waited on another's fetch (they are
	// also MISSes).
	collapsed float64
	// upstream counts attempts sent to Kalshi; writes is the part of them
	// that were writes (non-GET pass-throughs).
	upstream, writes float64
	// from429 counts 429s received from Kalshi, given429 429s answered to
	// clients.
	from429, given429 float64

	cacheItems, cacheBytes, evictions float64
	breaker                           float64
}

// api is the number of answers on /trade-api/v2/* with a cache outcome.
func (s sample) api() float64 { return s.hit + s.stale + s.miss + s.bypass }

// ring keeps the newest len(buf) samples in a fixed array: adding to a
// full ring overwrites the oldest. It is not safe for concurrent use.
type ring struct {
	buf  []sample
	next int // index the next sample goes to
	n    int // samples held, at most len(buf)
}

func newRing(size int) *ring {
	return &ring{buf: make([]sample, max(size, 2))}
}

func (r *ring) add(s sample) {
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	if r.n < len(r.buf) {
		r.n++
	}
}

// len is the number of samples held.
func (r *ring) len() int { return r.n }

// at returns the i-th sample held, 0 being the oldest.
func (r *ring) at(i int) sample {
	start := (r.next - r.n + len(r.buf)) % len(r.buf)
	return r.buf[(start+i)%len(r.buf)]
}

// last returns the newest sample; ok is false when the ring is empty.
func (r *ring) last() (s sample, ok bool) {
	if r.n == 0 {
		return sample{}, false
	}
	return r.at(r.n - 1), true
}

// before returns the newest sample taken at or before t, or the oldest
// sample when all are newer (the process is younger than the window).
func (r *ring) before(t time.Time) sample {
	for i := r.n - 1; i > 0; i-- {
		if s := r.at(i); !s.at.After(t) {
			return s
		}
	}
	return r.at(0)
}
