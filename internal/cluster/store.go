package cluster

import (
	"context"
	"time"

	"github.com/kproxy/kproxy/cache"
)

// Lookup implements fetch.Shared: the L2 copy of key, if Redis answers in
// time and holds a valid one. Concurrent lookups of one key share one GET.
func (c *Cluster) Lookup(_ context.Context, key string) (*cache.Entry, bool) {
	if !c.up.Load() {
		return nil, false
	}
	v, _, _ := c.lookups.Do(key, func() (any, error) {
		b, err := c.get(c.key("e", key))
		if err != nil {
			return nil, nil
		}
		e, err := decodeRecord(key, b)
		if err != nil {
			c.log.Warn("ignoring an undecodable L2 entry", "key", key)
			return nil, nil
		}
		return e, nil
	})
	e, _ := v.(*cache.Entry)
	if e == nil || !c.now().Before(e.RetainedUntil()) {
		return nil, false
	}
	return e, true
}

// record is the L2 form of e: a cache record (cache/codec.go) that holds
// the body once, as its gzip copy when the entry has one (the copy exists
// only when it is smaller): a 79 KB page of markets takes about 4 KB of
// Redis. The replica that reads it rebuilds the identity body, which costs
// less than compressing again.
func record(e *cache.Entry) []byte {
	return cache.AppendRecord(nil, e, cache.RecordOptions{GzipOnly: true})
}

// decodeRecord is the entry held by b, an L2 value under key: anything
// else (another format, another key's record, damage) is an error
// (cache.ErrBadRecord), never an entry. b is owned by the entry afterwards.
func decodeRecord(key string, b []byte) (*cache.Entry, error) {
	e, _, err := cache.DecodeRecord(key, b)
	return e, err
}

// Store is the two-tier cache.Store: L1 (this replica's memory), then L2
// (Redis). Reads fill L1 from L2; writes, purges and deletes reach both, and
// purges reach every replica's L1. List and Stats describe L1.
type Store struct{ c *Cluster }

var _ cache.Store = (*Store)(nil)

// Store is the two-tier store of this replica.
func (c *Cluster) Store() *Store { return &Store{c: c} }

// Get returns the L1 entry, else the L2 one (filling L1 for no longer than
// the entry has left).
func (s *Store) Get(key string) (*cache.Entry, bool) {
	if e, ok := s.c.l1.Get(key); ok {
		return e, true
	}
	epoch := s.c.Epoch()
	e, ok := s.c.Lookup(context.Background(), key)
	if !ok {
		return nil, false
	}
	if left := e.RetainedUntil().Sub(s.c.now()); left > 0 && s.c.Epoch() == epoch {
		s.c.l1.Set(e, left)
	}
	return e, true
}

// Set stores e in L1 and L2 (unfenced: for writers outside the fetch path,
// which stores through its claim).
func (s *Store) Set(e *cache.Entry, retention time.Duration) {
	s.c.l1.Set(e, retention)
	if retention <= 0 || !s.c.up.Load() {
		return
	}
	ctx, cancel := s.c.call()
	defer cancel()
	s.c.report(s.c.rdb.Set(ctx, s.c.key("e", e.Key), record(e), retention).Err())
}

// Purge removes the entries under prefix from this replica's L1, from L2
// and (through pub/sub) from every other replica's L1. It reports the
// larger of the L1 and L2 counts. While Redis is down only this replica's
// L1 is purged (and a warning logged): the others keep their copies until
// those expire, so purge again once Redis is back.
func (s *Store) Purge(prefix string) int {
	var n int
	s.c.fenceL1(func() { n = s.c.l1.Purge(prefix) })
	if m, err := s.c.purgeL2('p', prefix); err == nil {
		n = max(n, m)
	} else {
		s.c.log.Warn("purge reached only this replica: redis unavailable", "prefix", prefix, "err", err)
	}
	return n
}

// Delete removes the entry under exactly key everywhere.
func (s *Store) Delete(key string) bool {
	var ok bool
	s.c.fenceL1(func() { ok = s.c.l1.Delete(key) })
	if m, err := s.c.purgeL2('k', key); err == nil && m > 0 {
		ok = true
	}
	return ok
}

// List lists L1.
func (s *Store) List(prefix string, limit int) ([]*cache.Entry, int) {
	return s.c.l1.List(prefix, limit)
}

// Stats describes L1.
func (s *Store) Stats() cache.Stats { return s.c.l1.Stats() }
