package cluster

import (
	"context"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/kproxy/kproxy/internal/logging"
)

// go-redis writes its own log lines (a failed dial, a broken pub/sub
// connection) through one logger for the whole process, redis.SetLogger,
// not one per client; its default prints plain text to stderr. So that
// every line a replica writes has its log format, each Cluster routes
// those lines to its Config.Logger, at warn level, with
// "component":"redis", and at most one line per format a minute (the rest
// at debug level; logging.Printf): go-redis repeats a failed dial on every
// attempt while Redis is down, and the Cluster already logs each change of
// Redis's state once.
//
// Because that logger is process-wide, so is redisLogs, the one piece of
// package-level state: New pushes the Cluster's logger on it and Close
// removes it. go-redis's lines go to the newest open Cluster's logger (in
// kproxy there is one), never to a closed one's, and nowhere once every
// Cluster is closed (no client of theirs is left to log). Tests that build
// several Clusters, at once or one after another, are safe: a test's
// logger receives nothing after its Cluster is closed.
var redisLogs redisLogStack

// redisLogStack is installed as go-redis's logger and forwards each line
// to the logger on top.
type redisLogStack struct {
	// mu guards logs, the loggers of the open Clusters, oldest first.
	// Printf holds it (shared) while it logs, so once remove returns the
	// removed logger receives nothing more.
	mu   sync.RWMutex
	logs []*logging.Printf
}

// push makes p the logger of go-redis's lines until removed. It installs
// the stack as go-redis's logger each time, in case something else
// replaced it.
func (s *redisLogStack) push(p *logging.Printf) {
	s.mu.Lock()
	s.logs = append(s.logs, p)
	s.mu.Unlock()
	redis.SetLogger(s)
}

// remove takes p off the stack, wherever it is.
func (s *redisLogStack) remove(p *logging.Printf) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.logs, p); i >= 0 {
		s.logs = slices.Delete(s.logs, i, i+1)
	}
}

// Printf implements go-redis's logger interface.
func (s *redisLogStack) Printf(ctx context.Context, format string, args ...any) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if n := len(s.logs); n > 0 {
		s.logs[n-1].Printf(ctx, format, args...)
	}
}
