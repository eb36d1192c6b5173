package cache

import (
	"fmt"
	"sync"
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
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m.Set(entry(fmt.Sprintf("/k%d-%d", g, i), 10), time.Minute)
				m.Purge("/none")
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	m.Close()
	time.Sleep(5 * time.Millisecond)
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
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
