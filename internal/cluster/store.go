package cluster

import (
	"context"
	"errors"
	"strconv"
	"strings"
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
		ctx, cancel := c.call()
		defer cancel()
		b, err := c.rdb.Get(ctx, c.key("e", key)).Bytes()
		c.report(err)
		if err != nil {
			return nil, nil
		}
		e, err := decodeEntry(key, b)
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
	s.c.report(s.c.rdb.Set(ctx, s.c.key("e", e.Key), encodeEntry(e), retention).Err())
}

// Purge removes the entries under prefix from this replica's L1, from L2
// and (through pub/sub) from every other replica's L1. It reports the
// larger of the L1 and L2 counts. While Redis is down only this replica's
// L1 is purged (and a warning logged): the others keep their copies until
// those expire, so purge again once Redis is back.
func (s *Store) Purge(prefix string) int {
	s.c.epoch.Add(1)
	n := s.c.l1.Purge(prefix)
	s.c.epoch.Add(1)
	if m, err := s.c.purgeL2('p', prefix); err == nil {
		n = max(n, m)
	} else {
		s.c.log.Warn("purge reached only this replica: redis unavailable", "prefix", prefix, "err", err)
	}
	return n
}

// Delete removes the entry under exactly key everywhere.
func (s *Store) Delete(key string) bool {
	s.c.epoch.Add(1)
	ok := s.c.l1.Delete(key)
	s.c.epoch.Add(1)
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

// scanBatch is how many keys one SCAN step asks for and one UNLINK removes.
const scanBatch = 500

// purgeL2 fences in-flight fills (INCR epoch), removes the matching L2
// entries (SCAN + UNLINK in batches, never KEYS), then announces the purge
// with its epoch so every replica purges its L1.
func (c *Cluster) purgeL2(kind byte, arg string) (int, error) {
	if !c.up.Load() {
		return 0, errors.New("redis down")
	}
	// A purge may touch many keys: each step has its own deadline, the
	// whole purge a bound of its own.
	deadline := time.Now().Add(10 * time.Second)
	step := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), c.timeout)
	}
	ctx, cancel := step()
	e, err := c.rdb.Incr(ctx, c.keyEpoch).Result()
	cancel()
	c.report(err)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	if e == c.seen+1 {
		c.seen = e
	}
	c.mu.Unlock()
	n := 0
	if kind == 'k' {
		ctx, cancel := step()
		m, err := c.rdb.Unlink(ctx, c.key("e", arg)).Result()
		cancel()
		if err != nil {
			return 0, err
		}
		n = int(m)
	} else {
		match := c.key("e", globEscape(arg)) + "*"
		var cursor uint64
		for {
			ctx, cancel := step()
			keys, next, err := c.rdb.Scan(ctx, cursor, match, scanBatch).Result()
			if err == nil && len(keys) > 0 {
				var m int64
				m, err = c.rdb.Unlink(ctx, keys...).Result()
				n += int(m)
			}
			cancel()
			if err != nil {
				c.report(err)
				return n, err
			}
			if cursor = next; cursor == 0 {
				break
			}
			if time.Now().After(deadline) {
				return n, errors.New("purge took too long")
			}
		}
	}
	ctx, cancel = step()
	err = c.rdb.Publish(ctx, c.chPurge, strconv.FormatInt(e, 10)+"|"+string(kind)+arg).Err()
	cancel()
	return n, err
}

// globEscape quotes the glob characters of SCAN MATCH.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
