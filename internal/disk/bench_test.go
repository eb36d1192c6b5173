package disk

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kproxy/kproxy/cache"
)

var benchSizes = []int{1 << 10, 80 << 10}

// benchStore holds 64 entries of size bytes, written and synced.
func benchStore(b *testing.B, size int) (*Store, []string) {
	s := open(b, Config{Path: b.TempDir()})
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprintf("/trade-api/v2/markets?cursor=%04d&limit=1000", i)
		s.Put(newEntry(keys[i], body(uint64(i), size, true), t0, 0), true)
	}
	s.Flush()
	return s, keys
}

// BenchmarkGet is a disk hit: read, checksum, decode.
func BenchmarkGet(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			s, keys := benchStore(b, size)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := s.Get(keys[i%len(keys)]); !ok {
					b.Fatal("miss")
				}
				i++
			}
		})
	}
}

// BenchmarkGetLatency reports the p50 and p99 of single disk hits over
// 10,000 reads, in process.
func BenchmarkGetLatency(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			s, keys := benchStore(b, size)
			lat := make([]time.Duration, 0, 10000)
			for b.Loop() {
				lat = lat[:0]
				for i := range cap(lat) {
					start := time.Now()
					if _, ok := s.Get(keys[i%len(keys)]); !ok {
						b.Fatal("miss")
					}
					lat = append(lat, time.Since(start))
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}

// BenchmarkPut is written throughput: queued, committed and synced, in
// batches of 64 (the request path itself only queues).
func BenchmarkPut(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			s := open(b, Config{Path: b.TempDir(), QueueLen: 128})
			entries := make([]*cache.Entry, 64)
			for i := range entries {
				entries[i] = newEntry(fmt.Sprintf("/trade-api/v2/markets?cursor=%04d", i), body(uint64(i), size, true), t0, 0)
			}
			b.SetBytes(int64(size))
			i := 0
			for b.Loop() {
				s.Put(entries[i%len(entries)], true)
				i++
				if i%64 == 0 {
					s.Flush()
				}
			}
			s.Flush()
			if d := s.Stats().Dropped; d != 0 {
				b.Fatalf("%d writes dropped", d)
			}
		})
	}
}
