package redistest

import (
	"strings"
	"testing"
)

func TestServerLifecycle(t *testing.T) {
	s := Start(t)
	if s.PID() == 0 {
		t.Fatal("no pid")
	}
	if got, err := s.Do("SET", "k", "v"); err != nil || !strings.HasPrefix(got, "+OK") {
		t.Fatalf("SET = %q, %v", got, err)
	}
	s.Kill()
	if err := s.ping(); err == nil {
		t.Fatal("killed server still answers")
	}
	s.Restart()
	if got, err := s.Do("GET", "k"); err != nil || !strings.HasPrefix(got, "$-1") {
		t.Fatalf("after restart GET = %q, %v; want an empty server", got, err)
	}
	s.Pause()
	if err := s.ping(); err == nil {
		t.Fatal("paused server answers")
	}
	s.Resume()
	if err := s.ping(); err != nil {
		t.Fatalf("resumed server: %v", err)
	}
}
