// Package clock gives kproxy's components a time source tests can move:
// production passes Real (or nil, which every Config reads as real time),
// tests pass a *Fake and Advance it past TTLs instead of sleeping.
//
// Only freshness decisions read the clock (is an entry fresh, stale,
// revalidatable). Network deadlines, retry backoff and ristretto's
// retention stay on the wall clock: a Fake never makes a request time out.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time, and runs functions once a while has passed on it.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f once d has passed on this clock (time.AfterFunc
	// for Real; see Fake.AfterFunc) and returns its Timer.
	AfterFunc(d time.Duration, f func()) Timer
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NowFunc returns c's Now method, or time.Now when c is nil: the form
// component Configs take (a nil func there means real time too).
func NowFunc(c Clock) func() time.Time {
	if c == nil {
		return time.Now
	}
	return c.Now
}

// Fake is a clock that moves only when told to. The zero value is not
// usable; build one with NewFake. Its methods are safe for concurrent use.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer // AfterFunc's, not yet run (timer.go)
	seq    uint64
}

// NewFake returns a Fake reading start.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the time forward by d (d < 0 is ignored: time never runs
// backwards) and returns the new time. Timers due on the way run first, in
// order, each at its due time (Fake.AfterFunc).
func (f *Fake) Advance(d time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d > 0 {
		f.moveTo(f.now.Add(d))
	}
	return f.now
}

// Set moves the time to t, forwards (running the timers due on the way,
// as Advance does) or backwards.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.After(f.now) {
		f.moveTo(t)
		return
	}
	f.now = t
}
