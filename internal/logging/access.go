package logging

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// AccessHandler is a slog.Handler for the access log: one JSON object a
// line, written with no reflection and no per-record allocation, because it
// runs on every cache hit. It writes the same shape as slog.JSONHandler
// (time, level, msg, then the attributes) for the attribute kinds the
// access log uses; other kinds are written through slog.Value.String. It is
// safe for concurrent use when w is (each record is one Write).
type AccessHandler struct {
	w     io.Writer
	attrs []byte // preformatted attributes from WithAttrs
}

var _ slog.Handler = (*AccessHandler)(nil)

// NewAccessHandler writes JSON lines to w.
func NewAccessHandler(w io.Writer) *AccessHandler { return &AccessHandler{w: w} }

// Enabled reports whether level is logged (info and above).
func (h *AccessHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Handle writes one record as a JSON line.
func (h *AccessHandler) Handle(_ context.Context, r slog.Record) error {
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, `{"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"`...)
	b = append(b, r.Level.String()...)
	b = append(b, `","msg":`...)
	b = appendString(b, r.Message)
	b = append(b, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		b = appendAttr(b, a)
		return true
	})
	b = append(b, '}', '\n')
	_, err := h.w.Write(b)
	*bp = b
	bufPool.Put(bp)
	return err
}

// Request is one access-log line, as proxy writes it for every request.
type Request struct {
	Time                 time.Time
	Method, Route, Cache string
	Status, Attempts     int
	Duration             time.Duration
	// Path is the request path; Query, when not empty, its raw query,
	// logged as path?query in one field.
	Path, Query string
}

// LogRequest writes r as one line, the same line Handle writes for a
// "request" record with these attributes, without building a slog.Record.
func (h *AccessHandler) LogRequest(r Request) {
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, `{"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"request"`...)
	b = append(b, h.attrs...)
	b = append(b, `,"method":`...)
	b = appendString(b, r.Method)
	b = append(b, `,"route":`...)
	b = appendString(b, r.Route)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"cache":`...)
	b = appendString(b, r.Cache)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(r.Duration.Microseconds())/1000, 'f', -1, 64)
	b = append(b, `,"upstream_attempts":`...)
	b = strconv.AppendInt(b, int64(r.Attempts), 10)
	b = append(b, `,"path":"`...)
	b = appendEscaped(b, r.Path)
	if r.Query != "" {
		b = append(b, '?')
		b = appendEscaped(b, r.Query)
	}
	b = append(b, '"', '}', '\n')
	h.w.Write(b)
	*bp = b
	bufPool.Put(bp)
}

// WithAttrs returns a handler that adds attrs to every record.
func (h *AccessHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := &AccessHandler{w: h.w, attrs: append([]byte(nil), h.attrs...)}
	for _, a := range attrs {
		h2.attrs = appendAttr(h2.attrs, a)
	}
	return h2
}

// WithGroup is not used by the access log; groups are flattened.
func (h *AccessHandler) WithGroup(string) slog.Handler { return h }

func appendAttr(b []byte, a slog.Attr) []byte {
	b = append(b, ',')
	b = appendString(b, a.Key)
	b = append(b, ':')
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10)
	case slog.KindFloat64:
		return strconv.AppendFloat(b, v.Float64(), 'f', -1, 64)
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool())
	case slog.KindDuration:
		return strconv.AppendInt(b, int64(v.Duration()), 10)
	case slog.KindString:
		return appendString(b, v.String())
	default:
		return appendString(b, v.String())
	}
}

// plainJSON marks the bytes written into a JSON string as they are.
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// appendEscaped appends s escaped for the inside of a JSON string.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plainJSON[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
