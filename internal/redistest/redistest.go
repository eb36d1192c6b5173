// Package redistest runs a real redis-server for tests: on a free
// 127.0.0.1 port, as a child process of its own, without persistence, and
// with the faults tests need (stop, kill, pause, restart on the same port).
// A missing redis-server fails the test: it is never skipped.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is one redis-server process. Methods are safe for concurrent use.
type Server struct {
	t    testing.TB
	bin  string
	port int

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start runs redis-server on a free loopback port and stops it when the
// test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server not found (apt-get install redis-server): %v", err)
	}
	s := &Server{t: t, bin: bin, port: freePort(t)}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// ClosedURL is the redis:// URL of a loopback port nothing listens on: a
// Redis that is down from the start (dials are refused at once).
func ClosedURL(t testing.TB) string {
	t.Helper()
	return "redis://127.0.0.1:" + strconv.Itoa(freePort(t))
}

// freePort is a loopback port free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// readyLine is what redis-server logs (at notice level) once it accepts
// connections.
const readyLine = "Ready to accept connections"

func (s *Server) start() {
	s.t.Helper()
	out := &output{ready: make(chan struct{})}
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "notice",
		"--dir", s.t.TempDir())
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redistest: starting redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	select {
	case <-out.ready:
	case <-time.After(10 * time.Second):
		s.t.Fatalf("redistest: redis-server on %s did not accept connections within 10s; output:\n%s", s.Addr(), out)
	}
	if err := s.ping(); err != nil {
		s.t.Fatalf("redistest: redis-server on %s: %v; output:\n%s", s.Addr(), err, out)
	}
}

// output keeps redis-server's log and closes ready at readyLine.
type output struct {
	ready chan struct{}

	// mu guards log and seen (ready is closed).
	mu   sync.Mutex
	log  strings.Builder
	seen bool
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.log.Write(p)
	if !o.seen && strings.Contains(o.log.String(), readyLine) {
		o.seen = true
		close(o.ready)
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.log.String()
}

// ping sends PING over a raw connection.
func (s *Server) ping() error {
	line, err := s.do(200*time.Millisecond, 500*time.Millisecond, "PING")
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("redistest: PING answered %q", line)
	}
	return nil
}

// Do sends one command over a raw connection and returns the first line
// of the reply (tests that need no client).
func (s *Server) Do(args ...string) (string, error) {
	return s.do(time.Second, 2*time.Second, args...)
}

// do sends one command, dialing within dial and done within total.
func (s *Server) do(dial, total time.Duration, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", s.Addr(), dial)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(total))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

// PID is the server's process id (0 when not running).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Signal(sig)
	}
}

// Pause stops the process (SIGSTOP): connections stay open, nothing
// answers. Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Stop ends the server gracefully (SIGTERM) and waits for it.
func (s *Server) Stop() { s.end(syscall.SIGTERM) }

// Kill ends the server at once (SIGKILL) and waits for it. Safe to call
// when it is not running.
func (s *Server) Kill() { s.end(syscall.SIGKILL) }

func (s *Server) end(sig syscall.Signal) {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT) // a paused process must run to die of SIGTERM
	cmd.Process.Signal(sig)
	cmd.Wait()
}

// Restart starts the server again on the same port, empty (nothing was
// persisted), after Stop or Kill.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}
