package disk

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/clock"
)

var t0 = time.Date(2026, 12, 7, 7, 0, 0, 123456789, time.UTC)

func open(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// body is a deterministic body of n bytes for seed, compressible when
// text is set (so the entry gets a gzip copy), random bytes otherwise.
func body(seed uint64, n int, text bool) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	if text {
		var b bytes.Buffer
		for b.Len() < n {
			fmt.Fprintf(&b, `{"ticker":"KX-%d","price":"0.%04d"},`, seed, r.IntN(10000))
		}
		return b.Bytes()[:n]
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newEntry(key string, b []byte, fetched time.Time, ttl time.Duration) *cache.Entry {
	h := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {key}}
	return cache.NewEntry(key, 200, h, b, fetched, cache.Windows{TTL: ttl, StaleWhileRevalidate: ttl, StaleIfError: 10 * time.Minute}, true)
}

// same fails t unless got replays exactly as want would.
func same(t *testing.T, got, want *cache.Entry) {
	t.Helper()
	if got.Key != want.Key || got.Status != want.Status || got.ETag != want.ETag || got.Detail != want.Detail {
		t.Errorf("%s: key/status/etag/detail = %q %d %q %q, want %q %d %q %q", want.Key,
			got.Key, got.Status, got.ETag, got.Detail, want.Key, want.Status, want.ETag, want.Detail)
	}
	if !bytes.Equal(got.Body, want.Body) || !bytes.Equal(got.Gzip, want.Gzip) {
		t.Errorf("%s: body/gzip = %d/%d bytes, want %d/%d, equal", want.Key, len(got.Body), len(got.Gzip), len(want.Body), len(want.Gzip))
	}
	if !reflect.DeepEqual(got.Header, want.Header) {
		t.Errorf("%s: header = %v, want %v", want.Key, got.Header, want.Header)
	}
	if !got.FetchedAt.Equal(want.FetchedAt) || !got.FreshUntil.Equal(want.FreshUntil) ||
		!got.RevalidateUntil.Equal(want.RevalidateUntil) || !got.ErrorUntil.Equal(want.ErrorUntil) {
		t.Errorf("%s: times = %v %v %v %v, want %v %v %v %v", want.Key,
			got.FetchedAt, got.FreshUntil, got.RevalidateUntil, got.ErrorUntil,
			want.FetchedAt, want.FreshUntil, want.RevalidateUntil, want.ErrorUntil)
	}
}

func TestRoundTripAndReopen(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(t0.Add(time.Second))
	cfg := Config{Path: dir, Now: clk.Now}
	pushed := newEntry("/trade-api/v2/markets/KXP", body(3, 2000, true), t0, time.Minute).
		Derived(nil, time.Time{}, t0.Add(time.Hour), t0.Add(2*time.Hour), t0.Add(3*time.Hour), "pushed")
	entries := []struct {
		e         *cache.Entry
		immutable bool
	}{
		{newEntry("/trade-api/v2/historical/trades?ticker=A", body(1, 1<<10, true), t0, 0), true},
		{newEntry("/trade-api/v2/markets?limit=1000", body(2, 80<<10, true), t0, time.Minute), false},
		{newEntry("/trade-api/v2/series/KXB", body(4, 300, false), t0, time.Minute), false},
		{pushed, false},
	}
	s := open(t, cfg)
	for _, c := range entries {
		s.Put(c.e, c.immutable)
	}
	s.Flush()
	check := func(s *Store, when string) {
		t.Helper()
		for _, c := range entries {
			it, ok := s.Get(c.e.Key)
			if !ok {
				t.Errorf("%s: Get(%q) missed", when, c.e.Key)
				continue
			}
			same(t, it.Entry, c.e)
			if it.Immutable != c.immutable {
				t.Errorf("%s: Get(%q).Immutable = %t, want %t", when, c.e.Key, it.Immutable, c.immutable)
			}
		}
		if _, ok := s.Get("/trade-api/v2/never"); ok {
			t.Errorf("%s: Get of a key never stored hit", when)
		}
	}
	check(s, "before close")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, ok := s.Get(entries[0].e.Key); ok {
		t.Errorf("Get after Close hit")
	}
	s2 := open(t, cfg)
	check(s2, "after reopen")
	s2.Flush()
	if st := s2.Stats(); st.Items != len(entries) || st.Immutable != 1 || st.State != StateUp || st.Reason != "" {
		t.Errorf("Stats after reopen = %+v, want %d items (1 immutable), up", st, len(entries))
	}
	if n := s2.Purge("/trade-api/v2/historical/"); n != 1 {
		t.Fatalf("Purge of the immutable entry removed %d, want 1", n)
	}
	if st := s2.Stats(); st.Immutable != 0 {
		t.Errorf("Stats().Immutable after its purge = %d, want 0", st.Immutable)
	}
}

const crashEnv = "KPROXY_DISK_CRASH_DIR"

// crashEntry is the i-th entry the crash child writes.
func crashEntry(i int) *cache.Entry {
	return newEntry(fmt.Sprintf("/trade-api/v2/historical/trades?cursor=%06d", i), body(uint64(i), 500+(i%37)*500, i%2 == 0), t0, 0)
}

// TestCrashKeepsSyncedRecords kills a writing process with SIGKILL and
// reopens its directory: every write it had flushed is there, and
// whatever else is read is intact (a torn record is never served).
func TestCrashKeepsSyncedRecords(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKeepsSyncedRecords$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	synced := -1
	sc := bufio.NewScanner(out)
	for synced < 300 && sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "synced "); ok {
			synced, _ = strconv.Atoi(n)
		}
	}
	// The child is writing on: it stops only when killed.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if synced < 300 {
		t.Fatalf("child reported %d synced writes before ending, want 300", synced)
	}

	s := open(t, Config{Path: dir})
	for i := 0; i <= synced; i++ {
		if _, ok := s.Get(crashEntry(i).Key); !ok {
			t.Errorf("write %d was synced before the kill but is gone", i)
		}
	}
	items, total := s.List("", -1)
	if len(items) != total || total <= synced {
		t.Errorf("List = %d items of %d, want all of at least %d", len(items), total, synced+1)
	}
	for _, it := range items {
		i, err := strconv.Atoi(it.Entry.Key[strings.LastIndexByte(it.Entry.Key, '=')+1:])
		if err != nil {
			t.Fatalf("unexpected key %q", it.Entry.Key)
		}
		same(t, it.Entry, crashEntry(i))
	}
	if st := s.Stats(); st.Corrupt != 0 {
		t.Errorf("Corrupt = %d after a kill -9, want 0 (bbolt commits are atomic)", st.Corrupt)
	}
	t.Logf("synced %d before the kill, %d readable after", synced+1, total)
}

// crashWrites bounds the child's writes; it is killed long before.
const crashWrites = 200000

func crashChild(dir string) {
	s, err := Open(Config{Path: dir, QueueLen: 64})
	if err != nil || s.Stats().State != StateUp {
		fmt.Fprintln(os.Stderr, "child: open failed", err, s.Stats().Reason)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := range crashWrites {
		s.Put(crashEntry(i), true)
		if i%8 == 7 {
			s.Flush()
			// Flush may have been preceded by dropped writes (full
			// queue): report the last index whose write is known
			// durable only if nothing was dropped.
			if s.Stats().Dropped == 0 {
				fmt.Fprintf(w, "synced %d\n", i)
				w.Flush()
			}
		}
	}
	os.Exit(3)
}

// flipIn flips a byte inside the first occurrence of marker in the file.
func flipIn(t *testing.T, path string, marker []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt writes pages anew (copy on write): a freed page may still hold
	// an older copy of the record, so every copy is damaged, the live one
	// among them.
	n := 0
	for i := bytes.Index(b, marker); i >= 0; i = bytes.Index(b, marker) {
		b[i+len(marker)/2] ^= 0x20
		n++
	}
	if n == 0 {
		t.Fatalf("marker not found in %s", path)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptRecordIsDroppedNotServed(t *testing.T) {
	dir := t.TempDir()
	marker := []byte("MARKER-the-record-to-damage-0123456789")
	bad := newEntry("/trade-api/v2/markets/BAD", marker, t0, 0)
	good := newEntry("/trade-api/v2/markets/GOOD", body(9, 3000, false), t0, 0)
	s := open(t, Config{Path: dir})
	s.Put(bad, true)
	s.Put(good, true)
	s.Close()
	flipIn(t, filepath.Join(dir, dbFile), marker)

	s = open(t, Config{Path: dir})
	if it, ok := s.Get(bad.Key); ok {
		t.Fatalf("Get of a damaged record served %q", it.Entry.Body)
	}
	s.Flush()
	if got := s.Stats().Corrupt; got != 1 {
		t.Errorf("Corrupt = %d, want 1", got)
	}
	if _, ok := s.Get(bad.Key); ok {
		t.Errorf("damaged record served on the second read")
	}
	if st := s.Stats(); st.Corrupt != 1 || st.Items != 1 {
		t.Errorf("after the second read: Corrupt = %d, Items = %d; want 1, 1 (the record was dropped)", st.Corrupt, st.Items)
	}
	if it, ok := s.Get(good.Key); !ok {
		t.Errorf("the undamaged record is gone")
	} else {
		same(t, it.Entry, good)
	}
}

func TestTruncatedRecordIsDroppedNotServed(t *testing.T) {
	s := open(t, Config{Path: t.TempDir()})
	e := newEntry("/trade-api/v2/markets/CUT", body(5, 4000, true), t0, 0)
	s.Put(e, true)
	s.Flush()
	// What a torn write would leave, if bbolt allowed one: the record's
	// first part under the key.
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		return b.Put([]byte(e.Key), bytes.Clone(b.Get([]byte(e.Key))[:2500]))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get(e.Key); ok {
		t.Fatalf("truncated record served")
	}
	s.Flush()
	if st := s.Stats(); st.Corrupt != 1 || st.Items != 0 {
		t.Errorf("Corrupt = %d, Items = %d; want 1, 0", st.Corrupt, st.Items)
	}
	if items, total := s.List("", -1); len(items) != 0 || total != 0 {
		t.Errorf("List after the drop = %d items of %d, want none", len(items), total)
	}
}

// TestStaysWithinMaxBytesLeastRecentlyReadFirst fills the store three
// times over, reads the oldest half of what it keeps, and adds more: the
// entries read survive, the unread ones go, and the order survives a
// restart.
func TestStaysWithinMaxBytesLeastRecentlyReadFirst(t *testing.T) {
	dir := t.TempDir()
	key := func(p string, i int) string { return fmt.Sprintf("/trade-api/v2/%s/%04d", p, i) }
	put := func(s *Store, p string, from, to int) {
		for i := from; i < to; i++ {
			s.Put(newEntry(key(p, i), body(uint64(i), 400, false), t0, 0), true)
		}
		s.Flush()
	}
	// One entry's cost, measured.
	probe := open(t, Config{Path: t.TempDir()})
	put(probe, "k", 0, 1)
	cost := probe.Stats().Bytes
	const fits = 50
	cfg := Config{Path: dir, MaxBytes: fits*cost + cost/2, QueueLen: 4096}
	s := open(t, cfg)

	put(s, "k", 0, 3*fits)
	st := s.Stats()
	if st.Bytes > cfg.MaxBytes || st.Items != fits || st.Evictions != 2*fits {
		t.Fatalf("after 3x MaxBytes: %+v; want %d items within %d bytes, %d evictions", st, fits, cfg.MaxBytes, 2*fits)
	}
	// Kept: k100..k149. Read the older half.
	for i := 2 * fits; i < 2*fits+fits/2; i++ {
		if _, ok := s.Get(key("k", i)); !ok {
			t.Fatalf("%s should still be stored", key("k", i))
		}
	}
	put(s, "n", 0, fits/2)
	present := func(s *Store, p string, from, to int, want bool) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, ok := s.Get(key(p, i)); ok != want {
				t.Errorf("%s stored = %t, want %t", key(p, i), ok, want)
			}
		}
	}
	present(s, "k", 2*fits+fits/2, 3*fits, false) // unread: evicted
	present(s, "n", 0, fits/2, true)              // the new ones
	present(s, "k", 2*fits, 2*fits+fits/2, true)  // read: kept, and read again now
	if st := s.Stats(); st.Bytes > cfg.MaxBytes {
		t.Errorf("Bytes = %d, want at most %d", st.Bytes, cfg.MaxBytes)
	}

	// Across a restart the reads just made still count: new writes
	// evict the n entries, read before them.
	s.Close()
	s = open(t, cfg)
	put(s, "m", 0, fits/2)
	present(s, "n", 0, fits/2, false)
	present(s, "k", 2*fits, 2*fits+fits/2, true)
	present(s, "m", 0, fits/2, true)
}

func TestSecondOpenOnSameDirectoryIsDown(t *testing.T) {
	dir := t.TempDir()
	first := open(t, Config{Path: dir})
	second := open(t, Config{Path: dir})
	st := second.Stats()
	if st.State != StateDown || !strings.Contains(st.Reason, "locked by another kproxy (pid "+strconv.Itoa(os.Getpid())+")") {
		t.Errorf("second Open: state %q, reason %q; want down, naming the lock holder", st.State, st.Reason)
	}
	e := newEntry("/trade-api/v2/series/S", body(1, 100, false), t0, 0)
	second.Put(e, true)
	if _, ok := second.Get(e.Key); ok {
		t.Errorf("the down store answered a Get")
	}
	first.Put(e, true)
	first.Flush()
	if it, ok := first.Get(e.Key); !ok {
		t.Errorf("the first store stopped working")
	} else {
		same(t, it.Entry, e)
	}
	if err := second.Close(); err != nil {
		t.Errorf("Close of the down store: %v", err)
	}
}

func TestUnusableDirectoryIsDownOrOff(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(root, "damaged")
	os.Mkdir(damaged, 0o700)
	if err := os.WriteFile(filepath.Join(damaged, dbFile), bytes.Repeat([]byte("not a bbolt file"), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		path   string
		state  State
		reason string
	}{
		{"no path", "", StateOff, "no path configured"},
		{"parent is a file", filepath.Join(file, "kproxy"), StateDown, "cannot create directory"},
		{"path is a file", file, StateDown, "cannot create directory"},
		{"damaged file", damaged, StateDown, "cannot open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, Config{Path: tc.path})
			st := s.Stats()
			if st.State != tc.state || !strings.Contains(st.Reason, tc.reason) {
				t.Errorf("state %q, reason %q; want %q with %q", st.State, st.Reason, tc.state, tc.reason)
			}
			e := newEntry("/k", []byte("{}"), t0, 0)
			s.Put(e, true)
			s.Flush()
			if _, ok := s.Get("/k"); ok {
				t.Errorf("a %s store served a Get", st.State)
			}
			if n := s.Purge(""); n != 0 {
				t.Errorf("Purge = %d, want 0", n)
			}
		})
	}
}

func TestPutNeverBlocks(t *testing.T) {
	s := open(t, Config{Path: t.TempDir(), QueueLen: 4})
	s.Flush() // the index is loaded
	// Stall the writer: it needs the index lock for every write.
	s.mu.Lock()
	const n = 1000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			s.Put(newEntry(fmt.Sprintf("/k/%d", i), []byte("{}"), t0, 0), true)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.mu.Unlock()
		t.Fatal("Put blocked while the writer was stalled")
	}
	s.mu.Unlock()
	s.Flush()
	st := s.Stats()
	// The stalled writer holds at most one batch, the queue 4 more.
	if st.Dropped < n-maxBatch-4 || st.Writes+st.Dropped != n {
		t.Errorf("Writes %d, Dropped %d; want at least %d dropped, %d in all", st.Writes, st.Dropped, n-maxBatch-4, n)
	}
	if st.Items != int(st.Writes) {
		t.Errorf("Items = %d, want %d (every write not dropped is stored)", st.Items, st.Writes)
	}
}

func TestPurgeAndDelete(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Config{Path: dir})
	keys := []string{"/trade-api/v2/markets/A", "/trade-api/v2/markets/B", "/trade-api/v2/markets?x=1", "/trade-api/v2/series/S"}
	for _, k := range keys {
		s.Put(newEntry(k, []byte(`{}`), t0, 0), true)
	}
	// No Flush: purges and deletes apply after the writes queued before.
	if n := s.Purge("/trade-api/v2/markets/"); n != 2 {
		t.Errorf("Purge(markets/) = %d, want 2", n)
	}
	items, total := s.List("/trade-api/v2/", 1)
	if total != 2 || len(items) != 1 || items[0].Entry.Key != "/trade-api/v2/markets?x=1" {
		t.Errorf("List(/trade-api/v2/, 1) = %d items (first %v) of %d; want markets?x=1 of 2", len(items), items, total)
	}
	if !s.Delete("/trade-api/v2/series/S") {
		t.Errorf("Delete(series/S) = false, want true")
	}
	if s.Delete("/trade-api/v2/series/S") {
		t.Errorf("second Delete(series/S) = true, want false")
	}
	s.Close()
	s = open(t, Config{Path: dir})
	var got []string
	for _, k := range keys {
		if _, ok := s.Get(k); ok {
			got = append(got, k)
		}
	}
	if want := []string{"/trade-api/v2/markets?x=1"}; !slices.Equal(got, want) {
		t.Errorf("after reopen stored %v, want %v", got, want)
	}
	if n := s.Purge(""); n != 1 {
		t.Errorf("Purge(\"\") = %d, want 1", n)
	}
	if st := s.Stats(); st.Items != 0 || st.Bytes != 0 {
		t.Errorf("after purging all: %d items, %d bytes; want none", st.Items, st.Bytes)
	}
}

func TestExpiredEntriesAreDropped(t *testing.T) {
	clk := clock.NewFake(t0)
	s := open(t, Config{Path: t.TempDir(), Now: clk.Now})
	keep := newEntry("/trade-api/v2/historical/markets/A", []byte(`{"a":1}`), t0, time.Second)
	gone := newEntry("/trade-api/v2/markets/A", []byte(`{"b":2}`), t0, time.Second)
	s.Put(keep, true)
	s.Put(gone, false)
	s.Flush()
	if _, ok := s.Get(gone.Key); !ok {
		t.Fatalf("entry within its windows not served")
	}
	clk.Set(gone.ErrorUntil)
	if _, ok := s.Get(gone.Key); ok {
		t.Errorf("entry past its windows served")
	}
	if _, ok := s.Get(keep.Key); !ok {
		t.Errorf("immutable entry past its windows not served")
	}
	s.Flush()
	if st := s.Stats(); st.Expired != 1 || st.Items != 1 {
		t.Errorf("Expired = %d, Items = %d; want 1, 1", st.Expired, st.Items)
	}
	// Expired ones are not written at all.
	s.Put(gone, false)
	s.Flush()
	if st := s.Stats(); st.Writes != 2 {
		t.Errorf("Writes = %d, want 2 (an expired entry is not written)", st.Writes)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{MaxBytes: -1}, {QueueLen: -1}, {PersistEvery: -time.Second}} {
		if _, err := Open(cfg); err == nil {
			t.Errorf("Open(%+v) = nil error, want one", cfg)
		}
	}
}

// TestFullDiskDoesNotStopTheStore fills the file to a size limit (what a
// full disk does to a commit): the store goes down with the reason, keeps
// serving what it holds, drops writes for a while, and comes back up once
// a write succeeds again.
func TestFullDiskDoesNotStopTheStore(t *testing.T) {
	clk := clock.NewFake(t0)
	s := open(t, Config{Path: t.TempDir(), Now: clk.Now, PersistEvery: time.Minute})
	small := newEntry("/trade-api/v2/series/S", []byte(`{"series":{}}`), t0, 0)
	s.Put(small, true)
	s.Flush()
	fi, err := os.Stat(filepath.Join(s.cfg.Path, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	// Ordered by the Flush above and the Put below: the writer is idle.
	s.db.MaxSize = int(fi.Size())
	// Larger than the room left in the file (bbolt grows it in chunks).
	big := cache.RestoreEntry("/trade-api/v2/markets?limit=1000", 200, http.Header{}, bytes.Repeat([]byte("x"), int(fi.Size())+1<<20),
		nil, `"big"`, t0, [3]time.Time{t0, t0, t0})
	s.Put(big, true)
	s.Flush()
	st := s.Stats()
	if st.State != StateDown || !strings.Contains(st.Reason, "write failed") {
		t.Errorf("after a failed write: state %q, reason %q; want down, write failed", st.State, st.Reason)
	}
	if st.Items != 1 || st.Dropped != 1 {
		t.Errorf("Items %d, Dropped %d; want 1, 1", st.Items, st.Dropped)
	}
	if _, ok := s.Get(small.Key); !ok {
		t.Errorf("the stored entry is not served while the disk is full")
	}
	s.db.MaxSize = 0 // space freed
	s.Put(big, true)
	s.Flush()
	if st := s.Stats(); st.Dropped != 2 || st.State != StateDown {
		t.Errorf("within the back-off: Dropped %d, state %q; want 2, down", st.Dropped, st.State)
	}
	clk.Set(t0.Add(time.Minute))
	s.Put(big, true)
	s.Flush()
	if st := s.Stats(); st.State != StateUp || st.Reason != "" || st.Items != 2 {
		t.Errorf("after the back-off: state %q, reason %q, %d items; want up, 2 items", st.State, st.Reason, st.Items)
	}
	if it, ok := s.Get(big.Key); !ok {
		t.Errorf("the write after the back-off is not served")
	} else {
		same(t, it.Entry, big)
	}
}

// TestConcurrentUse runs readers, writers and purges together (for the
// race detector) and checks every read against what was written under
// its key: never a mixed or torn entry.
func TestConcurrentUse(t *testing.T) {
	s := open(t, Config{Path: t.TempDir(), MaxBytes: 64 << 10, QueueLen: 16})
	const keys, rounds = 20, 300
	var all [keys][3]*cache.Entry
	for k := range all {
		for v := range all[k] {
			all[k][v] = newEntry(fmt.Sprintf("/trade-api/v2/markets/K%02d", k), body(uint64(k*1000+v), 1000+v, v%2 == 0), t0, 0)
		}
	}
	versions := func(k, v int) *cache.Entry { return all[k][v] }
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range rounds {
				k, v := r.IntN(keys), r.IntN(3)
				switch r.IntN(10) {
				case 0:
					s.Delete(versions(k, 0).Key)
				case 1, 2, 3:
					s.Put(versions(k, v), true)
				default:
					it, ok := s.Get(versions(k, 0).Key)
					if !ok {
						continue
					}
					v := len(it.Entry.Body) - 1000
					if v < 0 || v > 2 {
						t.Errorf("%s: body of %d bytes, not one written", it.Entry.Key, len(it.Entry.Body))
						continue
					}
					same(t, it.Entry, versions(k, v))
				}
			}
		})
	}
	wg.Wait()
	s.Flush()
	if st := s.Stats(); st.Corrupt != 0 || st.Bytes > st.MaxBytes {
		t.Errorf("Stats = %+v; want no corrupt record, within MaxBytes", st)
	}
}
