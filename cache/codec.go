package cache

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
)

// A record is an entry in the form kept outside the process: on disk (the
// history tier) and in the shared tier. Format version 1; integers are
// big-endian, times are int64 Unix nanoseconds (the zero time is
// math.MinInt64, times past the int64 range are clamped to it).
//
//	0      magic 'k'
//	1      version (1)
//	2      flags: 1 identity body present, 2 gzip copy present,
//	       4 immutable (never expires, never refetched)
//	3      reserved, 0
//	4-7    CRC-32C (Castagnoli) of the key, then of bytes 8 to the end
//	8-15   fetched at                                   (fixed offset)
//	16-23  fresh until                                  (fixed offset)
//	24-31  servable while revalidating until
//	32-39  servable on error until
//	40-41  status
//	       ETag, Detail: each a u16 length, then the bytes
//	       header count (u16); each: name (u16 length, bytes), value
//	       count (u16), each value: u32 length, bytes; names in order
//	       identity body, if flagged: u32 length, bytes
//	       gzip copy, if flagged: u32 length, bytes
//	       nothing may follow
//
// The key is not stored: it is where the record lives (a disk key, a Redis
// key), and the checksum covers it, so a record read under another key is
// rejected like a damaged one. Fetched at and fresh until sit at fixed
// offsets so a Redis script can compare them without decoding. An entry with
// a gzip copy may be stored gzip only (RecordOptions.GzipOnly): smaller, and
// the reader decompresses; otherwise both are stored and decoding copies
// nothing but the header strings.
const (
	recordMagic   = 'k'
	recordVersion = 1

	flagIdentity  = 1
	flagGzip      = 2
	flagImmutable = 4

	recordFixed = 42
	// maxDecoded bounds a body decompressed from a gzip-only record.
	maxDecoded = 64 << 20
)

// ErrBadRecord is returned for a record that is damaged, truncated, stored
// under another key, or not in a format this version reads.
var ErrBadRecord = errors.New("cache: corrupt or foreign record")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// RecordOptions are the facts a record carries besides its entry.
type RecordOptions struct {
	// Immutable marks an answer that never changes: kept until evicted,
	// never expired or refetched.
	Immutable bool
	// GzipOnly stores only the gzip copy when the entry has one (smaller;
	// DecodeRecord decompresses it). Ignored on decode.
	GzipOnly bool
}

// AppendRecord appends the record form of e to dst and returns the
// extended slice. Strings longer than 64 KiB (ETag, Detail, header names)
// are cut there; nothing kproxy stores comes close.
func AppendRecord(dst []byte, e *Entry, o RecordOptions) []byte {
	flags := byte(flagIdentity)
	if e.Gzip != nil {
		flags |= flagGzip
		if o.GzipOnly {
			flags &^= flagIdentity
		}
	}
	if o.Immutable {
		flags |= flagImmutable
	}
	names := make([]string, 0, len(e.Header))
	n := recordFixed + 4 + len(e.ETag) + len(e.Detail) + 2 + 8 + len(e.Body) + len(e.Gzip)
	for k, vs := range e.Header {
		names = append(names, k)
		n += 4 + len(k)
		for _, v := range vs {
			n += 4 + len(v)
		}
	}
	slices.Sort(names)

	dst = slices.Grow(dst, n)
	start := len(dst)
	dst = append(dst, recordMagic, recordVersion, flags, 0, 0, 0, 0, 0)
	for _, t := range [...]time.Time{e.FetchedAt, e.FreshUntil, e.RevalidateUntil, e.ErrorUntil} {
		dst = binary.BigEndian.AppendUint64(dst, uint64(unixNano(t)))
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(e.Status))
	dst = appendString16(dst, e.ETag)
	dst = appendString16(dst, e.Detail)
	dst = binary.BigEndian.AppendUint16(dst, uint16(min(len(names), math.MaxUint16)))
	for _, k := range names[:min(len(names), math.MaxUint16)] {
		vs := e.Header[k]
		dst = appendString16(dst, k)
		dst = binary.BigEndian.AppendUint16(dst, uint16(min(len(vs), math.MaxUint16)))
		for _, v := range vs[:min(len(vs), math.MaxUint16)] {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
			dst = append(dst, v...)
		}
	}
	if flags&flagIdentity != 0 {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(e.Body)))
		dst = append(dst, e.Body...)
	}
	if flags&flagGzip != 0 {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(e.Gzip)))
		dst = append(dst, e.Gzip...)
	}
	rec := dst[start:]
	binary.BigEndian.PutUint32(rec[4:8], checksum(e.Key, rec))
	return dst
}

// checksum is the CRC-32C of key and rec[8:].
func checksum(key string, rec []byte) uint32 {
	c := crc32.Update(0, castagnoli, []byte(key))
	return crc32.Update(c, castagnoli, rec[8:])
}

// DecodeRecord rebuilds the entry stored as b under key. It verifies the
// checksum first, never panics, and rejects with ErrBadRecord anything
// AppendRecord did not write for key (wrong magic, version or flags,
// lengths that overrun, trailing bytes, a gzip copy that does not
// decompress). The entry's Body and Gzip are slices of b: b is owned by the
// result afterwards and must not be modified (copy a value out of a
// memory-mapped file first).
func DecodeRecord(key string, b []byte) (*Entry, RecordOptions, error) {
	if len(b) < recordFixed || b[0] != recordMagic || b[1] != recordVersion ||
		b[2]&^(flagIdentity|flagGzip|flagImmutable) != 0 || b[2]&(flagIdentity|flagGzip) == 0 || b[3] != 0 ||
		binary.BigEndian.Uint32(b[4:8]) != checksum(key, b) {
		return nil, RecordOptions{}, ErrBadRecord
	}
	flags := b[2]
	var times [4]time.Time
	for i := range times {
		times[i] = fromUnixNano(int64(binary.BigEndian.Uint64(b[8+8*i:])))
	}
	status := int(binary.BigEndian.Uint16(b[40:42]))
	r := &reader{b: b[recordFixed:], ok: true}
	etag := string(r.take(r.u16()))
	detail := string(r.take(r.u16()))
	nh := r.u16()
	if !r.ok || nh > len(r.b)/4 {
		return nil, RecordOptions{}, ErrBadRecord
	}
	header := make(http.Header, nh)
	for range nh {
		name := string(r.take(r.u16()))
		nv := r.u16()
		if !r.ok || nv > len(r.b)/4 {
			return nil, RecordOptions{}, ErrBadRecord
		}
		vs := make([]string, 0, nv)
		for range nv {
			vs = append(vs, string(r.take(r.u32())))
		}
		header[name] = vs
	}
	var body, gz []byte
	if flags&flagIdentity != 0 {
		body = r.take(r.u32())
	}
	if flags&flagGzip != 0 {
		gz = r.take(r.u32())
	}
	if !r.ok || len(r.b) != 0 || status < 100 || status > 999 {
		return nil, RecordOptions{}, ErrBadRecord
	}
	if flags&flagIdentity == 0 {
		var err error
		if body, err = gunzip(gz); err != nil {
			return nil, RecordOptions{}, ErrBadRecord
		}
	}
	if body == nil {
		body = []byte{}
	}
	e := RestoreEntry(key, status, header, body, gz, etag, times[0], [3]time.Time{times[1], times[2], times[3]})
	e.Detail = detail
	return e, RecordOptions{Immutable: flags&flagImmutable != 0}, nil
}

// unixNano is t in Unix nanoseconds, the zero time as math.MinInt64 and
// times outside the int64 range clamped to it.
func unixNano(t time.Time) int64 {
	switch {
	case t.IsZero():
		return math.MinInt64
	case t.Unix() >= math.MaxInt64/int64(time.Second):
		return math.MaxInt64
	case t.Unix() <= math.MinInt64/int64(time.Second):
		return math.MinInt64 + 1
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func appendString16(b []byte, s string) []byte {
	if len(s) > math.MaxUint16 {
		s = s[:math.MaxUint16]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// reader consumes a record, failing (ok false) on any overrun.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) take(n int) []byte {
	if !r.ok || n < 0 || n > len(r.b) {
		r.ok = false
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u16() int {
	if p := r.take(2); p != nil {
		return int(binary.BigEndian.Uint16(p))
	}
	return 0
}

func (r *reader) u32() int {
	if p := r.take(4); p != nil {
		return int(binary.BigEndian.Uint32(p))
	}
	return 0
}

// gzipReaders recycles decompressors: a gzip.Reader holds tens of KiB of
// inflate state, too much to allocate for every gzip-only record read.
var gzipReaders sync.Pool

// gunzip decompresses gz (at most maxDecoded bytes).
func gunzip(gz []byte) ([]byte, error) {
	zr, _ := gzipReaders.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(gz))
	} else {
		err = zr.Reset(bytes.NewReader(gz))
	}
	if err != nil {
		return nil, err
	}
	defer gzipReaders.Put(zr)
	var buf bytes.Buffer
	buf.Grow(4 * len(gz))
	if _, err := io.Copy(&buf, io.LimitReader(zr, maxDecoded+1)); err != nil {
		return nil, err
	}
	if buf.Len() > maxDecoded {
		return nil, ErrBadRecord
	}
	return bytes.Clone(buf.Bytes()), nil
}
