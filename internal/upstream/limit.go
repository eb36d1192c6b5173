package upstream

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limiter hands out upstream tokens: it is how kproxy keeps to the
// account's request budget. The local one (NewLocalLimiter) serves one
// process; a shared one keeps several replicas within one budget.
// Implementations are safe for concurrent use.
type Limiter interface {
	// Reserve takes one token. It returns the delay after which the caller
	// may send. When that delay would exceed maxWait nothing is taken, ok is
	// false and delay is the wait that would have been needed (for
	// Retry-After). cancel hands an unused token back where the limiter can;
	// it is never nil.
	Reserve(ctx context.Context, maxWait time.Duration) (delay time.Duration, ok bool, cancel func())
	// Penalize delays every later reservation until at least d from now:
	// an upstream 429 slows every caller that shares the budget.
	Penalize(d time.Duration)
}

// LocalLimiter is a token bucket in this process (golang.org/x/time/rate)
// holding one second of budget.
type LocalLimiter struct {
	lim       *rate.Limiter
	notBefore atomic.Int64 // unix nanoseconds; 0: no penalty
	now       func() time.Time
}

var _ Limiter = (*LocalLimiter)(nil)

// NewLocalLimiter returns a bucket of perSec tokens a second that holds
// one second of them; perSec <= 0 means unlimited.
func NewLocalLimiter(perSec float64) *LocalLimiter {
	if perSec <= 0 {
		return &LocalLimiter{lim: rate.NewLimiter(rate.Inf, 0), now: time.Now}
	}
	return &LocalLimiter{lim: rate.NewLimiter(rate.Limit(perSec), max(int(perSec), 1)), now: time.Now}
}

// Reserve implements Limiter.
func (l *LocalLimiter) Reserve(_ context.Context, maxWait time.Duration) (time.Duration, bool, func()) {
	now := l.now()
	r := l.lim.ReserveN(now, 1)
	if !r.OK() {
		return rate.InfDuration, false, func() {}
	}
	d := r.DelayFrom(now)
	if nb := l.notBefore.Load(); nb != 0 {
		d = max(d, time.Duration(nb-now.UnixNano()))
	}
	if d > maxWait {
		r.CancelAt(now)
		return d, false, func() {}
	}
	return max(d, 0), true, r.Cancel
}

// Penalize implements Limiter.
func (l *LocalLimiter) Penalize(d time.Duration) {
	if d <= 0 {
		return
	}
	until := l.now().Add(d).UnixNano()
	for {
		cur := l.notBefore.Load()
		if cur >= until || l.notBefore.CompareAndSwap(cur, until) {
			return
		}
	}
}

// SetRate changes the bucket's rate and size (one second of budget), for
// a shared budget that falls back to a share of it.
func (l *LocalLimiter) SetRate(perSec float64) {
	if perSec <= 0 {
		l.lim.SetLimit(rate.Inf)
		return
	}
	l.lim.SetLimit(rate.Limit(perSec))
	l.lim.SetBurst(max(int(perSec), 1))
}
