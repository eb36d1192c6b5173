package cache

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A shared fetch can finish after shutdown closed the store: its Set must
// be dropped, not panic on ristretto's closed channels or block forever.
func TestWritesAfterCloseAreDropped(t *testing.T) {
	m, err := NewMemory(Config{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// Every writer signals once it has written before Close (running)
	// and once it has written after Close returned (after): writes race
	// Close on both sides, by barrier rather than by timing.
	var (
		wg             sync.WaitGroup
		closed         atomic.Bool
		running, after sync.WaitGroup
	)
	stop := make(chan struct{})
	for g := 0; g < 8; g++ {
		wg.Add(1)
		running.Add(1)
		after.Add(1)
		go func() {
			defer wg.Done()
			var ran, saw sync.Once
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				wasClosed := closed.Load()
				m.Set(entry(fmt.Sprintf("/k%d-%d", g, i), 10), time.Minute)
				m.Purge("/none")
				ran.Do(running.Done)
				if wasClosed {
					saw.Do(after.Done)
				}
			}
		}()
	}
	running.Wait()
	m.Close()
	closed.Store(true)
	done := make(chan struct{})
	go func() { after.Wait(); close(stop); wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("writes racing Close are still blocked after 5s")
	}
	m.Set(entry("/late", 10), time.Minute)
	if _, ok := m.Get("/late"); ok {
		t.Errorf("Get(/late) found an entry stored after Close")
	}
	if n := m.Purge(""); n != 0 {
		t.Errorf("Purge after Close = %d, want 0", n)
	}
	m.Close() // closing again does nothing
}
