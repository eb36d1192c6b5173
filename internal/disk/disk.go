// Package disk keeps cache entries on disk across restarts: the history
// tier below the memory cache. Settled history never changes, and a
// backtest reads it again and again; kept here it costs Kalshi nothing after
// a restart or a crash.
//
// # Why bbolt
//
// The store is go.etcd.io/bbolt: a copy-on-write B+tree in one file, pure
// Go (the image builds with CGO_ENABLED=0), one small dependency
// (golang.org/x/sys, already required). It fits the job: reads, by far the
// most common operation, are lock-free lookups in a memory-mapped file;
// writes come from one goroutine (bbolt's single writer is no constraint);
// every commit is fsynced and atomic, so kill -9 loses at most the writes
// still queued and never exposes half a transaction; the file is locked
// with flock, which gives one kproxy per directory for free; and there is
// no compaction at all (freed pages are reused by later writes), so nothing
// in the background ever stalls a read (the file is mapped at twice MaxBytes
// up front, so its growth does not remap it under readers either). Pebble checksums its blocks but
// brings an LSM's compactions and a large dependency tree for a workload
// that is mostly reads of values that never change; Badger has the same
// compaction and value-log garbage collection; SQLite is cgo or a very
// large pure-Go translation. bbolt keeps no checksums of its own over
// values, so every record carries a CRC-32C (cache.AppendRecord) that is
// verified on every read.
//
// # Layout
//
// One file, <Path>/kproxy.db, with two buckets: "records" maps a cache key
// to the entry's record (cache.AppendRecord: checksummed, both bodies kept
// so a read copies once and decompresses nothing), and "meta" maps the
// same key to 25 bytes: format version, last access sequence, the bytes
// the entry costs, and when it expires (never for an immutable entry). A
// record and its meta are written in the same transaction. <Path>/kproxy.pid
// names the process holding the lock.
//
// # Eviction
//
// The store holds at most MaxBytes, counted as record + key + a fixed 64
// bytes per entry (the file itself is larger by bbolt's page granularity and
// the free pages it keeps for reuse; it never shrinks). When a write takes
// it past MaxBytes, the least recently used entries go first. Recency is an
// in-memory list ordered by a sequence number bumped on every hit and write;
// the sequence numbers reach the meta bucket lazily, with the next batch of
// writes, on Flush, on Close and every PersistEvery, never as a disk write
// per read. After a crash the order of the reads since the last persist is
// lost (those entries look as old as their last persisted access); that is
// the approximation. Expired entries (not immutable, past all their
// windows) are dropped when read, and swept every PersistEvery.
//
// # Opening
//
// Open reads no values. The index (key, size, access sequence, expiry) is
// loaded from the meta bucket by the writer goroutine after Open returns;
// Get serves from the file at once, reads made before the index is loaded
// count as accesses once it is.
//
// # Failures
//
// A write that fails (a full disk) marks the store down, keeps what it
// holds servable, drops writes for PersistEvery and then tries again; the
// next successful write brings it back up. docs/history.md has the whole
// story.
package disk

import (
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/kproxy/kproxy/cache"
)

// State says whether the store is in use.
type State string

const (
	// StateUp: reads and writes reach the disk.
	StateUp State = "up"
	// StateOff: the tier is turned off (no path configured).
	StateOff State = "off"
	// StateDown: the tier is configured but unusable (directory not
	// writable, held by another kproxy, disk full); Reason says why.
	// kproxy serves from memory and the upstream meanwhile.
	StateDown State = "down"
)

// File names inside Config.Path.
const (
	dbFile  = "kproxy.db"
	pidFile = "kproxy.pid"
)

// Defaults for zero Config fields.
const (
	DefaultMaxBytes     = 1 << 30
	DefaultQueueLen     = 1024
	DefaultPersistEvery = 30 * time.Second
)

// entryOverhead is added to each entry's cost: its meta value and its share
// of the B+tree.
const entryOverhead = 64

// maxBatch bounds the writes committed in one transaction.
const maxBatch = 256

// Config configures a Store.
type Config struct {
	// Path is the directory holding the store, created if missing; empty
	// turns the tier off (the store answers nothing and keeps nothing).
	// DefaultPath is the contract's default.
	Path string
	// MaxBytes bounds the bytes held (see the package doc for how they are
	// counted); 0 means DefaultMaxBytes (1 GiB); negative is an error.
	MaxBytes int64
	// QueueLen bounds the writes waiting for the writer goroutine; a Put
	// that finds the queue full is dropped and counted. 0 means
	// DefaultQueueLen; negative is an error.
	QueueLen int
	// PersistEvery is how often access order is written back and expired
	// entries are swept while the store is otherwise idle, and how long
	// writes are dropped after a failed one (a full disk) before they are
	// tried again; 0 means DefaultPersistEvery; negative is an error.
	PersistEvery time.Duration
	// Logger receives one line each time the store goes down or comes back
	// up; nil discards.
	Logger *slog.Logger
	// Now is the clock used for expiry; nil means time.Now.
	Now func() time.Time
}

// DefaultPath is the contract's default Config.Path: the user cache
// directory + "kproxy" (~/.cache/kproxy on Linux).
func DefaultPath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("disk: %w", err)
	}
	return filepath.Join(dir, "kproxy"), nil
}

// Item is an entry read from the store.
type Item struct {
	Entry *cache.Entry
	// Immutable: the entry never expires and is never refetched.
	Immutable bool
}

// Stats describes the store. Items and Bytes come from the index, which
// is loaded in the background after Open: until then they count only what
// was written since.
type Stats struct {
	Items    int
	Bytes    int64
	MaxBytes int64
	// Immutable counts the items stored immutable.
	Immutable int
	// Hits and Misses count Get; Corrupt counts records found damaged (by
	// Get or List) and dropped; Expired counts entries dropped past their
	// windows.
	Hits, Misses, Corrupt, Expired uint64
	// Writes counts entries written; Dropped counts Puts not written (queue
	// full, store down, entry larger than MaxBytes).
	Writes, Dropped uint64
	// Evictions counts entries removed to stay within MaxBytes.
	Evictions uint64
	State     State
	// Reason says why the store is off or down; empty when up.
	Reason string
}

// Store is the on-disk tier. Get, List and Stats may be called from any
// goroutine and never wait for writes; Put never blocks; Delete, Purge and
// Flush wait for the writes queued before them. All mutations of the file
// happen on one writer goroutine, in order.
type Store struct {
	cfg Config
	db  *bbolt.DB // nil when off or down at Open
	q   chan op

	// life keeps sends away from a stopped writer: senders hold it
	// shared, Close exclusively while it sets closed. Readers only load
	// closed, so they never wait on Close.
	life   sync.RWMutex
	closed atomic.Bool
	done   chan struct{} // closed when the writer has returned

	// retryAt is when the writer tries writing again after a failed
	// commit; until then Puts are dropped. Writer goroutine only.
	retryAt time.Time

	mu    sync.Mutex
	state State
	why   string
	idx   index

	hits, misses, corrupt, expired, writes, dropped, evictions atomic.Uint64
}

// Open opens (creating if needed) the store in cfg.Path. A directory that
// cannot be used (not creatable or writable, held by another kproxy, a
// damaged file) is not an error: the store is returned down, with the
// reason in Stats and one log line, and answers nothing; kproxy keeps
// serving. The error is for an invalid Config only.
func Open(cfg Config) (*Store, error) {
	switch {
	case cfg.MaxBytes < 0:
		return nil, errors.New("disk: max bytes must not be negative")
	case cfg.QueueLen < 0:
		return nil, errors.New("disk: queue length must not be negative")
	case cfg.PersistEvery < 0:
		return nil, errors.New("disk: persist interval must not be negative")
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.PersistEvery == 0 {
		cfg.PersistEvery = DefaultPersistEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{cfg: cfg, done: make(chan struct{}), idx: newIndex()}
	if cfg.Path == "" {
		s.state, s.why = StateOff, "no path configured"
		close(s.done)
		return s, nil
	}
	db, err := openDB(cfg.Path, cfg.MaxBytes)
	if err != nil {
		s.state, s.why = StateDown, err.Error()
		cfg.Logger.Warn("disk cache down: serving from memory and upstream only", "path", cfg.Path, "reason", s.why)
		close(s.done)
		return s, nil
	}
	s.db, s.state = db, StateUp
	s.q = make(chan op, cfg.QueueLen)
	go s.run()
	return s, nil
}

// openDB opens and locks the store's file, creating directory, file and
// buckets as needed, and records our pid beside it.
func openDB(dir string, maxBytes int64) (*bbolt.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create directory: %w", err)
	}
	path := filepath.Join(dir, dbFile)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		// Fail at once when another process holds the lock.
		Timeout:      time.Nanosecond,
		FreelistType: bbolt.FreelistMapType,
		// Map twice the bound up front (address space only, the file
		// grows as written): growing the file then never remaps it, which
		// would make readers wait.
		InitialMmapSize: mmapSize(maxBytes),
	})
	if errors.Is(err, bberrors.ErrTimeout) {
		holder := "another process"
		if b, rerr := os.ReadFile(filepath.Join(dir, pidFile)); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = "another kproxy (pid " + strconv.Itoa(pid) + ")"
			}
		}
		return nil, fmt.Errorf("%s is locked by %s", path, holder)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [...][]byte{bucketRecords, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("cannot write %s: %w", path, err)
	}
	// Best effort: only read to name the holder in another process's reason.
	_ = os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	return db, nil
}

// mmapSize is the initial mapping for a store bounded by maxBytes.
func mmapSize(maxBytes int64) int {
	if strconv.IntSize < 64 {
		return 0
	}
	return int(min(2*maxBytes, 1<<40))
}

var (
	bucketRecords = []byte("records")
	bucketMeta    = []byte("meta")
)

// Get returns the entry stored under key. A damaged record is counted,
// queued for removal and reported missing; so is an expired one (not
// immutable and past all its windows). A hit counts as an access for
// eviction (in memory; no disk write).
func (s *Store) Get(key string) (Item, bool) {
	if s.db == nil || s.isClosed() {
		return Item{}, false
	}
	rec := s.read(key)
	if rec == nil {
		s.misses.Add(1)
		return Item{}, false
	}
	e, o, err := cache.DecodeRecord(key, rec)
	if err != nil {
		s.corrupt.Add(1)
		s.misses.Add(1)
		s.send(op{kind: opDrop, key: key, rec: rec}, false)
		return Item{}, false
	}
	if !o.Immutable && !s.cfg.Now().Before(retention(e)) {
		s.misses.Add(1)
		s.send(op{kind: opDrop, key: key, rec: rec}, false)
		return Item{}, false
	}
	s.hits.Add(1)
	s.touch(key)
	return Item{Entry: e, Immutable: o.Immutable}, true
}

// read returns a copy of the record under key, nil when there is none or
// it cannot be read.
func (s *Store) read(key string) (rec []byte) {
	defer func() {
		// bbolt panics on some damaged pages; a read must not take
		// kproxy down.
		if recover() != nil {
			rec = []byte{}
		}
	}()
	_ = s.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketRecords).Get([]byte(key)); v != nil {
			rec = bytes.Clone(v)
		}
		return nil
	})
	return rec
}

// retention is when a non-immutable entry stops being servable at all.
func retention(e *cache.Entry) time.Time {
	t := e.FreshUntil
	for _, u := range [...]time.Time{e.RevalidateUntil, e.ErrorUntil} {
		if u.After(t) {
			t = u
		}
	}
	return t
}

// Put queues e to be written, marked immutable or not, and returns at
// once: when the queue is full (or the store is down, off or closed) the
// write is dropped and counted. A non-immutable entry already past its
// windows is not written.
func (s *Store) Put(e *cache.Entry, immutable bool) {
	if e == nil || s.db == nil {
		return
	}
	if !immutable && !s.cfg.Now().Before(retention(e)) {
		return
	}
	if !s.send(op{kind: opPut, key: e.Key, entry: e, immutable: immutable}, false) {
		s.dropped.Add(1)
	}
}

// Delete removes the entry stored under exactly key, after the writes
// queued before it, and reports whether there was one.
func (s *Store) Delete(key string) bool {
	r := s.call(op{kind: opDelete, key: key})
	return r > 0
}

// Purge removes every entry whose key starts with prefix (all for ""),
// after the writes queued before it, and reports how many it removed.
func (s *Store) Purge(prefix string) int { return s.call(op{kind: opPurge, key: prefix}) }

// Flush waits until the writes queued before it are on disk (committed
// and synced) and access order is persisted.
func (s *Store) Flush() { s.call(op{kind: opFlush}) }

// call sends o, waits for the writer to apply it and returns its count;
// 0 when the store is not running.
func (s *Store) call(o op) int {
	if s.db == nil {
		return 0
	}
	o.reply = make(chan int, 1)
	if !s.send(o, true) {
		return 0
	}
	return <-o.reply
}

// send queues o for the writer, waiting for room when wait is set; false
// when the store is closed or (without wait) the queue is full.
func (s *Store) send(o op, wait bool) bool {
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed.Load() {
		return false
	}
	if wait {
		s.q <- o
		return true
	}
	select {
	case s.q <- o:
		return true
	default:
		return false
	}
}

func (s *Store) isClosed() bool { return s.closed.Load() }

// List returns up to limit (all when negative) entries whose keys start
// with prefix, in key order, and how many unexpired entries match in all.
// Damaged records are skipped, counted and queued for removal.
func (s *Store) List(prefix string, limit int) ([]Item, int) {
	if s.db == nil || s.isClosed() {
		return nil, 0
	}
	now := s.cfg.Now().UnixNano()
	type found struct {
		key string
		rec []byte
	}
	var recs []found
	total := 0
	_ = s.db.View(func(tx *bbolt.Tx) error {
		records := tx.Bucket(bucketRecords)
		c := tx.Bucket(bucketMeta).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			m, ok := decodeMeta(v)
			if ok && m.expires <= now {
				continue
			}
			total++
			if limit < 0 || len(recs) < limit {
				if r := records.Get(k); r != nil {
					recs = append(recs, found{string(k), bytes.Clone(r)})
				}
			}
		}
		return nil
	})
	out := make([]Item, 0, len(recs))
	for _, f := range recs {
		e, o, err := cache.DecodeRecord(f.key, f.rec)
		if err != nil {
			s.corrupt.Add(1)
			s.send(op{kind: opDrop, key: f.key, rec: f.rec}, false)
			continue
		}
		out = append(out, Item{Entry: e, Immutable: o.Immutable})
	}
	return out, total
}

// Stats reports what the store holds and its counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	st := Stats{
		Items: s.idx.len(), Bytes: s.idx.bytes, MaxBytes: s.cfg.MaxBytes, Immutable: s.idx.immutable,
		State: s.state, Reason: s.why,
	}
	s.mu.Unlock()
	st.Hits, st.Misses, st.Corrupt, st.Expired = s.hits.Load(), s.misses.Load(), s.corrupt.Load(), s.expired.Load()
	st.Writes, st.Dropped, st.Evictions = s.writes.Load(), s.dropped.Load(), s.evictions.Load()
	return st
}

// Close writes what is queued, persists access order, syncs and releases
// the directory's lock. Later calls on the store do nothing (Get misses);
// closing again returns nil.
func (s *Store) Close() error {
	s.life.Lock()
	if s.closed.Load() {
		s.life.Unlock()
		return nil
	}
	s.closed.Store(true)
	s.life.Unlock()
	if s.db == nil {
		return nil
	}
	// No sender is left: the writer drains the queue, then stops.
	s.q <- op{kind: opStop}
	<-s.done
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	return nil
}

// setState records a change of state, logging it once.
func (s *Store) setState(st State, why string) {
	s.mu.Lock()
	changed := s.state != st
	s.state, s.why = st, why
	s.mu.Unlock()
	if !changed {
		return
	}
	if st == StateDown {
		s.cfg.Logger.Warn("disk cache down: serving from memory and upstream only", "path", s.cfg.Path, "reason", why)
	} else {
		s.cfg.Logger.Info("disk cache up again", "path", s.cfg.Path)
	}
}

// meta is an entry's line in the meta bucket.
type meta struct {
	seq     uint64 // last access
	size    int64  // bytes counted against MaxBytes
	expires int64  // Unix ns; math.MaxInt64 for an immutable entry
}

// immutable is 1 for the meta of an immutable entry, else 0.
func (m meta) immutable() int {
	if m.expires == math.MaxInt64 {
		return 1
	}
	return 0
}

const metaVersion, metaLen = 1, 25

func (m meta) encode() []byte {
	b := make([]byte, 0, metaLen)
	b = append(b, metaVersion)
	b = appendU64(b, m.seq)
	b = appendU64(b, uint64(m.size))
	return appendU64(b, uint64(m.expires))
}

func decodeMeta(b []byte) (meta, bool) {
	if len(b) != metaLen || b[0] != metaVersion {
		return meta{}, false
	}
	m := meta{seq: u64(b[1:]), size: int64(u64(b[9:])), expires: int64(u64(b[17:]))}
	return m, m.size > 0
}

func appendU64(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func u64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// expiry is when the entry stored with immutable leaves the store.
func expiry(e *cache.Entry, immutable bool) int64 {
	if immutable {
		return math.MaxInt64
	}
	t := retention(e)
	if t.Unix() >= math.MaxInt64/int64(time.Second) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

// index is the in-memory view of the meta bucket: every key's cost and
// expiry, in recency order (front most recent). Guarded by Store.mu.
type index struct {
	m     map[string]*item
	lru   *list.List // of *item
	bytes int64
	// immutable counts the items whose meta never expires.
	immutable int
	seq       uint64 // last sequence number handed out
	// loaded is false until the writer has read the meta bucket; touches
	// made before are kept (bounded) in early and applied then.
	loaded bool
	early  []string
	dirty  []*item
}

type item struct {
	key   string
	meta  meta
	dirty bool
	elem  *list.Element
}

// maxEarly bounds the accesses remembered before the index is loaded.
const maxEarly = 1 << 16

func newIndex() index { return index{m: map[string]*item{}, lru: list.New()} }

func (x *index) len() int { return len(x.m) }

// touch makes key the most recently used.
func (s *Store) touch(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := &s.idx
	if !x.loaded {
		if len(x.early) < maxEarly {
			x.early = append(x.early, key)
		}
		return
	}
	if it := x.m[key]; it != nil {
		x.bump(it)
	}
}

// bump gives it a new sequence number and moves it to the front.
func (x *index) bump(it *item) {
	x.seq++
	it.meta.seq = x.seq
	x.lru.MoveToFront(it.elem)
	if !it.dirty {
		it.dirty = true
		x.dirty = append(x.dirty, it)
	}
}

// set records key's meta as the most recent entry; the caller set m.seq.
func (x *index) set(key string, m meta) {
	if it := x.m[key]; it != nil {
		x.bytes += m.size - it.meta.size
		x.immutable += m.immutable() - it.meta.immutable()
		it.meta = m
		x.lru.MoveToFront(it.elem)
		return
	}
	it := &item{key: key, meta: m}
	it.elem = x.lru.PushFront(it)
	x.m[key] = it
	x.bytes += m.size
	x.immutable += m.immutable()
}

func (x *index) remove(key string) (meta, bool) {
	it := x.m[key]
	if it == nil {
		return meta{}, false
	}
	delete(x.m, key)
	x.lru.Remove(it.elem)
	x.bytes -= it.meta.size
	x.immutable -= it.meta.immutable()
	it.dirty = false
	return it.meta, true
}
