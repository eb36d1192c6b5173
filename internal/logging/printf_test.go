package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// line is the part of a JSON log line these tests read.
type line struct {
	Level     string
	Msg       string
	Component string
	Repeated  int
}

func parseLines(t *testing.T, b []byte) []line {
	t.Helper()
	var out []line
	for _, s := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if s == "" {
			continue
		}
		var l line
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("line %q is not JSON: %v", s, err)
		}
		out = append(out, l)
	}
	return out
}

func TestPrintfLogsRepeatsOncePerWindow(t *testing.T) {
	const dial = "redis: connection pool: failed to dial after %d attempts: %v"
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	type call struct {
		at     time.Duration // after t0
		format string
	}
	tests := []struct {
		name  string
		calls []call
		want  []line
	}{
		{"first line in full", []call{{0, dial}},
			[]line{{Level: "WARN", Msg: "connection pool: failed to dial after 1 attempts: refused"}}},
		{"repeats within the window at debug", []call{{0, dial}, {time.Second, dial}, {59 * time.Second, dial}},
			[]line{{Level: "WARN"}, {Level: "DEBUG"}, {Level: "DEBUG"}}},
		{"after the window in full, with the count held back", []call{{0, dial}, {time.Second, dial}, {2 * time.Second, dial}, {61 * time.Second, dial}, {62 * time.Second, dial}},
			[]line{{Level: "WARN"}, {Level: "DEBUG"}, {Level: "DEBUG"}, {Level: "WARN", Repeated: 2}, {Level: "DEBUG"}}},
		{"formats limited apart", []call{{0, dial}, {time.Second, "redis: pubsub: %v %d"}, {2 * time.Second, dial}},
			[]line{{Level: "WARN"}, {Level: "WARN", Msg: "pubsub: refused 1"}, {Level: "DEBUG"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			var now time.Time
			log := New(&buf, "debug", "json").With("component", "redis")
			p := NewPrintf(PrintfConfig{Logger: log, Level: slog.LevelWarn, Now: func() time.Time { return now }, Prefix: "redis: "})
			for _, c := range tt.calls {
				now = t0.Add(c.at)
				if c.format == dial {
					p.Printf(context.Background(), c.format, 1, "refused")
				} else {
					p.Printf(context.Background(), c.format, "refused", 1)
				}
			}
			got := parseLines(t, buf.Bytes())
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(got), len(tt.want), buf.String())
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Level != w.Level || g.Repeated != w.Repeated || (w.Msg != "" && g.Msg != w.Msg) || g.Component != "redis" {
					t.Errorf("line %d = %+v, want %+v with component redis", i, g, w)
				}
			}
		})
	}
}

func TestPrintfBelowTheLoggerLevelWritesNothing(t *testing.T) {
	var buf bytes.Buffer
	p := NewPrintf(PrintfConfig{Logger: New(&buf, "warn", "json"), Level: slog.LevelWarn})
	for range 5 {
		p.Printf(context.Background(), "redis: dial: %v", "refused")
	}
	if got := len(parseLines(t, buf.Bytes())); got != 1 {
		t.Errorf("at log level warn, 5 repeats of a line wrote %d lines, want 1:\n%s", got, buf.String())
	}
}
