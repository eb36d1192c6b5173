package disk

import (
	"bytes"
	"cmp"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kproxy/kproxy/cache"
)

type opKind uint8

const (
	opPut    opKind = iota
	opDelete        // key; reply 1 if removed
	opPurge         // key is the prefix; reply the count removed
	opDrop          // key, if its record still equals rec (damaged or expired)
	opFlush         // reply once everything before is committed
	opStop          // the last op: commit, then the writer returns
)

// op is one mutation for the writer goroutine.
type op struct {
	kind      opKind
	key       string
	entry     *cache.Entry
	immutable bool
	rec       []byte
	reply     chan int
}

// tally counts what one transaction did; it reaches the store's counters
// only if the transaction commits.
type tally struct {
	writes, dropped, expired, evictions uint64
}

// run is the writer goroutine: it loads the index, then applies queued
// ops in batches, one transaction per batch, until opStop.
func (s *Store) run() {
	defer close(s.done)
	s.load(true)
	tick := time.NewTicker(s.cfg.PersistEvery)
	defer tick.Stop()
	batch := make([]op, 0, maxBatch)
	for {
		select {
		case o := <-s.q:
			batch = append(batch[:0], o)
		case <-tick.C:
			s.apply(nil, true)
			continue
		}
	fill:
		for len(batch) < maxBatch && batch[len(batch)-1].kind != opStop {
			select {
			case o := <-s.q:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.apply(batch, false)
		if batch[len(batch)-1].kind == opStop {
			return
		}
		clear(batch) // let the entries go
	}
}

// apply commits batch in one transaction, with the evictions it makes
// necessary and the access order gathered since the last commit (and,
// when sweep is set, the removal of expired entries), then answers the
// ops that wait. A failed commit marks the store down and reloads the
// index from the file, which the failed transaction left as it was.
func (s *Store) apply(batch []op, sweep bool) {
	results := make([]int, len(batch))
	var t tally
	backoff := s.cfg.Now().Before(s.retryAt)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		w := wtx{s: s, records: tx.Bucket(bucketRecords), meta: tx.Bucket(bucketMeta), t: &t, skipPuts: backoff}
		for i, o := range batch {
			var err error
			switch o.kind {
			case opPut:
				err = w.put(o)
			case opDelete:
				results[i], err = w.delete(o.key)
			case opPurge:
				results[i], err = w.purge(o.key)
			case opDrop:
				err = w.drop(o.key, o.rec)
			}
			if err != nil {
				return err
			}
		}
		if sweep {
			if err := w.sweep(); err != nil {
				return err
			}
		}
		if err := w.evict(); err != nil {
			return err
		}
		return w.persistAccess()
	})
	puts := uint64(0)
	for _, o := range batch {
		if o.kind == opPut {
			puts++
		}
	}
	if err != nil {
		s.dropped.Add(puts)
		s.retryAt = s.cfg.Now().Add(s.cfg.PersistEvery)
		s.setState(StateDown, "write failed: "+err.Error())
		s.load(false)
		clear(results)
	} else {
		s.writes.Add(t.writes)
		s.dropped.Add(t.dropped)
		s.expired.Add(t.expired)
		s.evictions.Add(t.evictions)
		if !backoff {
			s.setState(StateUp, "")
		}
	}
	for i, o := range batch {
		if o.reply != nil {
			o.reply <- results[i]
		}
	}
}

// wtx is the writer's view of one transaction.
type wtx struct {
	s             *Store
	records, meta *bbolt.Bucket
	t             *tally
	// skipPuts drops the puts: a write failed a short while ago.
	skipPuts bool
}

func (w wtx) put(o op) error {
	s := w.s
	if w.skipPuts || o.key == "" || len(o.key) > bbolt.MaxKeySize {
		w.t.dropped++
		return nil
	}
	rec := cache.AppendRecord(nil, o.entry, cache.RecordOptions{Immutable: o.immutable})
	size := int64(len(rec)+len(o.key)) + entryOverhead
	if size > s.cfg.MaxBytes {
		w.t.dropped++
		return nil
	}
	if err := w.records.Put([]byte(o.key), rec); err != nil {
		return err
	}
	s.mu.Lock()
	s.idx.seq++
	m := meta{seq: s.idx.seq, size: size, expires: expiry(o.entry, o.immutable)}
	s.idx.set(o.key, m)
	s.mu.Unlock()
	w.t.writes++
	return w.meta.Put([]byte(o.key), m.encode())
}

// remove deletes key's record and meta, and its index line.
func (w wtx) remove(key []byte) error {
	if err := w.records.Delete(key); err != nil {
		return err
	}
	if err := w.meta.Delete(key); err != nil {
		return err
	}
	w.s.mu.Lock()
	w.s.idx.remove(string(key))
	w.s.mu.Unlock()
	return nil
}

func (w wtx) delete(key string) (int, error) {
	if key == "" || w.meta.Get([]byte(key)) == nil {
		return 0, nil
	}
	return 1, w.remove([]byte(key))
}

func (w wtx) purge(prefix string) (int, error) {
	var keys [][]byte
	c := w.meta.Cursor()
	p := []byte(prefix)
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := w.remove(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// drop removes key if its record is still rec: a damaged or expired record
// found by a reader, not one written since.
func (w wtx) drop(key string, rec []byte) error {
	cur := w.records.Get([]byte(key))
	if cur == nil || !bytes.Equal(cur, rec) {
		return nil
	}
	if _, _, err := cache.DecodeRecord(key, bytes.Clone(cur)); err == nil {
		w.t.expired++
	}
	return w.remove([]byte(key))
}

// sweep removes the entries past their expiry.
func (w wtx) sweep() error {
	now := w.s.cfg.Now().UnixNano()
	var keys []string
	w.s.mu.Lock()
	for k, it := range w.s.idx.m {
		if it.meta.expires <= now {
			keys = append(keys, k)
		}
	}
	w.s.mu.Unlock()
	for _, k := range keys {
		if err := w.remove([]byte(k)); err != nil {
			return err
		}
	}
	w.t.expired += uint64(len(keys))
	return nil
}

// evict removes the least recently used entries until the store is
// within MaxBytes.
func (w wtx) evict() error {
	for {
		w.s.mu.Lock()
		var key string
		if w.s.idx.bytes > w.s.cfg.MaxBytes {
			if back := w.s.idx.lru.Back(); back != nil {
				key = back.Value.(*item).key
			}
		}
		w.s.mu.Unlock()
		if key == "" {
			return nil
		}
		if err := w.remove([]byte(key)); err != nil {
			return err
		}
		w.t.evictions++
	}
}

// persistAccess writes the access sequence numbers changed since the last
// commit.
func (w wtx) persistAccess() error {
	type line struct {
		key string
		m   meta
	}
	w.s.mu.Lock()
	x := &w.s.idx
	lines := make([]line, 0, len(x.dirty))
	for _, it := range x.dirty {
		if it.dirty && x.m[it.key] == it {
			lines = append(lines, line{it.key, it.meta})
		}
		it.dirty = false
	}
	x.dirty = x.dirty[:0]
	w.s.mu.Unlock()
	for _, l := range lines {
		if err := w.meta.Put([]byte(l.key), l.m.encode()); err != nil {
			return err
		}
	}
	return nil
}

// load rebuilds the index from the meta bucket, oldest access last in
// recency order. first is set for the load at start, which also applies
// the accesses made before it, removes damaged meta lines, and evicts
// down to MaxBytes (a smaller MaxBytes than the last run's).
func (s *Store) load(first bool) {
	x := newIndex()
	var items []*item
	var bad int
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).ForEach(func(k, v []byte) error {
			m, ok := decodeMeta(v)
			if !ok {
				bad++
				items = append(items, &item{key: string(k), meta: meta{size: entryOverhead, expires: 0}})
				return nil
			}
			items = append(items, &item{key: string(k), meta: m})
			return nil
		})
	})
	if err != nil {
		s.setState(StateDown, "cannot read index: "+err.Error())
	}
	slices.SortFunc(items, func(a, b *item) int { return cmp.Compare(a.meta.seq, b.meta.seq) })
	for _, it := range items {
		it.elem = x.lru.PushFront(it)
		x.m[it.key] = it
		x.bytes += it.meta.size
		x.immutable += it.meta.immutable()
		x.seq = max(x.seq, it.meta.seq)
	}
	x.loaded = true
	s.mu.Lock()
	early := s.idx.early
	s.idx = x
	if first {
		for _, k := range early {
			if it := s.idx.m[k]; it != nil {
				s.idx.bump(it)
			}
		}
	}
	s.mu.Unlock()
	// A damaged meta line has expires 0: the sweep removes it.
	if first && (bad > 0 || x.bytes > s.cfg.MaxBytes) {
		s.apply(nil, bad > 0)
	}
}
