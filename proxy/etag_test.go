package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// answer is an upstream transport that answers 200 with body and, when
// set, the upstream's own ETag.
type answer struct {
	body, etag string
}

func (a answer) RoundTrip(req *http.Request) (*http.Response, error) {
	h := http.Header{"Content-Type": {"application/json"}}
	if a.etag != "" {
		h.Set("ETag", a.etag)
	}
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(strings.NewReader(a.body)), ContentLength: int64(len(a.body)), Request: req,
	}, nil
}

// big is a compressible body large enough to get a gzip copy.
var big = `{"markets":[` + strings.Repeat(`{"ticker":"KXA-1","yes_bid_dollars":"0.4200"},`, 40) + `{}]}`

func TestETagPerCoding(t *testing.T) {
	const path = "/trade-api/v2/markets"
	tests := []struct {
		name             string
		up               answer
		wantID, wantGzip string // "" : derived, checked for shape only
	}{
		{"derived strong tag", answer{body: big}, "", ""},
		{"upstream strong tag", answer{body: big, etag: `"X"`}, `"X"`, `"X-gzip"`},
		{"upstream weak tag stays weak", answer{body: big, etag: `W/"X"`}, `W/"X"`, `W/"X-gzip"`},
		{"no gzip copy: one tag", answer{body: `{}`, etag: `"X"`}, `"X"`, `"X"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFuzzServer(t, tt.up)
			get := func(h ...string) *http.Response {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				for i := 0; i+1 < len(h); i += 2 {
					req.Header.Set(h[i], h[i+1])
				}
				w := httptest.NewRecorder()
				s.ServeHTTP(w, req)
				return w.Result()
			}
			id := get().Header.Get("ETag")
			gz := get("Accept-Encoding", "gzip").Header.Get("ETag")
			if tt.wantID != "" && (id != tt.wantID || gz != tt.wantGzip) {
				t.Errorf("ETags identity %s, gzip %s; want %s, %s", id, gz, tt.wantID, tt.wantGzip)
			}
			if tt.wantID == "" && (id == gz || gz != strings.TrimSuffix(id, `"`)+`-gzip"`) {
				t.Errorf("ETags identity %s, gzip %s; want two tags, the gzip one %s-gzip\"", id, gz, strings.TrimSuffix(id, `"`))
			}
			// Either tag validates the entry for either client, and the
			// 304 names the tag of the coding that client would get.
			for _, inm := range []string{id, gz} {
				for _, c := range []struct{ ae, tag string }{{"identity", id}, {"gzip", gz}} {
					resp := get("If-None-Match", inm, "Accept-Encoding", c.ae)
					if resp.StatusCode != http.StatusNotModified || resp.Header.Get("ETag") != c.tag {
						t.Errorf("If-None-Match %s, Accept-Encoding %s: %d ETag %s; want 304 ETag %s", inm, c.ae, resp.StatusCode, resp.Header.Get("ETag"), c.tag)
					}
				}
			}
			if resp := get("If-None-Match", `"other"`, "Accept-Encoding", "gzip"); resp.StatusCode != http.StatusOK {
				t.Errorf("non-matching If-None-Match: %d, want 200", resp.StatusCode)
			}
		})
	}
}
