package route_test

// Fuzz targets for the shapes of request paths (issue 11, item 1). Each
// target checks an invariant, not only the absence of a panic. The seeds
// below run with every `go test`; `go test -fuzz FuzzX ./route/` (or
// scripts/fuzz.sh) explores further and writes what it finds to
// testdata/fuzz/FuzzX/, where it becomes a seed too.

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// unescapeQ mirrors the decoding Key applies to a query name or value: a
// valid escape is decoded, anything else is kept as written.
func unescapeQ(s string) string {
	if v, err := url.QueryUnescape(s); err == nil {
		return v
	}
	return s
}

// decodedPairs are the non-empty name=value pairs of a raw query, decoded.
func decodedPairs(q string) [][2]string {
	var out [][2]string
	for part := range strings.SplitSeq(q, "&") {
		if part == "" {
			continue
		}
		n, v, _ := strings.Cut(part, "=")
		out = append(out, [2]string{unescapeQ(n), unescapeQ(v)})
	}
	return out
}

// keyQueryByte reports whether c may appear in the query of a key: the
// bytes Key writes literally, '%' of its escapes, and the separators.
func keyQueryByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("-_.~,%=&", c) >= 0
}

func FuzzKey(f *testing.F) {
	for _, s := range [][2]string{
		{"/trade-api/v2/markets", "series_ticker=KXFOO&status=open"},
		{"/trade-api/v2/markets", "status=open&series_ticker=KXFOO"},
		{"/trade-api/v2/markets", "tickers=A,B&tickers=C&limit=5"},
		{"/trade-api/v2/markets", "a=%41&b=+&c=%zz&&d"},
		{"/trade-api/v2/markets", "x=1&X=2&x=3"},
		{"/trade-api/v2/markets", "%3D=%26&a%26b=c%3Dd"},
		{"/trade-api/v2/events", "cursor=abc%2Fdef%3D%3D"},
		{"/trade-api/v2/markets", "a=\x00&b=\xff\xfe&c=%C0%AE"},
		{"/trade-api/v2/markets", "="},
		{"/trade-api/v2/markets", "=&=x&y="},
		{"/p", "q=%%41"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, path, q string) {
		k := route.Key(path, q)
		// The path is kept as it is; the query follows a '?', if any.
		rest, ok := strings.CutPrefix(k, path)
		if !ok {
			t.Fatalf("Key(%q, %q) = %q: does not start with the path", path, q, k)
		}
		var kq string
		if rest != "" {
			if kq, ok = strings.CutPrefix(rest, "?"); !ok {
				t.Fatalf("Key(%q, %q) = %q: path followed by %q, not a query", path, q, k, rest)
			}
		}
		// Idempotent.
		if k2 := route.Key(path, kq); k2 != k {
			t.Fatalf("Key(Key(%q, %q)) = %q, want %q", path, q, k2, k)
		}
		// Nothing the input could not produce: the same decoded pairs,
		// every other name's pairs in the input order, written only with
		// unreserved bytes and escapes.
		in, out := decodedPairs(q), decodedPairs(kq)
		sortByName := func(p [][2]string) [][2]string {
			p = slices.Clone(p)
			slices.SortStableFunc(p, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
			return p
		}
		if !slices.Equal(sortByName(in), out) {
			t.Fatalf("Key(%q, %q) = %q: pairs %q, want %q (the input's, sorted by name)", path, q, k, out, sortByName(in))
		}
		for i := 0; i < len(kq); i++ {
			if !keyQueryByte(kq[i]) {
				t.Fatalf("Key(%q, %q) = %q: byte %q in the query", path, q, k, kq[i])
			}
			if kq[i] == '%' && (i+2 >= len(kq) || !strings.ContainsRune("0123456789ABCDEF", rune(kq[i+1])) || !strings.ContainsRune("0123456789ABCDEF", rune(kq[i+2]))) {
				t.Fatalf("Key(%q, %q) = %q: '%%' at %d is not an uppercase escape", path, q, k, i)
			}
		}
		// Order of different names does not matter: the same pairs with
		// the names met in reverse order give the same key.
		var names []string
		groups := map[string][]string{}
		for part := range strings.SplitSeq(q, "&") {
			n, _, _ := strings.Cut(part, "=")
			dn := unescapeQ(n)
			if _, seen := groups[dn]; !seen {
				names = append(names, dn)
			}
			groups[dn] = append(groups[dn], part)
		}
		var shuffled []string
		for _, n := range slices.Backward(names) {
			shuffled = append(shuffled, groups[n]...)
		}
		if k3 := route.Key(path, strings.Join(shuffled, "&")); k3 != k {
			t.Fatalf("Key(%q, %q) = %q but with the parameters reordered (%q) = %q", path, q, k, strings.Join(shuffled, "&"), k3)
		}
	})
}

// privateSpelling undoes the spellings a path trick may use to reach a
// private route past a check that looks at the path as written: repeated
// percent-decoding (double encoding), overlong UTF-8 for '.' and '/', case,
// and ;-parameters in a segment.
func privateSpelling(p string) string {
	for range 4 {
		d, err := url.PathUnescape(p)
		if err != nil || d == p {
			break
		}
		p = d
	}
	p = strings.NewReplacer("\xc0\xae", ".", "\xe0\x80\xae", ".", "\xc0\xaf", "/", "\xe0\x80\xaf", "/").Replace(p)
	p = strings.ToLower(p)
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i], _, _ = strings.Cut(s, ";")
	}
	return strings.Join(segs, "/")
}

// checkTarget is the invariant of path checking and route matching for one
// request target as a client may send it.
func checkTarget(t *testing.T, table *route.Table, up *upstream.Client, target string) {
	u, err := url.ParseRequestURI(target)
	if err != nil || !strings.HasPrefix(u.Path, route.Prefix) {
		return // net/http answers 400, or it is not an API path
	}
	escaped := u.EscapedPath()
	if route.CheckPath(escaped, u.Path) != nil {
		return
	}
	if !utf8.ValidString(u.Path) {
		t.Fatalf("CheckPath passed %q, whose decoded path %q is not valid UTF-8", target, u.Path)
	}
	out := up.URL(escaped, u.RawQuery)
	if out.Scheme != "https" || out.Host != "upstream.invalid" || out.User != nil {
		t.Fatalf("target %q: upstream URL %q leaves the upstream", target, out)
	}
	// What the upstream sees: the path it decodes from the request line,
	// and what a server that resolves dot segments makes of it.
	sent := out.EscapedPath()
	got, err := url.PathUnescape(sent)
	if err != nil || got != u.Path {
		t.Fatalf("target %q: upstream gets %q (decoded %q, %v), want the client's path %q", target, sent, got, err, u.Path)
	}
	if resolved := (&url.URL{Path: "/"}).ResolveReference(&url.URL{Path: got}).Path; !strings.HasPrefix(resolved, route.Prefix) {
		t.Fatalf("target %q: upstream path %q resolves to %q, outside %s", target, got, resolved, route.Prefix)
	}
	rt := table.Match(u.Path)
	if rt == nil {
		return
	}
	if route.IsPrivate(u.Path) || route.IsPrivate(privateSpelling(u.Path)) || route.IsPrivate(privateSpelling(escaped)) {
		t.Fatalf("target %q (path %q) is a private route spelled differently, yet matches the cacheable %s", target, u.Path, rt.Pattern)
	}
}

func FuzzCheckPathMatch(f *testing.F) {
	table, err := route.NewTable(config.Default().Cache.Specs(false))
	if err != nil {
		f.Fatal(err)
	}
	up, err := upstream.New(upstream.Config{Origin: &url.URL{Scheme: "https", Host: "upstream.invalid"}})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"/trade-api/v2/markets",
		"/trade-api/v2/markets/KXFOO-26JUN30-A?x=1",
		"/trade-api/v2/markets/KX%46OO",
		"/trade-api/v2/markets/..",
		"/trade-api/v2/markets/%2e%2e/portfolio/balance",
		"/trade-api/v2/markets/%252e%252e/%252e%252e/portfolio",
		"/trade-api/v2/markets/%2541",
		"/trade-api/v2/markets/a%2fb",
		"/trade-api/v2/markets/a%5cb",
		"/trade-api/v2/markets/a\\b",
		"/trade-api/v2/markets/%00",
		"/trade-api/v2/\xc0\xae\xc0\xae/portfolio/balance",
		"/trade-api/v2/%c0%ae%c0%ae/portfolio/balance",
		"/trade-api/v2/markets/%c0%ae%c0%ae",
		"/trade-api/v2/markets/%ff",
		"/trade-api/v2/Portfolio/balance",
		"/trade-api/v2/PORTFOLIO/orders",
		"/trade-api/v2/portfolio;x=1/balance",
		"/trade-api/v2/portfolio%3b/balance",
		"/trade-api/v2/%70ortfolio/balance",
		"/trade-api/v2/%2570ortfolio/balance",
		"/trade-api/v2/historical/fills",
		"/trade-api/v2/historical/Fills",
		"/trade-api/v2/historical/fills;a",
		"/trade-api/v2/historical/markets/X/../../fills",
		"/trade-api/v2/series/S/markets/T/forecast_percentile_history",
		"/trade-api/v2/series/S/markets/T/Forecast_Percentile_History",
		"/trade-api/v2/exchange/user_data_timestamp",
		"/trade-api/v2/exchange/user_data_timestamp;",
		"/trade-api/v2//portfolio/balance",
		"/trade-api/v2/events/E1/metadata",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		checkTarget(t, table, up, target)
		// The same bytes under the prefix, for inputs that do not start
		// with it.
		if !strings.HasPrefix(target, route.Prefix) {
			checkTarget(t, table, up, route.Prefix+target)
		}
	})
}
