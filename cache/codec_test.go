package cache

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sameEntry fails t unless got holds exactly what want holds: what a client
// would see replayed (status, headers, both bodies, validator, Age base,
// windows, Cache-Status detail).
func sameEntry(t *testing.T, got, want *Entry) {
	t.Helper()
	if got.Key != want.Key || got.Status != want.Status || got.ETag != want.ETag || got.Detail != want.Detail {
		t.Errorf("key/status/etag/detail = %q %d %q %q, want %q %d %q %q",
			got.Key, got.Status, got.ETag, got.Detail, want.Key, want.Status, want.ETag, want.Detail)
	}
	if !bytes.Equal(got.Body, want.Body) {
		t.Errorf("body = %d bytes, want %d bytes, equal", len(got.Body), len(want.Body))
	}
	if !bytes.Equal(got.Gzip, want.Gzip) || (got.Gzip == nil) != (want.Gzip == nil) {
		t.Errorf("gzip = %d bytes (nil %t), want %d bytes (nil %t)", len(got.Gzip), got.Gzip == nil, len(want.Gzip), want.Gzip == nil)
	}
	if !reflect.DeepEqual(got.Header, want.Header) {
		t.Errorf("header = %v, want %v", got.Header, want.Header)
	}
	for _, c := range []struct {
		name      string
		got, want time.Time
	}{
		{"FetchedAt", got.FetchedAt, want.FetchedAt},
		{"FreshUntil", got.FreshUntil, want.FreshUntil},
		{"RevalidateUntil", got.RevalidateUntil, want.RevalidateUntil},
		{"ErrorUntil", got.ErrorUntil, want.ErrorUntil},
	} {
		if !c.got.Equal(c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if got.Size() != want.Size() {
		t.Errorf("Size = %d, want %d", got.Size(), want.Size())
	}
	now := want.FetchedAt.Add(90 * time.Second)
	if got.AgeSeconds(now) != want.AgeSeconds(now) {
		t.Errorf("Age = %d, want %d", got.AgeSeconds(now), want.AgeSeconds(now))
	}
}

func TestRecordRoundTrip(t *testing.T) {
	fetched := time.Date(2026, 12, 7, 7, 1, 2, 345678901, time.UTC)
	big := []byte(`{"markets":[` + strings.Repeat(`{"ticker":"KXFOO-26DEC07-B1","status":"finalized"},`, 200) + `{}]}`)
	hdr := http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "", "c"}}
	w := Windows{TTL: 2 * time.Second, StaleWhileRevalidate: time.Second, StaleIfError: 10 * time.Minute}
	pushed := NewEntry("/trade-api/v2/markets/KXFOO", 200, hdr, big, fetched, w, true).
		Derived([]byte(`{"market":{"ticker":"KXFOO"}}`), fetched, fetched.Add(time.Minute), fetched.Add(2*time.Minute), fetched.Add(time.Hour), "pushed")
	forever := NewEntry("/trade-api/v2/historical/markets/KXBAR", 200, hdr, big, fetched, w, true)
	forever.FreshUntil = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		e    *Entry
		opt  RecordOptions
	}{
		{"small, no gzip copy", NewEntry("/trade-api/v2/series/KXFOO", 200, hdr, []byte(`{"series":{}}`), fetched, w, true), RecordOptions{}},
		{"gzip copy kept with body", NewEntry("/trade-api/v2/markets?limit=200", 200, hdr, big, fetched, w, true), RecordOptions{}},
		{"gzip only", NewEntry("/trade-api/v2/markets?limit=200", 200, hdr, big, fetched, w, true), RecordOptions{GzipOnly: true}},
		{"immutable", NewEntry("/trade-api/v2/historical/trades?ticker=X", 200, hdr, big, fetched, w, true), RecordOptions{Immutable: true}},
		{"derived with detail", pushed, RecordOptions{}},
		{"404, empty body, no header", NewEntry("/trade-api/v2/markets/NOPE", 404, nil, nil, fetched, Windows{}, true), RecordOptions{}},
		{"upstream etag", NewEntry("/k", 200, http.Header{"Etag": {`W/"abc"`}}, []byte("x"), fetched, w, true), RecordOptions{}},
		{"bound past year 2262", forever, RecordOptions{Immutable: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := AppendRecord(nil, tc.e, tc.opt)
			got, opt, err := DecodeRecord(tc.e.Key, bytes.Clone(b))
			if err != nil {
				t.Fatalf("DecodeRecord = %v", err)
			}
			want := tc.e
			if want.FreshUntil.Year() > 2262 {
				// Clamped to the int64 range: still centuries ahead.
				if got.FreshUntil.Year() < 2262 {
					t.Errorf("FreshUntil = %v, want at least year 2262", got.FreshUntil)
				}
				want = want.Derived(nil, time.Time{}, got.FreshUntil, want.RevalidateUntil, want.ErrorUntil, want.Detail)
			}
			sameEntry(t, got, want)
			if opt.Immutable != tc.opt.Immutable {
				t.Errorf("Immutable = %t, want %t", opt.Immutable, tc.opt.Immutable)
			}
			if again := AppendRecord(nil, got, tc.opt); tc.e.FreshUntil.Year() <= 2262 && !bytes.Equal(again, b) {
				t.Errorf("re-encoding the decoded entry gives other bytes")
			}
		})
	}
}

func TestRecordGzipOnlyIsSmaller(t *testing.T) {
	e := NewEntry("/k", 200, nil, bytes.Repeat([]byte(`{"a":"bcdefgh"}`), 500), t0, Windows{TTL: time.Second}, true)
	both, gz := AppendRecord(nil, e, RecordOptions{}), AppendRecord(nil, e, RecordOptions{GzipOnly: true})
	if got, want := len(gz), len(both)-len(e.Body); got > want {
		t.Errorf("gzip-only record = %d bytes, want at most %d", got, want)
	}
}

// TestRecordRejectsDamage flips every byte of a record in turn and cuts it
// at every length: each must be rejected, never decoded into an entry.
func TestRecordRejectsDamage(t *testing.T) {
	e := NewEntry("/trade-api/v2/markets/KXFOO", 200, http.Header{"Content-Type": {"application/json"}},
		bytes.Repeat([]byte(`{"ticker":"KXFOO"}`), 40), t0, Windows{TTL: time.Minute}, true)
	good := AppendRecord(nil, e, RecordOptions{Immutable: true})
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0xff
		if got, _, err := DecodeRecord(e.Key, b); !errors.Is(err, ErrBadRecord) {
			t.Fatalf("byte %d flipped: DecodeRecord = %v, %v; want ErrBadRecord", i, got, err)
		}
	}
	for n := range len(good) {
		if got, _, err := DecodeRecord(e.Key, bytes.Clone(good[:n])); !errors.Is(err, ErrBadRecord) {
			t.Fatalf("cut to %d bytes: DecodeRecord = %v, %v; want ErrBadRecord", n, got, err)
		}
	}
	if _, _, err := DecodeRecord(e.Key, append(bytes.Clone(good), 0)); !errors.Is(err, ErrBadRecord) {
		t.Errorf("trailing byte: DecodeRecord err = %v, want ErrBadRecord", err)
	}
	if _, _, err := DecodeRecord("/trade-api/v2/markets/KXBAR", bytes.Clone(good)); !errors.Is(err, ErrBadRecord) {
		t.Errorf("read under another key: DecodeRecord err = %v, want ErrBadRecord", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(AppendRecord(nil, entry("k", 10), RecordOptions{}))
	f.Add(AppendRecord(nil, NewEntry("k", 200, nil, bytes.Repeat([]byte("xyz"), 300), t0, Windows{}, true), RecordOptions{GzipOnly: true}))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, opt, err := DecodeRecord("k", b)
		if err != nil {
			return
		}
		again, _, err := DecodeRecord("k", AppendRecord(nil, e, opt))
		if err != nil {
			t.Fatalf("a decoded record does not survive a round trip: %v", err)
		}
		sameEntry(t, again, e)
	})
}

func BenchmarkDecodeRecord(b *testing.B) {
	for _, size := range []int{1 << 10, 80 << 10} {
		body := bytes.Repeat([]byte(`{"ticker":"KXFOO-26DEC07","yes_bid_dollars":"0.4200"},`), size/52)
		e := NewEntry("/trade-api/v2/markets?limit=1000", 200, http.Header{"Content-Type": {"application/json"}}, body, t0, Windows{TTL: time.Minute}, true)
		rec := AppendRecord(nil, e, RecordOptions{})
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(rec)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := DecodeRecord(e.Key, rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
