package fetch

import (
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/kproxy/kproxy/internal/header"
)

// Directives are the request cache directives kproxy obeys (Cache-Control
// and Pragma); every other directive is ignored.
type Directives struct {
	// NoCache: no-cache or max-age=0 (Cache-Control), or Pragma: no-cache:
	// the answer must come from a fresh upstream fetch (still coalesced,
	// still rate limited).
	NoCache bool
	// OnlyIfCached: answer from the cache (fresh, or stale within a stale
	// window) or 504 not_cached, never contacting the upstream.
	OnlyIfCached bool
	// MaxAge (max-age=N, N > 0): a stored answer older than N (its Age)
	// is not used; it is fetched again. 0 means none (max-age=0 is
	// NoCache).
	MaxAge time.Duration
	// MinFresh (min-fresh=N): a stored answer with less than N of
	// freshness left is not used; it is fetched again. 0 means none.
	MinFresh time.Duration
	// MaxStale (max-stale[=N]): a stale answer up to N past its ttl (any
	// staleness within its retention: AnyStale, max-stale without a
	// value) is acceptable, answered at once while one background refresh
	// runs. 0 means none.
	MaxStale time.Duration
}

// AnyStale is Directives.MaxStale for max-stale without a value.
const AnyStale time.Duration = math.MaxInt64

// ParseDirectives reads the request cache directives of h (RFC 9111
// section 5.2.1). Directive names are matched in any case; a max-age value
// of zero in any spelling ("0", "00", quoted) counts as no-cache. A
// delta-seconds value that is not a number is ignored (the directive with
// it), except that max-stale without a value accepts any staleness. It does
// not allocate.
func ParseDirectives(h http.Header) Directives {
	var d Directives
	for _, v := range h["Cache-Control"] {
		for v != "" {
			var name, value string
			name, value, v = header.Next(v, "=")
			switch {
			case strings.EqualFold(name, "no-cache"):
				d.NoCache = true
			case strings.EqualFold(name, "only-if-cached"):
				d.OnlyIfCached = true
			case strings.EqualFold(name, "max-age") && isZero(value):
				d.NoCache = true
			case strings.EqualFold(name, "max-age"):
				if n, ok := deltaSeconds(value); ok {
					d.MaxAge = n
				}
			case strings.EqualFold(name, "min-fresh"):
				if n, ok := deltaSeconds(value); ok {
					d.MinFresh = n
				}
			case strings.EqualFold(name, "max-stale"):
				if strings.TrimSpace(value) == "" {
					d.MaxStale = AnyStale
				} else if n, ok := deltaSeconds(value); ok {
					d.MaxStale = n
				}
			}
		}
	}
	for _, v := range h["Pragma"] {
		for v != "" {
			// The whole member, argument and all: only a bare no-cache
			// counts ("no-cache=" is an extension pragma). A comma never
			// stands inside a member, so splitting at one keeps it whole.
			var member string
			member, _, v = header.Next(v, ",")
			if strings.EqualFold(member, "no-cache") {
				d.NoCache = true
			}
		}
	}
	return d
}

// isZero reports whether a delta-seconds value (optionally quoted) is 0.
func isZero(v string) bool {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] != '0' {
			return false
		}
	}
	return true
}

// maxDelta caps a delta-seconds value (RFC 9111 section 1.2.2: a value too
// large is read as the largest one representable; 2^31 seconds is its
// suggestion).
const maxDelta = 1 << 31

// deltaSeconds reads a delta-seconds value (digits, optionally quoted) as a
// duration, capped at maxDelta seconds.
func deltaSeconds(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if v == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < maxDelta {
			n = n*10 + int64(c-'0')
		}
	}
	return time.Duration(min(n, maxDelta)) * time.Second, true
}

// NoCache reports whether a request's headers ask for a fresh answer
// (ParseDirectives: no-cache, max-age=0, Pragma: no-cache).
func NoCache(h http.Header) bool { return ParseDirectives(h).NoCache }
