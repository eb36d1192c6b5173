// Package fetch is kproxy's one path from a request for public data to an
// answer: cache lookup and freshness, coalescing of identical misses,
// automatic batching of single-market misses, then the upstream client (rate
// limit, breaker, retries). The pass-through proxy and the batch endpoints
// both use it.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Config configures a Fetcher.
type Config struct {
	// Store holds entries; required.
	Store cache.Store
	// Upstream sends the shared fetches; required.
	Upstream *upstream.Client
	// Timeout bounds one shared fetch, retries included; 0 means 30s. No
	// single client's disconnect can cut a shared fetch short.
	Timeout time.Duration
	// NegativeTTL, when positive, stores upstream 404s that long.
	NegativeTTL time.Duration
	// MaxBody bounds a body read into memory; 0 means 64 MiB. A larger
	// answer is a 502.
	MaxBody int64
	// AutoWindow, when positive, merges single-market misses arriving
	// within it into one GET /markets?tickers= call.
	AutoWindow time.Duration
	// Transform, if set, rewrites the body of an upstream 200 of rt before
	// it becomes an entry: once per upstream fetch, never per hit (the
	// legacy-field shim). It returns body itself when it changes nothing.
	Transform func(rt *route.Route, body []byte) []byte
	// OnRequest, if set, is told of every Get, hits included, before the
	// lookup (the live feed's hot set). It runs on the hit path: it must be
	// cheap and must not block.
	OnRequest func(rt *route.Route, key string, now time.Time)
	// StaleWait is the longest a request holding a copy within
	// stale_if_error waits for a slow upstream before it is answered
	// STALE; 0 means it waits for the fetch. A failed attempt answers it
	// at once either way.
	StaleWait time.Duration
	// Shared, if set, is the tier several replicas share (L2): consulted
	// on an L1 miss, and claimed before an upstream fetch so that one
	// replica fetches a key for all.
	Shared Shared
	// Metrics and Logger may be nil.
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Fetcher is safe for concurrent use.
type Fetcher struct {
	store cache.Store
	up    *upstream.Client
	calls calls
	// staleWait bounds the wait of a request holding a stale copy.
	staleWait time.Duration
	timeout   time.Duration
	negTTL    time.Duration
	maxBody   int64
	m         *metrics.Metrics
	log       *slog.Logger
	now       func() time.Time
	auto      *autoBatcher
	xform     func(*route.Route, []byte) []byte
	onReq     func(*route.Route, string, time.Time)
	shared    Shared
	bg        sync.WaitGroup
	mu        sync.Mutex
	// inflight counts the upstream fetches under way per key.
	inflight map[string]int
}

// New builds a Fetcher.
func New(cfg Config) (*Fetcher, error) {
	if cfg.Store == nil || cfg.Upstream == nil {
		return nil, errors.New("fetch: store and upstream are required")
	}
	f := &Fetcher{
		store:     cfg.Store,
		up:        cfg.Upstream,
		timeout:   cfg.Timeout,
		negTTL:    cfg.NegativeTTL,
		maxBody:   cfg.MaxBody,
		m:         cfg.Metrics,
		log:       cfg.Logger,
		now:       cfg.Now,
		xform:     cfg.Transform,
		onReq:     cfg.OnRequest,
		shared:    cfg.Shared,
		staleWait: cfg.StaleWait,
		inflight:  map[string]int{},
	}
	if f.timeout <= 0 {
		f.timeout = 30 * time.Second
	}
	if f.maxBody <= 0 {
		f.maxBody = 64 << 20
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	if cfg.AutoWindow > 0 {
		f.auto = &autoBatcher{f: f, window: cfg.AutoWindow}
	}
	return f, nil
}

// Request asks for one public GET.
type Request struct {
	// Route is the matched cacheable route; required.
	Route *route.Route
	// Key is route.Key of the request.
	Key string
	// EscapedPath and RawQuery are sent upstream as the client wrote them.
	EscapedPath, RawQuery string
	// Header is the client's request header; its end-to-end fields
	// (credentials included) go upstream with a shared fetch this request
	// starts. It is read before Get returns and never kept.
	Header http.Header
	// NoCache forces a fresh upstream fetch (still coalesced).
	NoCache bool
	// OnlyIfCached answers from the cache (fresh, or stale within either
	// stale window) or fails with 504 not_cached; nothing is fetched.
	OnlyIfCached bool
	// Client names the client for fair shares of the upstream budget;
	// empty means its KALSHI-ACCESS-KEY, else the host of RemoteAddr.
	Client string
	// RemoteAddr is the client's address (http.Request.RemoteAddr); its
	// host is appended to X-Forwarded-For on a fetch this request starts
	// (worked out then, not on a hit). Empty means none.
	RemoteAddr string
	// Now is when the request arrived; zero means the Fetcher's clock.
	Now time.Time

	// Set on the copy a fetch runs with (miss): the client named, and the
	// call the fetch runs for.
	client string
	call   *call
}

// Outcome names how a request was answered. The same words feed
// Cache-Status, the access log and metric labels.
type Outcome uint8

// Outcomes of Get.
const (
	// Hit: a fresh stored entry.
	Hit Outcome = iota
	// Revalidating: a stale entry served at once while one background
	// refresh runs (stale-while-revalidate).
	Revalidating
	// StaleOnError: a stale entry served because the upstream failed.
	StaleOnError
	// Stored: this request fetched the answer and stored it.
	Stored
	// Uncacheable: this request fetched an answer that is not stored.
	Uncacheable
	// Collapsed: this request waited on another request's fetch.
	Collapsed
	// Failed: no answer; Result.Err says why.
	Failed
	// SharedHit: a fresh entry found in the shared tier (another replica
	// fetched it); an X-Cache HIT with detail=shared.
	SharedHit
)

var outcomeNames = [...]string{"hit", "stale", "stale-if-error", "stored", "uncacheable", "collapsed", "failed", "shared"}

func (o Outcome) String() string { return outcomeNames[o] }

// XCache is the X-Cache value of the outcome.
func (o Outcome) XCache() string {
	switch o {
	case Hit, SharedHit:
		return "HIT"
	case Revalidating, StaleOnError:
		return "STALE"
	default:
		return "MISS"
	}
}

// Result is the answer to a Request.
type Result struct {
	// Entry is the answer to send; nil when Outcome is Failed.
	Entry   *cache.Entry
	Outcome Outcome
	// Fwd is the RFC 9211 fwd reason of a forwarded request: uri-miss,
	// stale or request (client no-cache).
	Fwd string
	// FwdStatus, on StaleOnError, is the status the client would have got
	// (of the first failed attempt, when the copy was served before the
	// fetch ended); 0 when Detail says why instead.
	FwdStatus int
	// Detail, on a stale answer that no failure caused, says what did:
	// "stale-wait" (the upstream took longer than stale_wait) or
	// "only-if-cached" (the client asked for a cached answer only).
	Detail string
	// Err is set when Outcome is Failed.
	Err *upstream.Error
	// Attempts counts upstream attempts this request's own fetch made.
	Attempts int
}

// flight is what one shared fetch produced.
type flight struct {
	entry      *cache.Entry
	stored     bool
	fromCache  bool
	credential bool // a 401/403 answer to the starter's credentials
	// Shared tier (fetch/shared.go): shared is a stored entry found there,
	// remote an answer another replica fetched; private an answer that is
	// not for other clients; epoch the L1 fence; retention how long a
	// stored entry is kept.
	shared, remote, private bool
	epoch                   uint64
	retention               time.Duration
	err                     *upstream.Error
	attempts                int
}

// Get answers req from the cache or through one shared upstream fetch. It
// returns when the answer is ready or ctx is done.
func (f *Fetcher) Get(ctx context.Context, req *Request) Result {
	now := req.Now
	if now.IsZero() {
		now = f.now()
	}
	if f.onReq != nil {
		// Fields, not req itself: a *Request handed to a function value
		// escapes, and would cost every hit an allocation.
		f.onReq(req.Route, req.Key, now)
	}
	cached, ok := f.store.Get(req.Key)
	sharedHit := false
	if !ok && f.shared != nil {
		cached, ok = f.lookupShared(ctx, req.Key, now)
		sharedHit = ok
	}
	if req.OnlyIfCached {
		return onlyIfCached(cached, ok, sharedHit, now)
	}
	if ok && !req.NoCache {
		if cached.Fresh(now) {
			if sharedHit {
				return Result{Entry: cached, Outcome: SharedHit}
			}
			return Result{Entry: cached, Outcome: Hit}
		}
		if cached.Revalidatable(now) {
			f.refresh(req)
			return Result{Entry: cached, Outcome: Revalidating}
		}
		if cached.ServableOnError(now) && f.fetching(req.Key) {
			// Past stale-while-revalidate, but a fetch of this key is
			// already under way (a slow or hanging upstream): serve the
			// copy now rather than queue behind it, as nginx's
			// proxy_cache_use_stale updating does.
			return Result{Entry: cached, Outcome: Revalidating}
		}
	}
	fwd := "uri-miss"
	switch {
	case req.NoCache:
		fwd = "request"
	case ok:
		fwd = "stale"
	}
	return f.miss(ctx, *req, cached, ok, fwd)
}

// miss waits for (or starts) the shared fetch of req's key. req is a copy:
// the fetch may outlive the caller. A request holding a copy within
// stale_if_error (and not asking for a fresh answer) waits for the fetch
// only until an attempt fails or stale_wait passes, then gets the copy; the
// fetch goes on.
func (f *Fetcher) miss(ctx context.Context, req Request, cached *cache.Entry, ok bool, fwd string) Result {
	hdr := outgoingHeader(req.Header, req.RemoteAddr)
	req.client = clientOf(&req)
	c, led := f.join(req.Key, func(c *call) *flight {
		r := req
		r.call = c
		return f.load(&r, hdr, !req.NoCache)
	})
	var failed <-chan struct{}
	var waited <-chan time.Time
	if ok && !req.NoCache && cached.ServableOnError(f.now()) {
		failed = c.failed
		if f.staleWait > 0 {
			t := time.NewTimer(f.staleWait)
			defer t.Stop()
			waited = t.C
		}
	}
	select {
	case <-c.done:
	case <-failed:
		if !ended(c) {
			return earlyStale(cached, c, led, fwd, c.failStatus, "")
		}
	case <-waited:
		if !ended(c) {
			return earlyStale(cached, c, led, fwd, 0, "stale-wait")
		}
	case <-ctx.Done():
		return Result{Outcome: Failed, Fwd: fwd, Err: &upstream.Error{Status: 499, Code: "client_closed", Msg: "request canceled", Err: ctx.Err()}}
	}
	fl := c.fl
	if !led && fl.credential {
		// A 401/403 answered the starter's credentials, not ours: try
		// again alone, with our own.
		fl = f.load(&req, hdr, false)
		led = true
	}
	res := Result{Fwd: fwd}
	if led {
		res.Attempts = fl.attempts
	} else if f.m != nil {
		f.m.Coalesced.WithLabelValues(req.Route.Pattern).Inc()
	}
	switch {
	case fl.err != nil || fl.entry.Status >= 500 || fl.entry.Status == http.StatusTooManyRequests:
		if ok && cached.ServableOnError(f.now()) {
			res.Entry, res.Outcome = cached, StaleOnError
			if fl.err != nil {
				res.FwdStatus = fl.err.Status
			} else {
				res.FwdStatus = fl.entry.Status
			}
			return res
		}
		if fl.err != nil {
			res.Outcome, res.Err = Failed, fl.err
			return res
		}
	}
	res.Entry = fl.entry
	switch {
	case fl.shared:
		res.Outcome = SharedHit
	case fl.remote:
		res.Outcome = Collapsed
	case fl.fromCache:
		res.Outcome = Hit
	case !led:
		res.Outcome = Collapsed
	case fl.stored:
		res.Outcome = Stored
	default:
		res.Outcome = Uncacheable
	}
	return res
}

// refresh starts one background refresh of req's key unless a fetch of it
// is under way: a burst of stale hits on one key starts one fetch, not one
// per hit (the few that race past the check find its call).
func (f *Fetcher) refresh(req *Request) {
	if f.fetching(req.Key) {
		return
	}
	r := *req
	hdr := outgoingHeader(r.Header, r.RemoteAddr)
	r.client = clientOf(&r)
	f.join(r.Key, func(c *call) *flight {
		rc := r
		rc.call = c
		// Check the cache again: a refresh that finished after this
		// request saw the stale entry must not be repeated.
		return f.load(&rc, hdr, true)
	})
}

// mark counts a fetch of key starting (+1) or ending (-1).
func (f *Fetcher) mark(key string, delta int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.inflight[key] + delta; n > 0 {
		f.inflight[key] = n
	} else {
		delete(f.inflight, key)
	}
}

// fetching reports whether an upstream fetch of key is under way.
func (f *Fetcher) fetching(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inflight[key] > 0
}

// Wait blocks until shared fetches and background refreshes under way have
// finished, including those no client waits for any more. Call it after the
// HTTP server has stopped (shutdown, tests), before closing the store.
func (f *Fetcher) Wait() { f.bg.Wait() }

// load makes one upstream fetch for req and stores a storable answer. It
// runs on a context of its own, bounded by the fetch timeout, so that no
// waiting client can cancel it. When checkCache is set it first looks again
// in the cache: a flight that started just after another one stored the
// key must not fetch it a second time.
func (f *Fetcher) load(req *Request, hdr http.Header, checkCache bool) (fl *flight) {
	epoch, start := f.sharedEpoch(), f.now()
	f.bg.Add(1)
	defer f.bg.Done()
	f.mark(req.Key, 1)
	defer f.mark(req.Key, -1)
	defer func() {
		if p := recover(); p != nil {
			f.log.Error("panic in shared fetch", "key", req.Key, "panic", fmt.Sprint(p))
			fl = &flight{err: &upstream.Error{Status: http.StatusInternalServerError, Code: "internal_error", Msg: "internal error"}}
		}
	}()
	if checkCache {
		if e, ok := f.store.Get(req.Key); ok && e.Fresh(f.now()) {
			return &flight{entry: e, fromCache: true}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	if f.shared != nil {
		sfl, claim, done := f.acquireShared(ctx, req, checkCache, start, epoch)
		if done {
			return sfl
		}
		defer func() { releaseShared(claim, fl) }()
	}
	fl = &flight{epoch: epoch}
	ctx = upstream.WithRoute(ctx, req.Route.Pattern, &fl.attempts)
	ctx = f.watch(ctx, req) // stale_wait and fair shares (fetch/stale.go)
	if f.up.Signs() {
		ctx = upstream.WithOwnKey(ctx)
	}
	var (
		status int
		header http.Header
		body   []byte
		err    *upstream.Error
	)
	if t, ok := f.autoTicker(req); ok {
		status, header, body, err = f.auto.get(ctx, t, hdr)
	} else {
		status, header, body, err = f.get(ctx, req.EscapedPath, req.RawQuery, hdr)
	}
	if err != nil {
		fl.err = err
		return fl
	}
	f.finish(fl, req, status, header, body)
	return fl
}

// get makes one upstream GET and reads the whole answer.
func (f *Fetcher) get(ctx context.Context, escapedPath, rawQuery string, hdr http.Header) (int, http.Header, []byte, *upstream.Error) {
	resp, err := f.up.Get(ctx, escapedPath, rawQuery, hdr.Clone())
	if err != nil {
		return 0, nil, nil, asError(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > f.maxBody {
		// Refused on its word: reading 64 MiB only to throw it away would
		// outlast the fetch.
		return 0, nil, nil, &upstream.Error{Status: http.StatusBadGateway, Code: "upstream_too_large", Msg: "upstream answer too large"}
	}
	var body []byte
	if n := resp.ContentLength; n >= 0 && n <= f.maxBody {
		// Sized once from Content-Length: no growing, no copy to store it.
		body = make([]byte, n)
		_, err = io.ReadFull(resp.Body, body)
	} else {
		body, err = io.ReadAll(io.LimitReader(resp.Body, f.maxBody+1))
	}
	if err != nil {
		return 0, nil, nil, &upstream.Error{Status: http.StatusBadGateway, Code: "upstream_read_failed", Msg: "reading the upstream answer failed", Err: err}
	}
	if int64(len(body)) > f.maxBody {
		return 0, nil, nil, &upstream.Error{Status: http.StatusBadGateway, Code: "upstream_too_large", Msg: "upstream answer too large"}
	}
	return resp.StatusCode, resp.Header, body, nil
}

// finish turns an upstream answer into an entry and stores it if allowed.
func (f *Fetcher) finish(fl *flight, req *Request, status int, header http.Header, body []byte) {
	w, retention, storable := f.policy(req.Route, status, header)
	if status == http.StatusOK && f.xform != nil {
		body = f.xform(req.Route, body)
	}
	fl.entry = cache.NewEntry(req.Key, status, header, body, f.now(), w, storable)
	fl.credential = (status == http.StatusUnauthorized || status == http.StatusForbidden) && !f.up.Signs()
	_, _, public := f.policy(req.Route, http.StatusOK, header)
	fl.private = !public
	if storable {
		f.storeFenced(fl, retention)
		fl.stored = true
	}
}

// policy decides whether an answer may be stored, and for how long.
func (f *Fetcher) policy(rt *route.Route, status int, header http.Header) (cache.Windows, time.Duration, bool) {
	if len(header["Set-Cookie"]) > 0 {
		return cache.Windows{}, 0, false
	}
	for _, v := range header["Cache-Control"] {
		v = strings.ToLower(v)
		if strings.Contains(v, "private") || strings.Contains(v, "no-store") {
			return cache.Windows{}, 0, false
		}
	}
	switch {
	case status == http.StatusOK:
		return cache.Windows{TTL: rt.TTL, StaleWhileRevalidate: rt.StaleWhileRevalidate, StaleIfError: rt.StaleIfError}, rt.Retention(), true
	case status == http.StatusNotFound && f.negTTL > 0:
		return cache.Windows{TTL: f.negTTL}, f.negTTL, true
	}
	return cache.Windows{}, 0, false
}

func asError(err error) *upstream.Error {
	var e *upstream.Error
	if errors.As(err, &e) {
		return e
	}
	return &upstream.Error{Status: http.StatusBadGateway, Code: "upstream_error", Msg: "upstream request failed", Err: err}
}

// dropped are request headers a shared fetch never sends upstream: hop-by-hop
// ones (RFC 9110 section 7.6.1), and those that would make the upstream
// answer differ from the one entry kproxy stores for every client
// (conditionals, encodings, the client's own cache directives).
var dropped = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Accept-Encoding": true, "If-None-Match": true, "If-Modified-Since": true, "If-Match": true,
	"If-Unmodified-Since": true, "If-Range": true, "Range": true, "Cache-Control": true, "Pragma": true,
	"Content-Length": true, "Cookie": true,
}

// outgoingHeader is the header a shared fetch sends: the client's
// end-to-end headers, credentials byte for byte.
func outgoingHeader(in http.Header, remoteAddr string) http.Header {
	out := make(http.Header, len(in)+1)
	for k, vs := range in {
		if !dropped[k] {
			out[k] = append([]string(nil), vs...)
		}
	}
	if remoteAddr != "" {
		clientIP := hostOf(remoteAddr)
		if prior := out["X-Forwarded-For"]; len(prior) > 0 {
			clientIP = strings.Join(prior, ", ") + ", " + clientIP
		}
		out["X-Forwarded-For"] = []string{clientIP}
	}
	return out
}

// NoCache reports whether a request's headers ask for a fresh answer
// (ParseDirectives: no-cache, max-age=0, Pragma: no-cache).
func NoCache(h http.Header) bool { return ParseDirectives(h).NoCache }

// ClientIP is the address of a request's peer, as X-Forwarded-For records it.
func ClientIP(r *http.Request) string { return hostOf(r.RemoteAddr) }

func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}
