// Package batch serves kproxy's batch endpoints: many public GETs in one
// call, through the one fetch path.
//
// POST /batch takes a list of paths; POST /batch/markets, /batch/events and
// /batch/series take lists of tickers, mirroring the Python seed's
// batch_get_* helpers; a /batch item with all_pages joins every page of a
// cursor-paginated listing (a backfill, pages.go). Every item, and every
// page, goes through (*fetch.Fetcher).Get, so it
// shares the cache, coalescing, rate limit and breaker with the proxy, and
// kproxy never contacts the upstream any other way. Items of one request run
// concurrently, at most Config.Concurrency at a time; one failed item never
// fails the others. The wire types live in package batch/wire (package client
// uses the same).
package batch

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/status"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Defaults of the zero Config fields.
const (
	DefaultMaxItems    = 100
	DefaultConcurrency = 16
	DefaultMaxPages    = 50
)

// MaxBody bounds a batch request body; a larger one is answered 413.
const MaxBody = 1 << 20

// Config configures a Handler.
type Config struct {
	// Fetcher answers every item; required.
	Fetcher *fetch.Fetcher
	// Routes decides which paths are public cacheable routes, the only ones
	// a batch may carry; required.
	Routes *route.Table
	// MaxItems bounds the items (or tickers) of one request; more is a 413.
	// 0 means DefaultMaxItems.
	MaxItems int
	// Concurrency bounds the items of one request in flight at once; a
	// /batch/markets series or an all_pages item holds its slot while it
	// pages. 0 means
	// DefaultConcurrency. There is deliberately no bound across requests:
	// cache hits must never queue behind misses, and misses are already
	// bounded by the upstream rate limit (which answers 429 after max_wait
	// rather than letting work pile up).
	Concurrency int
	// MaxPages bounds the pages one listing follows with all_pages: a
	// series of /batch/markets, or a /batch item (a backfill). 0 means
	// DefaultMaxPages.
	MaxPages int
	// Metrics may be nil (nothing recorded).
	Metrics *metrics.Metrics
	// Ledger, if set, is told of every item fetch, charged to its batch
	// endpoint (the status page's headline figures); nil counts nothing.
	Ledger *status.Ledger
	// Logger may be nil (nothing logged).
	Logger *slog.Logger
}

// Handler serves the batch endpoints. It is safe for concurrent use and
// keeps no state between requests.
type Handler struct {
	fetch       *fetch.Fetcher
	routes      *route.Table
	maxItems    int
	concurrency int
	maxPages    int
	m           *metrics.Metrics
	ledger      *status.Ledger
	log         *slog.Logger
}

// New validates cfg and builds a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Fetcher == nil || cfg.Routes == nil {
		return nil, errors.New("batch: fetcher and routes are required")
	}
	if cfg.MaxItems < 0 || cfg.Concurrency < 0 || cfg.MaxPages < 0 {
		return nil, errors.New("batch: max items, concurrency and max pages must not be negative")
	}
	h := &Handler{
		fetch:       cfg.Fetcher,
		routes:      cfg.Routes,
		maxItems:    cmp.Or(cfg.MaxItems, DefaultMaxItems),
		concurrency: cmp.Or(cfg.Concurrency, DefaultConcurrency),
		maxPages:    cmp.Or(cfg.MaxPages, DefaultMaxPages),
		m:           cfg.Metrics,
		ledger:      cfg.Ledger,
		log:         cfg.Logger,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h, nil
}

// Register adds the batch routes (all POST) with add, typically
// (*proxy.Server).Handle.
func (h *Handler) Register(add func(method, path string, h echo.HandlerFunc)) {
	add(http.MethodPost, "/batch", h.handleBatch)
	add(http.MethodPost, "/batch/markets", h.handleMarkets)
	add(http.MethodPost, "/batch/events", h.handleEvents)
	add(http.MethodPost, "/batch/series", h.handleSeries)
}

// call is what every item fetch of one batch request carries from it.
type call struct {
	header     http.Header
	remoteAddr string
	noCache    bool
	// charge is the batch endpoint ("/batch", "/batch/markets", ...): the
	// status page charges the items' requests and upstream calls to it.
	charge string
	// client names the batch's client (fetch.ClientName); "" when its
	// Kproxy-Client is refused (then every item fetch refuses it too).
	client string
}

// newCall takes from the batch request what its items' fetches need.
func (h *Handler) newCall(c echo.Context) *call {
	r := c.Request()
	client, _ := h.fetch.ClientName(r.Header, r.RemoteAddr)
	return &call{header: itemHeader(r.Header), remoteAddr: r.RemoteAddr, noCache: fetch.NoCache(r.Header), charge: c.Path(), client: client}
}

// notForwarded are batch request headers its items' fetches never carry:
// those describing the batch call itself. Credentials are not forwarded
// either: every item goes with upstream.OwnKey (a KALSHI-ACCESS-SIGNATURE
// covers the method and path it was made for, here POST /batch, so it can
// never be valid for an item's GET, and Kalshi rejects an invalid signature
// even on public routes).
var notForwarded = map[string]bool{
	"Content-Type": true, "Content-Length": true, "Content-Encoding": true, "Accept": true, "Expect": true,
}

// itemHeader is the header the items' fetches carry: the batch request's
// end-to-end headers but those in notForwarded. The fetch path drops
// hop-by-hop and cache-variant headers itself, and the upstream client the
// credentials.
func itemHeader(in http.Header) http.Header {
	out := make(http.Header, len(in))
	for k, vs := range in {
		if !notForwarded[k] {
			out[k] = vs
		}
	}
	return out
}

// get fetches one resolved item through the fetch path and counts it in
// the ledger: every fetch of an item, a page of a series or a series check
// (an item repeated in one batch is fetched, and counted, once). It starts
// nothing once ctx is done, so a client that has gone causes no new
// upstream work.
func (h *Handler) get(ctx context.Context, c *call, t target) fetch.Result {
	if err := ctx.Err(); err != nil {
		return fetch.Result{Outcome: fetch.Failed, Err: upstream.Canceled(err)}
	}
	res := h.fetch.Get(ctx, &fetch.Request{
		Route:       t.route,
		Key:         t.key,
		EscapedPath: t.escapedPath,
		RawQuery:    t.rawQuery,
		Header:      c.header,
		Credentials: upstream.OwnKey,
		Charge:      c.charge,
		NoCache:     c.noCache,
		RemoteAddr:  c.remoteAddr,
		Client:      c.client,
	})
	h.ledger.Request(c.charge, c.client, res.Outcome.XCache(), res.Expired())
	return res
}
