package logging

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// PrintfConfig configures a Printf.
type PrintfConfig struct {
	// Logger receives the lines; nil discards them. Its attributes (say
	// "component":"redis") are on every line.
	Logger *slog.Logger
	// Level is the level of a line logged in full; the zero value is
	// slog.LevelInfo.
	Level slog.Level
	// Every is the repeat window: after a line, the lines of the same
	// format within Every are logged at debug level only. 0 means one
	// minute.
	Every time.Duration
	// Now is the clock of the repeat window; nil means time.Now.
	Now func() time.Time
	// Prefix is cut from the start of every line (a library's own tag,
	// "redis: ", which the logger's attributes replace); empty cuts
	// nothing.
	Prefix string
}

// Printf turns a library's printf-style log lines (go-redis's
// Printf(ctx, format, args...)) into slog records, so they have the format
// of every other line kproxy writes: one JSON object with log.format json.
//
// A library may repeat one line for as long as a fault lasts (go-redis
// reports every failed dial). Printf logs the first line of each format at
// Level, and the lines of that format in the next Every at debug level
// only; the first line after the window is logged at Level again, with
// "repeated": the number of lines held back since the last one logged at
// Level. Lines are told apart by their format, not their arguments, so a
// changing connection number or address does not defeat the limit; the
// formats are the library's constant strings, so what Printf remembers is
// bounded by the library's source. It is safe for concurrent use.
type Printf struct {
	log    *slog.Logger
	level  slog.Level
	every  time.Duration
	now    func() time.Time
	prefix string

	// mu guards last: per format, when it was last logged at Level and how
	// many lines of it were held back since.
	mu   sync.Mutex
	last map[string]*repeat
}

type repeat struct {
	at   time.Time
	held int
}

// NewPrintf builds a Printf.
func NewPrintf(cfg PrintfConfig) *Printf {
	p := &Printf{log: cfg.Logger, level: cfg.Level, every: cfg.Every, now: cfg.Now, prefix: cfg.Prefix, last: map[string]*repeat{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.every <= 0 {
		p.every = time.Minute
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p
}

// Printf logs one line: format and args as fmt.Sprintf takes them.
func (p *Printf) Printf(ctx context.Context, format string, args ...any) {
	now := p.now()
	p.mu.Lock()
	r := p.last[format]
	full := r == nil || now.Sub(r.at) >= p.every
	held := 0
	switch {
	case r == nil:
		p.last[format] = &repeat{at: now}
	case full:
		held, r.at, r.held = r.held, now, 0
	default:
		r.held++
	}
	p.mu.Unlock()
	level := p.level
	if !full {
		level = slog.LevelDebug
	}
	if !p.log.Enabled(ctx, level) {
		return
	}
	msg := strings.TrimPrefix(fmt.Sprintf(format, args...), p.prefix)
	if held > 0 {
		p.log.Log(ctx, level, msg, "repeated", held)
		return
	}
	p.log.Log(ctx, level, msg)
}
