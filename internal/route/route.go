// Package route knows the shape of Kalshi API paths: which are public and
// cacheable (with their freshness policy), how a request maps to a cache key,
// and which paths are malformed and must never be forwarded.
package route

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Prefix is the path prefix of every Kalshi Trade API v2 route. kproxy is
// mounted at exactly this prefix because Kalshi signatures cover the path.
const Prefix = "/trade-api/v2/"

// Policy is the freshness policy of one cacheable route.
type Policy struct {
	// TTL is how long a stored answer is fresh.
	TTL time.Duration
	// StaleWhileRevalidate is how long past TTL a stale answer is served at
	// once while one background refresh runs.
	StaleWhileRevalidate time.Duration
	// StaleIfError is how long past TTL a stale answer is served when the
	// upstream fails or the breaker is open.
	StaleIfError time.Duration
	// LegacyFields adds the integer fields Kalshi removed in March 2026 to
	// the route's answers when they are stored (compat.legacy_fields).
	LegacyFields bool
}

// Retention is how long a stored answer is worth keeping: past both stale
// windows it can never be served again.
func (p Policy) Retention() time.Duration {
	return p.TTL + max(p.StaleWhileRevalidate, p.StaleIfError)
}

// Route is one cacheable route template such as
// /trade-api/v2/markets/{ticker}.
type Route struct {
	// Pattern is the template; it is the value of every "route" label.
	Pattern string
	Policy
}

// Spec is one user-configured route.
type Spec struct {
	Pattern string
	Policy
}

// Table matches request paths to cacheable routes. It is immutable after
// NewTable and safe for concurrent use.
type Table struct {
	root   node
	routes []*Route
}

type node struct {
	static map[string]*node
	param  *node
	route  *Route
}

// NewTable builds a table from specs. Patterns must start with Prefix, use
// {name} for a whole segment, and must not name a private route.
func NewTable(specs []Spec) (*Table, error) {
	t := &Table{}
	for i, s := range specs {
		if err := checkPattern(s.Pattern); err != nil {
			return nil, fmt.Errorf("route %d (%q): %w", i, s.Pattern, err)
		}
		r := &Route{Pattern: s.Pattern, Policy: s.Policy}
		n := &t.root
		for seg := range strings.SplitSeq(strings.TrimPrefix(s.Pattern, "/"), "/") {
			if isParam(seg) {
				if n.param == nil {
					n.param = &node{}
				}
				n = n.param
				continue
			}
			if n.static == nil {
				n.static = map[string]*node{}
			}
			next := n.static[seg]
			if next == nil {
				next = &node{}
				n.static[seg] = next
			}
			n = next
		}
		if n.route != nil {
			return nil, fmt.Errorf("route %d (%q): duplicates %q", i, s.Pattern, n.route.Pattern)
		}
		n.route = r
		t.routes = append(t.routes, r)
	}
	return t, nil
}

// Routes lists the table's routes in configuration order.
func (t *Table) Routes() []*Route { return t.routes }

// Match returns the cacheable route for a decoded request path, or nil when
// the path is not a public cacheable route (private routes never match). A
// static segment wins over a {name} segment. Match does not allocate.
func (t *Table) Match(path string) *Route {
	if !strings.HasPrefix(path, "/") || IsPrivate(path) {
		return nil
	}
	return t.root.match(path[1:])
}

func (n *node) match(rest string) *Route {
	seg, tail, more := strings.Cut(rest, "/")
	if seg == "" {
		return nil
	}
	if next := n.static[seg]; next != nil {
		if !more {
			if next.route != nil {
				return next.route
			}
		} else if r := next.match(tail); r != nil {
			return r
		}
	}
	if n.param != nil {
		if !more {
			return n.param.route
		}
		return n.param.match(tail)
	}
	return nil
}

func isParam(seg string) bool {
	return len(seg) > 2 && seg[0] == '{' && seg[len(seg)-1] == '}'
}

func checkPattern(p string) error {
	if !strings.HasPrefix(p, Prefix) || len(p) == len(Prefix) {
		return fmt.Errorf("pattern must start with %s and name a route", Prefix)
	}
	if IsPrivate(p) {
		return errors.New("pattern names a private route, which is never cached")
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		switch {
		case seg == "":
			return errors.New("pattern has an empty segment")
		case strings.ContainsAny(seg, "{}") && !isParam(seg):
			return errors.New("a {name} must be a whole segment")
		case strings.ContainsAny(seg, "?#*%\\") || seg == "." || seg == "..":
			return fmt.Errorf("segment %q is not allowed", seg)
		}
	}
	return nil
}

// privatePrefixes are the routes whose answers depend on who asks. They are
// never cached, never shared and never allowed in a batch, whatever the
// configuration says.
var privatePrefixes = [...]string{
	Prefix + "portfolio",
	Prefix + "account",
	Prefix + "api_keys",
	Prefix + "communications",
	Prefix + "fcm",
	Prefix + "historical/fills",
	Prefix + "historical/orders",
	Prefix + "historical/positions",
	Prefix + "exchange/user_data_timestamp",
}

// IsPrivate reports whether path (decoded) is a credential-specific route.
//
// Spellings that some servers treat as the same path count as the same:
// letters in any case, and ;-parameters inside a segment
// ("/portfolio;a/balance").
func IsPrivate(path string) bool {
	if strings.IndexByte(path, ';') >= 0 {
		path = stripParams(path)
	}
	// Most paths (markets, events, series) start with a letter no private
	// prefix starts with: one table look-up instead of a case-blind
	// comparison with every prefix.
	if len(path) > len(Prefix) && !privateInitial[path[len(Prefix)]|0x20] {
		return isForecastHistory(path)
	}
	for _, p := range privatePrefixes {
		if len(path) >= len(p) && strings.EqualFold(path[:len(p)], p) && (len(path) == len(p) || path[len(p)] == '/') {
			return true
		}
	}
	return isForecastHistory(path)
}

// privateInitial marks the first letters (lower case) of the private
// prefixes' first segment after Prefix.
var privateInitial = func() (t [256]bool) {
	for _, p := range privatePrefixes {
		t[p[len(Prefix)]|0x20] = true
	}
	return t
}()

func isForecastHistory(path string) bool {
	const fph = "/forecast_percentile_history"
	return len(path) >= len(fph) && strings.EqualFold(path[len(path)-len(fph):], fph) && strings.HasPrefix(path, Prefix)
}

// stripParams drops every ;-parameter from the path's segments.
func stripParams(path string) string {
	var b strings.Builder
	b.Grow(len(path))
	for i, seg := range strings.Split(path, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		seg, _, _ = strings.Cut(seg, ";")
		b.WriteString(seg)
	}
	return b.String()
}

// Errors of CheckPath.
var (
	ErrDotSegment   = errors.New("path has a . or .. segment")
	ErrEmptySegment = errors.New("path has an empty segment")
	ErrEncodedSlash = errors.New("path has an encoded slash")
	ErrBackslash    = errors.New("path has a backslash")
	ErrControl      = errors.New("path has a control character")
	ErrTooLong      = errors.New("path is too long")
	ErrInvalidUTF8  = errors.New("path is not valid UTF-8")
)

// MaxPathLen bounds the length of a forwarded path; Kalshi's longest routes
// are well under it.
const MaxPathLen = 2048

// CheckPath reports why a request path under Prefix must not be forwarded:
// escaped is the path as sent (still percent-encoded), decoded its decoded
// form. Kalshi's paths contain none of the rejected shapes, so a rejection
// never blocks a real call. Bytes that are not valid UTF-8, raw or
// percent-encoded, are rejected, overlong forms (%c0%ae for ".") and
// encoded surrogates included: some servers decode those to "." or "/".
func CheckPath(escaped, decoded string) error {
	if len(escaped) > MaxPathLen {
		return ErrTooLong
	}
	if !utf8.ValidString(decoded) || !utf8.ValidString(escaped) {
		return ErrInvalidUTF8
	}
	for i := strings.IndexByte(escaped, '%'); i >= 0 && i+2 < len(escaped); {
		switch escaped[i+1 : i+3] {
		case "2f", "2F":
			return ErrEncodedSlash
		case "5c", "5C":
			return ErrBackslash
		}
		next := strings.IndexByte(escaped[i+1:], '%')
		if next < 0 {
			break
		}
		i += 1 + next
	}
	// One pass over the decoded path: bad bytes, and the segments between
	// slashes.
	segStart := 0
	if strings.HasPrefix(decoded, "/") {
		segStart = 1
	}
	for i := segStart; i <= len(decoded); i++ {
		if i < len(decoded) {
			switch c := decoded[i]; {
			case c < 0x20 || c == 0x7f:
				return ErrControl
			case c == '\\':
				return ErrBackslash
			case c != '/':
				continue
			}
		}
		switch seg := decoded[segStart:i]; {
		case seg == "." || seg == "..":
			return ErrDotSegment
		case seg == "" && i < len(decoded):
			return ErrEmptySegment
		}
		segStart = i + 1
	}
	return nil
}

// Label is the metric and log label of a request path: the matched route's
// template, the private area it belongs to, or "other". Raw paths never
// become labels.
func Label(path string, matched *Route) string {
	if matched != nil {
		return matched.Pattern
	}
	for _, p := range privatePrefixes {
		if strings.HasPrefix(path, p) && (len(path) == len(p) || path[len(p)] == '/') {
			return p + "/*"
		}
	}
	if strings.HasPrefix(path, Prefix) {
		return Prefix + "*"
	}
	return "other"
}
