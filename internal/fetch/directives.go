package fetch

import (
	"net/http"
	"strings"

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
}

// ParseDirectives reads the request cache directives of h. Directive names
// are matched in any case; a max-age value of zero in any spelling ("0",
// "00", quoted) counts. It does not allocate.
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
			}
		}
	}
	for _, v := range h["Pragma"] {
		for v != "" {
			var name string
			name, _, v = header.Next(v, "=")
			if strings.EqualFold(name, "no-cache") {
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

// NoCache reports whether a request's headers ask for a fresh answer
// (ParseDirectives: no-cache, max-age=0, Pragma: no-cache).
func NoCache(h http.Header) bool { return ParseDirectives(h).NoCache }
