// Package fetch is kproxy's one path from a request for public data to an
// answer: cache lookup and freshness, coalescing of identical misses,
// automatic batching of single-market misses, then the upstream client (rate
// limit, breaker, retries). The pass-through proxy and the batch endpoints
// both use it.
package fetch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/header"
	"github.com/kproxy/kproxy/internal/httperr"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Upstream sends the fetches: *upstream.Client, or a fake in tests.
type Upstream interface {
	// Get sends one GET under call's options (upstream.Client.Get) and
	// fills call.Attempts.
	Get(ctx context.Context, call *upstream.Call, escapedPath, rawQuery string, header http.Header) (*http.Response, error)
	// Signs reports whether calls with OwnKey credentials carry kproxy's
	// own key (then every fetch does).
	Signs() bool
}

var _ Upstream = (*upstream.Client)(nil)

// Config configures a Fetcher.
type Config struct {
	// Store holds entries; required.
	Store cache.Store
	// Upstream sends the shared fetches; required.
	Upstream Upstream
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
	// Disk, if set, is the history tier (disk.go): consulted on an L1
	// miss before Shared, and given stored answers that are immutable or
	// live at least MinDiskTTL.
	Disk Disk
	// Offline, when set, never contacts the upstream (offline.go): Get
	// answers from what memory and Disk hold, or 504 not_cached.
	Offline bool
	// Metrics may be nil (nothing recorded); Logger may be nil (nothing
	// logged).
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// AfterFunc schedules the refreshes ahead of expiry (refresh.go) on
	// the same clock as Now: it runs fn once d has passed, on a goroutine
	// of its own, and returns a function that cancels it (reporting
	// whether it did), as time.AfterFunc(d, fn).Stop does. nil means
	// time.AfterFunc.
	AfterFunc func(d time.Duration, fn func()) (stop func() bool)
}

// Fetcher is safe for concurrent use.
type Fetcher struct {
	store   cache.Store
	up      Upstream
	flights flights
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
	disk      Disk
	offline   bool
	bg        sync.WaitGroup
	// ahead holds the refreshes ahead of expiry scheduled (refresh.go).
	ahead aheadTimers
	// names remembers derived client names (client.go).
	names knownNames
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
		disk:      cfg.Disk,
		offline:   cfg.Offline,
		staleWait: cfg.StaleWait,
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
	f.ahead.afterFunc = cfg.AfterFunc
	if f.ahead.afterFunc == nil {
		f.ahead.afterFunc = func(d time.Duration, fn func()) func() bool { return time.AfterFunc(d, fn).Stop }
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
	// (credentials included, unless Credentials is OwnKey or the upstream
	// signs) go upstream with a shared fetch this request starts; never
	// Kproxy-Client. It is read before Get returns and never kept.
	Header http.Header
	// Credentials is upstream.Forward for a request whose own path the
	// client signed, upstream.OwnKey for one kproxy composed (a batch item
	// or page): kproxy's key when the upstream signs, else no credentials.
	// With a signing upstream every fetch uses OwnKey.
	Credentials upstream.Credentials
	// Charge is the route template the client asked for (the status page
	// charges the upstream calls to it); "" means Route.Pattern. A batch
	// item charges its batch endpoint ("/batch", "/batch/markets").
	Charge string
	// NoCache forces a fresh upstream fetch (still coalesced).
	NoCache bool
	// OnlyIfCached answers from the cache (fresh, or stale within either
	// stale window) or fails with 504 not_cached; nothing is fetched.
	OnlyIfCached bool
	// MaxAge, MinFresh and MaxStale are the request's freshness limits
	// (Directives; 0 means none): a stored answer older than MaxAge, or
	// with less than MinFresh of freshness left, is fetched again as with
	// NoCache; a stale one up to MaxStale past its ttl (within its
	// retention) is answered at once while one background refresh runs.
	MaxAge, MinFresh, MaxStale time.Duration
	// Client names the client for fair shares of the upstream budget;
	// empty means f.ClientName(Header, RemoteAddr), worked out when a fetch
	// starts (a bad Kproxy-Client then fails the request with
	// ErrBadClient), never on a hit.
	Client string
	// RemoteAddr is the client's address (http.Request.RemoteAddr); its
	// host is appended to X-Forwarded-For on a fetch this request starts
	// (worked out then, not on a hit). Empty means none.
	RemoteAddr string
	// Now is when the request arrived; zero means the Fetcher's clock.
	Now time.Time

	// call is the flight a fetch runs for, set on the copy it runs with.
	call *call
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
	// DetailStaleWait or DetailOnlyIfCached.
	Detail string
	// Err is set when Outcome is Failed.
	Err *upstream.Error
	// Attempts counts upstream attempts this request's own fetch made.
	Attempts int
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
	// tier is the outcome of a fresh answer: Hit from L1, DiskHit or
	// SharedHit from the tiers below (disk.go), looked at on an L1 miss only.
	tier := Hit
	if !ok && (f.disk != nil || f.shared != nil) {
		cached, ok, tier = f.lookupTiers(ctx, req.Key, now)
	}
	if f.offline { // offline.go: never past the cache
		return offlineAnswer(cached, ok, now)
	}
	if req.OnlyIfCached {
		return onlyIfCached(cached, ok, tier, now)
	}
	if ok && !req.NoCache && (req.MaxAge > 0 || req.MinFresh > 0) && !acceptable(cached, req, now) {
		// The request's own limits refuse the copy: fetch as no-cache.
		r := *req
		r.NoCache = true
		return f.miss(ctx, r, cached, ok, "request")
	}
	if ok && !req.NoCache {
		if cached.Fresh(now) {
			if tier == Hit {
				f.noteHit(req, cached, now) // refresh.go: refresh a polled key ahead of expiry
			}
			return Result{Entry: cached, Outcome: tier}
		}
		if cached.Revalidatable(now) || withinMaxStale(cached, req.MaxStale, now) {
			f.refresh(ctx, req)
			return Result{Entry: cached, Outcome: Revalidating}
		}
		if cached.ServableOnError(now) && f.flights.lookup(req.Key) != nil {
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
	if err := f.prepare(&req); err != nil {
		return Result{Outcome: Failed, Err: err}
	}
	hdr := outgoingHeader(req.Header, req.RemoteAddr)
	c, led := f.join(ctx, req.Key, func(ctx context.Context, c *call) *flight {
		r := req
		r.call = c
		return f.load(ctx, &r, hdr, !req.NoCache)
	})
	c.waiting.Add(1)
	defer c.waiting.Add(-1)
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
		if !c.ended() {
			return earlyStale(cached, c, led, fwd, c.failStatus, "")
		}
	case <-waited:
		if !c.ended() {
			return earlyStale(cached, c, led, fwd, 0, DetailStaleWait)
		}
	case <-ctx.Done():
		return Result{Outcome: Failed, Fwd: fwd, Err: upstream.Canceled(ctx.Err())}
	}
	fl := c.fl
	if !led && fl.credential {
		// A 401/403 answered the starter's credentials, not ours: try
		// again alone, with our own.
		fl = f.lead(ctx, req.Key, func(ctx context.Context) *flight { return f.load(ctx, &req, hdr, false) })
		led = true
	}
	res := Result{Fwd: fwd}
	if led {
		res.Attempts = fl.attempts
	} else {
		f.m.Coalesce(req.Route.Pattern)
	}
	if fl.err != nil || fl.entry.Status >= 500 || fl.entry.Status == http.StatusTooManyRequests {
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
	res.Entry, res.Outcome = fl.entry, fl.outcome
	if !led && (fl.outcome == Stored || fl.outcome == Uncacheable) {
		res.Outcome = Collapsed
	}
	return res
}

// prepare names req's client (ClientName, unless the caller did) before a
// fetch starts.
func (f *Fetcher) prepare(req *Request) *upstream.Error {
	if req.Client != "" {
		return nil
	}
	name, err := f.ClientName(req.Header, req.RemoteAddr)
	if err != nil {
		return upstream.As(err)
	}
	req.Client = name
	return nil
}

// refresh starts one background refresh of req's key unless a fetch of it
// is under way (join then starts nothing): a burst of stale hits on one key
// starts one fetch, not one per hit.
func (f *Fetcher) refresh(ctx context.Context, req *Request) {
	if f.flights.lookup(req.Key) != nil {
		return // the cheap check first: the request copy below escapes
	}
	r := *req
	if f.prepare(&r) != nil {
		return // a bad Kproxy-Client starts nothing
	}
	hdr := outgoingHeader(r.Header, r.RemoteAddr)
	f.join(ctx, r.Key, func(ctx context.Context, c *call) *flight {
		rc := r
		rc.call = c
		return f.load(ctx, &rc, hdr, true)
	})
}

// Wait blocks until shared fetches and background refreshes under way have
// finished, including those no client waits for any more (a barrier for
// tests; refreshes scheduled ahead of expiry and not yet started stay
// scheduled).
func (f *Fetcher) Wait() { f.bg.Wait() }

// Close cancels the refreshes scheduled ahead of expiry (none is scheduled
// after it) and then waits like Wait. Call it after the HTTP server has
// stopped, before closing the store.
func (f *Fetcher) Close() {
	f.ahead.stopAll()
	f.bg.Wait()
}

// load makes one upstream fetch for req on ctx (a leader's, see lead) and
// stores a storable answer.
//
// When checkCache is set it first looks in the cache again, as
// groupcache's load does. The caller's lookup and this flight do not
// happen at once: request A misses, request B misses too and starts the
// flight, the flight stores the key and ends (leaving the registry), and
// only then does A reach join, find no flight, and start a second one.
// Without this look, A's flight would fetch the key a second time although
// it is fresh in the cache. Requests that must not be answered from the
// cache (no-cache) skip it.
func (f *Fetcher) load(ctx context.Context, req *Request, hdr http.Header, checkCache bool) *flight {
	epoch, start := f.sharedEpoch(), f.now()
	if checkCache {
		if e, ok := f.store.Get(req.Key); ok && e.Fresh(f.now()) {
			return &flight{entry: e, outcome: Hit}
		}
	}
	var claim Claim
	if f.shared != nil {
		sfl, c, done := f.acquireShared(ctx, req, checkCache, start, epoch)
		if done {
			return sfl
		}
		claim = c
	}
	fl := &flight{epoch: epoch, start: start}
	if claim != nil {
		defer func() { releaseShared(claim, fl) }()
	}
	call := &upstream.Call{Route: req.Route.Pattern, Charge: req.Charge, Client: req.Client, Credentials: req.Credentials}
	if f.up.Signs() {
		call.Credentials = upstream.OwnKey
	}
	if req.call != nil {
		call.OnAttempt = req.call.attempted
	}
	var (
		status int
		header http.Header
		body   []byte
		err    *upstream.Error
	)
	if t, ok := f.autoTicker(req); ok {
		status, header, body, err = f.auto.get(ctx, call, t, hdr)
	} else {
		status, header, body, err = f.get(ctx, call, req.EscapedPath, req.RawQuery, hdr)
	}
	fl.attempts = call.Attempts
	if err != nil {
		fl.err = err
		return fl
	}
	f.finish(fl, req, call.Credentials, status, header, body)
	return fl
}

// get makes one upstream GET and reads the whole answer.
func (f *Fetcher) get(ctx context.Context, call *upstream.Call, escapedPath, rawQuery string, hdr http.Header) (int, http.Header, []byte, *upstream.Error) {
	resp, err := f.up.Get(ctx, call, escapedPath, rawQuery, hdr.Clone())
	if err != nil {
		return 0, nil, nil, upstream.As(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > f.maxBody {
		// Refused on its word: reading 64 MiB only to throw it away would
		// outlast the fetch.
		return 0, nil, nil, &upstream.Error{Status: http.StatusBadGateway, Code: httperr.CodeUpstreamTooLarge, Msg: "upstream answer too large"}
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
		return 0, nil, nil, &upstream.Error{Status: http.StatusBadGateway, Code: httperr.CodeUpstreamReadFailed, Msg: "reading the upstream answer failed", Err: err}
	}
	if int64(len(body)) > f.maxBody {
		return 0, nil, nil, &upstream.Error{Status: http.StatusBadGateway, Code: httperr.CodeUpstreamTooLarge, Msg: "upstream answer too large"}
	}
	return resp.StatusCode, resp.Header, body, nil
}

// finish turns an upstream answer into an entry and stores it if allowed;
// cred is the credentials the call carried: a 401/403 answers the
// client's own only when they were forwarded.
func (f *Fetcher) finish(fl *flight, req *Request, cred upstream.Credentials, status int, header http.Header, body []byte) {
	w, retention, storable := f.policy(req.Route, status, header)
	if status == http.StatusOK && f.xform != nil {
		body = f.xform(req.Route, body)
	}
	fetched := f.now()
	// immutable.go: settled history is fresh forever.
	immutable := storable && isImmutable(req.Route, req.Key, status, body, fetched)
	if immutable {
		w, retention = cache.Windows{TTL: Forever}, Forever
	}
	fl.entry = cache.NewEntry(req.Key, status, header, body, fetched, w, storable)
	if immutable {
		fl.entry.Detail = DetailImmutable // not yet shared: still being built
	}
	if !fl.start.IsZero() {
		fl.entry.Took = fetched.Sub(fl.start) // refresh.go; not yet shared
	}
	fl.credential = (status == http.StatusUnauthorized || status == http.StatusForbidden) && cred == upstream.Forward
	_, _, public := f.policy(req.Route, http.StatusOK, header)
	fl.private = !public
	fl.outcome = Uncacheable
	if storable {
		f.storeFenced(fl, retention)
		f.keepOnDisk(fl.entry, w.TTL, immutable) // disk.go
		fl.outcome = Stored
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

// dropped are request headers a shared fetch never sends upstream: hop-by-hop
// ones (RFC 9110 section 7.6.1), those that would make the upstream answer
// differ from the one entry kproxy stores for every client (conditionals,
// encodings, the client's own cache directives), and kproxy's own
// Kproxy-Client.
var dropped = header.Set(
	"Accept-Encoding", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since",
	"If-Range", "Range", "Cache-Control", "Pragma", "Content-Length", "Cookie", ClientHeader,
)

// outgoingHeader is the header a shared fetch sends: the client's
// end-to-end headers, credentials byte for byte (the upstream client strips
// them for an OwnKey call).
func outgoingHeader(in http.Header, remoteAddr string) http.Header {
	out := make(http.Header, len(in)+1)
	for k, vs := range in {
		if !dropped[k] {
			out[k] = append([]string(nil), vs...)
		}
	}
	if remoteAddr != "" {
		out["X-Forwarded-For"] = header.ForwardedFor(out["X-Forwarded-For"], remoteAddr)
	}
	return out
}
