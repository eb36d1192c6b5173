package clock

import (
	"slices"
	"time"
)

// Timer is a function scheduled with AfterFunc.
type Timer interface {
	// Stop cancels the call; it reports whether it did (false: the
	// function has run or was stopped already), as time.Timer.Stop does.
	Stop() bool
}

// AfterFunc runs f on its own goroutine once d has passed: time.AfterFunc.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// AfterFuncOf returns c's AfterFunc in the form component Configs take
// (fetch.Config.AfterFunc): schedule fn in d, get back its cancel. A nil c
// means time.AfterFunc.
func AfterFuncOf(c Clock) func(d time.Duration, fn func()) (stop func() bool) {
	if c == nil {
		c = Real{}
	}
	return func(d time.Duration, fn func()) func() bool { return c.AfterFunc(d, fn).Stop }
}

// fakeTimer is a function waiting for a Fake to reach at.
type fakeTimer struct {
	f   *Fake
	at  time.Time
	seq uint64 // order of creation: timers due at once run in that order
	fn  func()
}

// AfterFunc schedules f to run when the Fake reaches now+d, on the
// goroutine that moves it there (Advance or Set), before that call
// returns, so a test sees its effects. d <= 0 runs f on a goroutine of its
// own at once, as time.AfterFunc(0, f) does: never on the caller's.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	t := &fakeTimer{f: f, at: f.now.Add(d), seq: f.seq, fn: fn}
	if d <= 0 {
		go fn()
		return t
	}
	f.timers = append(f.timers, t)
	return t
}

// Stop removes t from its Fake's timers.
func (t *fakeTimer) Stop() bool {
	f := t.f
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.Index(f.timers, t)
	if i < 0 {
		return false
	}
	f.timers = slices.Delete(f.timers, i, i+1)
	return true
}

// moveTo moves the time to end, running every timer due by then in order
// of due time: the clock reads each one's due time while it runs, and a
// timer its function schedules runs too if it is due by end. Called with
// f.mu held; it is released while a function runs.
func (f *Fake) moveTo(end time.Time) {
	for {
		i := -1
		for j, t := range f.timers {
			if !t.at.After(end) && (i < 0 || t.at.Before(f.timers[i].at) || (t.at.Equal(f.timers[i].at) && t.seq < f.timers[i].seq)) {
				i = j
			}
		}
		if i < 0 {
			break
		}
		t := f.timers[i]
		f.timers = slices.Delete(f.timers, i, i+1)
		if t.at.After(f.now) {
			f.now = t.at
		}
		f.mu.Unlock()
		t.fn()
		f.mu.Lock()
	}
	if end.After(f.now) { // another Advance may have gone further meanwhile
		f.now = end
	}
}
