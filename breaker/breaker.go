// Package breaker is kproxy's circuit-breaker policy around the upstream:
// which outcomes count as failures, when to open, and how long to stay open.
package breaker

import (
	"errors"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// State is the breaker's state.
type State int

// States, valued as kproxy_breaker_state exports them.
const (
	Closed   State = 0
	HalfOpen State = 1
	Open     State = 2
)

func (s State) String() string {
	switch s {
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	default:
		return "closed"
	}
}

// ErrOpen is returned by Allow while the breaker is open, or half-open with
// its probes already in flight.
var ErrOpen = errors.New("upstream circuit breaker is open")

// Config configures a Breaker.
type Config struct {
	// ConsecutiveFailures opens the breaker; 0 means 5.
	ConsecutiveFailures uint32
	// OpenTimeout is how long the breaker stays open before letting probes
	// through; 0 means 10s.
	OpenTimeout time.Duration
	// HalfOpenRequests is how many probes run while half-open; 0 means 1.
	HalfOpenRequests uint32
	// OnStateChange, if set, is called synchronously on every transition.
	// It runs under gobreaker's lock, so it must not call back into the
	// Breaker. A transition from open to half-open happens lazily, on the
	// first Allow or State after OpenTimeout.
	OnStateChange func(from, to State)
}

// Outcome is what one upstream attempt came to, as far as the breaker cares.
type Outcome int

const (
	// Success: the upstream answered with a status below 500.
	Success Outcome = iota
	// Failure: a transport error, a timeout or a 5xx.
	Failure
	// Ignored: the attempt says nothing about upstream health (the caller
	// gave up, or kproxy itself failed before sending).
	Ignored
)

var errFailure = errors.New("upstream failure")
var errIgnored = errors.New("ignored")

// Breaker is safe for concurrent use.
type Breaker struct {
	cb          *gobreaker.TwoStepCircuitBreaker[struct{}]
	openTimeout time.Duration

	mu       sync.Mutex
	openedAt time.Time
}

// New builds a Breaker.
func New(cfg Config) *Breaker {
	if cfg.ConsecutiveFailures == 0 {
		cfg.ConsecutiveFailures = 5
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = 10 * time.Second
	}
	if cfg.HalfOpenRequests == 0 {
		cfg.HalfOpenRequests = 1
	}
	b := &Breaker{openTimeout: cfg.OpenTimeout}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "upstream",
		MaxRequests: cfg.HalfOpenRequests,
		Timeout:     cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.ConsecutiveFailures
		},
		IsSuccessful: func(err error) bool { return err == nil },
		IsExcluded:   func(err error) bool { return errors.Is(err, errIgnored) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				b.mu.Lock()
				b.openedAt = time.Now()
				b.mu.Unlock()
			}
			if cfg.OnStateChange != nil {
				cfg.OnStateChange(convert(from), convert(to))
			}
		},
	})
	return b
}

func convert(s gobreaker.State) State {
	switch s {
	case gobreaker.StateOpen:
		return Open
	case gobreaker.StateHalfOpen:
		return HalfOpen
	default:
		return Closed
	}
}

// Allow asks to make one upstream attempt. On success the caller must call
// done exactly once with the attempt's outcome. While open it returns ErrOpen
// at once.
func (b *Breaker) Allow() (done func(Outcome), err error) {
	d, err := b.cb.Allow()
	if err != nil {
		return nil, ErrOpen
	}
	return func(o Outcome) {
		switch o {
		case Success:
			d(nil)
		case Failure:
			d(errFailure)
		default:
			d(errIgnored)
		}
	}, nil
}

// State reports the current state.
func (b *Breaker) State() State { return convert(b.cb.State()) }

// RetryAfter is how long until the open breaker lets a probe through, at
// least one second (it is sent as a Retry-After header).
func (b *Breaker) RetryAfter() time.Duration {
	b.mu.Lock()
	left := b.openTimeout - time.Since(b.openedAt)
	b.mu.Unlock()
	return max(left, time.Second)
}

// Classify maps an upstream attempt's status (0 when err != nil) to an
// outcome: transport errors, timeouts and 5xx are failures; 429 and other
// 4xx are not.
func Classify(status int, err error, callerGone bool) Outcome {
	switch {
	case callerGone:
		return Ignored
	case err != nil || status >= 500:
		return Failure
	default:
		return Success
	}
}
