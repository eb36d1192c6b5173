package cluster

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Encoding of an L2 entry, format version 1. The version is also part of
// every key (<prefix>v1:e:<cache key>), so replicas running a later format
// never see these values at all; the magic and version bytes are a second
// guard. All integers are big-endian.
//
//	0      magic 'K'
//	1      version (1)
//	2      flags: bit 0 = the body below is gzip (identity otherwise)
//	3-10   fetched at, unix microseconds
//	11-18  fresh for, microseconds after fetched at       (read by claimScript)
//	19-26  servable while revalidating until, µs after fetched at
//	27-34  servable on error until, µs after fetched at
//	35-36  status
//	37-38  ETag length, then the ETag
//	       header count (u16); each: name length (u16), name, value count
//	       (u16), each value: length (u32), value
//	       body length (u32), then the body (nothing may follow)
//
// The body is stored once: the gzip copy when the entry has one (it only
// exists when it is smaller), else the identity body. A replica that reads
// the entry rebuilds the identity body by decompressing, which is cheaper
// than compressing again.
const (
	entryMagic   = 'K'
	errorMagic   = 'E'
	version      = 1
	flagGzip     = 1
	fixedHeader  = 37
	versionLabel = "v1"
)

// maxDecoded bounds a decompressed body (the fetch path's own bound).
const maxDecoded = 64 << 20

var errCorrupt = errors.New("cluster: corrupt or foreign L2 value")

// encodeEntry is the L2 form of e.
func encodeEntry(e *cache.Entry) []byte {
	body, flags := e.Body, byte(0)
	if e.Gzip != nil {
		body, flags = e.Gzip, flagGzip
	}
	n := fixedHeader + 2 + len(e.ETag) + 2 + 4 + len(body)
	for k, vs := range e.Header {
		n += 4 + len(k)
		for _, v := range vs {
			n += 4 + len(v)
		}
	}
	b := make([]byte, 0, n)
	b = append(b, entryMagic, version, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(e.FetchedAt.UnixMicro()))
	for _, t := range [...]time.Time{e.FreshUntil, e.RevalidateUntil, e.ErrorUntil} {
		b = binary.BigEndian.AppendUint64(b, uint64(max(t.Sub(e.FetchedAt).Microseconds(), 0)))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(e.Status))
	b = appendString16(b, e.ETag)
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Header)))
	for k, vs := range e.Header {
		b = appendString16(b, k)
		b = binary.BigEndian.AppendUint16(b, uint16(len(vs)))
		for _, v := range vs {
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

func appendString16(b []byte, s string) []byte {
	if len(s) > 0xffff {
		s = s[:0xffff]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// reader consumes a value, failing (ok false) on any overrun.
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
	p := r.take(2)
	if p == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(p))
}

func (r *reader) u32() int {
	p := r.take(4)
	if p == nil {
		return 0
	}
	return int(binary.BigEndian.Uint32(p))
}

func (r *reader) u64() uint64 {
	p := r.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

// decodeEntry rebuilds the entry stored under key from its L2 form. It
// never panics and rejects anything it did not write (wrong magic or
// version, lengths that overrun, trailing bytes, a body that does not
// decompress); b is owned by the result afterwards.
func decodeEntry(key string, b []byte) (*cache.Entry, error) {
	r := &reader{b: b, ok: true}
	head := r.take(3)
	if head == nil || head[0] != entryMagic || head[1] != version || head[2]&^flagGzip != 0 {
		return nil, errCorrupt
	}
	fetchedUs := r.u64()
	var offs [3]uint64
	for i := range offs {
		offs[i] = r.u64()
	}
	status := r.u16()
	etag := string(r.take(r.u16()))
	nh := r.u16()
	if !r.ok || nh > len(r.b)/4 {
		return nil, errCorrupt
	}
	header := make(http.Header, nh)
	for range nh {
		name := string(r.take(r.u16()))
		nv := r.u16()
		if !r.ok || nv > len(r.b)/4 {
			return nil, errCorrupt
		}
		vs := make([]string, 0, nv)
		for range nv {
			vs = append(vs, string(r.take(r.u32())))
		}
		header[name] = vs
	}
	body := r.take(r.u32())
	if !r.ok || len(r.b) != 0 || status < 100 || status > 999 || fetchedUs > 1<<53 {
		return nil, errCorrupt
	}
	for _, o := range offs {
		if o > 1<<53 {
			return nil, errCorrupt
		}
	}
	var gz []byte
	if head[2]&flagGzip != 0 {
		gz = body
		var err error
		if body, err = gunzip(gz); err != nil {
			return nil, errCorrupt
		}
	}
	fetched := time.UnixMicro(int64(fetchedUs))
	var until [3]time.Time
	for i, o := range offs {
		until[i] = fetched.Add(time.Duration(o) * time.Microsecond)
	}
	return cache.RestoreEntry(key, status, header, body, gz, etag, fetched, until), nil
}

// gzipReaders recycles decompressors: a gzip.Reader holds tens of KiB of
// inflate state, too much to allocate on every L2 hit.
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
		return nil, errCorrupt
	}
	return bytes.Clone(buf.Bytes()), nil
}

// encodeError is the L2 form of a shared fetch failure, kept briefly so
// that waiting replicas answer with it instead of fetching again.
func encodeError(e *upstream.Error) []byte {
	b := []byte{errorMagic, version}
	b = binary.BigEndian.AppendUint16(b, uint16(e.Status))
	b = binary.BigEndian.AppendUint64(b, uint64(max(e.RetryAfter, 0)))
	b = appendString16(b, e.Code)
	return appendString16(b, e.Msg)
}

func decodeError(b []byte) (*upstream.Error, error) {
	r := &reader{b: b, ok: true}
	head := r.take(2)
	if head == nil || head[0] != errorMagic || head[1] != version {
		return nil, errCorrupt
	}
	status := r.u16()
	ra := r.u64()
	code := string(r.take(r.u16()))
	msg := string(r.take(r.u16()))
	if !r.ok || len(r.b) != 0 || ra > 1<<62 {
		return nil, errCorrupt
	}
	return &upstream.Error{Status: status, Code: code, Msg: msg, RetryAfter: time.Duration(ra)}, nil
}
