package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// report feeds one request-path call's outcome to the breaker: five
// consecutive failures mark Redis down until the health probe succeeds.
func (c *Cluster) report(err error) {
	if err == nil || errors.Is(err, redis.Nil) {
		c.fails.Store(0)
		return
	}
	if c.fails.Add(1) >= 5 {
		c.setState(false, err)
	}
}

// setState opens (up false) or closes the breaker; only a change is logged
// and reported, once.
func (c *Cluster) setState(up bool, err error) {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.known && c.up.Load() == up {
		return
	}
	c.known = true
	c.up.Store(up)
	if up {
		c.fails.Store(0)
		c.log.Info("redis up", "replicas", c.alive.Load())
	} else {
		c.log.Warn("redis down: serving from the local cache and the upstream with a local share of the rate budget", "err", errString(err))
	}
	c.updateRates()
	if c.onState != nil {
		c.onState(up)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (c *Cluster) hbWindow() time.Duration { return 3 * c.interval }

// beat sends one heartbeat (the health probe) and syncs the purge epoch.
func (c *Cluster) beat(ctx context.Context, reconnect bool) error {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := heartbeatScript.Run(cctx, c.rdb, []string{c.keyHB, c.keyEpoch}, c.id, c.hbWindow().Milliseconds(), "0").Int64Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return errors.New("cluster: unexpected heartbeat reply")
	}
	if n := max(res[0], 1); c.alive.Swap(n) != n {
		c.updateRates()
	}
	c.syncEpoch(res[1], reconnect)
	return nil
}

// healthLoop probes Redis every interval: two failures mark it down, one
// success marks it up.
func (c *Cluster) healthLoop(ctx context.Context) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	failed := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wasUp := c.up.Load()
		err := c.beat(ctx, !wasUp)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failed++
			if failed >= 2 || !wasUp {
				c.setState(false, err)
			}
			continue
		}
		failed = 0
		if !wasUp {
			c.setState(true, nil)
			c.wakeAll()
		}
	}
}
