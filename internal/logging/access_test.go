package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"
)

func TestAccessHandlerWritesValidJSONLikeSlog(t *testing.T) {
	var got, want bytes.Buffer
	at := time.Date(2026, 11, 27, 18, 0, 0, 123456789, time.UTC)
	attrs := []slog.Attr{
		slog.String("method", "GET"),
		slog.String("route", "/trade-api/v2/markets/{ticker}"),
		slog.Int("status", 200),
		slog.Float64("duration_ms", 0.042),
		slog.Bool("ok", true),
		slog.String("path", "/trade-api/v2/markets/\"odd\"\\\n\x01é\xff"),
	}
	for _, h := range []slog.Handler{NewAccessHandler(&got), slog.NewJSONHandler(&want, nil)} {
		r := slog.NewRecord(at, slog.LevelInfo, "request", 0)
		r.AddAttrs(attrs...)
		if err := h.Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	var g, w map[string]any
	if err := json.Unmarshal(got.Bytes(), &g); err != nil {
		t.Fatalf("access line %q is not JSON: %v", got.String(), err)
	}
	json.Unmarshal(want.Bytes(), &w)
	for k, wv := range w {
		if gv := g[k]; gv != wv {
			t.Errorf("field %s = %v, want %v (as slog.JSONHandler writes it)", k, gv, wv)
		}
	}
	if len(g) != len(w) {
		t.Errorf("got %d fields, want %d:\n got %s\nwant %s", len(g), len(w), got.String(), want.String())
	}
}

func BenchmarkAccessHandler(b *testing.B) { benchmarkHandler(b, NewAccessHandler(discard{})) }

func BenchmarkSlogJSONHandler(b *testing.B) { benchmarkHandler(b, slog.NewJSONHandler(discard{}, nil)) }

// benchmarkHandler has h write one cache hit's access line per iteration.
func benchmarkHandler(b *testing.B, h slog.Handler) {
	b.ReportAllocs()
	for b.Loop() {
		r := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
		r.AddAttrs(slog.String("method", "GET"), slog.String("route", "/trade-api/v2/series/{series_ticker}"),
			slog.Int("status", 200), slog.String("cache", "HIT"), slog.Float64("duration_ms", 0.021),
			slog.Int("upstream_attempts", 0), slog.String("path", "/trade-api/v2/series/KXEARNINGSMENTIONMETA"))
		h.Handle(context.Background(), r)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestLogRequestMatchesHandle(t *testing.T) {
	var typed, viaSlog bytes.Buffer
	at := time.Date(2026, 11, 27, 18, 0, 0, 5, time.UTC)
	r := Request{Time: at, Method: "GET", Route: "/trade-api/v2/markets/{ticker}", Status: 200, Cache: "HIT",
		Duration: 1234567 * time.Nanosecond, Attempts: 1, Path: "/trade-api/v2/markets/KX\"1"}
	NewAccessHandler(&typed).LogRequest(r)
	rec := slog.NewRecord(at, slog.LevelInfo, "request", 0)
	rec.AddAttrs(slog.String("method", r.Method), slog.String("route", r.Route), slog.Int("status", r.Status),
		slog.String("cache", r.Cache), slog.Float64("duration_ms", 1.234), slog.Int("upstream_attempts", r.Attempts),
		slog.String("path", r.Path))
	NewAccessHandler(&viaSlog).Handle(context.Background(), rec)
	if typed.String() != viaSlog.String() {
		t.Errorf("LogRequest wrote\n%s\nHandle wrote\n%s", typed.String(), viaSlog.String())
	}
	if !json.Valid(typed.Bytes()) {
		t.Errorf("not JSON: %s", typed.String())
	}
}

func TestLogRequestWritesThePathWithItsQuery(t *testing.T) {
	tests := []struct{ name, path, query, want string }{
		{"no query", "/trade-api/v2/markets", "", "/trade-api/v2/markets"},
		{"query", "/trade-api/v2/markets", "series_ticker=KXFOO&status=open", "/trade-api/v2/markets?series_ticker=KXFOO&status=open"},
		{"escaped", "/trade-api/v2/markets", `tickers=A"B\C`, `/trade-api/v2/markets?tickers=A"B\C`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			NewAccessHandler(&b).LogRequest(Request{Time: time.Now(), Method: "GET", Path: tt.path, Query: tt.query})
			var line struct{ Path string }
			if err := json.Unmarshal(b.Bytes(), &line); err != nil {
				t.Fatalf("not JSON: %s (%v)", b.String(), err)
			}
			if line.Path != tt.want {
				t.Errorf("path = %q, want %q", line.Path, tt.want)
			}
		})
	}
}
