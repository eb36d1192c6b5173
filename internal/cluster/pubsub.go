package cluster

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// listen keeps one subscription to the fill and purge channels and
// dispatches their messages. After every (re)subscription it re-syncs the
// purge epoch and wakes every waiter, since messages may have been lost.
func (c *Cluster) listen(ctx context.Context, subscribed chan struct{}) {
	first := true
	for ctx.Err() == nil {
		if !c.up.Load() {
			if !sleep(ctx, c.interval/4) {
				return
			}
			continue
		}
		ps := c.rdb.Subscribe(ctx)
		c.psMu.Lock()
		if ctx.Err() != nil {
			c.psMu.Unlock()
			ps.Close()
			return
		}
		c.ps = ps
		c.psMu.Unlock()
		if err := ps.Subscribe(ctx, c.chFill, c.chPurge); err != nil {
			ps.Close()
			if !sleep(ctx, c.interval/4) {
				return
			}
			continue
		}
		pinged := false
		for ctx.Err() == nil {
			msg, err := ps.ReceiveTimeout(ctx, c.interval)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && !pinged {
					pctx, cancel := context.WithTimeout(ctx, c.timeout)
					perr := ps.Ping(pctx)
					cancel()
					if perr == nil {
						pinged = true
						continue
					}
				}
				break
			}
			pinged = false
			switch m := msg.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" && m.Channel == c.chPurge {
					if !first {
						cctx, cancel := context.WithTimeout(ctx, c.timeout)
						if e, err := c.rdb.Get(cctx, c.keyEpoch).Int64(); err == nil || errors.Is(err, redis.Nil) {
							c.syncEpoch(e, true)
						}
						cancel()
						c.wakeAll()
					}
					if first {
						first = false
						close(subscribed)
					}
				}
			case *redis.Message:
				c.dispatch(m.Channel, m.Payload)
			}
		}
		ps.Close()
		if !sleep(ctx, c.interval/4) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (c *Cluster) dispatch(channel, payload string) {
	switch channel {
	case c.chPurge:
		// <epoch>|<p prefix | k key>
		es, rest, ok := strings.Cut(payload, "|")
		e, err := strconv.ParseInt(es, 10, 64)
		if !ok || err != nil || rest == "" {
			return
		}
		c.applyPurge(e, rest[0], rest[1:])
	case c.chFill:
		// <kind><16 hex token><key>
		if len(payload) < 17 {
			return
		}
		c.notify(payload[17:], payload[:17])
	}
}
