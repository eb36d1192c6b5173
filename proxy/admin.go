package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/internal/httperr"
	"github.com/kproxy/kproxy/internal/route"
)

// The admin routes (registered only with an admin token): DELETE
// /admin/cache purges by exact key or by prefix, GET /admin/cache lists
// entries. Both go through the Store interface, so a store that spans
// replicas fans purges out by itself, and reach this replica's disk tier
// (disk.go).

// defaultListLimit and maxListLimit bound GET /admin/cache.
const (
	defaultListLimit = 100
	maxListLimit     = 10000
)

// authorized reports whether the request carries the admin token, and
// answers 401 when it does not. The comparison takes the same time
// whatever the token (both sides are hashed first, so even the length is
// not revealed).
func (s *Server) authorized(c echo.Context) bool {
	token, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
	if ok {
		got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(s.admin))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			return true
		}
	}
	c.Response().Header().Set("WWW-Authenticate", `Bearer realm="kproxy admin"`)
	httperr.Write(c.Response(), http.StatusUnauthorized, httperr.CodeUnauthorized, "admin token missing or wrong", 0)
	return false
}

// adminQuery parses the query of an admin request, allowing only the
// parameters named. An unknown one is most often the tail of a key that was
// not URL-encoded (key=/x?a=1&b=2 reads as key=/x?a=1 and b=2), so it is
// refused rather than ignored.
func adminQuery(c echo.Context, allowed ...string) (url.Values, bool) {
	q, err := url.ParseQuery(c.Request().URL.RawQuery)
	if err != nil {
		httperr.Write(c.Response(), http.StatusBadRequest, httperr.CodeBadRequest, "malformed query: "+err.Error(), 0)
		return nil, false
	}
	for name, vs := range q {
		if !slices.Contains(allowed, name) {
			httperr.Write(c.Response(), http.StatusBadRequest, httperr.CodeBadRequest,
				"unknown parameter "+strconv.Quote(name)+" (allowed: "+strings.Join(allowed, ", ")+
					"); a key with a query must be URL-encoded: curl -G --data-urlencode 'key=/trade-api/v2/...?a=1&b=2'", 0)
			return nil, false
		}
		if len(vs) > 1 {
			httperr.Write(c.Response(), http.StatusBadRequest, httperr.CodeBadRequest, "parameter "+strconv.Quote(name)+" given more than once", 0)
			return nil, false
		}
	}
	return q, true
}

// adminOff answers every admin route while no admin token is configured.
func (s *Server) adminOff(c echo.Context) error {
	httperr.Write(c.Response(), http.StatusNotFound, httperr.CodeAdminOff,
		"the admin API is off: set admin.token in the config file or KPROXY_ADMIN_TOKEN to enable it", 0)
	return nil
}

// cacheKey normalizes k (a path with an optional query, as a client would
// send it) into the key a request for it is stored under.
func cacheKey(k string) string {
	p, q, _ := strings.Cut(k, "?")
	if dp, err := url.PathUnescape(p); err == nil {
		p = dp
	}
	return route.Key(p, q)
}

// handlePurge serves DELETE /admin/cache: ?key=K removes exactly the entry
// of K, ?prefix=P every entry whose key starts with P (all without P).
func (s *Server) handlePurge(c echo.Context) error {
	if !s.authorized(c) {
		return nil
	}
	q, ok := adminQuery(c, "key", "prefix")
	if !ok {
		return nil
	}
	if q.Has("key") {
		if q.Has("prefix") {
			httperr.Write(c.Response(), http.StatusBadRequest, httperr.CodeBadRequest, "give key or prefix, not both", 0)
			return nil
		}
		key := cacheKey(q.Get("key"))
		mem, onDisk := s.purgeTiers(key, true)
		n := max(mem, onDisk)
		s.log.Info("cache purged", "key", key, "entries", n, "memory", mem, "disk", onDisk)
		return c.JSON(http.StatusOK, map[string]any{"purged": n, "key": key, "memory": mem, "disk": onDisk})
	}
	prefix := q.Get("prefix")
	mem, onDisk := s.purgeTiers(prefix, false)
	// An entry is most often in both tiers: the larger count is the
	// number of entries gone, as near as can be told without listing.
	n := max(mem, onDisk)
	s.log.Info("cache purged", "prefix", prefix, "entries", n, "memory", mem, "disk", onDisk)
	return c.JSON(http.StatusOK, map[string]any{"purged": n, "prefix": prefix, "memory": mem, "disk": onDisk})
}

// Listing is the body of GET /admin/cache.
type Listing struct {
	// Prefix is the prefix asked for; Matched counts the entries under it,
	// Entries holds the first Limit of them in key order.
	Prefix  string        `json:"prefix"`
	Limit   int           `json:"limit"`
	Matched int           `json:"matched"`
	Entries []ListedEntry `json:"entries"`
	Cache   Stats         `json:"cache"` // the whole store
	// Disk is the whole disk tier; absent without one.
	Disk *Stats `json:"disk,omitempty"`
}

// ListedEntry describes one cached entry.
type ListedEntry struct {
	Key string `json:"key"`
	// Status is the upstream status stored (200, or 404 with a negative ttl).
	Status int `json:"status"`
	// State is fresh, stale (served while one refresh runs), stale-if-error
	// (served only when the upstream fails), expired (about to go) or
	// immutable (fresh forever, docs/history.md; ttl 0).
	State string `json:"state"`
	// Age is whole seconds since the upstream answered; TTL the whole
	// seconds of freshness left (0 once stale), as in Cache-Status.
	Age   int64 `json:"age"`
	TTL   int64 `json:"ttl"`
	Bytes int64 `json:"bytes"`
	// Tier is where the entry is held: memory, disk or both.
	Tier string `json:"tier"`
}

// handleList serves GET /admin/cache?prefix=P&limit=N.
func (s *Server) handleList(c echo.Context) error {
	if !s.authorized(c) {
		return nil
	}
	q, ok := adminQuery(c, "prefix", "limit")
	if !ok {
		return nil
	}
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxListLimit {
			httperr.Write(c.Response(), http.StatusBadRequest, httperr.CodeBadRequest, "limit must be a whole number from 0 to "+strconv.Itoa(maxListLimit), 0)
			return nil
		}
		limit = n
	}
	prefix := q.Get("prefix")
	entries, matched := s.listTiers(prefix, limit, s.at(time.Now()))
	st := s.store.Stats()
	out := Listing{Prefix: prefix, Limit: limit, Matched: matched, Entries: entries, Cache: Stats{Items: st.Items, Bytes: st.Bytes}}
	if s.disk != nil {
		ds := s.disk.Stats()
		out.Disk = &Stats{Items: ds.Items, Bytes: ds.Bytes}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, out)
}
