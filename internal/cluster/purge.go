package cluster

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
)

// syncEpoch compares Redis's purge epoch with the one L1 follows. After a
// reconnect any difference means purges were missed: L1 is dropped whole.
// Otherwise a difference seen by two heartbeats in a row (a lost message)
// does the same.
func (c *Cluster) syncEpoch(redisEpoch int64, reconnect bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.seen < 0 && c.l1.Stats().Items == 0:
		c.seen = redisEpoch
	case redisEpoch == c.seen:
		c.lagging = false
	case redisEpoch > c.seen || c.seen < 0 || reconnect:
		if c.lagging || reconnect || c.seen < 0 {
			c.flushLocked("purges missed while disconnected")
			c.seen, c.lagging = redisEpoch, false
		} else {
			c.lagging = true
		}
	default:
		// Redis's epoch went back (Redis restarted empty): nothing in
		// Redis predates it, and L1 may hold what it lost.
		c.flushLocked("redis restarted")
		c.seen, c.lagging = redisEpoch, false
	}
}

// fenceL1 runs change, a removal from L1, inside the L1 fence
// (fetch.Shared.Epoch): the epoch moves before and after it, so a fetch
// that read Epoch before or during the change sees another one when it
// ends, and does not store its answer in L1.
func (c *Cluster) fenceL1(change func()) {
	c.epoch.Add(1)
	change()
	c.epoch.Add(1)
}

func (c *Cluster) flushLocked(why string) {
	var n int
	c.fenceL1(func() { n = c.l1.Purge("") })
	c.log.Info("local cache dropped", "reason", why, "entries", n)
}

// applyPurge applies a purge announced with Redis epoch e to L1.
func (c *Cluster) applyPurge(e int64, kind byte, arg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen >= 0 && e > c.seen+1 {
		c.flushLocked("purge messages missed")
		c.seen = e
		return
	}
	c.fenceL1(func() {
		if kind == 'k' {
			c.l1.Delete(arg)
		} else {
			c.l1.Purge(arg)
		}
	})
	if e > c.seen {
		c.seen = e
	}
}

// scanBatch is how many keys one SCAN step asks for and one UNLINK removes.
const scanBatch = 500

// purgeTimeout bounds one purge of L2, all its steps together.
const purgeTimeout = 10 * time.Second

// purgeL2 fences in-flight fills (INCR epoch), removes the matching L2
// entries (SCAN + UNLINK in batches, never KEYS), then announces the purge
// with its epoch so every replica purges its L1. It removes the entries of
// the previous format version too: the replicas of the previous release
// still read them while a rolling upgrade runs (and share the epoch and
// the purge messages, whose format has not changed).
func (c *Cluster) purgeL2(kind byte, arg string) (int, error) {
	if !c.up.Load() {
		return 0, errors.New("redis down")
	}
	// A purge may touch many keys: each step has its own deadline, the
	// whole purge a bound of its own.
	whole, cancelWhole := context.WithTimeout(context.Background(), purgeTimeout)
	defer cancelWhole()
	step := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(whole, c.timeout)
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
		m, err := c.rdb.Unlink(ctx, c.key("e", arg), c.prefix+previousRecordVersion+":e:"+arg).Result()
		cancel()
		if err != nil {
			return 0, err
		}
		n = int(m)
	} else {
		// Entries of every format version (v?): a replica of the
		// previous release still reads its own during a rolling upgrade.
		match := globEscape(c.prefix) + "v?:e:" + globEscape(arg) + "*"
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
			if whole.Err() != nil {
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
