package cluster

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/kproxy/kproxy/internal/upstream"
)

// limiter is one upstream budget ("read" or "write") shared by every
// replica: a GCRA bucket in Redis on the server's clock, holding one second
// of budget like the local bucket. While Redis is down each replica takes
// from a local bucket at its share of the budget: rate / replicas alive at
// the last heartbeat.
type limiter struct {
	c        *Cluster
	key      string
	rate     float64
	interval int64 // µs per token
	burst    int64
	local    *upstream.LocalLimiter
}

var _ upstream.Limiter = (*limiter)(nil)

// Limiter returns the shared budget of kind ("read", "write") at perSec
// requests a second for all replicas together; perSec <= 0 means unlimited.
func (c *Cluster) Limiter(kind string, perSec float64) upstream.Limiter {
	if perSec <= 0 {
		return upstream.NewLocalLimiter(0)
	}
	l := &limiter{
		c:        c,
		key:      c.key("rl", kind),
		rate:     perSec,
		interval: max(int64(math.Ceil(1e6/perSec)), 1),
		burst:    max(int64(perSec), 1),
		local:    upstream.NewLocalLimiter(perSec),
	}
	c.lmu.Lock()
	c.limiters = append(c.limiters, l)
	c.lmu.Unlock()
	l.local.SetRate(perSec / float64(c.Alive()))
	return l
}

// updateRates sets every fallback bucket to its share of the budget.
func (c *Cluster) updateRates() {
	c.lmu.Lock()
	defer c.lmu.Unlock()
	n := float64(c.Alive())
	for _, l := range c.limiters {
		l.local.SetRate(l.rate / n)
	}
}

// Reserve implements upstream.Limiter.
func (l *limiter) Reserve(ctx context.Context, maxWait time.Duration) (time.Duration, bool, func()) {
	if l.c.up.Load() {
		cctx, cancel := l.c.call()
		res, err := reserveScript.Run(cctx, l.c.rdb, []string{l.key}, l.interval, l.burst, maxWait.Microseconds()).Int64Slice()
		cancel()
		l.c.report(err)
		if err == nil && len(res) == 2 {
			d := time.Duration(res[1]) * time.Microsecond
			// A token taken in Redis cannot be handed back: cancel is a
			// no-op (the budget loses at most that one token).
			return d, res[0] == 1, func() {}
		}
		if err == nil {
			l.c.report(errors.New("cluster: unexpected reserve reply"))
		}
	}
	return l.local.Reserve(ctx, maxWait)
}

// Penalize implements upstream.Limiter: every replica's next reservation
// waits at least d.
func (l *limiter) Penalize(d time.Duration) {
	if d <= 0 {
		return
	}
	l.local.Penalize(d)
	if !l.c.up.Load() {
		return
	}
	ctx, cancel := l.c.call()
	defer cancel()
	l.c.report(penaltyScript.Run(ctx, l.c.rdb, []string{l.key}, l.interval, l.burst, d.Microseconds()).Err())
}
