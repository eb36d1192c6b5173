package app_test

// Fair shares of the upstream budget (issue 11 item 5): one client firing
// ten times the read budget in cold keys must not delay another client's
// miss by more than about one token interval plus its own fetch. Waits are
// measured from the moment the test sends a request to its arrival in the
// fake's log.

import (
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/config"
)

// floodAndTrickle runs the flood (client A: 10x the budget in cold keys)
// and the trickle (client B: one cold key every 250ms) for d, and returns
// B's waits until its requests reached the upstream, and B's statuses.
func floodAndTrickle(t *testing.T, fair bool, rate float64, d time.Duration) (waits []time.Duration, statuses []int, aOK, aLimited int) {
	h := newHarness(t, func(c *config.Config) {
		setRates(c, rate, rate, 5*time.Second)
		c.Upstream.FairShare = fair
	})
	var (
		mu   sync.Mutex
		sent = map[string]time.Time{}
		wg   sync.WaitGroup
	)
	stop := time.Now().Add(d)
	// Client A: 10x the budget, each request a cold key.
	wg.Go(func() {
		tick := time.NewTicker(time.Duration(float64(time.Second) / (10 * rate)))
		defer tick.Stop()
		for i := 1; time.Now().Before(stop) && i <= 400; i++ {
			<-tick.C
			wg.Go(func() {
				a := h.send(http.MethodGet, marketPath(i), nil, "KALSHI-ACCESS-KEY", "client-a")
				mu.Lock()
				defer mu.Unlock()
				switch a.status {
				case http.StatusOK:
					aOK++
				case http.StatusTooManyRequests:
					aLimited++
				}
			})
		}
	})
	// Client B: a cold key every 250ms, once the flood has a backlog
	// (its requests beyond the burst wait in kproxy for tokens).
	h.AwaitInFlight(15)
	every := time.NewTicker(250 * time.Millisecond)
	defer every.Stop()
	var bPaths []string
	for i := 0; time.Now().Before(stop); i++ {
		p := marketPath(401 + i)
		bPaths = append(bPaths, p)
		mu.Lock()
		sent[p] = time.Now()
		mu.Unlock()
		a := h.send(http.MethodGet, p, nil, "KALSHI-ACCESS-KEY", "client-b")
		statuses = append(statuses, a.status)
		<-every.C
	}
	wg.Wait()
	arrived := map[string]time.Time{}
	for _, r := range h.fake.Requests() {
		if _, ok := sent[r.Path]; ok {
			arrived[r.Path] = r.At
		}
	}
	for _, p := range bPaths {
		if at, ok := arrived[p]; ok {
			waits = append(waits, at.Sub(sent[p]))
		} else {
			waits = append(waits, d) // never sent upstream: rate limited
		}
	}
	return waits, statuses, aOK, aLimited
}

func TestFairShareBoundsAnotherClientsWait(t *testing.T) {
	const rate = 10.0 // one token every 100ms
	interval := time.Duration(float64(time.Second) / rate)
	waits, statuses, aOK, aLimited := floodAndTrickle(t, true, rate, 3*time.Second)
	worst := slices.Max(waits)
	t.Logf("fair share on: client B waits %v (worst %v); client A: %d answered, %d rate limited", waits, worst, aOK, aLimited)
	for i, st := range statuses {
		if st != http.StatusOK {
			t.Errorf("client B request %d: %d, want 200", i, st)
		}
	}
	// One token interval plus its own fetch (the fake answers in well
	// under a millisecond), with room for a loaded -race run.
	if limit := interval + 150*time.Millisecond; worst > limit {
		t.Errorf("client B's worst wait for the upstream %v, want under %v (one token interval + its fetch)", worst, limit)
	}
	if aOK == 0 {
		t.Errorf("client A got no answers at all; fair means a share, not none")
	}

	t.Run("without fair share", func(t *testing.T) {
		// The same load first come, first served: B queues behind A's
		// flood. This is what the fair queue fixes (and shows the
		// measurement can fail).
		waits, statuses, _, _ := floodAndTrickle(t, false, rate, 3*time.Second)
		worst := slices.Max(waits)
		t.Logf("fair share off: client B waits %v (worst %v), statuses %v", waits, worst, statuses)
		if worst < 5*interval {
			t.Errorf("without fair share client B's worst wait is %v; expected it to queue behind the flood", worst)
		}
	})
}
