// Package upstream sends requests to Kalshi: a pooled keep-alive transport,
// token-bucket rate limits for reads and writes, the circuit breaker, retries
// with capped jittered backoff for idempotent GETs, and optional signing with
// kproxy's own key.
package upstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/kproxy/kproxy/breaker"
	"github.com/kproxy/kproxy/internal/httperr"
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
	// Signer, if set, signs calls whose Credentials are OwnKey; nil sends
	// them without any client credential.
	Signer *Signer
	// Tier names the account's rate tier (upstream.tier), quoted when
	// kproxy's own budget is spent; "" leaves it out.
	Tier string
	// OnAttempt, if set, is called once for every upstream attempt of
	// every kind (fetches, retries, background refreshes, automatic
	// batches, batch pages, the pass-through), with the call it belongs
	// to, after Call.OnAttempt: the status page counts upstream requests
	// with it. Same rules as Call.OnAttempt; nil means none.
	OnAttempt func(c *Call, status int, err error)
	// Metrics may be nil (nothing recorded).
	Metrics *metrics.Metrics
	// Transport overrides the tuned default transport (tests).
	Transport http.RoundTripper
	// RetryBase and RetryCap shape the backoff: retry n+1 waits a random
	// time in (0, min(RetryCap, RetryBase*2^n)]; 0 means 100ms and 2s;
	// negative is an error.
	RetryBase, RetryCap time.Duration
	// MaxRetryAfter caps an upstream Retry-After that kproxy honours; a
	// larger value is not obeyed (the answer is returned instead); 0 means
	// 5s; negative is an error.
	MaxRetryAfter time.Duration
	// ReadLimiter and WriteLimiter, when set, replace the local buckets
	// built from ReadRate and WriteRate (a budget shared by replicas).
	ReadLimiter, WriteLimiter Limiter
	// Penalty429, when positive, is how long an upstream 429 (without a
	// longer Retry-After) delays every later request of that bucket.
	Penalty429 time.Duration
	// FairShare puts a FairQueue in front of each limiter: while several
	// clients (Call.Client) wait for tokens, they are served in turn.
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
	tier      string
	readRate  float64
	writeRate float64
	onAttempt func(*Call, int, error)
}

var _ http.RoundTripper = (*Client)(nil)

// New builds a Client.
func New(cfg Config) (*Client, error) {
	if cfg.Origin == nil || cfg.Origin.Host == "" {
		return nil, errors.New("upstream: origin required")
	}
	if cfg.RetryBase < 0 || cfg.RetryCap < 0 || cfg.MaxRetryAfter < 0 {
		return nil, errors.New("upstream: retry base, retry cap and max retry-after must not be negative")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	c := &Client{
		origin:    cfg.Origin,
		rt:        cfg.Transport,
		read:      cfg.ReadLimiter,
		write:     cfg.WriteLimiter,
		penalty:   cfg.Penalty429,
		maxWait:   cfg.MaxWait,
		retries:   cfg.MaxRetries,
		breaker:   cfg.Breaker,
		idle:      max(cfg.Timeout, minBodyIdle),
		signer:    cfg.Signer,
		m:         cfg.Metrics,
		base:      cmp.Or(cfg.RetryBase, 100*time.Millisecond),
		cap:       cmp.Or(cfg.RetryCap, 2*time.Second),
		maxRA:     cmp.Or(cfg.MaxRetryAfter, 5*time.Second),
		tier:      cfg.Tier,
		onAttempt: cfg.OnAttempt,
		readRate:  cfg.ReadRate,
		writeRate: cfg.WriteRate,
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

// Signs reports whether calls with OwnKey credentials are signed by kproxy.
func (c *Client) Signs() bool { return c.signer != nil }

// RoundTrip sends req upstream under the client's policy. req.URL must
// already point at the upstream. GET and HEAD requests without a body are
// retried on 429, 502, 503, 504 and connection errors (each
// attempt waits for its own token and passes the breaker); anything else is
// sent exactly once. An open breaker fails the request at once, without
// spending a token. Policy failures (rate limit, open breaker, unreachable
// upstream, timeout) are returned as *Error. The call's options come from
// req's context (WithCall); none means a zero Call.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	return c.do(req, callFrom(req.Context()))
}

// do is RoundTrip with the call's options given.
func (c *Client) do(req *http.Request, call *Call) (*http.Response, error) {
	ctx := req.Context()
	idempotent := (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
		(req.Body == nil || req.Body == http.NoBody)
	lim, fair, bucket := c.write, c.writeFair, "write"
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		lim, fair, bucket = c.read, c.readFair, "read"
	}
	if call.Credentials == OwnKey {
		// Composed calls never carry a signature a client made for
		// another path: kproxy's own key, else no credentials.
		req = req.Clone(ctx)
		stripCredentials(req.Header)
	}
	for attempt := 0; ; attempt++ {
		// An open breaker answers before the limiter: failing fast must
		// neither wait for a token nor spend one.
		if c.breaker != nil && c.breaker.State() == breaker.Open {
			return nil, c.breakerOpen(breaker.ErrOpen)
		}
		if err := c.wait(ctx, lim, fair, call.Client, bucket); err != nil {
			return nil, err
		}
		out := req
		if call.Credentials == OwnKey && c.signer != nil {
			out = req.Clone(ctx)
			if err := c.signer.Sign(out); err != nil {
				return nil, &Error{Status: http.StatusInternalServerError, Code: httperr.CodeSigningFailed, Msg: "signing the upstream request failed", Err: err}
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
		call.Attempts++
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
		c.m.Upstream(call.Route, status, err, time.Since(start))
		if status == http.StatusTooManyRequests {
			c.penalize(lim, resp)
		}
		if err != nil {
			err = c.wrap(ctx, err)
		}
		if call.OnAttempt != nil {
			call.OnAttempt(status, err)
		}
		if c.onAttempt != nil {
			c.onAttempt(call, status, err)
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
		c.m.Retry(reason)
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
	return &Error{Status: http.StatusServiceUnavailable, Code: httperr.CodeBreakerOpen,
		Msg: "upstream " + c.origin.Host + " is failing; circuit breaker open", RetryAfter: c.breaker.RetryAfter(), Err: err}
}

// Get sends a GET for escapedPath?rawQuery with header under call's options
// and returns the response; call.Attempts holds the attempts made when it
// returns. It is RoundTrip for callers that build no request themselves.
// header is sent as is (OwnKey strips a copy): the caller keeps it.
func (c *Client) Get(ctx context.Context, call *Call, escapedPath, rawQuery string, header http.Header) (*http.Response, error) {
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        c.URL(escapedPath, rawQuery),
		Header:     header,
		Host:       c.origin.Host,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
	}
	return c.do(req.WithContext(ctx), call)
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
func (c *Client) wait(ctx context.Context, lim Limiter, fair *FairQueue, client, bucket string) error {
	if fair != nil {
		waited, retry, err := fair.Wait(ctx, client)
		if waited > 0 && err == nil {
			c.m.RateWait(waited)
		}
		switch {
		case errors.Is(err, errLimited):
			return c.rateLimited(bucket, retry)
		case err != nil:
			return c.wrap(ctx, err)
		}
		return nil
	}
	d, ok, cancel := lim.Reserve(ctx, c.maxWait)
	if !ok {
		return c.rateLimited(bucket, d)
	}
	if d == 0 {
		return nil
	}
	c.m.RateWait(d)
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

// rateLimited is kproxy's own 429: the bucket's budget is spent for longer
// than max_wait. The message names kproxy's budget and what to do, so it is
// never taken for Kalshi's own 429 (which passes through unchanged).
func (c *Client) rateLimited(bucket string, retryAfter time.Duration) *Error {
	retryAfter = max(retryAfter, time.Second)
	rate := c.readRate
	if bucket == "write" {
		rate = c.writeRate
	}
	tier := ""
	if c.tier != "" {
		tier = ", upstream.tier " + c.tier
	}
	secs := int64((retryAfter + time.Second - 1) / time.Second)
	msg := fmt.Sprintf("kproxy's %s budget (%s requests/s%s) is spent; retry after %d s, use /batch, or set upstream.tier to your account's tier",
		bucket, strconv.FormatFloat(rate, 'f', -1, 64), tier, secs)
	return &Error{Status: http.StatusTooManyRequests, Code: httperr.CodeRateLimited, Msg: msg, RetryAfter: retryAfter}
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
	if err != nil {
		// A timeout is not retried: the upstream took the whole
		// per-attempt budget, and the client (or the stale copy it could
		// get instead) has waited long enough.
		if errors.Is(err, ErrUnreachable) {
			return "connection", true
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
