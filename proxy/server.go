// Package proxy is kproxy's HTTP face: the Echo server, the
// /trade-api/v2/* handler (cached answers through the fetch path, everything
// else passed through), health, readiness, metrics and admin routes.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/httperr"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/status"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Config configures a Server.
type Config struct {
	// Fetcher, Routes, Upstream and Store are required.
	Fetcher  *fetch.Fetcher
	Routes   *route.Table
	Upstream *upstream.Client
	Store    cache.Store
	// AdminToken guards /admin/*; empty means the admin routes answer 404.
	AdminToken string
	// UpstreamURL is shown by /readyz.
	UpstreamURL string
	// RedisState, if set, is shown by /readyz as "redis" ("up" or "down").
	RedisState func() string
	// LiveState, if set, is shown by /readyz as "live" (the push feed:
	// "connected", "connecting" or "off"); nil shows "off".
	LiveState func() string
	// WebSocket, if set, serves GET /trade-api/ws/v2 (the WebSocket
	// pass-through, package wsproxy); nil leaves that path a 404.
	WebSocket http.Handler
	// Disk, if set, is the history tier: /readyz shows its state, the
	// admin routes list and purge it too. Nil shows "disk": "off".
	Disk DiskTier
	// Offline (upstream.offline): nothing is passed through to Kalshi;
	// private routes, writes and the WebSocket pass-through are answered
	// 503 offline (the fetch path answers public GETs from the cache).
	Offline bool
	// Metrics may be nil (no /metrics, nothing recorded).
	Metrics *metrics.Metrics
	// Ledger, if set, is told of every request on a cached route (the
	// status page's headline figures); nil counts nothing and names no
	// client on a hit.
	Ledger *status.Ledger
	// Logger is for errors and state changes; AccessLog, if set, gets one
	// line per request.
	Logger    *slog.Logger
	AccessLog slog.Handler
	// BodyTimeout bounds reading a passed-through request's body (a write
	// trickled by a slow client); 0 means BodyTimeout (10s).
	BodyTimeout time.Duration
	// Now is the clock of freshness (Age, Cache-Status ttl, the admin
	// listing's state), the one the Fetcher uses; nil means time.Now.
	Now func() time.Time
}

// Server is kproxy's HTTP handler. It is safe for concurrent use.
type Server struct {
	e        *echo.Echo
	fetch    *fetch.Fetcher
	routes   *route.Table
	up       *upstream.Client
	store    cache.Store
	admin    string
	upURL    string
	redis    func() string
	live     func() string
	disk     DiskTier
	offline  bool
	m        *metrics.Metrics
	ledger   *status.Ledger
	log      *slog.Logger
	access   slog.Handler
	requests requestLogger // access, when it has the fast path
	rp       *httputil.ReverseProxy
	hot      map[*route.Route]*hotMetrics
	draining atomic.Bool
	// bodyTimeout bounds reading a passed-through body (limits.go).
	bodyTimeout time.Duration
	now         func() time.Time // freshness clock; nil: the wall clock (see at)
	// allow lists the methods of each of kproxy's own paths (for 405s);
	// written only while routes are added, before serving.
	allow map[string][]string
}

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Fetcher == nil || cfg.Routes == nil || cfg.Upstream == nil || cfg.Store == nil {
		return nil, errors.New("proxy: fetcher, routes, upstream and store are required")
	}
	s := &Server{
		e:       echo.New(),
		fetch:   cfg.Fetcher,
		routes:  cfg.Routes,
		up:      cfg.Upstream,
		store:   cfg.Store,
		admin:   cfg.AdminToken,
		upURL:   cfg.UpstreamURL,
		redis:   cfg.RedisState,
		live:    cfg.LiveState,
		disk:    cfg.Disk,
		offline: cfg.Offline,
		m:       cfg.Metrics,
		ledger:  cfg.Ledger,
		log:     cfg.Logger,
		access:  cfg.AccessLog,
		allow:   map[string][]string{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.bodyTimeout = cfg.BodyTimeout
	s.now = cfg.Now
	if s.bodyTimeout <= 0 {
		s.bodyTimeout = BodyTimeout
	}
	s.requests, _ = s.access.(requestLogger)
	s.rp = s.newReverseProxy()
	s.hot = s.newHotMetrics()

	e := s.e
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// Handlers are wrapped once, here, not with e.Use: Echo applies
	// middleware anew on every request, a closure allocation per hit.
	e.Any(route.Prefix+"*", s.recoverJSON(s.handleAPI))
	// Everything else is a JSON 404, logged and counted like any answer.
	e.RouteNotFound("/*", s.recoverJSON(s.observed("other", func(echo.Context) error { return echo.ErrNotFound })))
	s.Handle(http.MethodGet, "/healthz", s.handleHealth)
	s.Handle(http.MethodGet, "/readyz", s.handleReady)
	if s.m != nil {
		metricsHandler := echo.WrapHandler(s.m.Handler())
		s.Handle(http.MethodGet, "/metrics", metricsHandler)
	}
	switch {
	case cfg.WebSocket != nil && s.offline:
		s.Handle(http.MethodGet, "/trade-api/ws/v2", s.refuseOffline)
	case cfg.WebSocket != nil:
		s.Handle(http.MethodGet, "/trade-api/ws/v2", echo.WrapHandler(cfg.WebSocket))
	}
	if s.admin != "" {
		s.Handle(http.MethodDelete, "/admin/cache", s.handlePurge)
		s.Handle(http.MethodGet, "/admin/cache", s.handleList)
	} else {
		// Admin is off: say so, and how to turn it on, rather than the
		// generic 404 of a path kproxy does not serve.
		e.Any("/admin", s.recoverJSON(s.observed("/admin/*", s.adminOff)))
		e.Any("/admin/*", s.recoverJSON(s.observed("/admin/*", s.adminOff)))
	}
	return s, nil
}

// ServeHTTP serves a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.e.ServeHTTP(w, r) }

// Handle adds a route of kproxy's own (batch endpoints, for example), with
// recovery, the access log and request metrics. A GET route answers HEAD
// too; any other method on path is answered 405 with an Allow header
// (OPTIONS: 204 with Allow). Routes are added before the Server serves;
// Handle is not safe to call concurrently with requests.
func (s *Server) Handle(method, path string, h echo.HandlerFunc) {
	wrapped := s.recoverJSON(s.observed(path, h))
	methods := []string{method}
	if method == http.MethodGet {
		methods = append(methods, http.MethodHead)
	}
	for _, m := range methods {
		if !slices.Contains(s.allow[path], m) {
			s.allow[path] = append(s.allow[path], m)
		}
		s.e.Add(m, path, wrapped)
	}
	other := s.recoverJSON(s.observed(path, s.methodNotAllowed(path)))
	for _, m := range allMethods {
		if !slices.Contains(s.allow[path], m) {
			s.e.Add(m, path, other)
		}
	}
}

// allMethods are the methods a kproxy path answers, if only with a 405.
var allMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodTrace, http.MethodConnect,
}

// methodNotAllowed answers a method path has no handler for.
func (s *Server) methodNotAllowed(path string) echo.HandlerFunc {
	return func(c echo.Context) error {
		allow := strings.Join(s.allow[path], ", ")
		c.Response().Header().Set("Allow", allow)
		if c.Request().Method == http.MethodOptions {
			return c.NoContent(http.StatusNoContent)
		}
		httperr.Write(c.Response(), http.StatusMethodNotAllowed, httperr.CodeMethodNotAllowed,
			c.Request().Method+" "+path+" is not allowed; use "+allow, 0)
		return nil
	}
}

// SetDraining makes /readyz answer 503 (shutdown has begun).
func (s *Server) SetDraining() { s.draining.Store(true) }

// HTTPServer wraps the handler in an http.Server with kproxy's limits
// (limits.go): headers within ReadHeaderTimeout and MaxHeaderBytes (431
// past it), idle keep-alive connections closed after IdleTimeout. There is
// deliberately no ReadTimeout or WriteTimeout: net/http would cancel
// long-running batch streams and WebSocket pass-through with them;
// passed-through bodies have their own deadline (bufferBody), and cached
// answers are written from memory holding no lock or shared fetch, so a
// slow reader holds only its own connection.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// at is the freshness clock's time for a request that arrived at wall
// time wall: wall itself unless Config.Now is set (tests move time),
// which keeps a hit free of a second clock read.
func (s *Server) at(wall time.Time) time.Time {
	if s.now == nil {
		return wall
	}
	return s.now()
}

// recoverJSON turns a panic in a handler into a 500 JSON error; when the
// answer has already begun it aborts the connection instead, the only
// honest thing left to do.
func (s *Server) recoverJSON(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic in handler", "path", c.Request().URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if c.Response().Committed {
				panic(http.ErrAbortHandler)
			}
			httperr.Write(c.Response(), http.StatusInternalServerError, httperr.CodeInternal, "internal error", 0)
			err = nil
		}()
		return next(c)
	}
}

// handleError answers errors returned by handlers and Echo's router (404,
// 405) as JSON.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, code, msg := http.StatusInternalServerError, httperr.CodeInternal, "internal error"
	var he *echo.HTTPError
	if errors.As(err, &he) {
		status = he.Code
		switch status {
		case http.StatusNotFound:
			code, msg = httperr.CodeNotFound, "no such route; kproxy forwards only /trade-api/v2/*"
		case http.StatusMethodNotAllowed:
			code, msg = httperr.CodeMethodNotAllowed, "method not allowed"
		default:
			code, msg = httperr.CodeError, fmt.Sprint(he.Message)
		}
	} else {
		s.log.Error("handler error", "path", c.Request().URL.Path, "err", err)
	}
	httperr.Write(c.Response(), status, code, msg, 0)
}

func (s *Server) handleHealth(c echo.Context) error {
	return c.JSONBlob(http.StatusOK, []byte(`{"status":"ok"}`))
}

// Readiness is the body of /readyz.
type Readiness struct {
	Status   string `json:"status"`
	Breaker  string `json:"breaker"`
	Cache    Stats  `json:"cache"`
	Upstream string `json:"upstream"`
	// Redis is "up" or "down" with a shared tier configured.
	Redis string `json:"redis,omitempty"`
	// Live is the push feed: "connected", "connecting" or "off".
	Live string `json:"live,omitempty"`
	// Disk is the history tier: "up", "off" or "down".
	Disk string `json:"disk"`
}

// Stats is the cache part of Readiness.
type Stats struct {
	Items int   `json:"items"`
	Bytes int64 `json:"bytes"`
}

func (s *Server) handleReady(c echo.Context) error {
	st := s.store.Stats()
	r := Readiness{Status: "ready", Breaker: "closed", Cache: Stats{Items: st.Items, Bytes: st.Bytes}, Upstream: s.upURL}
	if b := s.up.Breaker(); b != nil {
		r.Breaker = b.State().String()
	}
	if s.redis != nil {
		r.Redis = s.redis()
	}
	r.Live = "off"
	if s.live != nil {
		r.Live = s.live()
	}
	r.Disk = diskState(s.disk)
	code := http.StatusOK
	if s.draining.Load() {
		r.Status, code = "draining", http.StatusServiceUnavailable
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(code, r)
}

// Shutdown drains: readiness turns 503 at once, then the listener stops and
// in-flight requests finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context, hs *http.Server) error {
	s.SetDraining()
	return hs.Shutdown(ctx)
}
