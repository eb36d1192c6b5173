package clock_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/clock"
)

func TestFakeMovesOnlyWhenTold(t *testing.T) {
	start := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	c := clock.NewFake(start)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("Now() = %v, want %v", got, start)
	}
	tests := []struct {
		name string
		step func()
		want time.Time
	}{
		{"advance", func() { c.Advance(time.Second) }, start.Add(time.Second)},
		{"negative advance is ignored", func() { c.Advance(-time.Hour) }, start.Add(time.Second)},
		{"set backwards", func() { c.Set(start) }, start},
		{"set forwards", func() { c.Set(start.Add(time.Minute)) }, start.Add(time.Minute)},
	}
	for _, tt := range tests {
		tt.step()
		if got := c.Now(); !got.Equal(tt.want) {
			t.Errorf("%s: Now() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestFakeConcurrentAdvance(t *testing.T) {
	start := time.Unix(0, 0)
	c := clock.NewFake(start)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { c.Advance(time.Millisecond); c.Now() })
	}
	wg.Wait()
	if got, want := c.Now(), start.Add(50*time.Millisecond); !got.Equal(want) {
		t.Errorf("after 50 concurrent advances Now() = %v, want %v", got, want)
	}
}

func TestNowFunc(t *testing.T) {
	before := time.Now()
	if got := clock.NowFunc(nil)(); got.Before(before) {
		t.Errorf("NowFunc(nil)() = %v, before %v: not the wall clock", got, before)
	}
	f := clock.NewFake(time.Unix(42, 0))
	if got, want := clock.NowFunc(f)(), time.Unix(42, 0); !got.Equal(want) {
		t.Errorf("NowFunc(fake)() = %v, want %v", got, want)
	}
	if got := (clock.Real{}).Now(); got.Before(before) {
		t.Errorf("Real.Now() = %v, before %v", got, before)
	}
}

func TestFakeTimersRunOnAdvanceInOrder(t *testing.T) {
	start := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	c := clock.NewFake(start)
	var ran []string
	var at []time.Duration
	note := func(name string) func() {
		return func() { ran = append(ran, name); at = append(at, c.Now().Sub(start)) }
	}
	c.AfterFunc(3*time.Second, note("3s"))
	c.AfterFunc(time.Second, note("1s"))
	c.AfterFunc(time.Second, note("1s, second"))
	stopped := c.AfterFunc(2*time.Second, note("stopped"))
	c.AfterFunc(1500*time.Millisecond, func() {
		note("1.5s")()
		c.AfterFunc(time.Second, note("chained 2.5s")) // due within the same Advance
	})
	if !stopped.Stop() || stopped.Stop() {
		t.Error("Stop: want true once, then false")
	}
	c.Advance(500 * time.Millisecond)
	if len(ran) != 0 {
		t.Fatalf("ran %v before any was due", ran)
	}
	if got := c.Advance(2500 * time.Millisecond); !got.Equal(start.Add(3 * time.Second)) {
		t.Errorf("Advance returned +%v, want +3s", got.Sub(start))
	}
	want := []string{"1s", "1s, second", "1.5s", "chained 2.5s", "3s"}
	wantAt := []time.Duration{time.Second, time.Second, 1500 * time.Millisecond, 2500 * time.Millisecond, 3 * time.Second}
	if !slices.Equal(ran, want) || !slices.Equal(at, wantAt) {
		t.Errorf("ran %v at %v, want %v at %v", ran, at, want, wantAt)
	}
	c.Advance(time.Hour)
	if len(ran) != len(want) {
		t.Errorf("ran %v, want nothing more", ran[len(want):])
	}
}

func TestFakeTimerSetForwards(t *testing.T) {
	start := time.Unix(0, 0)
	c := clock.NewFake(start)
	ran := false
	c.AfterFunc(time.Minute, func() { ran = true })
	c.Set(start.Add(-time.Hour)) // backwards: nothing due
	c.Set(start.Add(time.Minute))
	if !ran {
		t.Error("a timer due at the time Set moved to did not run")
	}
}

func TestFakeTimerDueNowRunsOnItsOwnGoroutine(t *testing.T) {
	c := clock.NewFake(time.Unix(0, 0))
	var mu sync.Mutex
	mu.Lock() // held by the caller: a function run on its goroutine would deadlock
	done := make(chan struct{})
	c.AfterFunc(0, func() { mu.Lock(); close(done) })
	mu.Unlock()
	<-done
}

func TestAfterFuncOf(t *testing.T) {
	c := clock.NewFake(time.Unix(0, 0))
	ran := false
	stop := clock.AfterFuncOf(c)(time.Second, func() { ran = true })
	c.Advance(time.Second)
	if !ran || stop() {
		t.Errorf("ran %v, stop after running = true; want ran, false", ran)
	}
	done := make(chan struct{})
	clock.AfterFuncOf(nil)(0, func() { close(done) }) // the wall clock
	<-done
}
