// Package upstream sends requests to Kalshi: a pooled keep-alive transport,
// token-bucket rate limits for reads and writes, the circuit breaker, retries
// with capped jittered backoff for idempotent GETs, and optional signing with
// kproxy's own key.
package upstream

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/kproxy/kproxy/breaker"
	"github.com/kproxy/kproxy/internal/metrics"
)

// Config configures a Client.
type Config struct {
	// Origin is the upstream scheme://host; required.
	Origin *url.URL
	// Timeout bounds each attempt until response headers arrive; 0 means 10s.
	Timeout time.Duration
	// MaxRetries is how often an idempotent GET is retried.
	MaxRetries int
	// ReadRate and WriteRate are the token-bucket rates in requests/s; each
	// bucket holds one second of budget. 0 means unlimited.
	ReadRate, WriteRate float64
	// MaxWait is the longest a request waits for a token before failing with
	// a 429 Error.
	MaxWait time.Duration
	// Breaker guards the upstream; nil means none.
	Breaker *breaker.Breaker
	// Signer, if set, signs requests marked with WithOwnKey.
	Signer *Signer
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Transport overrides the tuned default transport (tests).
	Transport http.RoundTripper
	// RetryBase and RetryCap shape the backoff: retry n+1 waits a random
	// time in (0, min(RetryCap, RetryBase*2^n)]; 0 means 100ms and 2s.
	RetryBase, RetryCap time.Duration
	// MaxRetryAfter caps an upstream Retry-After that kproxy honours; a
	// larger value is not obeyed (the answer is returned instead); 0 means 5s.
	MaxRetryAfter time.Duration
	// ReadLimiter and WriteLimiter, when set, replace the local buckets
	// built from ReadRate and WriteRate (a budget shared by replicas).
	ReadLimiter, WriteLimiter Limiter
	// Penalty429, when positive, is how long an upstream 429 (without a
	// longer Retry-After) delays every later request of that bucket.
	Penalty429 time.Duration
	// FairShare puts a FairQueue in front of each limiter: while several
	// clients (WithClient) wait for tokens, they are served in turn.
	// false: first come, first served.
	FairShare bool
	// FairMaxQueue bounds one client's waiting requests per bucket when
	// FairShare is on; more are refused with 429 at once. 0: unbounded.
	FairMaxQueue int
}

// Client is safe for concurrent use. It implements http.RoundTripper so the
// pass-through proxy uses exactly the same policy as the cached fetch path.
type Client struct {
	origin    *url.URL
	rt        http.RoundTripper
	read      Limiter
	write     Limiter
	readFair  *FairQueue // nil: no fair share
	writeFair *FairQueue
	penalty   time.Duration
	maxWait   time.Duration
	retries   int
	breaker   *breaker.Breaker
	idle      time.Duration // longest silence within a body before it counts as failed
	signer    *Signer
	m         *metrics.Metrics
	base, cap time.Duration
	maxRA     time.Duration
}

var _ http.RoundTripper = (*Client)(nil)

// New builds a Client.
func New(cfg Config) (*Client, error) {
	if cfg.Origin == nil || cfg.Origin.Host == "" {
		return nil, errors.New("upstream: origin required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	c := &Client{
		origin:  cfg.Origin,
		rt:      cfg.Transport,
		read:    cfg.ReadLimiter,
		write:   cfg.WriteLimiter,
		penalty: cfg.Penalty429,
		maxWait: cfg.MaxWait,
		retries: cfg.MaxRetries,
		breaker: cfg.Breaker,
		idle:    max(cfg.Timeout, minBodyIdle),
		signer:  cfg.Signer,
		m:       cfg.Metrics,
		base:    cmp(cfg.RetryBase, 100*time.Millisecond),
		cap:     cmp(cfg.RetryCap, 2*time.Second),
		maxRA:   cmp(cfg.MaxRetryAfter, 5*time.Second),
	}
	if c.rt == nil {
		c.rt = NewTransport(cfg.Timeout)
	}
	if c.read == nil {
		c.read = NewLocalLimiter(cfg.ReadRate)
	}
	if c.write == nil {
		c.write = NewLocalLimiter(cfg.WriteRate)
	}
	if cfg.FairShare {
		c.readFair = NewFairQueue(c.read, FairConfig{Rate: cfg.ReadRate, MaxWait: cfg.MaxWait, MaxQueue: cfg.FairMaxQueue})
		c.writeFair = NewFairQueue(c.write, FairConfig{Rate: cfg.WriteRate, MaxWait: cfg.MaxWait, MaxQueue: cfg.FairMaxQueue})
	}
	return c, nil
}

func cmp(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// NewTransport is the pooled keep-alive transport to Kalshi: HTTP/2 over
// TLS, many idle connections to the one host, and timeout as the longest
// wait for response headers.
func NewTransport(timeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil, // kproxy talks to Kalshi directly, never via an env proxy
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
	}
}

// Origin is the upstream scheme://host.
func (c *Client) Origin() *url.URL { return c.origin }

// Breaker is the client's breaker (may be nil).
func (c *Client) Breaker() *breaker.Breaker { return c.breaker }

// URL is the upstream URL for an escaped path and raw query.
func (c *Client) URL(escapedPath, rawQuery string) *url.URL {
	u := *c.origin
	p, err := url.PathUnescape(escapedPath)
	if err != nil {
		p = escapedPath
	}
	u.Path, u.RawPath, u.RawQuery = p, escapedPath, rawQuery
	if u.EscapedPath() != escapedPath {
		u.RawPath = ""
	}
	return &u
}

// trace carries per-request facts between the caller and the client.
type trace struct {
	route     string
	ownKey    bool
	attempts  *int
	client    string
	onAttempt func(status int, err error)
}

type traceKey struct{}

// WithRoute marks ctx with the route template used in metric labels, and
// (when attempts is not nil) where to count upstream attempts.
func WithRoute(ctx context.Context, route string, attempts *int) context.Context {
	t := traceFrom(ctx)
	t.route, t.attempts = route, attempts
	return context.WithValue(ctx, traceKey{}, t)
}

// WithOwnKey marks ctx so requests are signed with kproxy's own key (when
// one is configured) instead of carrying the client's credentials.
func WithOwnKey(ctx context.Context) context.Context {
	t := traceFrom(ctx)
	t.ownKey = true
	return context.WithValue(ctx, traceKey{}, t)
}

// WithAttemptHook marks ctx so that fn is called after every upstream
// attempt, retries included, with the attempt's status (0 on a transport
// error) and error (nil when an answer came). It runs on the goroutine
// making the request, before any retry backoff, and must not block. The
// fetch path uses it to answer a request holding a stale copy as soon as an
// attempt fails.
func WithAttemptHook(ctx context.Context, fn func(status int, err error)) context.Context {
	t := traceFrom(ctx)
	t.onAttempt = fn
	return context.WithValue(ctx, traceKey{}, t)
}

// WithClient marks ctx with the client a request is made for (its
// KALSHI-ACCESS-KEY, else its address): the fair-share queues in front of
// the rate limit serve clients in turn. Empty means an anonymous client,
// which is one queue like any other.
func WithClient(ctx context.Context, client string) context.Context {
	t := traceFrom(ctx)
	t.client = client
	return context.WithValue(ctx, traceKey{}, t)
}

// AttemptHookFrom is the attempt hook ctx carries (WithAttemptHook), or
// nil: a call made on a context of its own for several requests (automatic
// batching) passes their hooks on.
func AttemptHookFrom(ctx context.Context) func(status int, err error) {
	return traceFrom(ctx).onAttempt
}

// ClientFrom is the client ctx is marked with (WithClient).
func ClientFrom(ctx context.Context) string { return traceFrom(ctx).client }

func traceFrom(ctx context.Context) trace {
	t, _ := ctx.Value(traceKey{}).(trace)
	return t
}

// Signs reports whether requests marked WithOwnKey are signed by kproxy.
func (c *Client) Signs() bool { return c.signer != nil }

// RoundTrip sends req upstream under the client's policy. req.URL must
// already point at the upstream. GET and HEAD requests without a body are
// retried on 429, 502, 503, 504 and connection errors (each
// attempt waits for its own token and passes the breaker); anything else is
// sent exactly once. An open breaker fails the request at once, without
// spending a token. Policy failures (rate limit, open breaker, unreachable
// upstream, timeout) are returned as *Error.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	t := traceFrom(ctx)
	idempotent := (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
		(req.Body == nil || req.Body == http.NoBody)
	lim, fair := c.write, c.writeFair
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		lim, fair = c.read, c.readFair
	}
	for attempt := 0; ; attempt++ {
		// An open breaker answers before the limiter: failing fast must
		// neither wait for a token nor spend one.
		if c.breaker != nil && c.breaker.State() == breaker.Open {
			return nil, c.breakerOpen(breaker.ErrOpen)
		}
		if err := c.wait(ctx, lim, fair, t.client); err != nil {
			return nil, err
		}
		out := req
		if t.ownKey && c.signer != nil {
			out = req.Clone(ctx)
			if err := c.signer.Sign(out); err != nil {
				return nil, &Error{Status: http.StatusInternalServerError, Code: "signing_failed", Msg: "signing the upstream request failed", Err: err}
			}
		}
		var done func(breaker.Outcome)
		if c.breaker != nil {
			d, err := c.breaker.Allow()
			if err != nil {
				return nil, c.breakerOpen(err)
			}
			done = d
		}
		if t.attempts != nil {
			*t.attempts++
		}
		start := time.Now()
		resp, err := c.rt.RoundTrip(out)
		gone := ctx.Err() != nil && errors.Is(err, context.Canceled)
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		if done != nil {
			if outcome := breaker.Classify(status, err, gone); outcome == breaker.Success && resp.Body != nil && resp.Body != http.NoBody {
				// Headers alone are no success: a body that breaks,
				// stalls past the deadline or is cut short is a
				// transport failure too. The outcome waits for its end.
				resp.Body = newWatchedBody(resp.Body, ctx, done, resp.ContentLength, c.idle)
			} else {
				done(outcome)
			}
		}
		c.observe(t.route, status, err, time.Since(start))
		if status == http.StatusTooManyRequests {
			c.penalize(lim, resp)
		}
		if err != nil {
			err = c.wrap(ctx, err)
		}
		if t.onAttempt != nil {
			t.onAttempt(status, err)
		}
		if !idempotent || attempt >= c.retries || ctx.Err() != nil {
			return resp, err
		}
		reason, retry := retryable(status, err)
		if !retry {
			return resp, err
		}
		delay := c.backoff(attempt)
		if resp != nil {
			if ra, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
				if ra > c.maxRA {
					// An absurd Retry-After is not obeyed blindly:
					// kproxy never waits longer than maxRA, so the
					// answer goes back as is, at once.
					return resp, nil
				}
				// Retry no sooner than the upstream asked, nor
				// sooner than the backoff.
				delay = max(delay, ra)
			}
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return resp, err
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		if c.m != nil {
			c.m.UpstreamRetries.WithLabelValues(reason).Inc()
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, c.wrap(ctx, ctx.Err())
		case <-timer.C:
		}
	}
}

func (c *Client) breakerOpen(err error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "breaker_open",
		Msg: "upstream " + c.origin.Host + " is failing; circuit breaker open", RetryAfter: c.breaker.RetryAfter(), Err: err}
}

// Get sends a GET for escapedPath?rawQuery with header and returns the
// response. It is RoundTrip for callers that build no request themselves.
func (c *Client) Get(ctx context.Context, escapedPath, rawQuery string, header http.Header) (*http.Response, error) {
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        c.URL(escapedPath, rawQuery),
		Header:     header,
		Host:       c.origin.Host,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
	}
	return c.RoundTrip(req.WithContext(ctx))
}

// penalize slows every later request of lim after an upstream 429: for the
// Retry-After asked (capped), else for the configured penalty.
func (c *Client) penalize(lim Limiter, resp *http.Response) {
	d := c.penalty
	if ra, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
		d = max(d, min(ra, c.maxRA))
	}
	lim.Penalize(d)
}

// wait takes a token for one attempt: through the fair queue when there is
// one (fair), else straight from lim. It fails with a 429 Error when no
// token comes within max_wait.
func (c *Client) wait(ctx context.Context, lim Limiter, fair *FairQueue, client string) error {
	if fair != nil {
		waited, retry, err := fair.Wait(ctx, client)
		if c.m != nil && waited > 0 && err == nil {
			c.m.RateLimitWait.Observe(waited.Seconds())
		}
		switch {
		case errors.Is(err, errLimited):
			return rateLimited(retry)
		case err != nil:
			return c.wrap(ctx, err)
		}
		return nil
	}
	d, ok, cancel := lim.Reserve(ctx, c.maxWait)
	if !ok {
		return rateLimited(d)
	}
	if d == 0 {
		return nil
	}
	if c.m != nil {
		c.m.RateLimitWait.Observe(d.Seconds())
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		cancel()
		return c.wrap(ctx, ctx.Err())
	case <-timer.C:
		return nil
	}
}

func rateLimited(retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Msg: "upstream rate limit reached; retry later", RetryAfter: max(retryAfter, time.Second)}
}

func (c *Client) observe(route string, status int, err error, d time.Duration) {
	if c.m == nil {
		return
	}
	if route == "" {
		route = "other"
	}
	code := "error"
	if err == nil {
		code = strconv.Itoa(status)
	}
	c.m.UpstreamRequests.WithLabelValues(route, code).Inc()
	c.m.UpstreamDuration.WithLabelValues(route).Observe(d.Seconds())
}

// backoff is the full-jitter delay before retry number attempt+1: a random
// duration in (0, min(cap, base*2^attempt)].
func (c *Client) backoff(attempt int) time.Duration {
	ceil := c.cap
	if shift := min(attempt, 30); c.base <= c.cap>>shift {
		ceil = c.base << shift
	}
	return time.Duration(rand.Int64N(int64(ceil)) + 1)
}

// retryable reports whether an attempt's outcome is worth another try, and
// the reason label.
func retryable(status int, err error) (string, bool) {
	var e *Error
	if err != nil {
		if errors.As(err, &e) {
			// A timeout is not retried: the upstream took the whole
			// per-attempt budget, and the client (or the stale copy it
			// could get instead) has waited long enough.
			if e.Code == "upstream_unreachable" {
				return "connection", true
			}
		}
		return "", false
	}
	switch status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return strconv.Itoa(status), true
	}
	return "", false
}

// retryAfter parses a Retry-After header (seconds or an HTTP date).
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > 1<<30 {
			n = 1 << 30
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// minBodyIdle is the shortest silence inside an answer's body that counts
// as the upstream failing (upstream.timeout when that is longer): a body
// is bytes already under way, and a loaded machine may pause them briefly.
const minBodyIdle = 5 * time.Second

// watchedBody reports an answer's breaker outcome when its body ends:
// success at EOF (or once Content-Length bytes are in), failure on a read
// error (unless the caller went away) or when the upstream sends nothing
// for idle (the body is then closed, so a reader blocked on it returns),
// nothing counted when the reader closes it early (a client that hung up,
// a retry discarding the rest).
type watchedBody struct {
	rc    io.ReadCloser
	ctx   context.Context
	done  func(breaker.Outcome)
	left  int64 // bytes still due by Content-Length; -1: unknown
	idle  time.Duration
	timer *time.Timer
	once  sync.Once
}

func newWatchedBody(rc io.ReadCloser, ctx context.Context, done func(breaker.Outcome), length int64, idle time.Duration) *watchedBody {
	b := &watchedBody{rc: rc, ctx: ctx, done: done, left: length, idle: idle}
	b.timer = time.AfterFunc(time.Hour, func() {
		b.report(breaker.Failure)
		rc.Close()
	})
	b.timer.Stop()
	return b
}

// Read counts only the time spent waiting on the upstream: a reader that
// is slow itself (a client reading slowly through the pass-through) is not
// the upstream's silence.
func (b *watchedBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if b.left >= 0 {
		b.left -= int64(n)
	}
	switch {
	case err == io.EOF, err == nil && b.left == 0:
		b.report(breaker.Success)
	case err != nil:
		gone := b.ctx.Err() != nil && errors.Is(b.ctx.Err(), context.Canceled)
		b.report(breaker.Classify(0, err, gone))
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.report(breaker.Ignored)
	return b.rc.Close()
}

func (b *watchedBody) report(o breaker.Outcome) {
	b.once.Do(func() {
		b.timer.Stop()
		b.done(o)
	})
}
