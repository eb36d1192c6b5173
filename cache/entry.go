// Package cache stores upstream answers in memory, bounded in bytes, with the
// freshness, validators and precompressed copy kproxy needs to answer a hit
// without touching the body.
package cache

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"hash/fnv"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kproxy/kproxy/internal/header"
)

// Entry is one stored (or transient) upstream answer. It is immutable once
// built by NewEntry and safe to share between goroutines; Body and Gzip
// must never be written to.
type Entry struct {
	// Key is the cache key the entry was stored under.
	Key string
	// Status is the upstream status code.
	Status int
	// Header holds the upstream end-to-end headers replayed on every answer
	// (never hop-by-hop, Set-Cookie, Content-Length, Content-Encoding, Age,
	// ETag or Date). Its value slices are shared: never modify them.
	Header http.Header
	// Body is the identity-encoded body.
	Body []byte
	// Gzip is Body gzip-compressed once at store time, nil when compression
	// does not pay (small or incompressible bodies).
	Gzip []byte
	// ETag is the upstream's validator or a strong one derived from Body:
	// the entity tag of the identity answer.
	ETag string
	// ETagGzip is the entity tag of the gzip answer (RFC 9110: a strong
	// validator names one representation): ETag with "-gzip" inside its
	// quotes (`"X"` -> `"X-gzip"`, `W/"X"` -> `W/"X-gzip"`), or ETag itself
	// when there is no gzip copy (both clients then get the identity body).
	ETagGzip string
	// FetchedAt is when the upstream answer arrived.
	FetchedAt time.Time
	// UpdatedAt is when the body was last brought up to date: FetchedAt,
	// or the push that last changed it (Derived with a new body). Age
	// counts from it.
	UpdatedAt time.Time
	// Took is how long the fetch that made the entry took (0 when unknown:
	// restored, pushed); the fetch path reads it to start a refresh ahead
	// of expiry early enough. Set before the entry is shared, never after.
	Took time.Duration
	// FreshUntil, RevalidateUntil and ErrorUntil bound the freshness windows:
	// fresh before FreshUntil, servable while revalidating before
	// RevalidateUntil, servable on upstream failure before ErrorUntil.
	FreshUntil, RevalidateUntil, ErrorUntil time.Time
	// Detail, when set, is the RFC 9211 detail member of the Cache-Status
	// of the entry's hits ("pushed": the body was updated from Kalshi's push
	// feed); empty for an answer stored as the upstream sent it.
	Detail string

	size int64

	// Prebuilt header values so a hit formats nothing.
	etagValue   []string
	etagGzValue []string
	lenIdentity []string
	lenGzip     []string

	stamp   atomic.Pointer[stamp]
	derived atomic.Pointer[derived]

	// lastHit (unix nanoseconds, 0 = none yet) and ahead are the fetch
	// path's refresh-ahead state (NoteHit, ClaimRefresh): the only fields
	// written after the entry is shared, both atomics.
	lastHit atomic.Int64
	ahead   atomic.Bool
}

// Freshness windows, relative to the fetch time.
type Windows struct {
	TTL, StaleWhileRevalidate, StaleIfError time.Duration
}

// gzipWriters recycles compressors: a gzip.Writer at the best level holds
// most of a megabyte of state, too much to allocate for every stored entry.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestCompression)
	return zw
}}

// minGzip is the smallest body worth compressing.
const minGzip = 512

// NewEntry builds an entry for an upstream answer fetched at fetchedAt.
// When stored is true the entry is meant for the store: its body is copied
// to a slice of exactly its size (the store counts every byte it keeps) and
// a gzip copy is made now, once, if it saves bytes.
func NewEntry(key string, status int, header http.Header, body []byte, fetchedAt time.Time, w Windows, stored bool) *Entry {
	if stored && cap(body) > len(body) {
		body = bytes.Clone(body)
	}
	e := &Entry{
		Key:             key,
		Status:          status,
		Header:          storedHeader(header),
		Body:            body,
		FetchedAt:       fetchedAt,
		UpdatedAt:       fetchedAt,
		FreshUntil:      fetchedAt.Add(w.TTL),
		RevalidateUntil: fetchedAt.Add(w.TTL + w.StaleWhileRevalidate),
		ErrorUntil:      fetchedAt.Add(w.TTL + w.StaleIfError),
	}
	e.ETag = header.Get("ETag")
	if e.ETag == "" {
		h := fnv.New64a()
		h.Write(body)
		e.ETag = `"` + hex.EncodeToString(h.Sum(nil)) + `"`
	}
	if stored && len(body) >= minGzip {
		var buf bytes.Buffer
		buf.Grow(len(body) / 4)
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(&buf)
		zw.Write(body)
		zw.Close()
		gzipWriters.Put(zw)
		if buf.Len() < len(body) {
			e.Gzip = bytes.Clone(buf.Bytes())
		}
	}
	e.prebuild()
	return e
}

// prebuild computes the size and the prebuilt header values of e.
func (e *Entry) prebuild() {
	e.ETagGzip = e.ETag
	if e.Gzip != nil {
		e.ETagGzip = gzipTag(e.ETag)
	}
	e.size = e.computeSize()
	e.etagValue = []string{e.ETag}
	e.etagGzValue = []string{e.ETagGzip}
	e.lenIdentity = []string{strconv.Itoa(len(e.Body))}
	if e.Gzip != nil {
		e.lenGzip = []string{strconv.Itoa(len(e.Gzip))}
	}
}

// gzipTag is the entity tag of the gzip coding of the representation
// tagged etag: "-gzip" goes inside the closing quote, so a weak tag stays
// weak and a strong one strong. A malformed (unquoted) tag gets it
// appended.
func gzipTag(etag string) string {
	if n := len(etag); n >= 2 && etag[n-1] == '"' {
		return etag[:n-1] + `-gzip"`
	}
	return etag + "-gzip"
}

// RestoreEntry rebuilds a stored entry from a copy kept elsewhere (the
// shared tier), exactly as it was: header is the stored header (already
// stripped, owned by the entry from now on), gz the gzip copy of body or nil,
// etag the entry's validator, and until holds FreshUntil, RevalidateUntil
// and ErrorUntil. Nothing is recompressed or rehashed. The stored records
// do not carry UpdatedAt: a restored entry counts its Age from its fetch
// (the contract's "offline and disk answers count from their original
// fetch"); the gzip entity tag is derived from etag again.
func RestoreEntry(key string, status int, header http.Header, body, gz []byte, etag string, fetchedAt time.Time, until [3]time.Time) *Entry {
	e := &Entry{
		Key: key, Status: status, Header: header, Body: body, Gzip: gz, ETag: etag,
		FetchedAt: fetchedAt, UpdatedAt: fetchedAt, FreshUntil: until[0], RevalidateUntil: until[1], ErrorUntil: until[2],
	}
	if e.Header == nil {
		e.Header = http.Header{}
	}
	e.prebuild()
	return e
}

// Derived returns a new entry for the same answer as e (same key, status,
// header and fetch time) with body and the given freshness bounds, whose hits
// carry detail in Cache-Status. A nil body keeps e's body, ETags, gzip copy
// and UpdatedAt; any other body gets new strong ETags and a new gzip copy,
// made now, and UpdatedAt = updatedAt (the push that changed it). The hit
// history the fetch path keeps for refresh-ahead carries over. e is not
// modified and stays valid for readers that hold it: swap the result in
// with Store.Set.
func (e *Entry) Derived(body []byte, updatedAt, freshUntil, revalidateUntil, errorUntil time.Time, detail string) *Entry {
	var n *Entry
	if body == nil {
		n = &Entry{Key: e.Key, Status: e.Status, Header: e.Header, Body: e.Body, Gzip: e.Gzip,
			ETag: e.ETag, ETagGzip: e.ETagGzip, FetchedAt: e.FetchedAt, UpdatedAt: e.UpdatedAt, Took: e.Took}
		n.etagValue, n.etagGzValue, n.lenIdentity, n.lenGzip = e.etagValue, e.etagGzValue, e.lenIdentity, e.lenGzip
		n.size = e.size
	} else {
		// e.Header holds no ETag, so NewEntry derives a strong one from body.
		n = NewEntry(e.Key, e.Status, e.Header, body, e.FetchedAt, Windows{}, true)
		n.UpdatedAt, n.Took = updatedAt, e.Took
	}
	n.FreshUntil, n.RevalidateUntil, n.ErrorUntil = freshUntil, revalidateUntil, errorUntil
	n.Detail = detail
	n.lastHit.Store(e.lastHit.Load())
	return n
}

// Size is the bytes the entry holds; it is the entry's cost in the store.
func (e *Entry) Size() int64 { return e.size }

func (e *Entry) computeSize() int64 {
	n := len(e.Key) + len(e.Body) + len(e.Gzip) + len(e.ETag) + len(e.ETagGzip) + 256
	for k, vs := range e.Header {
		n += len(k)
		for _, v := range vs {
			n += len(v)
		}
	}
	return int64(n)
}

// Fresh reports whether the entry may be served without asking upstream.
func (e *Entry) Fresh(now time.Time) bool { return now.Before(e.FreshUntil) }

// Revalidatable reports whether a stale entry may be served while a
// background refresh runs.
func (e *Entry) Revalidatable(now time.Time) bool { return now.Before(e.RevalidateUntil) }

// ServableOnError reports whether the entry may be served when the upstream
// fails.
func (e *Entry) ServableOnError(now time.Time) bool { return now.Before(e.ErrorUntil) }

// RetainedUntil is when the entry stops being servable in any state.
func (e *Entry) RetainedUntil() time.Time {
	if e.ErrorUntil.After(e.RevalidateUntil) {
		return e.ErrorUntil
	}
	return e.RevalidateUntil
}

// ETagValue is the ETag value of the identity or gzip answer (prebuilt,
// shared; do not modify).
func (e *Entry) ETagValue(gz bool) []string {
	if gz {
		return e.etagGzValue
	}
	return e.etagValue
}

// LengthValue is the Content-Length value of the identity or gzip body.
func (e *Entry) LengthValue(gz bool) []string {
	if gz {
		return e.lenGzip
	}
	return e.lenIdentity
}

// stamp caches the per-second header values of a hit.
type stamp struct {
	sec       int64
	age       []string
	hitStatus []string
}

// HitHeaders returns the Age and Cache-Status values of a fresh hit at now;
// render makes the Cache-Status text from the freshness left (whole
// seconds) and the entry's Detail (fetch.HitStatus: the package that names
// cache outcomes renders them). They change once a second; within a second
// the same slices are returned, so a hit allocates nothing for them. The
// slices are shared: do not modify.
func (e *Entry) HitHeaders(now time.Time, render func(ttl int64, detail string) string) (age, cacheStatus []string) {
	sec := now.Unix()
	if s := e.stamp.Load(); s != nil && s.sec == sec {
		return s.age, s.hitStatus
	}
	a := e.AgeSeconds(now)
	ttl := int64(e.FreshUntil.Sub(now) / time.Second)
	s := &stamp{
		sec:       sec,
		age:       []string{strconv.FormatInt(a, 10)},
		hitStatus: []string{render(ttl, e.Detail)},
	}
	e.stamp.Store(s)
	return s.age, s.hitStatus
}

// AgeSeconds is the entry's age in whole seconds at now: since its body
// was last brought up to date (UpdatedAt).
func (e *Entry) AgeSeconds(now time.Time) int64 {
	a := int64(now.Sub(e.UpdatedAt) / time.Second)
	return max(a, 0)
}

// NoteHit records a fresh hit at now and returns the time of the hit before
// it (the zero time when none was recorded). Hits less than a millisecond
// apart are not written (the previous time is returned as is), so a key hit
// by many clients at once does not bounce one cache line between cores. It
// does not allocate or lock.
func (e *Entry) NoteHit(now time.Time) (prev time.Time) {
	if p := e.NoteHitNano(now.UnixNano()); p != 0 {
		return time.Unix(0, p)
	}
	return time.Time{}
}

// NoteHitNano is NoteHit in Unix nanoseconds (0: none recorded), for the
// hit path, where time.Time arithmetic costs more than the rest of it.
func (e *Entry) NoteHitNano(now int64) (prev int64) {
	p := e.lastHit.Load()
	if now-p >= int64(time.Millisecond) {
		e.lastHit.Store(now)
	}
	return p
}

// RefreshClaimed reports whether a refresh ahead of expiry was claimed.
func (e *Entry) RefreshClaimed() bool { return e.ahead.Load() }

// ClaimRefresh reports whether the caller is the first to claim the one
// refresh ahead of expiry this entry may schedule.
func (e *Entry) ClaimRefresh() bool { return e.ahead.CompareAndSwap(false, true) }

// skipped lists headers never stored: hop-by-hop ones (RFC 9110 section
// 7.6.1), and those kproxy computes per answer or must never replay.
var skipped = header.Set(
	"Content-Length", "Content-Encoding", "Age", "Etag", "Date",
	"Set-Cookie", "Vary", "X-Cache", "Cache-Status",
)

func storedHeader(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		if skipped[k] {
			continue
		}
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// derived is a value computed once from an entry's body.
type derived struct {
	kind string
	v    any
}

// Derive returns compute(e.Body), computed once per entry and kind: a warm
// batch reads the parse of a page it already made instead of parsing it
// again. compute must be pure, and its result must not retain more than a
// small summary of the body (offsets, short strings): derived values are not
// counted in the store's bytes. Safe for concurrent use; two callers racing
// on the first call may both compute.
func (e *Entry) Derive(kind string, compute func(body []byte) any) any {
	if d := e.derived.Load(); d != nil && d.kind == kind {
		return d.v
	}
	v := compute(e.Body)
	e.derived.Store(&derived{kind: kind, v: v})
	return v
}
