package route

import (
	"net/url"
	"slices"
	"strings"
)

// Key is the cache key of a request for path (decoded) with query rawQuery:
// the path, then the query with parameters sorted by name. The order of
// repeated values of one parameter, and of values inside one parameter, is
// kept, because Kalshi reads them in order. Spelling differences that do not
// change meaning (percent-encoding of safe bytes, empty pairs) are removed.
// Credentials and encodings are never part of a key.
//
// A query that is already canonical costs one allocation (the key itself).
func Key(path, rawQuery string) string {
	if rawQuery == "" {
		return path
	}
	if canonical(rawQuery) {
		return path + "?" + rawQuery
	}
	type pair struct{ name, value string }
	var pairs []pair
	for part := range strings.SplitSeq(rawQuery, "&") {
		if part == "" {
			continue
		}
		name, value, _ := strings.Cut(part, "=")
		pairs = append(pairs, pair{unescape(name), unescape(value)})
	}
	slices.SortStableFunc(pairs, func(a, b pair) int { return strings.Compare(a.name, b.name) })
	var b strings.Builder
	b.Grow(len(path) + 1 + len(rawQuery))
	b.WriteString(path)
	for i, p := range pairs {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(escape(p.name))
		b.WriteByte('=')
		b.WriteString(escape(p.value))
	}
	return b.String()
}

// canonical reports whether q is already in the form Key produces: names
// sorted (stably), every pair has "=", and only bytes that escape leaves
// alone.
func canonical(q string) bool {
	prev := ""
	for {
		part, rest, more := strings.Cut(q, "&")
		name, value, ok := strings.Cut(part, "=")
		if !ok || name == "" || name < prev || !plain(name) || !plain(value) {
			return false
		}
		if !more {
			return true
		}
		prev, q = name, rest
	}
}

// plain reports whether s consists only of bytes escape writes unchanged.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if !keep(s[i]) {
			return false
		}
	}
	return true
}

// keep reports whether c is written literally in a key: unreserved
// characters and the comma Kalshi uses inside list parameters.
func keep(c byte) bool { return keepTable[c] }

var keepTable = func() (t [256]bool) {
	for c := range 256 {
		b := byte(c)
		t[c] = 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
			b == '-' || b == '_' || b == '.' || b == '~' || b == ','
	}
	return t
}()

func unescape(s string) string {
	if v, err := url.QueryUnescape(s); err == nil {
		return v
	}
	return s
}

func escape(s string) string {
	if plain(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; keep(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}
