package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/header"
	"github.com/kproxy/kproxy/internal/httperr"
	"github.com/kproxy/kproxy/internal/logging"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/status"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Shared, never-modified header values.
var (
	varyAE       = []string{"Accept-Encoding"}
	gzipValue    = []string{"gzip"}
	bypassStatus = []string{fetch.Result{Outcome: fetch.Bypassed}.CacheStatus(0)}
)

// passThroughCharge is the Charge of passed-through calls (upstream.Call):
// not a route template, so the status ledger leaves them out of the cached
// routes' upstream counts (the page shows pass-throughs apart).
const passThroughCharge = "pass-through"

// reqInfo is what the access log and metrics learn about one request.
type reqInfo struct {
	route string
	// cache is the X-Cache word of the outcome (fetch.Outcome.XCache), ""
	// for an answer that is none (kproxy's own routes, a bad path).
	cache    string
	status   int
	attempts int
	hot      *hotMetrics
	// ledger is the status ledger's handle of the route, for an answer of
	// the fetch path on a route it counts; nil otherwise.
	ledger *status.RouteLedger
	// counted marks an answer of the fetch path (a cached route's GET or
	// HEAD), which the status ledger counts; expired, one that found only
	// an expired copy (fetch.Result.Expired).
	counted, expired bool
}

// handleAPI serves /trade-api/v2/*: public GETs through the fetch path,
// everything else passed through untouched.
func (s *Server) handleAPI(c echo.Context) error {
	start := time.Now()
	r := c.Request()
	info := reqInfo{route: "other", cache: fetch.Bypassed.XCache()}
	defer s.observe(c, &info, start)

	// The path as the client wrote it: what goes upstream, once. (Path
	// alone would send "%2541" as "%41", decoded twice.) Without RawPath,
	// Path is the client's spelling unless it holds a '%' (a decoded %25):
	// only then is it escaped again (EscapedPath costs ~45ns; IndexByte ~2ns).
	escaped := r.URL.RawPath
	if escaped == "" {
		escaped = r.URL.Path
		if strings.IndexByte(escaped, '%') >= 0 {
			escaped = r.URL.EscapedPath()
		}
	}
	if err := route.CheckPath(escaped, r.URL.Path); err != nil {
		info.cache, info.status = "", http.StatusBadRequest
		httperr.Write(c.Response(), http.StatusBadRequest, httperr.CodeBadPath, err.Error(), 0)
		return nil
	}
	rt := s.routes.Match(r.URL.Path)
	if rt == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		info.route = route.Label(r.URL.Path, rt)
		s.passThrough(c, &info)
		return nil
	}
	info.route = rt.Pattern
	hot := s.hot[rt]
	// Request cache directives (docs/cache-control.md): parsed without
	// allocating; others are ignored.
	dir := fetch.ParseDirectives(r.Header)
	now := s.at(start)
	res := s.fetch.Get(r.Context(), &fetch.Request{
		Route:        rt,
		Key:          route.Key(r.URL.Path, r.URL.RawQuery),
		EscapedPath:  escaped,
		RawQuery:     r.URL.RawQuery,
		Header:       r.Header,
		Now:          now,
		NoCache:      dir.NoCache,
		OnlyIfCached: dir.OnlyIfCached,
		MaxAge:       dir.MaxAge,
		MinFresh:     dir.MinFresh,
		MaxStale:     dir.MaxStale,
		RemoteAddr:   r.RemoteAddr,
	})
	info.attempts = res.Attempts
	info.cache = res.Outcome.XCache()
	info.counted, info.expired = true, res.Expired()
	if hot != nil {
		info.ledger = hot.ledger
	}
	if res.Outcome == fetch.Failed {
		info.status = res.Err.Status
		if errors.Is(res.Err, upstream.ErrClientClosed) {
			return nil // the client is gone
		}
		h := c.Response().Header()
		h["X-Cache"] = res.Outcome.XCacheValue()
		h["Cache-Status"] = []string{res.CacheStatus(0)}
		httperr.Write(c.Response(), res.Err.Status, res.Err.Code, res.Err.Msg, res.Err.RetryAfter)
		return nil
	}
	if res.Outcome == fetch.Hit && hot != nil && hot.requests != nil {
		info.hot = hot
	}
	info.status = s.writeEntry(c.Response(), r, res, now)
	return nil
}

// writeEntry sends a fetch result and returns the status sent. A fresh hit
// formats nothing: every header value is prebuilt or shared.
func (s *Server) writeEntry(w *echo.Response, r *http.Request, res fetch.Result, now time.Time) int {
	e := res.Entry
	h := w.Header()
	for k, vs := range e.Header {
		h[k] = vs
	}
	// The representation sent (identity or gzip) decides the entity tag:
	// each coding has its own, and a 304 names the one this client gets.
	gz := e.Gzip != nil && acceptsGzip(r.Header["Accept-Encoding"])
	h["Etag"] = e.ETagValue(gz)
	h["Vary"] = varyAE
	h["X-Cache"] = res.Outcome.XCacheValue()
	if res.Outcome == fetch.Hit {
		h["Age"], h["Cache-Status"] = e.HitHeaders(now, fetch.HitStatus)
	} else {
		h["Age"] = []string{strconv.FormatInt(e.AgeSeconds(now), 10)}
		h["Cache-Status"] = []string{res.CacheStatus(e.FreshUntil.Sub(now))}
	}
	// Either tag validates the entry for either client: both name the
	// same stored answer, so a client that switched codings still gets 304.
	if e.Status == http.StatusOK && matchesETag(r.Header["If-None-Match"], e.ETag, e.ETagGzip) {
		delete(h, "Content-Type")
		w.WriteHeader(http.StatusNotModified)
		return http.StatusNotModified
	}
	body := e.Body
	if gz {
		body = e.Gzip
		h["Content-Encoding"] = gzipValue
	}
	h["Content-Length"] = e.LengthValue(gz)
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
	return e.Status
}

// acceptsGzip reports whether Accept-Encoding values allow gzip (RFC 9110
// section 12.5.3): the first member naming gzip decides by its weight (q,
// any case, among any parameters; q=0 refuses); without one, the first "*"
// decides; without either, gzip is not acceptable. It does not allocate.
func acceptsGzip(values []string) bool {
	star, starSeen := false, false
	for _, v := range values {
		for v != "" {
			var name, params string
			name, params, v = header.Next(v, ";")
			switch {
			case strings.EqualFold(name, "gzip"):
				return weightNonZero(params)
			case name == "*" && !starSeen:
				star, starSeen = weightNonZero(params), true
			}
		}
	}
	return star
}

// weightNonZero reports whether the q parameter among an Accept-Encoding
// member's parameters is absent, unparsable or not zero.
func weightNonZero(params string) bool {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		return err != nil || f != 0
	}
	return true
}

// matchesETag reports whether If-None-Match values match etag or etagGz
// (weak comparison, RFC 9110 section 13.1.2; pass the same tag twice to
// match one). An entity-tag is read as a quoted string, so a comma inside
// one does not split it. It does not allocate.
func matchesETag(values []string, etag, etagGz string) bool {
	etag = strings.TrimPrefix(etag, "W/")
	etagGz = strings.TrimPrefix(etagGz, "W/")
	for _, v := range values {
		if strings.TrimSpace(v) == "*" {
			return true
		}
		for v != "" {
			v = strings.TrimLeft(v, " \t,")
			v = strings.TrimPrefix(v, "W/")
			if v == "" || v[0] != '"' {
				break // not an entity-tag: the rest cannot be read
			}
			end := strings.IndexByte(v[1:], '"')
			if end < 0 {
				break
			}
			if t := v[:end+2]; t == etag || t == etagGz {
				return true
			}
			v = v[end+2:]
		}
	}
	return false
}

// passThrough forwards a request that is not cached (writes, private
// routes, unknown routes) exactly once through the upstream client, body
// streamed both ways, with the client's own credentials.
func (s *Server) passThrough(c echo.Context, info *reqInfo) {
	r := c.Request()
	if s.offline { // disk.go: nothing goes to Kalshi
		info.status = http.StatusServiceUnavailable
		s.refuseOffline(c)
		return
	}
	client, err := s.fetch.ClientName(r.Header, r.RemoteAddr)
	if err != nil {
		e := upstream.As(err)
		info.cache, info.status = "", e.Status
		httperr.Write(c.Response(), e.Status, e.Code, e.Msg, 0)
		return
	}
	if !s.bufferBody(c.Response(), r) {
		info.status = c.Response().Status
		return
	}
	// The one caller that cannot pass the call's options: ReverseProxy
	// reaches the client through RoundTrip.
	// Charged to no route the status ledger counts: a write to a cached
	// route's path is a pass-through, not a call made for a cached route.
	call := &upstream.Call{Route: info.route, Charge: passThroughCharge, Client: client}
	s.rp.ServeHTTP(c.Response(), r.WithContext(upstream.WithCall(r.Context(), call)))
	info.status, info.attempts = c.Response().Status, call.Attempts
}

func (s *Server) newReverseProxy() *httputil.ReverseProxy {
	origin := s.up.Origin()
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = origin.Scheme, origin.Host, origin.Host
			pr.Out.Header["X-Forwarded-For"] = header.ForwardedFor(pr.In.Header["X-Forwarded-For"], pr.In.RemoteAddr)
			delete(pr.Out.Header, fetch.ClientHeader)
		},
		Transport:     s.up,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			resp.Header["X-Cache"] = fetch.Bypassed.XCacheValue()
			resp.Header["Cache-Status"] = bypassStatus
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var e *upstream.Error
			if !errors.As(err, &e) {
				e = &upstream.Error{Status: http.StatusBadGateway, Code: httperr.CodeUpstreamError, Msg: "upstream " + origin.Host + " failed"}
			}
			if errors.Is(e, upstream.ErrClientClosed) || r.Context().Err() != nil {
				return
			}
			w.Header()["X-Cache"] = fetch.Bypassed.XCacheValue()
			httperr.Write(w, e.Status, e.Code, e.Msg, e.RetryAfter)
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// observed wraps one of kproxy's own routes with the access log and metrics.
func (s *Server) observed(path string, h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		info := reqInfo{route: path}
		err := h(c)
		if err != nil {
			c.Error(err)
		}
		s.observe(c, &info, start)
		return nil
	}
}

// hotMetrics are a cached route's pre-resolved series of its fresh GET
// hits (nil without metrics) and its status ledger handle (nil without
// the status page), so the hit path hashes no label values and no route
// template. One lookup by *route.Route finds them.
type hotMetrics struct {
	requests prometheus.Counter
	duration prometheus.Observer
	ledger   *status.RouteLedger
}

func (s *Server) newHotMetrics() map[*route.Route]*hotMetrics {
	if s.m == nil && s.ledger == nil {
		return nil
	}
	hit := fetch.Hit.XCache()
	hot := map[*route.Route]*hotMetrics{}
	for _, rt := range s.routes.Routes() {
		h := &hotMetrics{ledger: s.ledger.Route(rt.Pattern)}
		if s.m != nil {
			h.requests = s.m.Requests.WithLabelValues(rt.Pattern, http.MethodGet, metrics.Code(http.StatusOK), hit)
			h.duration = s.m.RequestDuration.WithLabelValues(rt.Pattern, hit)
		}
		hot[rt] = h
	}
	return hot
}

// requestLogger is an access log that writes a request line without a
// slog.Record (logging.AccessHandler): the access log runs on every hit.
type requestLogger interface {
	LogRequest(logging.Request)
}

// pathQuery is what the access log's path field holds: the path with its
// query string (Kalshi's queries carry no credentials).
func pathQuery(path, rawQuery string) string {
	if rawQuery == "" {
		return path
	}
	return path + "?" + rawQuery
}

// observe records one finished request in the metrics and the access log.
// It never logs headers, so credentials never reach the log; the path is
// logged with its query string, so a line says which series missed.
func (s *Server) observe(c echo.Context, info *reqInfo, start time.Time) {
	r := c.Request()
	if info.status == 0 {
		info.status = c.Response().Status
	}
	d := time.Since(start)
	if info.hot != nil && info.hot.requests != nil && info.status == http.StatusOK && r.Method == http.MethodGet {
		// The route's pre-resolved series (nil without metrics: the map
		// may exist for the status page's ledger alone).
		info.hot.requests.Inc()
		info.hot.duration.Observe(d.Seconds())
	} else {
		s.m.Request(info.route, r.Method, info.status, info.cache, d)
	}
	if info.counted && info.ledger != nil {
		// Named without allocating for a client seen before; a refused
		// Kproxy-Client (answered 400 on a miss) counts as unnamed.
		client, _ := s.fetch.ClientName(r.Header, r.RemoteAddr)
		info.ledger.Request(client, info.cache, info.expired)
	}
	if s.requests != nil {
		s.requests.LogRequest(logging.Request{
			Time: start.Add(d), Method: r.Method, Route: info.route, Status: info.status,
			Cache: info.cache, Duration: d, Attempts: info.attempts, Path: r.URL.Path, Query: r.URL.RawQuery,
		})
	} else if s.access != nil {
		// A record built here with no caller PC: slog.Logger would walk
		// the stack for one on every request.
		rec := slog.NewRecord(start.Add(d), slog.LevelInfo, "request", 0)
		rec.AddAttrs(
			slog.String("method", r.Method),
			slog.String("route", info.route),
			slog.Int("status", info.status),
			slog.String("cache", info.cache),
			slog.Float64("duration_ms", float64(d.Microseconds())/1000),
			slog.Int("upstream_attempts", info.attempts),
			slog.String("path", pathQuery(r.URL.Path, r.URL.RawQuery)),
		)
		s.access.Handle(context.Background(), rec)
	}
}
