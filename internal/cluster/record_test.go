package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/redistest"
	"github.com/kproxy/kproxy/internal/upstream"
)

// TestReplicasReadTheSameEntry stores an entry through one replica and
// reads it from L2 on another: what a client sees from either (body, gzip
// copy, headers, ETag, Age base, freshness windows, Cache-Status detail) is
// the same to the nanosecond, and the Redis value holds the body once.
func TestReplicasReadTheSameEntry(t *testing.T) {
	fetched := time.Date(2026, 12, 7, 7, 1, 2, 345678901, time.UTC)
	big := bytes.Repeat([]byte(`{"market":{"ticker":"KXFOO-26JUN30-A","yes_bid_dollars":"0.4200"}},`), 40)
	pushed := entry("/trade-api/v2/markets/KXFOO", big, fetched).
		Derived(nil, time.Time{}, fetched.Add(time.Minute), fetched.Add(2*time.Minute), fetched.Add(time.Hour), "pushed")
	for _, tt := range []struct {
		name     string
		e        *cache.Entry
		gzipOnly bool // the Redis value holds only the gzip copy
	}{
		{"compressible body: gzip copy only", entry("/trade-api/v2/markets?x=1", big, fetched), true},
		{"small body: identity", entry("/trade-api/v2/markets/KXFOO", []byte(`{"ok":true}`), fetched), false},
		{"empty body", entry("/trade-api/v2/markets/KXBAR", []byte{}, fetched), false},
		{"pushed, with detail", pushed, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			now := func() time.Time { return fetched.Add(1500 * time.Millisecond) }
			a := newCluster(t, mr, func(c *Config) { c.Now = now })
			b := newCluster(t, mr, func(c *Config) { c.Now = now })
			a.Store().Set(tt.e, time.Minute)
			v, err := mr.Get("kproxy:v2:e:" + tt.e.Key)
			if err != nil {
				t.Fatalf("no L2 value: %v", err)
			}
			if got := bytes.Contains([]byte(v), tt.e.Body); len(tt.e.Body) > 0 && got == tt.gzipOnly {
				t.Errorf("L2 value (%d bytes) holds the identity body: %t, want %t", len(v), got, !tt.gzipOnly)
			}
			if tt.gzipOnly && len(v) >= len(tt.e.Body) {
				t.Errorf("L2 value = %d bytes, want fewer than the %d of the body", len(v), len(tt.e.Body))
			}
			got, ok := b.Lookup(context.Background(), tt.e.Key)
			if !ok {
				t.Fatal("other replica: no L2 entry")
			}
			want := tt.e
			if got.Key != want.Key || got.Status != want.Status || got.ETag != want.ETag || got.Detail != want.Detail ||
				!bytes.Equal(got.Body, want.Body) || !bytes.Equal(got.Gzip, want.Gzip) || (got.Gzip == nil) != (want.Gzip == nil) ||
				!reflect.DeepEqual(got.Header, want.Header) {
				t.Errorf("other replica read key %q status %d etag %q detail %q body %d gzip %d header %v; want %q %d %q %q %d %d %v",
					got.Key, got.Status, got.ETag, got.Detail, len(got.Body), len(got.Gzip), got.Header,
					want.Key, want.Status, want.ETag, want.Detail, len(want.Body), len(want.Gzip), want.Header)
			}
			for _, p := range []struct {
				name      string
				got, want time.Time
			}{
				{"FetchedAt", got.FetchedAt, want.FetchedAt}, {"FreshUntil", got.FreshUntil, want.FreshUntil},
				{"RevalidateUntil", got.RevalidateUntil, want.RevalidateUntil}, {"ErrorUntil", got.ErrorUntil, want.ErrorUntil},
			} {
				if !p.got.Equal(p.want) {
					t.Errorf("%s = %v, want %v", p.name, p.got, p.want)
				}
			}
			at := fetched.Add(90*time.Second + 999*time.Millisecond)
			if g, w := got.AgeSeconds(at), want.AgeSeconds(at); g != w {
				t.Errorf("Age = %d, want %d", g, w)
			}
		})
	}
}

// v1Entry is a value of the previous L2 format (magic 'K', version 1),
// written by the cluster codec it replaced, of a 200 answer for v1Key
// fetched at v1Fetched, fresh for 2s.
var (
	v1Key     = "/trade-api/v2/markets/KXFOO-26DEC07-B1"
	v1Fetched = time.Date(2026, 12, 7, 7, 0, 0, 0, time.UTC)
)

func v1Entry(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/entry-v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestForeignValuesAreMisses puts values this version did not write under
// its entry key, and an entry of the previous format under that format's
// key: each is a miss, and the claim is taken so that the fill replaces
// it; never an entry. A record of this version is the control.
func TestForeignValuesAreMisses(t *testing.T) {
	now := v1Fetched.Add(time.Second) // the v1 value would be fresh
	good := record(entry(v1Key, bytes.Repeat([]byte(`{"ticker":"KXFOO"}`), 40), v1Fetched))
	other := record(entry("/trade-api/v2/markets/KXBAR", []byte(`{"ticker":"KXBAR"}`), v1Fetched))
	damaged := bytes.Clone(good)
	damaged[len(damaged)-20] ^= 0xff
	for _, tt := range []struct {
		name   string
		key    string // under the prefix
		value  []byte
		stored bool // the control: a readable entry
	}{
		{"record of this version", "v2:e:", good, true},
		{"previous format under this version's key", "v2:e:", v1Entry(t), false},
		{"previous format under its own key", "v1:e:", v1Entry(t), false},
		{"older key", "v0:e:", good, false},
		{"record of another key", "v2:e:", other, false},
		{"damaged record", "v2:e:", damaged, false},
		{"truncated record", "v2:e:", good[:41], false},
		{"a failure", "v2:e:", encodeError(&upstream.Error{Status: 503, Code: "x"}), false},
		{"garbage", "v2:e:", []byte("k\x01 not a record"), false},
		{"empty", "v2:e:", []byte{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			c := newCluster(t, mr, func(c *Config) { c.Now = func() time.Time { return now } })
			mr.Set("kproxy:"+tt.key+v1Key, string(tt.value))
			if _, ok := c.Lookup(context.Background(), v1Key); ok != tt.stored {
				t.Errorf("Lookup found an entry: %t, want %t", ok, tt.stored)
			}
			turn := c.Acquire(context.Background(), v1Key, true, now)
			if got := turn.Entry != nil; got != tt.stored {
				t.Errorf("Acquire returned an entry: %t, want %t", got, tt.stored)
			}
			if got := turn.Claim != nil; got == tt.stored {
				t.Errorf("Acquire took the claim: %t, want %t", got, !tt.stored)
			}
			if turn.Claim != nil {
				turn.Claim.Done(fetch.SharedOutcome{Entry: entry(v1Key, []byte(`{"fetched":true}`), now), Retention: time.Minute})
				if e, ok := c.Lookup(context.Background(), v1Key); !ok || string(e.Body) != `{"fetched":true}` {
					t.Errorf("after the fill: Lookup = %v, want the filled entry", ok)
				}
			}
		})
	}
}

// TestClaimScriptComparesNanoseconds checks the claim script's freshness
// tests at their bounds, one nanosecond apart, on miniredis and on a real
// redis-server. The fetch time is a multiple of 256ns, so that a script
// reading the times as Lua numbers (doubles) could not tell the cases apart.
func TestClaimScriptComparesNanoseconds(t *testing.T) {
	fetched := time.Unix(0, time.Date(2026, 12, 7, 7, 1, 2, 345678901, time.UTC).UnixNano()&^255)
	e := entry("/trade-api/v2/markets/KXFOO", []byte(`{"ticker":"KXFOO"}`), fetched) // fresh for 2s
	cases := []struct {
		name  string
		now   time.Time
		fresh bool      // false: a forced refresh that began at since
		since time.Time // when fresh is false
		entry bool      // want the entry (else the claim)
	}{
		{"fresh 1ns before fresh until", e.FreshUntil.Add(-time.Nanosecond), true, time.Time{}, true},
		{"stale at fresh until", e.FreshUntil, true, time.Time{}, false},
		{"refresh begun when it was fetched", fetched.Add(time.Second), false, fetched, true},
		{"refresh begun 1ns after it was fetched", fetched.Add(time.Second), false, fetched.Add(time.Nanosecond), false},
	}
	for _, backend := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"miniredis", func(t *testing.T) string { return "redis://" + miniredis.RunT(t).Addr() }},
		{"redis-server", func(t *testing.T) string { return redistest.Start(t).URL() }},
	} {
		t.Run(backend.name, func(t *testing.T) {
			var now time.Time
			c := newClusterAt(t, backend.url(t), func(c *Config) { c.Now = func() time.Time { return now } })
			if !c.Up() {
				t.Fatal("redis not up")
			}
			c.Store().Set(e, time.Minute)
			for _, tt := range cases {
				now = tt.now
				turn := c.Acquire(context.Background(), e.Key, tt.fresh, tt.since)
				if got := turn.Entry != nil; got != tt.entry {
					t.Errorf("%s: got the entry %t, want %t (turn %+v)", tt.name, got, tt.entry, turn)
				}
				if turn.Claim == nil && turn.Entry == nil {
					t.Errorf("%s: neither the entry nor the claim: %+v", tt.name, turn)
				}
				if turn.Claim != nil {
					turn.Claim.Done(fetch.SharedOutcome{Private: true})
				}
			}
		})
	}
}

func TestErrorRoundTrip(t *testing.T) {
	in := &upstream.Error{Status: 503, Code: "breaker_open", Msg: "upstream is failing", RetryAfter: 7 * time.Second}
	b := encodeError(in)
	out, err := decodeError(b)
	if err != nil || out.Status != in.Status || out.Code != in.Code || out.Msg != in.Msg || out.RetryAfter != in.RetryAfter {
		t.Fatalf("decodeError = %+v, %v; want %+v", out, err, in)
	}
	bad := map[string][]byte{
		"later version":  append([]byte{'E', 2}, b[2:]...),
		"trailing byte":  append(bytes.Clone(b), 0),
		"an entry":       record(entry("k", []byte("x"), time.Now())),
		"previous entry": v1Entry(t),
	}
	for n := range len(b) {
		bad[fmt.Sprintf("cut to %d bytes", n)] = b[:n]
	}
	for name, v := range bad {
		if got, err := decodeError(v); !errors.Is(err, errBadOutcome) {
			t.Errorf("%s: decodeError = %+v, %v; want errBadOutcome", name, got, err)
		}
	}
}
