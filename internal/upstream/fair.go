package upstream

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// FairQueue shares the tokens of one Limiter fairly between clients while
// several wait for them. It sits in front of whatever Limiter is configured
// (the local bucket or a budget shared by replicas) and never asks it for
// more than one token ahead: a token is reserved for the queue as a whole,
// and when it may be used it goes to the next client in turn (round robin
// over the clients that have a request waiting, first in first out within a
// client). One client's flood of misses therefore delays another client's
// miss by about one token interval, not by the length of the flood.
//
// A request that can have a token at once, with nobody queued, takes it
// without queueing (the cheap path). Every request waits at most MaxWait:
// it is refused at once when its turn is sure to come later than that
// (estimated from Rate), and refused when MaxWait passes while it waits.
//
// FairQueue is safe for concurrent use. The client map holds only clients
// with a request waiting, so it never grows beyond the waiters.
type FairQueue struct {
	next     Limiter
	rate     float64
	maxWait  time.Duration
	maxQueue int
	now      func() time.Time

	mu      sync.Mutex
	queues  map[string]*clientQueue
	order   []*clientQueue // clients with waiters, in turn order
	turn    int            // index in order of the client served next
	waiting int            // waiters queued over all clients
	// busy: a token is held for the queue (timer set) or being reserved.
	busy  bool
	timer *time.Timer // fires when the held token may be used
	due   time.Time   // when it fires
	held  func()      // hands the held token back
}

// FairConfig configures a FairQueue.
type FairConfig struct {
	// Rate is the limiter's tokens per second, used only to refuse at once
	// a request whose turn would come after MaxWait; 0 means unknown (such
	// a request waits MaxWait, then is refused).
	Rate float64
	// MaxWait bounds every request's wait for a token.
	MaxWait time.Duration
	// MaxQueue bounds the requests one client may have waiting; more are
	// refused at once. 0 means unbounded.
	MaxQueue int
}

type clientQueue struct {
	id      string
	waiters []*waiter
}

// waiter is one request queued for a token. granted and retryAfter are
// written under FairQueue.mu before ready is closed.
type waiter struct {
	q          *clientQueue
	ready      chan struct{}
	granted    bool
	retryAfter time.Duration
}

// errLimited: no token within MaxWait.
var errLimited = errors.New("no token within max_wait")

// NewFairQueue puts a fair queue in front of next.
func NewFairQueue(next Limiter, cfg FairConfig) *FairQueue {
	return &FairQueue{
		next:     next,
		rate:     cfg.Rate,
		maxWait:  max(cfg.MaxWait, 0),
		maxQueue: cfg.MaxQueue,
		now:      time.Now,
		queues:   map[string]*clientQueue{},
	}
}

// Wait blocks until client may send one request. It returns how long the
// request waited, and errLimited with the wait that would have been needed
// (for Retry-After) when no token comes within MaxWait, or ctx's error when
// ctx ends first. A request that got its token is never refused.
func (f *FairQueue) Wait(ctx context.Context, client string) (waited, retryAfter time.Duration, err error) {
	start := f.now()
	f.mu.Lock()
	if !f.busy && f.waiting == 0 {
		// Nobody waits: ask the limiter directly.
		f.busy = true
		f.mu.Unlock()
		d, ok, cancel := f.next.Reserve(ctx, f.maxWait)
		f.mu.Lock()
		switch {
		case !ok:
			f.idleLocked()
			f.mu.Unlock()
			return 0, d, errLimited
		case d == 0:
			f.idleLocked()
			f.mu.Unlock()
			return 0, 0, nil
		}
		// The token comes later: it belongs to the queue, which this
		// request joins first.
		f.holdLocked(d, cancel)
	} else if est, ok := f.estimateLocked(client); !ok {
		f.mu.Unlock()
		return 0, max(est, time.Second), errLimited
	}
	w := f.enqueueLocked(client)
	f.mu.Unlock()

	deadline := time.NewTimer(f.maxWait - f.now().Sub(start))
	defer deadline.Stop()
	select {
	case <-w.ready:
	case <-ctx.Done():
		if !f.leave(w) {
			return f.now().Sub(start), 0, ctx.Err()
		}
	case <-deadline.C:
		f.leave(w)
	}
	if !w.granted {
		return f.now().Sub(start), max(w.retryAfter, time.Second), errLimited
	}
	return f.now().Sub(start), 0, nil
}

// estimateLocked reports whether a new request of client can have its turn
// within MaxWait, and the estimated wait: the held token, then one token per
// turn, each client taking one per round.
func (f *FairQueue) estimateLocked(client string) (time.Duration, bool) {
	mine := 0
	if q := f.queues[client]; q != nil {
		mine = len(q.waiters)
	}
	if f.maxQueue > 0 && mine >= f.maxQueue {
		return f.maxWait, false
	}
	if f.rate <= 0 {
		return 0, true
	}
	ahead := mine // own earlier requests
	for _, q := range f.order {
		if q.id != client {
			ahead += min(len(q.waiters), mine+1)
		}
	}
	est := time.Duration(float64(ahead) / f.rate * float64(time.Second))
	if f.timer != nil {
		est += max(f.due.Sub(f.now()), 0)
	}
	return est, est <= f.maxWait
}

func (f *FairQueue) enqueueLocked(client string) *waiter {
	q := f.queues[client]
	if q == nil {
		q = &clientQueue{id: client}
		f.queues[client] = q
	}
	if len(q.waiters) == 0 {
		f.order = append(f.order, q)
	}
	w := &waiter{q: q, ready: make(chan struct{})}
	q.waiters = append(q.waiters, w)
	f.waiting++
	return w
}

// holdLocked keeps a token reserved for the queue, usable after d.
func (f *FairQueue) holdLocked(d time.Duration, cancel func()) {
	f.held, f.due = cancel, f.now().Add(d)
	f.timer = time.AfterFunc(d, f.release)
}

// idleLocked ends a reservation that gave the queue no token to hold; it
// serves waiters that queued meanwhile.
func (f *FairQueue) idleLocked() {
	f.busy = false
	if f.waiting > 0 {
		f.busy = true
		go f.dispatch()
	}
}

// release runs when the held token may be used: it goes to the next
// client in turn, and the next token is reserved for the others.
func (f *FairQueue) release() {
	f.mu.Lock()
	f.timer, f.held = nil, nil
	if f.grantUnlock() {
		f.dispatch()
	}
}

// dispatch reserves tokens for the queue, one at a time, until one is due
// later (then it is held) or nobody waits. busy is set by the caller.
func (f *FairQueue) dispatch() {
	for {
		ctx, cancelCtx := context.WithTimeout(context.Background(), time.Second)
		d, ok, cancel := f.next.Reserve(ctx, f.maxWait)
		cancelCtx()
		f.mu.Lock()
		switch {
		case f.waiting == 0:
			f.busy = false
			f.mu.Unlock()
			cancel()
			return
		case !ok:
			// Nobody queued can have a token within MaxWait: every
			// waiter's deadline is sooner than this one.
			f.failAllLocked(d)
			f.busy = false
			f.mu.Unlock()
			return
		case d > 0:
			f.holdLocked(d, cancel)
			f.mu.Unlock()
			return
		}
		if !f.grantUnlock() {
			return
		}
	}
}

// grantUnlock grants one token (grantLocked) and unlocks f.mu, which the
// caller holds. It reports whether anyone still waits; if nobody does,
// the queue is no longer busy.
func (f *FairQueue) grantUnlock() (waiting bool) {
	f.grantLocked()
	waiting = f.waiting > 0
	if !waiting {
		f.busy = false
	}
	f.mu.Unlock()
	return waiting
}

// grantLocked gives one token to the head request of the client whose
// turn it is.
func (f *FairQueue) grantLocked() {
	if len(f.order) == 0 {
		return
	}
	if f.turn >= len(f.order) {
		f.turn = 0
	}
	q := f.order[f.turn]
	w := q.waiters[0]
	q.waiters[0] = nil
	q.waiters = q.waiters[1:]
	f.waiting--
	if len(q.waiters) == 0 {
		f.dropClientLocked(f.turn)
	} else {
		f.turn++
	}
	w.granted = true
	close(w.ready)
}

// dropClientLocked removes the client at order[i], whose queue is empty.
func (f *FairQueue) dropClientLocked(i int) {
	delete(f.queues, f.order[i].id)
	f.order = slices.Delete(f.order, i, i+1)
	if f.turn > i {
		f.turn--
	}
}

func (f *FairQueue) failAllLocked(retryAfter time.Duration) {
	for _, q := range f.order {
		for _, w := range q.waiters {
			w.retryAfter = retryAfter
			close(w.ready)
		}
		delete(f.queues, q.id)
	}
	f.order, f.turn, f.waiting = f.order[:0], 0, 0
}

// leave takes w out of the queue (its wait is over). It reports whether w
// had been granted a token meanwhile. The last waiter to leave hands a held
// token back to the limiter.
func (f *FairQueue) leave(w *waiter) (granted bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-w.ready:
		return w.granted
	default:
	}
	q := w.q
	if i := slices.Index(q.waiters, w); i >= 0 {
		q.waiters = slices.Delete(q.waiters, i, i+1)
		f.waiting--
		if len(q.waiters) == 0 {
			f.dropClientLocked(slices.Index(f.order, q))
		}
	}
	w.retryAfter = max(f.due.Sub(f.now()), 0)
	close(w.ready)
	if f.waiting == 0 && f.timer != nil && f.timer.Stop() {
		f.held()
		f.timer, f.held, f.busy = nil, nil, false
	}
	return false
}

// Waiting is how many requests wait for a token (tests, metrics).
func (f *FairQueue) Waiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting
}
