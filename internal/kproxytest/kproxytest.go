// Package kproxytest runs a whole kproxy for end-to-end tests, the way
// net/http/httptest runs a server: New builds the App in front of a fake
// Kalshi (kalshitest), on a fake clock, serves it on 127.0.0.1, and stops
// everything when the test ends.
//
// Tests move time with Proxy.Clock.Advance instead of sleeping past TTLs,
// hold the upstream with Fake.Stall and wait for requests to reach kproxy
// with Proxy.AwaitInFlight, and read the logs from Proxy.Logs.
package kproxytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/clock"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/route"
)

// start is where every fake clock of this package starts: the real
// time of the process start, so times kproxy writes (Date, Age) stay
// plausible.
var start = time.Now().Truncate(time.Second)

// Proxy is a running kproxy in front of a fake Kalshi.
type Proxy struct {
	// URL is kproxy's base URL, http://127.0.0.1:port.
	URL string
	// Addr is kproxy's listening address, for raw connections.
	Addr string
	// App is the kproxy under test.
	App *app.App
	// Config is the configuration App was built from.
	Config *config.Config
	// Fake is the fake Kalshi, and UpstreamURL where it is served.
	Fake        *kalshitest.Server
	UpstreamURL string
	// Clock decides freshness; nil with WithRealClock.
	Clock *clock.Fake
	// Logs holds what kproxy logged.
	Logs *Buffer

	t        testing.TB
	inFlight atomic.Int64
	entered  atomic.Int64
	changed  chan struct{} // closed and replaced when a request enters or leaves
	mu       sync.Mutex    // guards changed
	stop     func()
	stopOnce sync.Once
	// With WithServe: drain cancels Serve's context; served is closed
	// when Serve has returned, and serveErr then holds what it returned.
	drain    context.CancelFunc
	served   chan struct{}
	serveErr chan error
}

type settings struct {
	mutate      []func(*config.Config)
	opts        []func(*app.Options)
	fake        *kalshitest.Server
	upstreamURL string
	clock       *clock.Fake
	realClock   bool
	signed      bool
	tune        func(*http.Server)
	serve       bool
}

// Option adjusts what New builds.
type Option func(*settings)

// WithConfig changes the configuration after the test defaults are set
// (generous rates, 2s upstream timeout, no batch window, no drain delay).
// Options apply in order.
func WithConfig(mutate func(*config.Config)) Option {
	return func(s *settings) { s.mutate = append(s.mutate, mutate) }
}

// WithAppOptions changes app.Options after the test defaults (1ms..5ms
// retry backoff, the logs, the fake clock).
func WithAppOptions(f func(*app.Options)) Option {
	return func(s *settings) { s.opts = append(s.opts, f) }
}

// WithFake uses fake instead of a new fake Kalshi (replicas share one).
func WithFake(fake *kalshitest.Server) Option {
	return func(s *settings) { s.fake = fake }
}

// WithUpstreamURL points kproxy at url instead of serving the fake
// itself: the test serves it (behind a switch, a proxy...).
func WithUpstreamURL(url string) Option {
	return func(s *settings) { s.upstreamURL = url }
}

// WithClock uses c (replicas share one) instead of a new fake clock.
func WithClock(c *clock.Fake) Option {
	return func(s *settings) { s.clock = c }
}

// WithRealClock runs kproxy on the wall clock, for tests where wall-clock
// behaviour is what is tested (soak, slowloris).
func WithRealClock() Option {
	return func(s *settings) { s.realClock = true }
}

// WithRedis links kproxy to the Redis at url (redistest).
func WithRedis(url string) Option {
	return WithConfig(func(c *config.Config) {
		c.Redis.URL = url
		// Generous for a loaded -race run; production default is 100ms.
		c.Redis.Timeout = config.Duration(500 * time.Millisecond)
	})
}

// WithSigning gives kproxy its own API key (kalshitest.TestKey) and makes
// the fake verify every signature.
func WithSigning() Option {
	return func(s *settings) { s.signed = true }
}

// WithLive turns the push feed on (implies WithSigning): the fake's
// WebSocket heartbeat is 50ms and the access log is off.
func WithLive() Option {
	return func(s *settings) {
		s.signed = true
		s.mutate = append(s.mutate, func(c *config.Config) {
			c.Live.Enabled = true
			c.Log.Access = false
		})
	}
}

// WithServer tunes the http.Server kproxy is served by (limits tests).
func WithServer(tune func(*http.Server)) Option {
	return func(s *settings) { s.tune = tune }
}

// WithServe serves kproxy with app.Serve, as main does, so a test can
// drain it (Proxy.Drain) the way SIGTERM does. The handler is then not
// wrapped: InFlight and AwaitInFlight are not available.
func WithServe() Option {
	return func(s *settings) { s.serve = true }
}

// New starts a fake Kalshi and a kproxy in front of it, on 127.0.0.1, and
// registers their shutdown with t.Cleanup: the server stops, then the App
// closes, then the fake stops (reverse build order). On failure the logs
// are written to the test output.
func New(t testing.TB, options ...Option) *Proxy {
	t.Helper()
	var s settings
	for _, o := range options {
		o(&s)
	}
	p := &Proxy{t: t, Fake: s.fake, Logs: &Buffer{}, changed: make(chan struct{})}
	if p.Fake == nil {
		p.Fake = kalshitest.New()
	}
	if s.signed {
		p.Fake.SetPublicKey(&kalshitest.TestKey(t).PublicKey)
		p.Fake.SetWSHeartbeat(50 * time.Millisecond)
	}
	p.UpstreamURL = s.upstreamURL
	if p.UpstreamURL == "" {
		up := httptest.NewServer(p.Fake)
		t.Cleanup(up.Close)
		p.UpstreamURL = up.URL
	}
	if !s.realClock {
		p.Clock = s.clock
		if p.Clock == nil {
			p.Clock = clock.NewFake(start)
		}
	}

	cfg := config.Default()
	cfg.Cache.Disk.Path = "" // tests never write the real ~/.cache/kproxy; WithConfig turns it on
	cfg.Upstream.URL = p.UpstreamURL
	rate := 10000.0
	cfg.Upstream.ReadRate, cfg.Upstream.WriteRate = &rate, &rate
	cfg.Upstream.Timeout = config.Duration(2 * time.Second)
	cfg.Batch.AutoWindow = 0
	cfg.DrainDelay = 0
	if s.signed {
		cfg.Upstream.APIKeyID = "kproxy-test-key"
		cfg.Upstream.PrivateKeyFile = kalshitest.WriteKeyFile(t, kalshitest.TestKey(t))
	}
	for _, m := range s.mutate {
		m(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("kproxytest: config: %v", err)
	}
	p.Config = cfg

	var logs io.Writer = p.Logs
	if _, bench := t.(*testing.B); bench {
		logs = io.Discard // benchmarks measure kproxy, not a growing buffer
	}
	opts := app.Options{LogOutput: logs, RetryBase: time.Millisecond, RetryCap: 5 * time.Millisecond}
	if p.Clock != nil {
		opts.Clock = p.Clock
	}
	for _, f := range s.opts {
		f(&opts)
	}
	a, err := app.New(cfg, opts)
	if err != nil {
		t.Fatalf("kproxytest: app.New: %v", err)
	}
	p.App = a

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		a.Close()
		t.Fatalf("kproxytest: %v", err)
	}
	p.Addr = ln.Addr().String()
	p.URL = "http://" + p.Addr
	if s.serve {
		p.serveApp(ln)
	} else {
		p.serveHandler(ln, s.tune)
	}
	t.Cleanup(func() {
		p.Close()
		if t.Failed() && logs == p.Logs {
			t.Logf("kproxy logs:\n%s", p.Logs.String())
		}
	})
	return p
}

// serveApp serves with app.Serve until Drain.
func (p *Proxy) serveApp(ln net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	p.drain, p.served, p.serveErr = cancel, make(chan struct{}), make(chan error, 1)
	go func() {
		p.serveErr <- p.App.Serve(ctx, ln)
		close(p.served)
	}()
	p.stop = func() {
		cancel()
		<-p.served
		p.App.Close()
	}
}

// Drain starts kproxy's drain, what SIGTERM does in main (WithServe
// only); Served delivers what app.Serve returned once it has.
func (p *Proxy) Drain() {
	p.t.Helper()
	if p.drain == nil {
		p.t.Fatal("kproxytest: Drain needs WithServe")
	}
	p.drain()
}

// Served delivers, once, what app.Serve returned (WithServe only).
func (p *Proxy) Served() <-chan error { return p.serveErr }

// serveHandler serves kproxy's http.Server (HTTPServer, tuned by tune)
// with its handler counting the requests in flight.
func (p *Proxy) serveHandler(ln net.Listener, tune func(*http.Server)) {
	t, a := p.t, p.App
	hs := a.Server.HTTPServer(p.Addr)
	hs.Handler = p.track(hs.Handler)
	if tune != nil {
		tune(hs)
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	p.stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if hs.Shutdown(ctx) != nil {
			hs.Close()
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("kproxytest: serving: %v", err)
		}
		a.Close()
	}
}

// Close stops serving, then closes the App (waiting for its shared
// fetches). It is idempotent; New registers it with t.Cleanup, so tests
// call it only to stop a kproxy early (a replica going down).
func (p *Proxy) Close() { p.stopOnce.Do(p.stop) }

// track counts the requests kproxy is handling.
func (p *Proxy) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.entered.Add(1)
		p.inFlight.Add(1)
		p.notify()
		defer func() {
			p.inFlight.Add(-1)
			p.notify()
		}()
		next.ServeHTTP(w, r)
	})
}

func (p *Proxy) notify() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// InFlight is the number of requests kproxy is handling now.
func (p *Proxy) InFlight() int { return int(p.inFlight.Load()) }

// Entered is the number of requests kproxy has started handling.
func (p *Proxy) Entered() int { return int(p.entered.Load()) }

// AwaitInFlight blocks until kproxy is handling at least n requests at
// once, and fails the test after 10s. With the upstream stalled
// (Fake.Stall) it is the barrier "the followers have reached kproxy":
// each of them is then past the handler's entry, on its way into the
// flight of the stalled leader.
func (p *Proxy) AwaitInFlight(n int) {
	p.t.Helper()
	if p.served != nil {
		p.t.Fatal("kproxytest: AwaitInFlight is not available WithServe")
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if p.InFlight() >= n {
			return
		}
		select {
		case <-ch:
		case <-timeout.C:
			p.t.Fatalf("kproxytest: %d requests in flight after 10s, want %d", p.InFlight(), n)
		}
	}
}

// AwaitCollapsed waits until n requests for path (with its query) are
// waiting on one fetch of its cache key: the strict barrier "the followers
// have joined the stalled leader's flight" (AwaitInFlight only knows they
// entered kproxy). It polls the fetch path's count, bounded by 10s.
func (p *Proxy) AwaitCollapsed(path string, n int) {
	p.t.Helper()
	pth, query, _ := strings.Cut(path, "?")
	key := route.Key(pth, query)
	Eventually(p.t, 10*time.Second, fmt.Sprintf("%d requests waiting on the fetch of %s", n, key), func() bool {
		return p.App.Fetcher.Waiting(key) >= n
	})
}

// Get sends a GET for path with header pairs ("Name", "value", ...); see Do.
func (p *Proxy) Get(path string, header ...string) (*http.Response, []byte) {
	p.t.Helper()
	return p.Do(http.MethodGet, path, nil, header...)
}

// Do sends a request to kproxy and returns the response with its body
// read (and closed); it fails the test when the exchange fails. Without
// an Accept-Encoding in header it asks for identity: tests see exactly
// what kproxy sends.
func (p *Proxy) Do(method, path string, body []byte, header ...string) (*http.Response, []byte) {
	p.t.Helper()
	a := Send(method, p.URL+path, body, header...)
	if a.Err != nil {
		p.t.Fatalf("%s %s: %v", method, path, a.Err)
	}
	return a.Response, a.Body
}

// Answer is one exchange as Send saw it.
type Answer struct {
	// Response is nil when Err is set before the headers came; its Body
	// is already read into Body and closed.
	Response *http.Response
	Body     []byte
	// Took is from sending to the end of the body.
	Took time.Duration
	Err  error
}

// Send sends a request to url with header pairs and reads the whole
// answer. It never fails the test, so goroutines may call it. Without an
// Accept-Encoding in header it asks for identity.
func Send(method, url string, body []byte, header ...string) Answer {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return Answer{Err: err}
	}
	req.Header.Set("Accept-Encoding", "identity")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	start := time.Now()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return Answer{Err: err, Took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		err = fmt.Errorf("reading body: %w", err)
	}
	return Answer{Response: resp, Body: b, Took: time.Since(start), Err: err}
}

// Buffer is a bytes.Buffer safe for concurrent writers (a logger, a child
// process) and readers (the test).
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Eventually polls cond until it holds, failing the test after limit. Use
// it only where no barrier exists for an asynchronous effect (a
// reconnection, a background sweep); prefer a channel, Fake.Stall,
// AwaitInFlight or live.Feed.Wait.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		<-tick.C
	}
}

// ClosedAddr is a 127.0.0.1 host:port that nothing listened on a moment
// ago: a dial to it is refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
