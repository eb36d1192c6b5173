package proxy

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/disk"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/httperr"
)

// The history tier and offline mode as the HTTP face shows them
// (docs/history.md): /readyz's "disk", the admin routes reaching the disk,
// and the 503 offline of everything that would go to Kalshi as is.

// DiskTier is the on-disk tier as the server uses it (*disk.Store).
type DiskTier interface {
	Delete(key string) bool
	Purge(prefix string) int
	List(prefix string, limit int) ([]disk.Item, int)
	Stats() disk.Stats
}

var _ DiskTier = (*disk.Store)(nil)

// diskState is /readyz's "disk": up, off or down.
func diskState(d DiskTier) string {
	if d == nil {
		return string(disk.StateOff)
	}
	return string(d.Stats().State)
}

// offlineMsg says why a request is refused offline and what to do.
const offlineMsg = "kproxy is offline (upstream.offline: true): it does not contact Kalshi, so private routes, writes and the WebSocket pass-through are unavailable; public GETs are answered from the cache"

// refuseOffline answers a request that would go to Kalshi as is.
func (s *Server) refuseOffline(c echo.Context) error {
	httperr.Write(c.Response(), http.StatusServiceUnavailable, httperr.CodeOffline, offlineMsg, 0)
	return nil
}

// Tiers of a listed entry.
const (
	tierMemory = "memory"
	tierDisk   = "disk"
	tierBoth   = "both"
)

// listTiers lists up to limit entries under prefix from memory and disk
// merged in key order, each with its tier, and how many match: exact when
// both tiers' matches fit within limit, else the two counts less the keys
// seen in both.
func (s *Server) listTiers(prefix string, limit int, now time.Time) ([]ListedEntry, int) {
	mem, matched := s.store.List(prefix, limit)
	if s.disk == nil {
		out := make([]ListedEntry, len(mem))
		for i, e := range mem {
			out[i] = listed(e, now, tierMemory, false)
		}
		return out, matched
	}
	items, onDisk := s.disk.List(prefix, limit)
	out := make([]ListedEntry, 0, len(mem)+len(items))
	i, j, both := 0, 0, 0
	for (i < len(mem) || j < len(items)) && len(out) < limit {
		switch {
		case j == len(items) || (i < len(mem) && mem[i].Key < items[j].Entry.Key):
			out = append(out, listed(mem[i], now, tierMemory, false))
			i++
		case i == len(mem) || items[j].Entry.Key < mem[i].Key:
			out = append(out, listed(items[j].Entry, now, tierDisk, items[j].Immutable))
			j++
		default: // the same key in both: memory's entry is the one served
			out = append(out, listed(mem[i], now, tierBoth, items[j].Immutable))
			i, j, both = i+1, j+1, both+1
		}
	}
	return out, matched + onDisk - both
}

// purgeTiers removes key (exact, when exact is set) or every key under it
// from memory and disk, and reports how many each removed.
func (s *Server) purgeTiers(key string, exact bool) (mem, onDisk int) {
	if exact {
		if s.store.Delete(key) {
			mem = 1
		}
		if s.disk != nil && s.disk.Delete(key) {
			onDisk = 1
		}
		return mem, onDisk
	}
	mem = s.store.Purge(key)
	if s.disk != nil {
		onDisk = s.disk.Purge(key)
	}
	return mem, onDisk
}

// listed describes e for GET /admin/cache.
func listed(e *cache.Entry, now time.Time, tier string, immutable bool) ListedEntry {
	le := ListedEntry{Key: e.Key, Status: e.Status, Age: e.AgeSeconds(now), Bytes: e.Size(), Tier: tier}
	switch {
	case immutable || e.Detail == fetch.DetailImmutable:
		le.State = "immutable"
	case now.Before(e.FreshUntil):
		le.State, le.TTL = "fresh", int64(e.FreshUntil.Sub(now)/time.Second)
	case now.Before(e.RevalidateUntil):
		le.State = "stale"
	case now.Before(e.ErrorUntil):
		le.State = "stale-if-error"
	default:
		le.State = "expired"
	}
	return le
}
