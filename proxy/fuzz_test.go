package proxy

// Fuzz targets for the request-header parsers and for request targets
// through the whole handler (issue 11, item 1). The parsers are checked
// against simple reference implementations written from the RFCs; the
// handler against what reaches a recording upstream.

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// refQ is the weight of one Accept-Encoding member's parameters (RFC 9110
// section 12.4.2): the value of its q parameter, parameter names compared
// without case; a missing or unparsable weight counts as 1.
func refQ(params string) float64 {
	for p := range strings.SplitSeq(params, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 1
		}
		return f
	}
	return 1
}

// refAcceptsGzip is RFC 9110 section 12.5.3 for gzip: the first member
// naming gzip decides by its weight; without one, the first "*" does;
// without either, gzip is not acceptable.
func refAcceptsGzip(values []string) bool {
	star, starSeen := 0.0, false
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(item, ";")
			name = strings.TrimSpace(name)
			switch {
			case strings.EqualFold(name, "gzip"):
				return refQ(params) != 0
			case name == "*" && !starSeen:
				star, starSeen = refQ(params), true
			}
		}
	}
	return starSeen && star != 0
}

func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{
		"gzip", "GZIP", "gzip, deflate, br", "br;q=1.0, gzip;q=0.8", "gzip;q=0", "gzip; q=0",
		"gzip;q=0.000", "gzip;Q=0", "gzip;level=1;q=0", "*", "*;q=0", "*;q=0, gzip", "gzip;q=0, *",
		"identity", "", ",,,", "gzip;q=nan", "x-gzip", " gzip ;q= 0 ", "deflate\x00gzip",
	} {
		f.Add(s, "")
	}
	f.Add("deflate", "gzip")
	f.Add("gzip;q=0", "gzip")
	f.Fuzz(func(t *testing.T, a, b string) {
		values := []string{a}
		if b != "" {
			values = append(values, b)
		}
		if got, want := acceptsGzip(values), refAcceptsGzip(values); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", values, got, want)
		}
	})
}

// refMatchesETag is the weak comparison of RFC 9110 section 13.1.2 over an
// If-None-Match list (section 13.1.2's grammar: "*" or a comma-separated
// list of entity-tags, each W/ optional then a quoted opaque tag that may
// hold commas). ok is false for a value outside that grammar.
func refMatchesETag(values []string, etag string) (match, ok bool) {
	opaque := strings.TrimPrefix(etag, "W/")
	for _, v := range values {
		if strings.TrimSpace(v) == "*" {
			return true, true
		}
		rest := v
		for {
			rest = strings.TrimLeft(rest, " \t")
			if rest == "" {
				break
			}
			if rest[0] == ',' {
				rest = rest[1:]
				continue
			}
			rest = strings.TrimPrefix(rest, "W/")
			if rest == "" || rest[0] != '"' {
				return false, false
			}
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				return false, false
			}
			tag := rest[:end+2]
			for i := 1; i < len(tag)-1; i++ {
				if c := tag[i]; c < 0x21 || c == 0x7f {
					return false, false // not an etagc
				}
			}
			if tag == opaque {
				match = true
			}
			rest = strings.TrimLeft(rest[end+2:], " \t")
			if rest != "" && rest[0] != ',' {
				return false, false
			}
		}
	}
	return match, true
}

func FuzzMatchesETag(f *testing.F) {
	for _, s := range [][2]string{
		{`"abc"`, `"abc"`}, {`W/"abc"`, `"abc"`}, {`"abc"`, `W/"abc"`}, {`"x", "abc"`, `"abc"`},
		{`*`, `"abc"`}, {` * `, `"abc"`}, {`"abc`, `"abc"`}, {`"a,b"`, `"a,b"`}, {`"a,b"`, `"a"`},
		{`"a", W/"b" ,"c"`, `"c"`}, {`,,`, `"a"`}, {``, `"a"`}, {`"abc"x`, `"abc"`}, {`W/W/"a"`, `"a"`},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, header, etag string) {
		// Entity tags kproxy holds: the upstream's (if well formed) or its
		// own quoted hex.
		if !strings.HasPrefix(strings.TrimPrefix(etag, "W/"), `"`) || !strings.HasSuffix(etag, `"`) || len(strings.TrimPrefix(etag, "W/")) < 2 ||
			strings.Count(etag, `"`) != 2 || strings.ContainsAny(etag, " \t\x00\x7f") {
			etag = `"` + strconv.Itoa(len(etag)) + `"`
		}
		got := matchesETag([]string{header}, etag, etag)
		want, ok := refMatchesETag([]string{header}, etag)
		if ok && got != want {
			t.Errorf("matchesETag(%q, %q) = %v, want %v", header, etag, got, want)
		}
	})
}

// recorder is an upstream transport that answers 200 {} to everything and
// records what it was sent.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(`{}`)),
		ContentLength: 2, Request: req,
	}, nil
}

func (r *recorder) take() []*http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.reqs
	r.reqs = nil
	return out
}

// newFuzzServer is a Server with the default routes in front of rec.
func newFuzzServer(tb testing.TB, rec http.RoundTripper) *Server {
	s, _ := newFuzzServerFetcher(tb, rec)
	return s
}

// newFuzzServerFetcher is newFuzzServer that also returns its Fetcher; rec
// may be any upstream transport.
func newFuzzServerFetcher(tb testing.TB, rec http.RoundTripper) (*Server, *fetch.Fetcher) {
	tb.Helper()
	cfg := config.Default()
	table, err := route.NewTable(cfg.Cache.Specs(false))
	if err != nil {
		tb.Fatal(err)
	}
	store, err := cache.NewMemory(cache.Config{MaxBytes: 8 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(store.Close)
	up, err := upstream.New(upstream.Config{Origin: &url.URL{Scheme: "https", Host: "upstream.invalid"}, Transport: rec})
	if err != nil {
		tb.Fatal(err)
	}
	f, err := fetch.New(fetch.Config{Store: store, Upstream: up})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Config{Fetcher: f, Routes: table, Upstream: up, Store: store})
	if err != nil {
		tb.Fatal(err)
	}
	return s, f
}

// FuzzRequestTarget sends arbitrary request targets and methods through
// the whole handler, parsed by net/http as from the wire. Invariants: every
// answer kproxy makes itself is a JSON error; whatever reaches the upstream
// goes to its host, under /trade-api/v2/, with the client's path byte for
// byte (no decoding twice, no dot segments), valid UTF-8, and a cached
// route is never a private one.
func FuzzRequestTarget(f *testing.F) {
	rec := &recorder{}
	s, fe := newFuzzServerFetcher(f, rec)
	for _, t := range []string{
		"/trade-api/v2/markets", "/trade-api/v2/markets/KXA-1?x=1", "/trade-api/v2/portfolio/balance",
		"/trade-api/v2/markets/%2541", "/trade-api/v2/markets/%252e%252e", "/trade-api/v2/markets/%2e%2e/x",
		"/trade-api/v2/%c0%ae%c0%ae/portfolio/balance", "/trade-api/v2/markets/a%2fb", "/trade-api/v2/markets/%ff",
		"//evil.example/trade-api/v2/markets", "http://evil.example/trade-api/v2/markets", "/trade-api/v2/../../etc/passwd",
		"/trade-api/v2/Portfolio/balance", "/trade-api/v2/portfolio;x/balance", "/trade-api/v3/markets", "/admin/cache",
		"/trade-api/v2/markets?%zz", "/trade-api/v2/series/S/markets/T/forecast_percentile_history",
	} {
		f.Add("GET", t)
	}
	f.Add("POST", "/trade-api/v2/portfolio/orders")
	f.Add("DELETE", "/trade-api/v2/markets/X")
	f.Fuzz(func(t *testing.T, method, target string) {
		raw := method + " " + target + " HTTP/1.1\r\nHost: kproxy.test\r\nContent-Length: 0\r\n\r\n"
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http answers 400 before any handler runs
		}
		req.RemoteAddr = "127.0.0.1:1234"
		// Only this request's upstream work counts: background refreshes
		// of earlier inputs end first, this one's (if any) are awaited.
		fe.Wait()
		rec.take()
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		fe.Wait()
		sent := rec.take()
		res := w.Result()
		if res.StatusCode >= 400 && len(sent) == 0 {
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") || !strings.Contains(w.Body.String(), `"code":"`) {
				t.Fatalf("%s %q: %d %q %q, want a JSON error", method, target, res.StatusCode, ct, w.Body.String())
			}
		}
		if len(sent) > 1 {
			t.Fatalf("%s %q: %d upstream requests, want at most 1", method, target, len(sent))
		}
		for _, out := range sent {
			if out.URL.Scheme != "https" || out.URL.Host != "upstream.invalid" || out.URL.User != nil {
				t.Fatalf("%s %q: sent to %q, not the upstream", method, target, out.URL)
			}
			// What an upstream server decodes from the request line.
			line := out.URL.EscapedPath()
			got, err := url.PathUnescape(line)
			if err != nil || got != req.URL.Path {
				t.Fatalf("%s %q: upstream request line path %q decodes to %q (%v), want the client's path %q", method, target, line, got, err, req.URL.Path)
			}
			if !strings.HasPrefix(got, route.Prefix) || route.CheckPath(line, got) != nil {
				t.Fatalf("%s %q: upstream path %q is outside %s or malformed", method, target, got, route.Prefix)
			}
			if !utf8.ValidString(got) {
				t.Fatalf("%s %q: upstream path %q is not valid UTF-8", method, target, got)
			}
			if route.IsPrivate(got) && res.Header.Get("X-Cache") != "BYPASS" {
				t.Fatalf("%s %q: private path %q answered with X-Cache %q, want BYPASS", method, target, got, res.Header.Get("X-Cache"))
			}
		}
	})
}

// Regression tests for what FuzzAcceptsGzip, FuzzMatchesETag and
// FuzzRequestTarget found.

func TestDoubleEncodedPathGoesUpstreamAsWritten(t *testing.T) {
	rec := &recorder{}
	s := newFuzzServer(t, rec)
	for target, want := range map[string]string{
		// %25 is a literal '%': the upstream must get it back encoded,
		// not a "%2e%2e" that it would decode into a dot-dot segment.
		"/trade-api/v2/markets/%252e%252e": "/trade-api/v2/markets/%252e%252e",
		"/trade-api/v2/markets/%2541":      "/trade-api/v2/markets/%2541",
	} {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		s.ServeHTTP(httptest.NewRecorder(), req)
		sent := rec.take()
		if len(sent) != 1 || sent[0].URL.EscapedPath() != want {
			t.Errorf("GET %s: upstream got %v, want one request for %s", target, sent, want)
		}
	}
}

func TestAcceptsGzipWeightAnyParameterOrCase(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want bool
	}{
		{"gzip;Q=0", false}, {"gzip;level=1;q=0", false}, {"*;q=0, gzip", true}, {"gzip;q=0, *", false},
		{"br, *", true}, {"br", false}, {"gzip", true},
	} {
		if got := acceptsGzip([]string{tt.v}); got != tt.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tt.v, got, tt.want)
		}
	}
}

func TestMatchesETagWithCommaInTag(t *testing.T) {
	if !matchesETag([]string{`"x", "a,b"`}, `"a,b"`, `"a,b"`) {
		t.Errorf(`matchesETag("x", "a,b") for "a,b" = false, want true`)
	}
	if matchesETag([]string{`"a,b"`}, `"a"`, `"a"`) {
		t.Errorf(`matchesETag("a,b") for "a" = true, want false`)
	}
}
