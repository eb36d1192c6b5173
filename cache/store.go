package cache

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// Store is where entries live. Get returns entries in any freshness state
// until their retention ends; callers decide what is servable.
type Store interface {
	Get(key string) (*Entry, bool)
	// Set stores e for at most retention; it may drop e under memory
	// pressure. It returns once e is visible to Get (or was dropped).
	Set(e *Entry, retention time.Duration)
	// Purge removes every entry whose key starts with prefix and reports
	// how many it removed.
	Purge(prefix string) int
	// Delete removes the entry stored under exactly key and reports
	// whether there was one.
	Delete(key string) bool
	// List returns up to limit entries whose keys start with prefix, in key
	// order, and how many match in all.
	List(prefix string, limit int) ([]*Entry, int)
	Stats() Stats
}

// Stats describes what a store holds.
type Stats struct {
	Items     int
	Bytes     int64
	Evictions uint64
}

// Config configures a Memory store.
type Config struct {
	// MaxBytes bounds the bytes held (entry sizes summed); it must be > 0.
	MaxBytes int64
	// OnEvict, if set, is called when an entry leaves the store because of
	// memory pressure (not expiry or purge).
	OnEvict func()
}

// Memory is a Store on ristretto, bounded in bytes. Reads take no lock of
// ours; writes update a small key index so Purge can find keys by prefix
// (ristretto itself only knows key hashes).
type Memory struct {
	c *ristretto.Cache[string, *Entry]

	// life keeps writes away from a closed ristretto cache (which panics
	// or blocks on them): Set and Purge hold it shared, Close exclusively.
	// A shared fetch may still finish after shutdown has closed the store.
	life   sync.RWMutex
	closed bool

	mu        sync.Mutex
	index     map[string]*Entry
	bytes     int64
	evictions uint64
	onEvict   func()
}

var _ Store = (*Memory)(nil)

// NewMemory builds a Memory store.
func NewMemory(cfg Config) (*Memory, error) {
	if cfg.MaxBytes <= 0 {
		return nil, errors.New("cache: max bytes must be positive")
	}
	m := &Memory{index: map[string]*Entry{}, onEvict: cfg.OnEvict}
	// Expect entries of about 2 KiB; ristretto wants ~10 counters per item.
	counters := max(cfg.MaxBytes/2048*10, 1000)
	c, err := ristretto.NewCache(&ristretto.Config[string, *Entry]{
		NumCounters:        counters,
		MaxCost:            cfg.MaxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true,
		// Sweep expired entries once a second so memory and the key
		// index follow retention closely.
		TtlTickerDurationInSec: 1,
		OnEvict: func(item *ristretto.Item[*Entry]) {
			if item.Expiration.IsZero() || time.Now().Before(item.Expiration) {
				m.mu.Lock()
				m.evictions++
				m.mu.Unlock()
				if m.onEvict != nil {
					m.onEvict()
				}
			}
		},
		OnExit: m.forget,
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	m.c = c
	return m, nil
}

// Get returns the entry under key, if still retained.
func (m *Memory) Get(key string) (*Entry, bool) {
	e, ok := m.c.Get(key)
	if !ok || e == nil || e.Key != key {
		return nil, false
	}
	return e, true
}

// Set stores e for retention and waits until it is visible.
func (m *Memory) Set(e *Entry, retention time.Duration) {
	if retention <= 0 {
		return
	}
	m.life.RLock()
	defer m.life.RUnlock()
	if m.closed {
		return
	}
	cost := e.Size()
	m.mu.Lock()
	if prev := m.index[e.Key]; prev != nil {
		m.bytes -= prev.Size()
	}
	m.index[e.Key] = e
	m.bytes += cost
	m.mu.Unlock()
	if !m.c.SetWithTTL(e.Key, e, cost, retention) {
		m.forget(e)
		return
	}
	m.c.Wait()
}

// forget drops e from the index if it is still the indexed entry for its
// key (an update calls it with the replaced entry, which must not remove the
// new one).
func (m *Memory) forget(e *Entry) {
	if e == nil {
		return
	}
	m.mu.Lock()
	if m.index[e.Key] == e {
		delete(m.index, e.Key)
		m.bytes -= e.Size()
	}
	m.mu.Unlock()
}

// Purge removes the entries whose keys start with prefix.
func (m *Memory) Purge(prefix string) int {
	m.life.RLock()
	defer m.life.RUnlock()
	if m.closed {
		return 0
	}
	m.mu.Lock()
	var keys []string
	for k := range m.index {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	m.mu.Unlock()
	for _, k := range keys {
		m.c.Del(k)
	}
	m.c.Wait()
	return len(keys)
}

// Delete removes the entry under key.
func (m *Memory) Delete(key string) bool {
	m.life.RLock()
	defer m.life.RUnlock()
	if m.closed {
		return false
	}
	m.mu.Lock()
	_, ok := m.index[key]
	m.mu.Unlock()
	if !ok {
		return false
	}
	m.c.Del(key)
	m.c.Wait()
	return true
}

// List returns up to limit entries under prefix, in key order, and the
// number that match.
func (m *Memory) List(prefix string, limit int) ([]*Entry, int) {
	m.mu.Lock()
	var all []*Entry
	for k, e := range m.index {
		if strings.HasPrefix(k, prefix) {
			all = append(all, e)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(all, func(a, b *Entry) int { return strings.Compare(a.Key, b.Key) })
	total := len(all)
	if limit >= 0 && len(all) > limit {
		all = all[:limit]
	}
	return all, total
}

// Stats reports the entries and bytes held.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Items: len(m.index), Bytes: m.bytes, Evictions: m.evictions}
}

// Close stops the store's background work. Later writes are dropped;
// closing again does nothing.
func (m *Memory) Close() {
	m.life.Lock()
	defer m.life.Unlock()
	m.closed = true
	m.c.Close()
}
