package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/clock"
	"github.com/kproxy/kproxy/internal/logging"
	"github.com/kproxy/kproxy/internal/redistest"
)

// lineLog is a log writer that keeps every line and hands go-redis's lines
// (component "redis") to a channel, the tests' barrier.
type lineLog struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	redis chan map[string]any
}

func newLineLog() *lineLog { return &lineLog{redis: make(chan map[string]any, 64)} }

// Write takes one line: slog's handlers write each record in one call.
func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	var m map[string]any
	if json.Unmarshal(p, &m) == nil && m["component"] == "redis" {
		select {
		case l.redis <- m:
		default:
		}
	}
	return len(p), nil
}

// next waits for go-redis's next line.
func (l *lineLog) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m := <-l.redis:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no go-redis line within 10s; the log so far:\n%s", l.String())
		return nil
	}
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// newDownCluster is a Cluster whose Redis is a closed port, logging JSON
// at debug level to l. Its health probe runs only once, in New: the test
// drives every later dial itself.
func newDownCluster(t *testing.T, url string, l *lineLog, now func() time.Time) *Cluster {
	t.Helper()
	c, err := New(Config{URL: url, L1: newL1(t), Timeout: time.Second,
		HealthInterval: time.Hour, Logger: logging.New(l, "debug", "json"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// dial makes c's client dial once (and fail: nothing listens).
func dial(t *testing.T, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Client().Ping(ctx).Err(); err == nil {
		t.Fatal("Ping answered on a closed port")
	}
}

func TestGoRedisLinesAreJSONAndRateLimited(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC))
	l := newLineLog()
	c := newDownCluster(t, redistest.ClosedURL(t), l, clk.Now)
	if c.Up() {
		t.Fatal("up with nothing listening")
	}
	// New's probe dialed and failed: go-redis's first line, in full.
	if m := l.next(t); m["level"] != "WARN" || !strings.Contains(m["msg"].(string), "dial") {
		t.Errorf("first go-redis line = %v, want a WARN about the failed dial", m)
	}
	// go-redis repeats it on every dial: within the minute, at debug only.
	for i := range 3 {
		dial(t, c)
		if m := l.next(t); m["level"] != "DEBUG" {
			t.Errorf("repeat %d = %v, want DEBUG", i, m)
		}
	}
	// After the minute, in full again, with the count held back.
	clk.Advance(time.Minute)
	dial(t, c)
	if m := l.next(t); m["level"] != "WARN" || m["repeated"] != 3.0 {
		t.Errorf("line after the window = %v, want WARN with repeated 3", m)
	}
	// Requests while Redis is down log kproxy's own lines.
	c.Store().Purge("/trade-api/v2/markets")
	c.Store().Get("/trade-api/v2/markets/X")
	c.Close()
	c.Close()

	out := l.String()
	var warns, redisDown int
	for _, s := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Errorf("log line is not one JSON object: %q (%v)", s, err)
			continue
		}
		if m["component"] == "redis" && m["level"] == "WARN" {
			warns++
		}
		if strings.HasPrefix(m["msg"].(string), "redis down") {
			redisDown++
		}
	}
	if warns != 2 {
		t.Errorf("%d go-redis lines at WARN, want 2 (one per window):\n%s", warns, out)
	}
	if redisDown != 1 {
		t.Errorf("%d \"redis down\" lines, want 1:\n%s", redisDown, out)
	}
}

func TestGoRedisLinesGoToTheNewestOpenCluster(t *testing.T) {
	url := redistest.ClosedURL(t)
	la, lb := newLineLog(), newLineLog()
	a := newDownCluster(t, url, la, nil)
	la.next(t) // a's probe in New
	b := newDownCluster(t, url, lb, nil)
	lb.next(t) // b's probe in New

	// go-redis has one logger for the process: a's client's lines go to
	// the newest open Cluster's logger.
	dial(t, a)
	lb.next(t)
	b.Close()
	dial(t, a)
	la.next(t)
	select {
	case m := <-lb.redis:
		t.Errorf("a closed Cluster's logger received %v", m)
	default:
	}
	if len(la.redis) != 0 || len(lb.redis) != 0 {
		t.Errorf("stray go-redis lines: a %d, b %d", len(la.redis), len(lb.redis))
	}
}
