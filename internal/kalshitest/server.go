// Package kalshitest provides a fake Kalshi Trade API v2 upstream for tests
// and for the offline simulator (cmd/kalshi-sim).
//
// A [Server] is an [http.Handler] that serves a deterministic data universe
// under /trade-api/v2, shaped exactly like Kalshi's responses (the post
// 2026-03-12 field set: prices as "*_dollars" strings, counts as "*_fp"
// strings). Use it with [net/http/httptest]:
//
//	fake := kalshitest.New()
//	srv := httptest.NewServer(fake)
//	defer srv.Close()
//	// point the code under test at srv.URL + "/trade-api/v2"
//
// Besides serving data, a Server records every request (see [Server.Count],
// [Server.Requests]) and can misbehave on demand: added latency
// ([Server.SetLatency]), injected errors, hangs and connection resets
// ([Server.SetFault]), and a global stall ([Server.Stall]). With
// [Server.SetPublicKey] it verifies KALSHI-ACCESS-* request signatures the
// way Kalshi does; [Sign] produces such signatures.
//
// # Data universe
//
// [New] serves these series, in this order; every series S but KXCPIYOY has
// exactly one event S-26JUN30 whose markets are all "active" (status filter
// "open"):
//
//   - KXEARNINGSMENTION{META,TSLA,NVDA,AAPL,MSFT,AMZN,GOOGL,NFLX}: 12 markets
//     each, e.g. KXEARNINGSMENTIONMETA-26JUN30-VR. The first three META
//     markets (VR, LLAM, THRE) are the reference samples, served verbatim.
//   - KXFEDDECISION: 5 markets (H26, H25, H0, C25, C26).
//   - KXBIGSERIES: 450 markets KXBIGSERIES-26JUN30-M001 ... -M450, for
//     pagination tests.
//   - KXCPIYOY: settled data, four events of four markets each (-T2.6, -T2.8,
//     -T3.0, -T3.2, e.g. KXCPIYOY-26MAR-T2.8). KXCPIYOY-25SEP and -25OCT
//     (settled 2025-10-15 and 2025-11-13, before the default historical
//     cutoff) and KXCPIYOY-26MAR (settled 2026-04-10) have all their markets
//     "finalized"; KXCPIYOY-26APR (settled 2026-05-12) is a mix: T2.6 and T2.8
//     "finalized", T3.0 "determined", T3.2 "closed". Determined and finalized
//     markets carry result, settlement_value_dollars, settlement_ts and
//     expiration_value.
//
// Every market also has a deterministic trade tape between its open_time
// and close_time (thousands of trades for KXFEDDECISION and KXCPIYOY
// markets, hundreds for earnings markets, tens for synthetic ones; see
// [Server.TradeCount]) and deterministic candlesticks, both generated lazily
// per market. Which trades and candles exist depends on the fake's clock
// ([WithNow], [Server.SetNow]): nothing after now, and the candle of the
// period holding now is partial and changes as now advances, while a window
// that ends before now (or after close_time) never changes. The historical
// cutoff ([WithHistoricalCutoff], [Server.SetHistoricalCutoff], default
// 2026-01-01T00:00:00Z) splits the data like Kalshi does: markets settled
// before it, with their candles, are served only by /historical/markets...,
// and trades created before it only by /historical/trades.
//
// [Server.AddSeries] appends more series; [Server.MarketTickers] lists a
// series' markets. All values are deterministic: two Servers serve
// byte-identical bodies.
//
// # Routes
//
// All routes live under /trade-api/v2 and answer JSON with
// Content-Type: application/json and no ETag or Cache-Control header (like
// Kalshi). Unknown routes, unknown tickers and unsupported methods answer 404
// with Kalshi's {"error":{"code":"not_found",...}} body; invalid query
// parameters answer 400.
//
//	GET  /markets                     series_ticker, event_ticker, status, tickers, limit (1-1000, default 100), cursor
//	GET  /markets/{ticker}            {"market":{...}}
//	GET  /markets/{ticker}/orderbook  {"orderbook_fp":{...}}; depth (0 = all, 1-100)
//	GET  /events                      series_ticker, status, limit (1-200, default 200), cursor, with_nested_markets
//	GET  /events/{event_ticker}       with_nested_markets
//	GET  /series                      {"series":[...]}
//	GET  /series/{series_ticker}      {"series":{...}}
//	GET  /markets/trades              ticker, min_ts, max_ts (Unix s, inclusive), is_block_trade, limit (1-1000, default 100), cursor; newest first
//	GET  /markets/candlesticks        market_tickers (1-100), start_ts, end_ts, period_interval (1, 60, 1440), include_latest_before_start
//	GET  /series/{s}/markets/{ticker}/candlesticks       start_ts, end_ts, period_interval, include_latest_before_start
//	GET  /series/{s}/events/{event_ticker}/candlesticks  start_ts, end_ts, period_interval; adjusted_end_ts
//	GET  /historical/cutoff           market_settled_ts, trades_created_ts, ... (RFC 3339)
//	GET  /historical/markets          series_ticker, event_ticker, tickers, mve_filter, limit (1-1000, default 100), cursor
//	GET  /historical/markets/{ticker} {"market":{...}}
//	GET  /historical/markets/{ticker}/candlesticks       as the live route
//	GET  /historical/trades           as /markets/trades, for trades created before the cutoff
//	GET  /exchange/status             {"exchange_active":true,"trading_active":true}
//	GET  /portfolio/balance           requires KALSHI-ACCESS-* headers
//	POST /portfolio/orders            requires KALSHI-ACCESS-* headers; 201 {"order":{...}}
//	POST /portfolio/events/orders     same as POST /portfolio/orders
//
// Cursors are opaque strings; the last page has "cursor":"". A trades
// cursor names the last trade served, so walking the pages of a window yields
// each trade once even while the clock moves. A candlestick's end_period_ts
// is a multiple of the period (UTC-aligned) and the candle covers
// (end_period_ts - period, end_period_ts]; an answer holds at most 10 000
// candles (400 beyond, except the event route, which moves adjusted_end_ts
// back). Routes registered with [Server.Handle] take precedence over these.
//
// # WebSocket
//
// GET /trade-api/ws/v2 ([WSPath]) is Kalshi's WebSocket API (ws.go): the
// handshake goes through the request pipeline below like any request, then
// needs all three KALSHI-ACCESS-* headers when a public key is set; the fake
// answers subscribe, update_subscription, unsubscribe and list_subscriptions
// as Kalshi does, pings every [DefaultWSHeartbeat], and lets a test push
// ticker, lifecycle, error and raw messages ([Server.PushTicker],
// [Server.Tick], [Server.PushLifecycle], [Server.PushError],
// [Server.PushRaw]), change the REST data to match ([Server.SetQuotes],
// [Server.SetMarketStatus]), refuse handshakes ([Server.RefuseWS]), drop
// connections ([Server.DropWS], [Server.CloseWS]) and wait for a state
// ([Server.WaitWS], [Server.WaitWSTickers]) without sleeping.
//
// # Request pipeline
//
// Every request goes through the same steps, in order:
//
//  1. The body is read and the request is counted and recorded; in the same
//     step the current fault is consulted (and its Times budget consumed).
//  2. If a [Server.Stall] is in effect, the request waits for its release.
//  3. The request waits for the configured latency.
//  4. If a fault applies, it is answered and the pipeline stops.
//  5. If a public key is set, signatures are verified.
//  6. The request is routed to a [Server.Handle] override or a built-in route.
//
// If the request context ends while waiting in steps 2, 3 or in a Hang fault,
// the handler returns at once without writing a response.
package kalshitest

import (
	"bytes"
	"context"
	"crypto/rsa"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// apiPrefix is the path prefix of every Kalshi Trade API v2 route.
const apiPrefix = "/trade-api/v2"

// maxBody bounds how much of a request body is read and recorded.
const maxBody = 10 << 20

// Server is a fake Kalshi Trade API v2 server. Create one with [New]; the
// zero value is not usable. All methods are safe for concurrent use,
// including concurrently with ServeHTTP.
type Server struct {
	tpl     *templates
	builtin *http.ServeMux

	dataMu sync.Mutex // serializes writers of data
	data   atomic.Pointer[universe]

	handleMu  sync.Mutex // serializes writers of overrides
	overrides []override // guarded by handleMu
	override  atomic.Pointer[http.ServeMux]

	ws *wsHub // the WebSocket side (ws.go)

	now    atomic.Pointer[func() time.Time] // never nil after New
	cutoff atomic.Int64                     // historical cutoff, Unix seconds

	publicKey atomic.Pointer[rsa.PublicKey]
	latency   atomic.Int64 // time.Duration
	sigOK     atomic.Int64
	sigFail   atomic.Int64
	orderSeq  atomic.Uint64

	mu       sync.Mutex // guards the fields below
	total    int
	byPath   map[string]int
	byURI    map[string]int
	recorded []Recorded
	fault    *activeFault  // nil when no fault is set
	stalls   int           // number of unreleased Stall calls
	gate     chan struct{} // closed when the last stall is released; nil when not stalled
}

type override struct {
	pattern string
	handler http.HandlerFunc
}

// Recorded is a copy of a request received by a [Server].
type Recorded struct {
	Method   string
	Path     string // r.URL.Path
	RawQuery string // r.URL.RawQuery
	Header   http.Header
	Body     []byte // nil when the request had no body
	At       time.Time
}

// Fault describes how a [Server] misbehaves. Exactly one Fault is current at
// a time (see [Server.SetFault]). A Fault with none of Status, Hang or Close
// set does nothing; when several are set, Close wins over Hang, which wins
// over Status.
type Fault struct {
	// Status, if non-zero, is answered instead of the real answer, with Body.
	// An empty Body selects a Kalshi-like JSON error body: Kalshi's documented
	// {"error": "too many requests"} for 429, the not_found body of unknown
	// routes for 404, and otherwise
	// {"error":{"code":"<snake_case status text>","message":"<status text>","service":"exchange"}},
	// e.g. code "service_unavailable" for 503.
	Status int
	// Body is the body of a Status answer; it is sent as application/json
	// unless Header sets another Content-Type.
	Body string
	// Header holds extra headers set on a Status answer (e.g. Retry-After).
	Header http.Header
	// Hang blocks the request until its context is done (a hung upstream),
	// then returns without answering.
	Hang bool
	// Close hijacks the connection and closes it without answering (a reset;
	// on TCP the close sends RST). If the ResponseWriter cannot be hijacked
	// (HTTP/2), the handler panics with [http.ErrAbortHandler], which net/http
	// turns into an aborted stream.
	Close bool
	// Times, if positive, applies the fault to the next Times matching
	// requests only, after which it clears itself. Zero or negative means
	// every matching request until the fault is replaced or cleared.
	Times int
	// Paths, if non-empty, restricts the fault to requests whose URL path
	// starts with one of these prefixes (e.g. "/trade-api/v2/markets").
	Paths []string
}

// active reports whether f does anything.
func (f Fault) active() bool { return f.Status != 0 || f.Hang || f.Close }

// matches reports whether the fault applies to a request for path.
func (f Fault) matches(path string) bool {
	if len(f.Paths) == 0 {
		return true
	}
	for _, p := range f.Paths {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

type activeFault struct {
	Fault
	left int // remaining applications when Times > 0
}

// New returns a Server serving the default data universe (see the package
// documentation), with no latency, no fault, no stall and no signature
// verification, the wall clock and [DefaultHistoricalCutoffUnix], as changed by
// opts.
func New(opts ...Option) *Server {
	s := &Server{
		tpl:    loadTemplates(),
		byPath: make(map[string]int),
		byURI:  make(map[string]int),
		ws:     newWSHub(),
	}
	s.SetNow(nil)
	s.cutoff.Store(DefaultHistoricalCutoffUnix)
	for _, o := range opts {
		o(s)
	}
	var series []*seriesData
	for _, spec := range s.tpl.defaultSpecs() {
		sd := s.tpl.build(spec)
		// Consecutive specs of one series are events of that series.
		if n := len(series); n > 0 && series[n-1].ticker == sd.ticker {
			series[n-1].events = append(series[n-1].events, sd.events...)
			continue
		}
		series = append(series, sd)
	}
	s.data.Store(newUniverse(series))
	s.builtin = s.routes()
	s.builtin.HandleFunc("GET "+WSPath, s.serveWS)
	return s
}

// ServeHTTP serves a request through the pipeline described in the package
// documentation.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body := readBody(r)
	rec := Recorded{
		Method:   r.Method,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Body:     body,
		At:       time.Now(),
	}

	s.mu.Lock()
	s.total++
	s.byPath[r.URL.Path]++
	s.byURI[r.URL.RequestURI()]++
	s.recorded = append(s.recorded, rec)
	fault, faulty := s.takeFaultLocked(r.URL.Path)
	gate := s.gate
	s.mu.Unlock()

	ctx := r.Context()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return
		}
	}
	if d := time.Duration(s.latency.Load()); d > 0 && !sleep(ctx, d) {
		return
	}
	if faulty {
		s.serveFault(w, r, fault)
		return
	}
	if !s.authorize(w, r) {
		return
	}
	if mux := s.override.Load(); mux != nil {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
	}
	s.builtin.ServeHTTP(w, r)
}

// readBody reads (up to maxBody of) the request body and replaces r.Body so
// that handlers can read it again.
func readBody(r *http.Request) []byte {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body
}

// sleep waits for d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// takeFaultLocked returns the fault that applies to a request for path, if
// any, consuming one of its Times. s.mu must be held.
func (s *Server) takeFaultLocked(path string) (Fault, bool) {
	f := s.fault
	if f == nil || !f.matches(path) {
		return Fault{}, false
	}
	if f.Times > 0 {
		f.left--
		if f.left <= 0 {
			s.fault = nil
		}
	}
	return f.Fault, true
}

func (s *Server) serveFault(w http.ResponseWriter, r *http.Request, f Fault) {
	switch {
	case f.Close:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		resetConn(conn)
	case f.Hang:
		<-r.Context().Done()
	default:
		body := []byte(f.Body)
		if f.Body == "" {
			body = s.errorBody(f.Status)
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		for k, vs := range f.Header {
			h[http.CanonicalHeaderKey(k)] = slices.Clone(vs)
		}
		w.WriteHeader(f.Status)
		w.Write(body)
	}
}

// resetConn closes conn, with an RST rather than a FIN when it is TCP.
func resetConn(conn net.Conn) {
	c := conn
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// Count returns the number of requests received whose URL path equals path
// exactly, whatever their method and query.
func (s *Server) Count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byPath[path]
}

// CountQuery returns the number of requests received whose
// r.URL.RequestURI() equals pathAndQuery exactly, e.g.
// "/trade-api/v2/markets?limit=5" (no reordering or re-encoding is done).
func (s *Server) CountQuery(pathAndQuery string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byURI[pathAndQuery]
}

// Total returns the number of requests received.
func (s *Server) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Requests returns copies of every request received since New or the last
// Reset, in arrival order. The caller may modify the result.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Recorded, len(s.recorded))
	for i, rec := range s.recorded {
		rec.Header = rec.Header.Clone()
		rec.Body = bytes.Clone(rec.Body)
		out[i] = rec
	}
	return out
}

// Reset zeroes the request counters, the recorded requests and the signature
// counters, and the WebSocket counters and command log. Data, overrides,
// latency, fault, stall, public key and open WebSocket connections are kept.
func (s *Server) Reset() {
	s.ws.reset()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total = 0
	s.byPath = make(map[string]int)
	s.byURI = make(map[string]int)
	s.recorded = nil
	s.sigOK.Store(0)
	s.sigFail.Store(0)
}

// SetLatency delays every subsequent answer by d (d <= 0 disables the delay).
// A request whose context ends while it waits returns without an answer.
func (s *Server) SetLatency(d time.Duration) {
	s.latency.Store(int64(max(d, 0)))
}

// SetFault replaces the current fault with f; SetFault(Fault{}) clears it.
// f's slices and header are copied, so the caller may reuse them.
func (s *Server) SetFault(f Fault) {
	var af *activeFault
	if f.active() {
		f.Header = f.Header.Clone()
		f.Paths = slices.Clone(f.Paths)
		af = &activeFault{Fault: f, left: f.Times}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = af
}

// Stall makes every request that arrives from now on block until release is
// called (or until the request's context ends). Requests that arrived
// earlier are not affected. Stalls nest: requests stay blocked until every
// outstanding Stall has been released. release is idempotent.
func (s *Server) Stall() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalls == 0 {
		s.gate = make(chan struct{})
	}
	s.stalls++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.stalls--
			if s.stalls == 0 {
				close(s.gate)
				s.gate = nil
			}
		})
	}
}

// Handle registers an override for a [http.ServeMux] pattern such as
// "GET /trade-api/v2/markets/{ticker}"; h can read wildcards with
// r.PathValue. Requests matching an override are served by it instead of the
// built-in routes, after the usual counting, recording, stall, latency,
// fault and signature steps. Registering the same pattern again replaces the
// previous handler. Handle panics, like ServeMux.Handle, if the pattern is
// invalid or conflicts with another override, or if h is nil.
func (s *Server) Handle(pattern string, h http.HandlerFunc) {
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	next := slices.Clone(s.overrides)
	i := slices.IndexFunc(next, func(o override) bool { return o.pattern == pattern })
	if i >= 0 {
		next[i].handler = h
	} else {
		next = append(next, override{pattern, h})
	}
	mux := http.NewServeMux()
	for _, o := range next {
		mux.HandleFunc(o.pattern, o.handler) // panics on bad patterns before anything is committed
	}
	s.overrides = next
	s.override.Store(mux)
}

// AddSeries adds a series with one event <seriesTicker>-26JUN30 holding
// nMarkets active markets <event>-M001, <event>-M002, ... (at least three
// digits, more when nMarkets needs them), listed after the existing series.
// If a series with that ticker exists (including a default one), it is
// replaced in place. AddSeries panics if seriesTicker is empty or nMarkets is
// negative.
func (s *Server) AddSeries(seriesTicker string, nMarkets int) {
	if seriesTicker == "" || nMarkets < 0 {
		panic("kalshitest: AddSeries needs a non-empty ticker and nMarkets >= 0")
	}
	sd := s.tpl.build(syntheticSpec(seriesTicker, nMarkets))
	s.dataMu.Lock()
	defer s.dataMu.Unlock()
	s.data.Store(s.data.Load().with(sd))
}

// MarketTickers returns the tickers of the markets of seriesTicker in the
// order GET /markets lists them, or nil if the series does not exist.
func (s *Server) MarketTickers(seriesTicker string) []string {
	sd := s.data.Load().seriesBy[seriesTicker]
	if sd == nil {
		return nil
	}
	out := []string{}
	for _, e := range sd.events {
		for _, m := range e.markets {
			out = append(out, m.ticker)
		}
	}
	return out
}
