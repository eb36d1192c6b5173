package cache

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func entry(key string, size int) *Entry {
	body := bytes.Repeat([]byte("x"), size)
	return NewEntry(key, 200, http.Header{"Content-Type": {"application/json"}}, body, t0, Windows{TTL: time.Minute}, false)
}

func newStore(t *testing.T, max int64) *Memory {
	t.Helper()
	m, err := NewMemory(Config{MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestMemorySetGet(t *testing.T) {
	m := newStore(t, 1<<20)
	e := entry("/a", 100)
	m.Set(e, time.Minute)
	got, ok := m.Get("/a")
	if !ok || got != e {
		t.Fatalf("Get(/a) = %v, %v; want the stored entry", got, ok)
	}
	if _, ok := m.Get("/b"); ok {
		t.Errorf("Get(/b) found an entry never stored")
	}
	st := m.Stats()
	if st.Items != 1 || st.Bytes != e.Size() {
		t.Errorf("Stats = %+v, want 1 item of %d bytes", st, e.Size())
	}
}

func TestMemoryStaysWithinMaxBytes(t *testing.T) {
	const max = 256 << 10
	m := newStore(t, max)
	for i := range 400 {
		m.Set(entry(fmt.Sprintf("/k/%d", i), 2000), time.Minute)
	}
	st := m.Stats()
	if st.Bytes > max {
		t.Errorf("cache holds %d bytes, want at most %d", st.Bytes, max)
	}
	if st.Items == 0 || st.Items >= 400 {
		t.Errorf("cache holds %d items, want some but not all 400", st.Items)
	}
	// The index follows what the store really holds.
	held := 0
	for i := range 400 {
		if _, ok := m.Get(fmt.Sprintf("/k/%d", i)); ok {
			held++
		}
	}
	if held != st.Items {
		t.Errorf("Get finds %d entries, Stats says %d", held, st.Items)
	}
}

func TestMemoryReplaceKeepsIndex(t *testing.T) {
	m := newStore(t, 1<<20)
	m.Set(entry("/a", 100), time.Minute)
	e2 := entry("/a", 300)
	m.Set(e2, time.Minute)
	if got, _ := m.Get("/a"); got != e2 {
		t.Errorf("Get after replace returned the old entry")
	}
	if st := m.Stats(); st.Items != 1 || st.Bytes != e2.Size() {
		t.Errorf("Stats after replace = %+v, want 1 item of %d bytes", st, e2.Size())
	}
}

func TestMemoryPurgeByPrefix(t *testing.T) {
	m := newStore(t, 1<<20)
	for _, k := range []string{"/trade-api/v2/series/A", "/trade-api/v2/series/B", "/trade-api/v2/markets?x=1"} {
		m.Set(entry(k, 10), time.Minute)
	}
	if n := m.Purge("/trade-api/v2/series"); n != 2 {
		t.Errorf("Purge(series) = %d, want 2", n)
	}
	if _, ok := m.Get("/trade-api/v2/series/A"); ok {
		t.Errorf("purged entry still served")
	}
	if _, ok := m.Get("/trade-api/v2/markets?x=1"); !ok {
		t.Errorf("entry outside the prefix was purged")
	}
	if n := m.Purge(""); n != 1 {
		t.Errorf("Purge(all) = %d, want 1", n)
	}
	if st := m.Stats(); st.Items != 0 || st.Bytes != 0 {
		t.Errorf("Stats after purge = %+v, want empty", st)
	}
}

func TestMemoryExpiryLeavesIndex(t *testing.T) {
	m := newStore(t, 1<<20)
	m.Set(entry("/short", 10), 50*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for m.Stats().Items != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // ristretto expires on the wall clock: that is what is tested
	}
	if _, ok := m.Get("/short"); ok {
		t.Errorf("expired entry still served")
	}
	if st := m.Stats(); st.Items != 0 {
		t.Errorf("index holds %d items after expiry, want 0", st.Items)
	}
}

func TestEntryFreshnessWindows(t *testing.T) {
	e := NewEntry("/k", 200, http.Header{}, []byte("{}"), t0,
		Windows{TTL: 2 * time.Second, StaleWhileRevalidate: 3 * time.Second, StaleIfError: 10 * time.Second}, false)
	tests := []struct {
		at                         time.Duration
		fresh, revalidate, onError bool
	}{
		{0, true, true, true},
		{1999 * time.Millisecond, true, true, true},
		{2 * time.Second, false, true, true},
		{5 * time.Second, false, false, true},
		{12 * time.Second, false, false, false},
	}
	for _, tt := range tests {
		now := t0.Add(tt.at)
		if got := e.Fresh(now); got != tt.fresh {
			t.Errorf("Fresh(+%v) = %v, want %v", tt.at, got, tt.fresh)
		}
		if got := e.Revalidatable(now); got != tt.revalidate {
			t.Errorf("Revalidatable(+%v) = %v, want %v", tt.at, got, tt.revalidate)
		}
		if got := e.ServableOnError(now); got != tt.onError {
			t.Errorf("ServableOnError(+%v) = %v, want %v", tt.at, got, tt.onError)
		}
	}
}

func TestEntryGzipMadeOnceAndValid(t *testing.T) {
	body := []byte(strings.Repeat(`{"ticker":"KXEARNINGSMENTIONMETA-26JUN30-VR"},`, 50))
	e := NewEntry("/k", 200, http.Header{}, body, t0, Windows{TTL: time.Second}, true)
	if e.Gzip == nil {
		t.Fatal("no gzip copy for a compressible body")
	}
	zr, err := gzip.NewReader(bytes.NewReader(e.Gzip))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(zr)
	if !bytes.Equal(got, body) {
		t.Errorf("gzip copy does not decompress to the body")
	}
	if small := NewEntry("/s", 200, http.Header{}, []byte("{}"), t0, Windows{}, true); small.Gzip != nil {
		t.Errorf("tiny body was compressed")
	}
}

func TestEntryStoresNoHopByHopOrCookies(t *testing.T) {
	h := http.Header{
		"Content-Type": {"application/json"}, "Connection": {"close"}, "Set-Cookie": {"a=b"},
		"Content-Length": {"2"}, "X-Request-Id": {"r1"},
	}
	e := NewEntry("/k", 200, h, []byte("{}"), t0, Windows{}, false)
	for _, k := range []string{"Connection", "Set-Cookie", "Content-Length"} {
		if _, ok := e.Header[k]; ok {
			t.Errorf("stored header %s", k)
		}
	}
	if e.Header.Get("X-Request-Id") != "r1" || e.Header.Get("Content-Type") != "application/json" {
		t.Errorf("end-to-end headers lost: %v", e.Header)
	}
	if e.ETag == "" || e.ETag[0] != '"' {
		t.Errorf("ETag = %q, want a strong quoted validator", e.ETag)
	}
}

func TestHitHeadersReusedWithinASecond(t *testing.T) {
	e := entry("/k", 10)
	renders := 0
	render := func(ttl int64, detail string) string {
		renders++
		return fmt.Sprintf("ttl=%d detail=%q", ttl, detail)
	}
	age1, cs1 := e.HitHeaders(t0.Add(1200*time.Millisecond), render)
	age2, cs2 := e.HitHeaders(t0.Add(1700*time.Millisecond), render)
	if &age1[0] != &age2[0] || &cs1[0] != &cs2[0] {
		t.Errorf("hit headers rebuilt within one second")
	}
	if age1[0] != "1" || cs1[0] != `ttl=58 detail=""` || renders != 1 {
		t.Errorf("HitHeaders = %q, %q after %d renders; want \"1\", \"ttl=58 detail=\\\"\\\"\" after 1", age1[0], cs1[0], renders)
	}
	age3, _ := e.HitHeaders(t0.Add(3*time.Second), render)
	if age3[0] != "3" {
		t.Errorf("Age after 3s = %q, want 3", age3[0])
	}
}

func TestETagPerCoding(t *testing.T) {
	big := bytes.Repeat([]byte(`{"ticker":"KXA-1"},`), 100)
	tests := []struct {
		name             string
		upstream         string
		body             []byte
		wantID, wantGzip string // wantID "": derived from the body
	}{
		{"strong upstream tag", `"X"`, big, `"X"`, `"X-gzip"`},
		{"weak stays weak", `W/"X"`, big, `W/"X"`, `W/"X-gzip"`},
		{"derived tag", "", big, "", ""},
		{"no gzip copy: one tag for both", `"X"`, []byte(`{}`), `"X"`, `"X"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.upstream != "" {
				h.Set("ETag", tt.upstream)
			}
			e := NewEntry("k", 200, h, tt.body, t0, Windows{TTL: time.Second}, true)
			if tt.wantID == "" {
				tt.wantID, tt.wantGzip = e.ETag, strings.TrimSuffix(e.ETag, `"`)+`-gzip"`
			}
			if e.ETag != tt.wantID || e.ETagGzip != tt.wantGzip {
				t.Errorf("ETags %s, %s; want %s, %s", e.ETag, e.ETagGzip, tt.wantID, tt.wantGzip)
			}
			if got := e.ETagValue(false)[0]; got != tt.wantID {
				t.Errorf("identity ETag value %s, want %s", got, tt.wantID)
			}
			if got := e.ETagValue(true)[0]; got != tt.wantGzip {
				t.Errorf("gzip ETag value %s, want %s", got, tt.wantGzip)
			}
			r := RestoreEntry(e.Key, e.Status, e.Header, e.Body, e.Gzip, e.ETag, e.FetchedAt, [3]time.Time{e.FreshUntil, e.RevalidateUntil, e.ErrorUntil})
			if r.ETagGzip != e.ETagGzip {
				t.Errorf("restored gzip ETag %s, want %s", r.ETagGzip, e.ETagGzip)
			}
		})
	}
}

func TestAgeCountsFromLastUpdate(t *testing.T) {
	e := NewEntry("k", 200, http.Header{}, []byte(`{"a":1}`), t0, Windows{TTL: time.Minute}, true)
	if got := e.AgeSeconds(t0.Add(9 * time.Second)); got != 9 {
		t.Errorf("Age of a fetched entry = %d, want 9", got)
	}
	pushed := e.Derived([]byte(`{"a":2}`), t0.Add(8*time.Second), e.FreshUntil, e.RevalidateUntil, e.ErrorUntil, "pushed")
	if got := pushed.AgeSeconds(t0.Add(9 * time.Second)); got != 1 {
		t.Errorf("Age 1s after a push = %d, want 1", got)
	}
	same := pushed.Derived(nil, t0.Add(9*time.Second), e.FreshUntil, e.RevalidateUntil, e.ErrorUntil, "pushed")
	if got := same.AgeSeconds(t0.Add(9 * time.Second)); got != 1 {
		t.Errorf("Age after new bounds only = %d, want 1 (the body did not change)", got)
	}
	r := RestoreEntry("k", 200, pushed.Header, pushed.Body, pushed.Gzip, pushed.ETag, pushed.FetchedAt, [3]time.Time{pushed.FreshUntil, pushed.RevalidateUntil, pushed.ErrorUntil})
	if got := r.AgeSeconds(t0.Add(9 * time.Second)); got != 9 {
		t.Errorf("Age of a restored entry = %d, want 9 (from its fetch)", got)
	}
}

func TestNoteHit(t *testing.T) {
	e := NewEntry("k", 200, http.Header{}, []byte(`{}`), t0, Windows{TTL: time.Minute}, true)
	if prev := e.NoteHit(t0.Add(time.Second)); !prev.IsZero() {
		t.Errorf("first NoteHit = %v, want zero", prev)
	}
	if prev := e.NoteHit(t0.Add(2 * time.Second)); !prev.Equal(t0.Add(time.Second)) {
		t.Errorf("second NoteHit = %v, want +1s", prev.Sub(t0))
	}
	// Within a millisecond: not written, the previous returned.
	if prev := e.NoteHit(t0.Add(2*time.Second + time.Microsecond)); !prev.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("NoteHit within 1ms = %v, want +2s", prev.Sub(t0))
	}
	if !e.ClaimRefresh() || e.ClaimRefresh() || !e.RefreshClaimed() {
		t.Error("ClaimRefresh: want true once, then false")
	}
	if a := testing.AllocsPerRun(100, func() { e.NoteHit(t0.Add(3 * time.Second)) }); a != 0 {
		t.Errorf("NoteHit allocates %v times, want 0", a)
	}
}
