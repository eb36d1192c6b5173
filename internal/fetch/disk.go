package fetch

import (
	"context"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/disk"
)

// The history tier (docs/history.md): memory, then disk, then the shared
// tier (Redis), then the upstream. The disk comes before Redis because it
// is in-process (a lookup costs microseconds, never a network round trip)
// and holds what a backtest reads again and again, across restarts; an L1
// hit never looks at it.

// Disk is the on-disk tier below L1 (*disk.Store implements it). Get is
// in-process and bounded (a read of a memory-mapped file); Put never
// blocks (the write is queued, or dropped when the queue is full or the
// store is down). Safe for concurrent use.
type Disk interface {
	Get(key string) (disk.Item, bool)
	Put(e *cache.Entry, immutable bool)
}

var _ Disk = (*disk.Store)(nil)

// MinDiskTTL is the shortest ttl of an answer written to disk besides
// immutable ones: series, event metadata, historical lists are worth
// keeping across a restart; prices that are stale in seconds are not.
const MinDiskTTL = time.Minute

// lookupTiers looks key up below L1 after an L1 miss: the disk, then the
// shared tier. A fresh disk copy ends the search; a stale one is used only
// when the shared tier has nothing. What is found fills L1 for no longer
// than it has left; tier is the outcome of a fresh answer from it.
func (f *Fetcher) lookupTiers(ctx context.Context, key string, now time.Time) (e *cache.Entry, ok bool, tier Outcome) {
	if f.disk != nil {
		e, ok = f.lookupDisk(key, now)
		if ok && e.Fresh(now) {
			return e, true, DiskHit
		}
	}
	if f.shared != nil {
		if se, sok := f.lookupShared(ctx, key, now); sok {
			return se, true, SharedHit
		}
	}
	return e, ok, DiskHit
}

// lookupDisk reads key from disk; a copy found fills L1 for what it has
// left (an immutable one: Forever).
func (f *Fetcher) lookupDisk(key string, now time.Time) (*cache.Entry, bool) {
	epoch := f.sharedEpoch()
	it, ok := f.disk.Get(key)
	if !ok {
		return nil, false
	}
	e := it.Entry
	left := Forever
	if !it.Immutable {
		if left = e.RetainedUntil().Sub(now); left <= 0 {
			return nil, false
		}
	}
	f.fill(e, left, epoch)
	return e, true
}

// fill stores e in L1 for retention, fenced against purges when a shared
// tier is in use.
func (f *Fetcher) fill(e *cache.Entry, retention time.Duration, epoch uint64) {
	if f.shared == nil {
		f.store.Set(e, retention)
		return
	}
	f.setFenced(e, retention, epoch)
}

// keepOnDisk queues a stored answer for the disk when it is immutable or
// lives at least MinDiskTTL (asynchronous: never blocks the fetch).
func (f *Fetcher) keepOnDisk(e *cache.Entry, ttl time.Duration, immutable bool) {
	if f.disk == nil || (!immutable && ttl < MinDiskTTL) {
		return
	}
	f.disk.Put(e, immutable)
}
