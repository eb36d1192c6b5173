package breaker

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tests := []struct {
		name       string
		status     int
		err        error
		callerGone bool
		want       Outcome
	}{
		{"200", 200, nil, false, Success},
		{"304", 304, nil, false, Success},
		{"400", 400, nil, false, Success},
		{"401", 401, nil, false, Success},
		{"404", 404, nil, false, Success},
		{"429 is not a failure", 429, nil, false, Success},
		{"500", 500, nil, false, Failure},
		{"502", 502, nil, false, Failure},
		{"503", 503, nil, false, Failure},
		{"504", 504, nil, false, Failure},
		{"transport error", 0, refused, false, Failure},
		{"timeout", 0, fmt.Errorf("awaiting headers: %w", errTimeout{}), false, Failure},
		{"caller gone", 0, errors.New("context canceled"), true, Ignored},
		{"caller gone wins over 5xx", 503, nil, true, Ignored},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.status, tt.err, tt.callerGone); got != tt.want {
				t.Errorf("Classify(%d, %v, %v) = %v, want %v", tt.status, tt.err, tt.callerGone, got, tt.want)
			}
		})
	}
}

type errTimeout struct{}

func (errTimeout) Error() string { return "timeout" }
func (errTimeout) Timeout() bool { return true }

// attempt runs one allowed attempt with outcome o and fails the test if the
// breaker refuses it.
func attempt(t *testing.T, b *Breaker, o Outcome) {
	t.Helper()
	done, err := b.Allow()
	if err != nil {
		t.Fatalf("Allow() in state %v = %v, want nil", b.State(), err)
	}
	done(o)
}

func TestOpensAfterConsecutiveFailures(t *testing.T) {
	b := New(Config{ConsecutiveFailures: 3, OpenTimeout: time.Hour})
	for i := 0; i < 2; i++ {
		attempt(t, b, Failure)
	}
	wantState(t, b, Closed, "after 2 of 3 failures")
	attempt(t, b, Failure)
	wantState(t, b, Open, "after 3 failures")
	wantRejected(t, b, "while open")
}

func TestSuccessResetsTheFailureCount(t *testing.T) {
	b := New(Config{ConsecutiveFailures: 3, OpenTimeout: time.Hour})
	for i := 0; i < 10; i++ {
		attempt(t, b, Failure)
		attempt(t, b, Failure)
		attempt(t, b, Success)
	}
	wantState(t, b, Closed, "failures never 3 in a row")
}

func TestTooManyRequestsAndIgnoredNeverOpen(t *testing.T) {
	b := New(Config{ConsecutiveFailures: 2, OpenTimeout: time.Hour})
	for i := 0; i < 20; i++ {
		attempt(t, b, Classify(429, nil, false))
		attempt(t, b, Classify(0, errors.New("canceled"), true))
	}
	wantState(t, b, Closed, "after 20 429s and 20 abandoned attempts")
	// Ignored attempts between failures do not break the streak either.
	attempt(t, b, Failure)
	attempt(t, b, Ignored)
	attempt(t, b, Failure)
	wantState(t, b, Open, "failure, ignored, failure with threshold 2")
}

// wantState stops the test unless b is in state want; when says after
// what.
func wantState(t *testing.T, b *Breaker, want State, when string) {
	t.Helper()
	if got := b.State(); got != want {
		t.Fatalf("%s: State() = %v, want %v", when, got, want)
	}
}

// wantRejected stops the test unless b.Allow() refuses with ErrOpen; when
// says when.
func wantRejected(t *testing.T, b *Breaker, when string) {
	t.Helper()
	if _, err := b.Allow(); !errors.Is(err, ErrOpen) {
		t.Fatalf("Allow() %s = %v, want ErrOpen", when, err)
	}
}

// openBreaker returns a breaker that has just opened.
func openBreaker(t *testing.T, cfg Config) *Breaker {
	t.Helper()
	cfg.ConsecutiveFailures = 1
	b := New(cfg)
	attempt(t, b, Failure)
	if got := b.State(); got != Open {
		t.Fatalf("State() = %v, want open", got)
	}
	return b
}

// awaitHalfOpen waits for the open timeout to pass (gobreaker has no
// injectable clock).
func awaitHalfOpen(t *testing.T, b *Breaker) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.State() != HalfOpen {
		if time.Now().After(deadline) {
			t.Fatalf("breaker never became half-open; State() = %v", b.State())
		}
		time.Sleep(2 * time.Millisecond) // gobreaker's open timeout runs on the wall clock
	}
}

func TestHalfOpenLetsConfiguredProbesThrough(t *testing.T) {
	for _, probes := range []uint32{1, 3} {
		t.Run(fmt.Sprint(probes), func(t *testing.T) {
			b := openBreaker(t, Config{OpenTimeout: 20 * time.Millisecond, HalfOpenRequests: probes})
			awaitHalfOpen(t, b)
			var dones []func(Outcome)
			for i := uint32(0); i < probes; i++ {
				done, err := b.Allow()
				if err != nil {
					t.Fatalf("probe %d: Allow() = %v, want nil", i+1, err)
				}
				dones = append(dones, done)
			}
			if _, err := b.Allow(); !errors.Is(err, ErrOpen) {
				t.Fatalf("probe %d of %d: Allow() = %v, want ErrOpen", probes+1, probes, err)
			}
			for i, done := range dones {
				done(Success)
				want := HalfOpen
				if i == len(dones)-1 {
					want = Closed
				}
				if got := b.State(); got != want {
					t.Errorf("after %d successful probes of %d: State() = %v, want %v", i+1, probes, got, want)
				}
			}
		})
	}
}

func TestHalfOpenFailedProbeReopens(t *testing.T) {
	b := openBreaker(t, Config{OpenTimeout: 20 * time.Millisecond})
	awaitHalfOpen(t, b)
	attempt(t, b, Failure)
	wantState(t, b, Open, "after a failed probe")
	wantRejected(t, b, "after a failed probe")
}

func TestHalfOpenAbandonedProbeFreesItsSlot(t *testing.T) {
	b := openBreaker(t, Config{OpenTimeout: 20 * time.Millisecond})
	awaitHalfOpen(t, b)
	attempt(t, b, Ignored)
	wantState(t, b, HalfOpen, "after an abandoned probe")
	attempt(t, b, Success)
	wantState(t, b, Closed, "after a successful probe")
}

func TestRetryAfterIsAtLeastOneSecond(t *testing.T) {
	tests := []struct {
		name     string
		timeout  time.Duration
		min, max time.Duration
	}{
		{"short open timeout", 10 * time.Millisecond, time.Second, time.Second},
		{"long open timeout", 30 * time.Second, 29 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := openBreaker(t, Config{OpenTimeout: tt.timeout})
			if got := b.RetryAfter(); got < tt.min || got > tt.max {
				t.Errorf("RetryAfter() = %v, want within [%v, %v]", got, tt.min, tt.max)
			}
		})
	}
	if got := New(Config{}).RetryAfter(); got != time.Second {
		t.Errorf("RetryAfter() of a never-opened breaker = %v, want 1s", got)
	}
}

func TestStateChangesAreReported(t *testing.T) {
	var (
		mu  sync.Mutex
		got []string
	)
	b := New(Config{ConsecutiveFailures: 1, OpenTimeout: 20 * time.Millisecond, OnStateChange: func(from, to State) {
		mu.Lock()
		got = append(got, from.String()+"->"+to.String())
		mu.Unlock()
	}})
	attempt(t, b, Failure)
	awaitHalfOpen(t, b)
	attempt(t, b, Success)
	want := []string{"closed->open", "open->half-open", "half-open->closed"}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("state changes = %v, want %v", got, want)
	}
}

func TestStateValuesMatchTheMetric(t *testing.T) {
	// kproxy_breaker_state exports these values: 0 closed, 1 half-open, 2 open.
	for s, want := range map[State]int{Closed: 0, HalfOpen: 1, Open: 2} {
		if int(s) != want {
			t.Errorf("%v = %d, want %d", s, int(s), want)
		}
	}
}

func TestDefaults(t *testing.T) {
	b := New(Config{})
	for i := 0; i < 4; i++ {
		attempt(t, b, Failure)
	}
	wantState(t, b, Closed, "after 4 failures with the default threshold 5")
	attempt(t, b, Failure)
	wantState(t, b, Open, "after 5 failures")
	if got := b.RetryAfter(); got < 9*time.Second || got > 10*time.Second {
		t.Errorf("RetryAfter() with the default open timeout = %v, want about 10s", got)
	}
}
