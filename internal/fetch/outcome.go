package fetch

import (
	"strconv"
	"time"
)

// Outcome names how a request was answered. It is kproxy's one vocabulary
// of cache outcomes: String is the RFC 9211 word, XCache the X-Cache value
// (and the cache label of metrics and the access log), and
// Result.CacheStatus the Cache-Status member, all from these.
type Outcome uint8

// Outcomes of Get (and Bypassed, for the pass-through).
const (
	// Hit: a fresh stored entry.
	Hit Outcome = iota
	// Revalidating: a stale entry served at once while one background
	// refresh runs (stale-while-revalidate).
	Revalidating
	// StaleOnError: a stale entry served because the upstream failed, was
	// too slow (Result.Detail stale-wait), or must not be asked
	// (only-if-cached).
	StaleOnError
	// Stored: this request fetched the answer and stored it.
	Stored
	// Uncacheable: this request fetched an answer that is not stored.
	Uncacheable
	// Collapsed: this request waited on another request's fetch.
	Collapsed
	// Failed: no answer; Result.Err says why.
	Failed
	// SharedHit: a fresh entry found in the shared tier (another replica
	// fetched it); an X-Cache HIT with detail=shared.
	SharedHit
	// Bypassed: not cacheable, passed through as is (never a Get result).
	Bypassed
	// DiskHit: a fresh (or immutable) entry read from the disk tier (the
	// first answer after a restart); an X-Cache HIT with detail=disk.
	DiskHit
	// Offline: a fresh (or immutable) entry served while kproxy is
	// offline; an X-Cache HIT with detail=offline. (A stale one offline is
	// StaleOnError with Detail DetailOffline.)
	Offline
)

var outcomeNames = [...]string{"hit", "revalidating", "stale-if-error", "stored", "uncacheable", "collapsed", "failed", "shared", "bypass", "disk", "offline"}

// String is the outcome's word: the Cache-Status member or detail that
// names it.
func (o Outcome) String() string { return outcomeNames[o] }

var xCache = [...]string{
	Hit: "HIT", SharedHit: "HIT", DiskHit: "HIT", Offline: "HIT",
	Revalidating: "STALE", StaleOnError: "STALE",
	Stored: "MISS", Uncacheable: "MISS", Collapsed: "MISS", Failed: "MISS",
	Bypassed: "BYPASS",
}

// xCacheValues are the X-Cache header values, shared: never modify them.
var xCacheValues = func() (v [len(xCache)][]string) {
	for i, s := range xCache {
		v[i] = []string{s}
	}
	return v
}()

// XCache is the outcome's X-Cache value: HIT, MISS, STALE or BYPASS. The
// same word is the cache label of kproxy_requests_total and the cache field
// of the access log.
func (o Outcome) XCache() string { return xCache[o] }

// XCacheValue is XCache as a header value, shared by every answer: never
// modify it.
func (o Outcome) XCacheValue() []string { return xCacheValues[o] }

// Details of a stale answer that no upstream failure caused (Result.Detail).
const (
	// DetailStaleWait: the upstream took longer than stale_wait.
	DetailStaleWait = "stale-wait"
	// DetailOnlyIfCached: the client asked for a cached answer only.
	DetailOnlyIfCached = "only-if-cached"
)

// HitStatus is the Cache-Status of a fresh hit with ttl whole seconds of
// freshness left; detail, when set, is the entry's own (pushed, immutable,
// ...). An immutable entry has no ttl, and none is named. It is the
// renderer cache.Entry.HitHeaders caches per second.
func HitStatus(ttl int64, detail string) string {
	if detail == DetailImmutable {
		return "kproxy; " + Hit.String() + "; detail=" + detail
	}
	s := "kproxy; " + Hit.String() + "; ttl=" + strconv.FormatInt(ttl, 10)
	if detail != "" {
		s += "; detail=" + detail
	}
	return s
}

// CacheStatus is the RFC 9211 Cache-Status of res (not of a plain Hit,
// whose value cache.Entry.HitHeaders keeps per second). ttl is the
// freshness left of res.Entry, negative once stale.
func (res Result) CacheStatus(ttl time.Duration) string {
	fwd := "; fwd=" + res.Fwd
	switch res.Outcome {
	case Failed:
		if res.Fwd == "" { // not forwarded (only-if-cached, a bad request)
			return "kproxy; detail=" + res.Err.Code
		}
		return "kproxy" + fwd + "; detail=" + res.Err.Code
	case Bypassed:
		return "kproxy; fwd=bypass"
	case Stored, Collapsed:
		return "kproxy" + fwd + "; " + res.Outcome.String()
	case Uncacheable:
		return "kproxy" + fwd + "; fwd-status=" + strconv.Itoa(res.Entry.Status)
	}
	hit := "kproxy; hit"
	if res.Entry.Detail != DetailImmutable { // fresh forever: no ttl
		hit += "; ttl=" + strconv.FormatInt(int64(ttl/time.Second), 10)
	}
	switch res.Outcome {
	case Revalidating:
		return hit + "; fwd=stale; detail=" + Revalidating.String()
	case SharedHit, DiskHit, Offline:
		return hit + "; detail=" + res.Outcome.String()
	case StaleOnError:
		switch res.Detail {
		case DetailOnlyIfCached, DetailOffline: // served without forwarding
			return hit + "; detail=" + res.Detail
		case "":
			return hit + "; fwd=stale; fwd-status=" + strconv.Itoa(res.FwdStatus)
		}
		return hit + "; fwd=stale; detail=" + res.Detail
	}
	return HitStatus(int64(ttl/time.Second), res.Entry.Detail)
}

// Expired reports that res answered a request that found only an expired
// copy: every stale answer, and a miss forwarded because its copy was past
// its ttl (fwd=stale). The status page counts these (status.Ledger).
func (res Result) Expired() bool {
	return res.Outcome == Revalidating || res.Outcome == StaleOnError || res.Fwd == "stale"
}
