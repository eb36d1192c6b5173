package fetch

import (
	"context"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Shared is a tier that several kproxy replicas share (package cluster
// implements it on Redis). The Fetcher asks it on an L1 miss, before an
// upstream fetch (so that one replica fetches a key for all), and tells it
// what the fetch came to. Every method is bounded by the tier's own short
// deadlines and degrades to "not there / fetch it yourself" when the tier is
// unavailable, so the fetch path never waits on a sick tier. Safe for
// concurrent use.
type Shared interface {
	// Lookup returns the shared copy of key if one is retained, in any
	// freshness state.
	Lookup(ctx context.Context, key string) (*cache.Entry, bool)
	// Acquire decides who fetches key. It returns at once with a stored
	// entry fetched at or after since (only when fresh is set, and only if
	// that entry is still fresh) or with this replica's claim; or it waits,
	// until ctx is done, for the replica that holds the claim and returns
	// what that fetch came to. A zero Turn means: fetch it yourself, without
	// a claim (tier unavailable, or an answer meant for another replica's
	// credentials).
	Acquire(ctx context.Context, key string, fresh bool, since time.Time) Turn
	// Epoch changes whenever this replica's L1 loses entries to a purge
	// (local, from another replica, or a flush after a disconnect). A fetch
	// that started under another epoch must not store its answer in L1.
	Epoch() uint64
}

// Turn is the shared tier's answer to Acquire.
type Turn struct {
	// Entry is an answer another replica fetched (or found stored).
	Entry *cache.Entry
	// Stored tells that Entry is a stored entry (fill L1 with it), not a
	// one-off answer such as a 503 shared with the waiters.
	Stored bool
	// Waited tells that Entry or Err came after waiting on another
	// replica's fetch (a collapsed request), not from the store at once.
	Waited bool
	// Err is another replica's fetch failure, shared with its waiters.
	Err *upstream.Error
	// Claim, when set, makes this replica the one that fetches: call
	// Done exactly once with the outcome.
	Claim Claim
}

// Claim is one replica's right to fetch a key for all of them.
type Claim interface {
	// Done stores a storable answer in the shared tier (unless a purge
	// happened since the claim was taken) and wakes the waiting replicas.
	Done(o SharedOutcome)
}

// SharedOutcome is what a claimed fetch came to.
type SharedOutcome struct {
	// Entry is the answer; nil when Err is set.
	Entry *cache.Entry
	// Retention, when positive, stores Entry in the shared tier that long.
	Retention time.Duration
	// Err is the fetch failure.
	Err *upstream.Error
	// Private marks an answer that belongs to the credentials or the
	// client that asked (401/403, Set-Cookie, Cache-Control private): the
	// waiting replicas fetch for themselves instead.
	Private bool
}

// sharedEpoch is the shared tier's epoch, 0 without one.
func (f *Fetcher) sharedEpoch() uint64 {
	if f.shared == nil {
		return 0
	}
	return f.shared.Epoch()
}

// lookupShared looks key up in the shared tier after an L1 miss; a copy
// found there fills L1 for no longer than it has left.
func (f *Fetcher) lookupShared(ctx context.Context, key string, now time.Time) (*cache.Entry, bool) {
	epoch := f.shared.Epoch()
	e, ok := f.shared.Lookup(ctx, key)
	if !ok {
		return nil, false
	}
	left := e.RetainedUntil().Sub(now)
	if left <= 0 {
		return nil, false
	}
	f.setFenced(e, left, epoch)
	return e, true
}

// acquireShared runs before load's upstream fetch. When done is set, fl is
// the flight's answer (another replica's fetch, or its stored entry) and
// nothing is fetched; otherwise the caller fetches and, when claim is not
// nil, reports the outcome through releaseShared.
func (f *Fetcher) acquireShared(ctx context.Context, req *Request, checkCache bool, since time.Time, epoch uint64) (fl *flight, claim Claim, done bool) {
	t := f.shared.Acquire(ctx, req.Key, checkCache, since)
	if t.Waited {
		f.m.Coalesce(req.Route.Pattern)
	}
	switch {
	case t.Claim != nil:
		return nil, t.Claim, false
	case t.Err != nil:
		return &flight{err: t.Err, outcome: Collapsed}, nil, true
	case t.Entry != nil:
		fl = &flight{entry: t.Entry, outcome: SharedHit}
		if t.Waited {
			fl.outcome = Collapsed // another replica's fetch
		}
		if t.Stored {
			if left := t.Entry.RetainedUntil().Sub(f.now()); left > 0 {
				f.setFenced(t.Entry, left, epoch)
			}
		}
		return fl, nil, true
	}
	return nil, nil, false
}

// releaseShared reports a claimed fetch's outcome to the other replicas.
func releaseShared(claim Claim, fl *flight) {
	if claim == nil {
		return
	}
	if fl == nil || (fl.entry == nil && fl.err == nil) {
		claim.Done(SharedOutcome{Private: true}) // nothing to share: let waiters fetch
		return
	}
	o := SharedOutcome{Entry: fl.entry, Err: fl.err, Private: fl.credential || fl.private}
	if fl.outcome == Stored {
		o.Retention = fl.retention
	}
	claim.Done(o)
}

// storeFenced stores a fetched entry in L1 unless a purge has happened
// since the fetch started (its answer may predate the purge).
func (f *Fetcher) storeFenced(fl *flight, retention time.Duration) {
	fl.retention = retention
	if f.shared == nil {
		f.store.Set(fl.entry, retention)
		return
	}
	f.setFenced(fl.entry, retention, fl.epoch)
}

// setFenced stores e in L1 unless the epoch moved from epoch. A purge
// moves the epoch before it clears L1, so checking again after the write
// catches one that ran in between: the write is then undone.
func (f *Fetcher) setFenced(e *cache.Entry, retention time.Duration, epoch uint64) {
	if f.shared.Epoch() != epoch {
		return
	}
	f.store.Set(e, retention)
	if f.shared.Epoch() != epoch {
		f.store.Delete(e.Key)
	}
}
