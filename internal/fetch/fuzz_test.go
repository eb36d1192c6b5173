package fetch

// Fuzz targets (issue 11, item 1): the request cache directives against a
// reference reading of RFC 9111, and the split of a combined
// /markets?tickers= answer (automatic batching) against arbitrary upstream
// bytes.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/upstream"
)

// refDirectives reads Cache-Control and Pragma as RFC 9111 section 5.2.1
// and 5.4 describe them: comma-separated directives, names in any case,
// max-age's delta-seconds possibly quoted; no-cache or max-age=0 force a
// fresh fetch.
func refDirectives(h http.Header) Directives {
	var d Directives
	for _, v := range h.Values("Cache-Control") {
		for _, item := range strings.Split(v, ",") {
			name, value, hasValue := strings.Cut(strings.TrimSpace(item), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-cache":
				d.NoCache = true
			case "only-if-cached":
				d.OnlyIfCached = true
			case "max-age":
				value = strings.TrimSpace(value)
				if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
					value = value[1 : len(value)-1] // a quoted-string; a lone quote is malformed, not zero
				}
				if hasValue && value != "" && strings.Trim(value, "0") == "" {
					d.NoCache = true
				} else if n, ok := refDelta(value); ok {
					d.MaxAge = n
				}
			case "min-fresh":
				if n, ok := refDelta(value); ok {
					d.MinFresh = n
				}
			case "max-stale":
				if strings.TrimSpace(value) == "" {
					d.MaxStale = AnyStale
				} else if n, ok := refDelta(value); ok {
					d.MaxStale = n
				}
			}
		}
	}
	for _, v := range h.Values("Pragma") {
		for _, item := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(item), "no-cache") {
				d.NoCache = true
			}
		}
	}
	return d
}

// refDelta reads a delta-seconds value (RFC 9111 section 1.2.2: digits,
// here possibly quoted; too large a value is read as 2^31).
func refDelta(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n > 1<<31 {
		n = 1 << 31 // only ErrRange is possible: the value is all digits
	}
	return time.Duration(n) * time.Second, true
}

func FuzzParseDirectives(f *testing.F) {
	for _, s := range [][2]string{
		{"no-cache", ""}, {"NO-CACHE", ""}, {"max-age=0", ""}, {"max-age=00", ""}, {`max-age="0"`, ""},
		{"max-age=1", ""}, {"max-age=", ""}, {"max-age", ""}, {"only-if-cached", ""}, {"x-no-cache", ""},
		{"no-cache-please", ""}, {"public, max-age=0, must-revalidate", ""}, {"", "no-cache"}, {"", "x, no-cache"},
		{`no-cache="Set-Cookie"`, ""}, {"max-age=-0", ""}, {" max-age = 0 ", ""},
		{"min-fresh=5", ""}, {"max-stale", ""}, {"max-stale=7, max-age=3", ""}, {`max-stale="1x"`, ""},
		{"max-age=99999999999999999999999", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, cc, pragma string) {
		h := http.Header{}
		if cc != "" {
			h["Cache-Control"] = []string{cc}
		}
		if pragma != "" {
			h["Pragma"] = []string{pragma}
		}
		// A quoted max-age value may hold a comma; the reference splits
		// on every comma like the implementation, so it agrees there.
		if got, want := ParseDirectives(h), refDirectives(h); got != want {
			t.Errorf("ParseDirectives(Cache-Control %q, Pragma %q) = %+v, want %+v", cc, pragma, got, want)
		}
		if NoCache(h) != refDirectives(h).NoCache {
			t.Errorf("NoCache(Cache-Control %q, Pragma %q) disagrees with ParseDirectives", cc, pragma)
		}
	})
}

// fixedAnswer is an upstream transport that answers every request with
// one status and body.
type fixedAnswer struct {
	status int
	body   []byte
}

func (a fixedAnswer) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: a.status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(a.body)),
		ContentLength: int64(len(a.body)), Request: req,
	}, nil
}

// FuzzAutoBatchSplit feeds arbitrary bytes as the upstream's answer to a
// combined call for three tickers. Invariants: no panic; every waiter gets
// exactly one answer; a 200 answer is {"market":M} where M is (compacted)
// an element of the answer's "markets" array whose ticker is the waiter's;
// any other answer sends the waiter to the single-market route.
func FuzzAutoBatchSplit(f *testing.F) {
	for _, s := range []string{
		`{"markets":[{"ticker":"A","x":1},{"ticker":"B"}],"cursor":""}`,
		`{"markets":[{"ticker":"A"},{"ticker":"A","second":true}]}`,
		`{"markets":[{"Ticker":"C"}, {"ticker":"B", "n": [1, 2]}]}`,
		`{"markets":[{"ticker":"A"},tru]}`,
		`{"markets":null}`, `{"markets":{"ticker":"A"}}`, `[]`, `null`, ``, `{"markets":[1,"x",null,[]]}`,
		"{\"markets\":[{\"ticker\":\"A\",\n \"s\":\"\\u00e9\\\"\"}]}",
		`{"markets":[{"ticker":"A"}]} trailing`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		store, err := cache.NewMemory(cache.Config{MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		up, err := upstream.New(upstream.Config{Origin: &url.URL{Scheme: "https", Host: "upstream.invalid"}, Transport: fixedAnswer{http.StatusOK, []byte(body)}})
		if err != nil {
			t.Fatal(err)
		}
		fe, err := New(Config{Store: store, Upstream: up})
		if err != nil {
			t.Fatal(err)
		}
		a := &autoBatcher{f: fe}
		b := &autoBatch{waiters: map[string]chan autoAnswer{}, hdr: http.Header{}}
		tickers := []string{"A", "B", "C"}
		for _, tk := range tickers {
			b.tickers = append(b.tickers, tk)
			b.waiters[tk] = make(chan autoAnswer, 2)
		}
		a.run(b)
		// What the answer holds, read independently.
		var page struct {
			Markets []json.RawMessage `json:"markets"`
		}
		elems := map[string][][]byte{}
		if json.Unmarshal([]byte(body), &page) == nil {
			for _, raw := range page.Markets {
				var m struct {
					Ticker string `json:"ticker"`
				}
				if json.Unmarshal(raw, &m) == nil {
					var c bytes.Buffer
					if json.Compact(&c, raw) == nil {
						elems[m.Ticker] = append(elems[m.Ticker], c.Bytes())
					}
				}
			}
		}
		for _, tk := range tickers {
			ch := b.waiters[tk]
			if len(ch) != 1 {
				t.Fatalf("ticker %s got %d answers, want 1", tk, len(ch))
			}
			ans := <-ch
			switch {
			case ans.fallback:
				if len(elems[tk]) > 0 {
					t.Errorf("ticker %s sent to the single route although the answer holds it: %q", tk, body)
				}
			case ans.status == http.StatusOK:
				if !json.Valid(ans.body) {
					t.Fatalf("ticker %s: answer %q is not valid JSON (upstream %q)", tk, ans.body, body)
				}
				var one struct {
					Market json.RawMessage `json:"market"`
				}
				dec := json.NewDecoder(bytes.NewReader(ans.body))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&one); err != nil {
					t.Fatalf("ticker %s: answer %q is not {\"market\":...}: %v", tk, ans.body, err)
				}
				ok := false
				for _, e := range elems[tk] {
					ok = ok || bytes.Equal(e, one.Market)
				}
				if !ok {
					t.Errorf("ticker %s: answer %q is not an element of the upstream's markets with that ticker (%q)", tk, ans.body, body)
				}
			default:
				t.Errorf("ticker %s: answer %+v to an upstream 200, want a market or the single route", tk, ans)
			}
		}
	})
}
