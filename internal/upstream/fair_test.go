package upstream

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// drained is a local bucket of perSec tokens a second with its burst spent.
func drained(t *testing.T, perSec float64) *LocalLimiter {
	t.Helper()
	l := NewLocalLimiter(perSec)
	for {
		d, ok, _ := l.Reserve(context.Background(), 0)
		if !ok || d > 0 {
			return l
		}
	}
}

// waitQueued polls (bounded) until n requests wait in f.
func waitQueued(t *testing.T, f *FairQueue, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); f.Waiting() < n; time.Sleep(time.Millisecond) { // bounded poll of the queue length, which raises no event
		if time.Now().After(deadline) {
			t.Fatalf("%d requests waiting, want %d", f.Waiting(), n)
		}
	}
}

// queueUp starts one Wait per client name, in order, each queued before the
// next starts, and returns the order in which they were granted.
func queueUp(t *testing.T, f *FairQueue, clients []string) []string {
	t.Helper()
	var (
		mu      sync.Mutex
		order   []string
		wg      sync.WaitGroup
		granted atomic.Int32
	)
	for i, c := range clients {
		wg.Go(func() {
			if _, _, err := f.Wait(context.Background(), c); err != nil {
				t.Errorf("Wait(%q): %v", c, err)
				return
			}
			mu.Lock()
			order = append(order, c)
			mu.Unlock()
			granted.Add(1)
		})
		for deadline := time.Now().Add(5 * time.Second); f.Waiting()+int(granted.Load()) < i+1; time.Sleep(100 * time.Microsecond) { // bounded poll, as in waitQueued
			if time.Now().After(deadline) {
				t.Fatalf("waiter %d never queued", i)
			}
		}
	}
	wg.Wait()
	return order
}

func TestFairQueueServesClientsInTurn(t *testing.T) {
	f := NewFairQueue(drained(t, 10), FairConfig{Rate: 10, MaxWait: 5 * time.Second})
	got := queueUp(t, f, []string{"a", "a", "a", "a", "b", "b", "c"})
	// One token per client in turn, first in first out within a client:
	// a's flood does not make b and c wait behind it.
	want := []string{"a", "b", "c", "a", "b", "a", "a"}
	if !slices.Equal(got, want) {
		t.Errorf("grant order = %v, want %v", got, want)
	}
	if n := f.Waiting(); n != 0 {
		t.Errorf("Waiting() = %d after all were served, want 0", n)
	}
}

func TestFairQueueRefusesAtOnceBeyondMaxWait(t *testing.T) {
	// 2 tokens/s, 300ms max wait: the held token is ~500ms away.
	f := NewFairQueue(drained(t, 2), FairConfig{Rate: 2, MaxWait: 300 * time.Millisecond})
	start := time.Now()
	_, retry, err := f.Wait(context.Background(), "a")
	if !errors.Is(err, errLimited) {
		t.Fatalf("Wait with the next token beyond max_wait: %v, want errLimited", err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("refused after %v, want at once", took)
	}
	if retry <= 0 {
		t.Errorf("retryAfter = %v, want the wait that would have been needed", retry)
	}
}

func TestFairQueueMaxWaitBoundsAQueuedRequest(t *testing.T) {
	// Rate unknown: no estimate, so a queued request waits max_wait, then
	// is refused; the request holding the token is served.
	f := NewFairQueue(drained(t, 10), FairConfig{MaxWait: 150 * time.Millisecond})
	first := make(chan error, 1)
	go func() { _, _, err := f.Wait(context.Background(), "a"); first <- err }()
	waitQueued(t, f, 1)
	start := time.Now()
	_, _, err := f.Wait(context.Background(), "b")
	took := time.Since(start)
	if err := <-first; err != nil {
		t.Errorf("first waiter: %v, want its token", err)
	}
	// b was queued behind a's token (~100ms away); the next one is 100ms
	// later: beyond max_wait.
	if !errors.Is(err, errLimited) || took < 140*time.Millisecond || took > time.Second {
		t.Errorf("second waiter: %v after %v, want errLimited after max_wait (150ms)", err, took)
	}
}

func TestFairQueueCanceledWaiterLeaves(t *testing.T) {
	f := NewFairQueue(drained(t, 1), FairConfig{Rate: 1, MaxWait: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, _, err := f.Wait(ctx, "a"); done <- err }()
	waitQueued(t, f, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled Wait: %v, want context.Canceled", err)
	}
	if n := f.Waiting(); n != 0 {
		t.Errorf("Waiting() = %d after the only waiter left, want 0", n)
	}
}

func TestFairQueueMaxQueue(t *testing.T) {
	f := NewFairQueue(drained(t, 10), FairConfig{MaxWait: 5 * time.Second, MaxQueue: 1})
	go f.Wait(context.Background(), "a")
	waitQueued(t, f, 1)
	if _, _, err := f.Wait(context.Background(), "a"); !errors.Is(err, errLimited) {
		t.Errorf("second request of a client at fair_max_queue 1: %v, want errLimited at once", err)
	}
	done := make(chan error, 1)
	go func() { _, _, err := f.Wait(context.Background(), "b"); done <- err }()
	if err := <-done; err != nil {
		t.Errorf("another client: %v, want its token", err)
	}
}
