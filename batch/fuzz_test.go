package batch

// Fuzz targets (issue 11, item 1): batch request bodies through the HTTP
// handler in-process, in front of an upstream that records every path it
// is asked for; and the typed-batch page parser against arbitrary bytes.

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// pathRecorder answers every upstream GET with an empty markets page and
// records the URLs asked for.
type pathRecorder struct {
	mu   sync.Mutex
	urls []*url.URL
}

func (p *pathRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	p.mu.Lock()
	p.urls = append(p.urls, req.URL)
	p.mu.Unlock()
	body := `{"markets":[],"cursor":"","series":{"ticker":"S"},"event":{"event_ticker":"E"}}`
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req,
	}, nil
}

func (p *pathRecorder) take() []*url.URL {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.urls
	p.urls = nil
	return out
}

var endpoints = [...]string{"/batch", "/batch/markets", "/batch/events", "/batch/series"}

func FuzzBatchRequest(f *testing.F) {
	table, err := route.NewTable(config.Default().Cache.Specs(false))
	if err != nil {
		f.Fatal(err)
	}
	store, err := cache.NewMemory(cache.Config{MaxBytes: 8 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(store.Close)
	rec := &pathRecorder{}
	up, err := upstream.New(upstream.Config{Origin: &url.URL{Scheme: "https", Host: "upstream.invalid"}, Transport: rec})
	if err != nil {
		f.Fatal(err)
	}
	fe, err := fetch.New(fetch.Config{Store: store, Upstream: up})
	if err != nil {
		f.Fatal(err)
	}
	h, err := New(Config{Fetcher: fe, Routes: table, MaxItems: 10, MaxPages: 3})
	if err != nil {
		f.Fatal(err)
	}
	e := echo.New()
	h.Register(func(method, path string, hf echo.HandlerFunc) { e.Add(method, path, hf) })

	for _, s := range []string{
		`{"requests":[{"id":"a","path":"/trade-api/v2/markets?series_ticker=X"},{"id":"b","path":"/trade-api/v2/series/X"}]}`,
		`{"requests":[{"id":"a","path":"/trade-api/v2/portfolio/balance"}]}`,
		`{"requests":[{"id":"a","path":"http://evil.example/trade-api/v2/markets"},{"id":"b","path":"//evil.example/trade-api/v2/markets"}]}`,
		`{"requests":[{"id":"a","path":"/trade-api/v2/markets/%2e%2e/portfolio/balance"},{"id":"b","path":"/trade-api/v2/markets/%252e%252e"}]}`,
		`{"requests":[{"id":"a","path":"/trade-api/v2/\u00c0\u00ae/x"},{"id":"b","path":"/trade-api/v2/markets/%c0%ae%c0%ae"}]}`,
		`{"requests":[{"id":"a","path":"/trade-api/v2/Portfolio/balance"},{"id":"b","path":"/trade-api/v2/portfolio;x/balance"}]}`,
		`{"requests":[]}`, `{"requests":null}`, `{"requests":[{"id":1}]}`, `{"unknown":1}`, `{}`, `[]`, ``, `{"requests":[{}]}{}`,
		`{"series_tickers":["KXA","KXB"],"all_pages":true,"limit":5,"status":"open"}`,
		`{"series_tickers":["../portfolio"]}`, `{"series_tickers":["A?x=1"]}`, `{"series_tickers":["A%2fB"]}`,
		`{"event_tickers":["E1"],"with_nested_markets":false}`, `{"event_tickers":["E1","E1","E1"]}`,
		`{"series_tickers":["1","2","3","4","5","6","7","8","9","10","11"]}`,
	} {
		for i := range endpoints {
			f.Add(uint8(i), false, []byte(s))
		}
	}
	f.Add(uint8(0), true, []byte(`{"requests":[{"id":"a","path":"/trade-api/v2/markets"}]}`))
	f.Fuzz(func(t *testing.T, which uint8, ndjson bool, body []byte) {
		ep := endpoints[int(which)%len(endpoints)]
		req := httptest.NewRequest(http.MethodPost, ep, bytes.NewReader(body))
		if ndjson {
			req.Header.Set("Accept", "application/x-ndjson")
		}
		w := httptest.NewRecorder()
		e.ServeHTTP(w, req)
		res := w.Result()
		out := w.Body.Bytes()
		switch {
		case res.StatusCode == http.StatusOK:
			if ndjson {
				sc := bufio.NewScanner(bytes.NewReader(out))
				sc.Buffer(nil, 4<<20)
				for sc.Scan() {
					if !json.Valid(sc.Bytes()) {
						t.Fatalf("%s %q: NDJSON line %q is not JSON", ep, body, sc.Bytes())
					}
				}
			} else if !json.Valid(out) {
				t.Fatalf("%s %q: 200 with a body that is not JSON: %q", ep, body, out)
			}
		case res.StatusCode >= 400 && res.StatusCode < 500:
			var je struct{ Error, Code string }
			if !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") || json.Unmarshal(out, &je) != nil || je.Error == "" || je.Code == "" {
				t.Fatalf("%s %q: %d %q, want a JSON error", ep, body, res.StatusCode, out)
			}
		default:
			t.Fatalf("%s %q: status %d, want 200 or a 4xx", ep, body, res.StatusCode)
		}
		for _, u := range rec.take() {
			path, err := url.PathUnescape(u.EscapedPath())
			if u.Host != "upstream.invalid" || err != nil || !strings.HasPrefix(path, route.Prefix) ||
				route.CheckPath(u.EscapedPath(), path) != nil || !utf8.ValidString(path) || route.IsPrivate(path) || table.Match(path) == nil {
				t.Fatalf("%s %q: sent upstream %q (path %q, %v): not a safe public path", ep, body, u, path, err)
			}
		}
	})
}

// FuzzListPage: parseListPage never panics; when it accepts a body, its
// "markets" items are exactly the elements of the body's "markets" array
// (compacted) and its cursor the body's "cursor" (else "next_cursor"), as
// encoding/json reads them.
func FuzzListPage(f *testing.F) {
	for _, s := range []string{
		`{"markets":[{"ticker":"A"},{"ticker":"B"}],"cursor":"c1"}`,
		"{\n \"markets\": [\n {\"t\": \"a\\n\"}\n ]\n}", `{"markets":null}`, `{"markets":[],"markets":[1]}`,
		`{"cursor":"\u00e9","markets":[1.5e3,"x",null,true,{}]}`, `{"Markets":[1]}`, `[1]`, `{"markets":[1,]}`,
		`{"markets":[1]} x`, `{"markets":[{"a":"]"}], "x": {"markets": [2]}}`, `{"cursor":5}`, ``,
		`{"markets":[1],"markets":{}}`, `{"next_cursor":"n","markets":[]}`, `{"cursor":"a","cursor":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p := parseListPage(body).(*listPage)
		items, err := p.items("markets", body)
		if p.err != nil || err != nil {
			return
		}
		arr := append(append([]byte{'['}, items...), ']')
		var got []json.RawMessage
		if err := json.Unmarshal(arr, &got); err != nil {
			t.Fatalf("parseListPage(%q): items %q do not form a JSON array: %v", body, items, err)
		}
		// The reference: the top-level object's members, by exact name,
		// the last of duplicates winning. Only the JSON value the body
		// starts with counts (trailing bytes are not read).
		dec := json.NewDecoder(bytes.NewReader(body))
		var top map[string]json.RawMessage
		if err := dec.Decode(&top); err != nil {
			t.Fatalf("parseListPage(%q) accepted a body whose first value is not an object: %v", body, err)
		}
		var want []json.RawMessage
		if m, ok := top["markets"]; ok && string(m) != "null" {
			if err := json.Unmarshal(m, &want); err != nil {
				t.Fatalf("parseListPage(%q) accepted markets %q: %v", body, m, err)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("parseListPage(%q): %d items, want %d", body, len(got), len(want))
		}
		for i := range got {
			var a, b bytes.Buffer
			json.Compact(&a, got[i])
			json.Compact(&b, want[i])
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Fatalf("parseListPage(%q): item %d = %s, want %s", body, i, got[i], want[i])
			}
		}
		var cursor, next string
		json.Unmarshal(top["cursor"], &cursor)
		json.Unmarshal(top["next_cursor"], &next)
		cursor = cmp.Or(cursor, next)
		if p.cursor != cursor {
			t.Fatalf("parseListPage(%q): cursor %q, want %q", body, p.cursor, cursor)
		}
	})
}
