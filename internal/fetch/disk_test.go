package fetch

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/disk"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// mapDisk is a Disk in a map: Put is visible at once.
type mapDisk struct {
	mu   sync.Mutex
	m    map[string]disk.Item
	gets int // calls of Get
}

func (d *mapDisk) Get(key string) (disk.Item, bool) {
	d.mu.Lock()
	d.gets++
	d.mu.Unlock()
	return d.get(key)
}

func (d *mapDisk) get(key string) (disk.Item, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	it, ok := d.m[key]
	return it, ok
}

func (d *mapDisk) Put(e *cache.Entry, immutable bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m[e.Key] = disk.Item{Entry: e, Immutable: immutable}
}

// newDiskEnv is newEnv with a mapDisk and an upstream answering serve(path).
func newDiskEnv(t *testing.T, serve func(path string) (int, string), edit func(*Config)) (*env, *mapDisk) {
	t.Helper()
	d := &mapDisk{m: map[string]disk.Item{}}
	e := newEnv(t, func(_ context.Context, _ *upstream.Call, path, _ string) (int, string, error) {
		status, body := serve(path)
		return status, body, nil
	}, func(c *Config) {
		c.Disk = d
		if edit != nil {
			edit(c)
		}
	})
	return e, d
}

func TestDiskWritePolicy(t *testing.T) {
	long := &route.Route{Pattern: route.Prefix + "series/{series_ticker}", Policy: route.Policy{TTL: time.Minute}}
	short := &route.Route{Pattern: route.Prefix + "series/{series_ticker}", Policy: route.Policy{TTL: time.Minute - time.Second}}
	serve := finalizedServe(t)
	cases := []struct {
		name string
		req  *Request
		want bool // written to disk
		imm  bool
	}{
		{"finalized market (immutable)", request("FIN"), true, true},
		{"active market (ttl 10s)", request("ACT"), false, false},
		{"series with a ttl of a minute", &Request{Route: long, Key: route.Prefix + "series/KXA", EscapedPath: route.Prefix + "series/KXA"}, true, false},
		{"series with a ttl under a minute", &Request{Route: short, Key: route.Prefix + "series/KXB", EscapedPath: route.Prefix + "series/KXB"}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, d := newDiskEnv(t, serve, nil)
			e.f.Get(t.Context(), c.req)
			it, ok := d.get(c.req.Key)
			if ok != c.want || it.Immutable != c.imm {
				t.Errorf("on disk %v immutable %v, want %v %v", ok, it.Immutable, c.want, c.imm)
			}
		})
	}
}

func TestDiskHitFillsMemory(t *testing.T) {
	e, d := newDiskEnv(t, finalizedServe(t), nil)
	// What a previous run left on disk: fetched a minute ago, fresh 10s
	// more... an entry of a long-ttl route, and an immutable one.
	prev := e.clock.Now().Add(-time.Minute)
	keep := cache.NewEntry(request("KEEP").Key, http.StatusOK, http.Header{"Etag": {`"abc"`}}, []byte(`{"kept":1}`), prev,
		cache.Windows{TTL: 2 * time.Minute}, true)
	d.Put(keep, false)
	imm := cache.NewEntry(request("FIN").Key, http.StatusOK, http.Header{}, []byte(`{"market":{"status":"finalized"}}`), prev,
		cache.Windows{TTL: Forever}, true)
	imm.Detail = DetailImmutable
	d.Put(imm, true)

	for _, c := range []struct {
		name   string
		ticker string
		want   *cache.Entry
		status string
	}{
		{"long-ttl entry", "KEEP", keep, "kproxy; hit; ttl=60; detail=disk"},
		{"immutable entry", "FIN", imm, "kproxy; hit; detail=disk"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := e.f.Get(t.Context(), request(c.ticker))
			if res.Outcome != DiskHit || res.Entry != c.want {
				t.Fatalf("outcome %v (entry %p), want disk hit of %p", res.Outcome, res.Entry, c.want)
			}
			if got := res.Outcome.XCache(); got != "HIT" {
				t.Errorf("X-Cache %q, want HIT", got)
			}
			if got := res.CacheStatus(res.Entry.FreshUntil.Sub(e.clock.Now())); got != c.status {
				t.Errorf("Cache-Status %q, want %q", got, c.status)
			}
			if got := res.Entry.AgeSeconds(e.clock.Now()); got != 60 {
				t.Errorf("age %d, want 60 (from the original fetch)", got)
			}
			// The second answer comes from memory.
			if res := e.f.Get(t.Context(), request(c.ticker)); res.Outcome != Hit {
				t.Errorf("second: outcome %v, want hit from memory", res.Outcome)
			}
		})
	}
	if got := e.up.fills(); got != 0 {
		t.Errorf("upstream fills %d, want 0", got)
	}
}

func TestDiskStaleCopyFollowsStaleRules(t *testing.T) {
	e, d := newDiskEnv(t, finalizedServe(t), nil)
	// Fetched 15s ago on the 10s+10s route: within stale-while-revalidate.
	old := cache.NewEntry(request("OLD").Key, http.StatusOK, http.Header{}, []byte(`{"old":1}`), e.clock.Now().Add(-15*time.Second),
		cache.Windows{TTL: 10 * time.Second, StaleWhileRevalidate: 10 * time.Second}, true)
	d.Put(old, false)
	res := e.f.Get(t.Context(), request("OLD"))
	if res.Outcome != Revalidating || res.Entry != old {
		t.Fatalf("outcome %v, want revalidating with the disk copy", res.Outcome)
	}
	e.f.Wait()
	if got := e.up.fills(); got != 1 {
		t.Errorf("upstream fills %d, want 1 (the background refresh)", got)
	}
}

func TestOffline(t *testing.T) {
	e, d := newDiskEnv(t, finalizedServe(t), func(c *Config) { c.Offline = true })
	now := e.clock.Now()
	fresh := e.put(request("MEM"), now)
	stale := e.put(request("OLD"), now.Add(-30*time.Second))
	imm := cache.NewEntry(request("FIN").Key, http.StatusOK, http.Header{}, []byte(`{}`), now.Add(-48*time.Hour), cache.Windows{TTL: Forever}, true)
	imm.Detail = DetailImmutable
	d.Put(imm, true)
	cases := []struct {
		name, ticker string
		noCache      bool
		want         *cache.Entry
		xcache       string
		status       string
	}{
		{"fresh in memory", "MEM", false, fresh, "HIT", "kproxy; hit; ttl=10; detail=offline"},
		{"fresh, client no-cache", "MEM", true, fresh, "HIT", "kproxy; hit; ttl=10; detail=offline"},
		{"stale in memory", "OLD", false, stale, "STALE", "kproxy; hit; ttl=-20; detail=offline"},
		{"immutable on disk", "FIN", false, imm, "HIT", "kproxy; hit; detail=offline"},
		{"not held", "NONE", false, nil, "MISS", "kproxy; detail=not_cached"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := request(c.ticker)
			r.NoCache = c.noCache
			res := e.f.Get(t.Context(), r)
			if res.Entry != c.want {
				t.Errorf("entry %p, want %p", res.Entry, c.want)
			}
			if got := res.Outcome.XCache(); got != c.xcache {
				t.Errorf("X-Cache %q, want %q", got, c.xcache)
			}
			var ttl time.Duration
			if res.Entry != nil {
				ttl = res.Entry.FreshUntil.Sub(now)
			}
			if got := res.CacheStatus(ttl); got != c.status {
				t.Errorf("Cache-Status %q, want %q", got, c.status)
			}
			if c.want == nil && (res.Err == nil || res.Err.Status != http.StatusGatewayTimeout) {
				t.Errorf("error %v, want a 504", res.Err)
			}
		})
	}
	if got := e.up.fills(); got != 0 {
		t.Errorf("upstream fills %d offline, want 0", got)
	}
}

func TestMemoryHitNeverAsksTheDisk(t *testing.T) {
	e, d := newDiskEnv(t, finalizedServe(t), nil)
	e.f.Get(t.Context(), request("ACT")) // a miss: memory, then disk, then upstream
	d.mu.Lock()
	before := d.gets
	d.mu.Unlock()
	if before != 1 {
		t.Fatalf("disk lookups on a miss: %d, want 1", before)
	}
	for range 10 {
		if res := e.f.Get(t.Context(), request("ACT")); res.Outcome != Hit {
			t.Fatalf("outcome %v, want a memory hit", res.Outcome)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gets != before {
		t.Errorf("disk lookups after 10 memory hits: %d, want %d", d.gets, before)
	}
}
