package clock_test

import (
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
