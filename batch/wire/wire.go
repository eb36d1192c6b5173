// Package wire is the JSON shape of kproxy's batch API (POST /batch,
// /batch/markets, /batch/events, /batch/series and their NDJSON progress
// lines). The server (package batch) owns it; the Go client imports it.
package wire

import "encoding/json"

// Item is one request of a generic batch: a GET of a public cached route
// under /trade-api/v2/.
type Item struct {
	// ID names the item in its Response; empty means the item's index
	// ("0", "1", ...).
	ID string `json:"id,omitempty"`
	// Path is the path and query, e.g.
	// "/trade-api/v2/markets?series_ticker=KXFOO&status=open". Absolute
	// URLs, dot segments, encoded slashes and private routes are refused
	// with a per-item 400.
	Path string `json:"path"`
	// Method, when set, must be GET.
	Method string `json:"method,omitempty"`
	// AllPages follows Kalshi's cursor from Path (a cursor-paginated route:
	// /markets, /markets/trades, /events, /historical/markets,
	// /historical/trades, ...) until it is empty, at most the server's
	// batch.max_pages pages, and answers every page's list joined in one
	// body: {"<list>": [...], "cursor": "...", "pages": N, "truncated": b}.
	// On any other route the item is a 400 (code not_paginated), never
	// fetched.
	AllPages bool `json:"all_pages,omitempty"`
}

// BatchRequest is the body of POST /batch.
type BatchRequest struct {
	Requests []Item `json:"requests"`
}

// Response is the answer to one item: an element of /batch's "responses"
// and the shape of every item line of a progress stream.
type Response struct {
	// ID is the item's id, or, in a typed batch, its ticker.
	ID string `json:"id"`
	// Status is the upstream status, or the status kproxy gave the item
	// when it produced the answer itself (a refused path, a failed fetch).
	Status int `json:"status"`
	// Cache is HIT, MISS or STALE; empty for items never fetched.
	Cache string `json:"cache,omitempty"`
	// Body is the upstream JSON answer (a non-JSON answer is a JSON
	// string). In a typed batch's stream it is the ticker's result: the
	// list of markets, the {"event","markets"} object or the series object.
	Body json.RawMessage `json:"body,omitempty"`
	// Error says what went wrong when Status is not 2xx.
	Error string `json:"error,omitempty"`
	// Code is a machine-readable error code, when one is known.
	Code string `json:"code,omitempty"`
	// NextCursor is set when a listing is incomplete: in a /batch/markets
	// stream, more markets of the series follow from this cursor; on an
	// all_pages item, the cursor to continue from (max_pages stopped it),
	// or, when a page failed, the cursor of that page.
	NextCursor string `json:"next_cursor,omitempty"`
	// Pages, on an all_pages item, counts the pages read: all of them on
	// success, those before the failing page on failure.
	Pages int `json:"pages,omitempty"`
}

// OK reports whether Status is 2xx.
func (r *Response) OK() bool { return r.Status >= 200 && r.Status < 300 }

// Line is one item line of a progress stream.
type Line = Response

// BatchResponse is the answer of POST /batch: one Response per item, in
// request order.
type BatchResponse struct {
	Responses []Response `json:"responses"`
}

// Done is the last line of a progress stream.
type Done struct {
	Done bool `json:"done"`
	// OK counts items answered 2xx, Failed the others.
	OK     int `json:"ok"`
	Failed int `json:"failed"`
	// ElapsedMS is how long the batch took on the server.
	ElapsedMS int64 `json:"elapsed_ms"`
}

// ItemError is a typed batch's failure for one ticker.
type ItemError struct {
	Status int    `json:"status"`
	Error  string `json:"error"`
	Code   string `json:"code,omitempty"`
}

// MarketsRequest is the body of POST /batch/markets: the markets of each
// series, as GET /markets?series_ticker=T would list them.
type MarketsRequest struct {
	SeriesTickers []string `json:"series_tickers"`
	// Status filters markets: unopened, open, paused, closed or settled;
	// empty means all.
	Status string `json:"status,omitempty"`
	// Limit is the page size, 1 to 1000; 0 means the server's default (200).
	Limit int `json:"limit,omitempty"`
	// AllPages follows Kalshi's cursor until the listing ends (bounded by
	// the server's batch.max_pages); false fetches one page per series.
	AllPages bool `json:"all_pages,omitempty"`
}

// MarketsResponse is the answer of POST /batch/markets. Every requested
// series is in exactly one of MarketsBySeries and Errors.
type MarketsResponse struct {
	MarketsBySeries map[string][]json.RawMessage `json:"markets_by_series"`
	Errors          map[string]ItemError         `json:"errors"`
	// Truncated lists the series whose listing is incomplete (AllPages was
	// false, or batch.max_pages stopped it), with the cursor to continue
	// from.
	Truncated map[string]string `json:"truncated,omitempty"`
}

// EventsRequest is the body of POST /batch/events.
type EventsRequest struct {
	EventTickers []string `json:"event_tickers"`
	// WithNestedMarkets is passed to GET /events/{t}; nil means true.
	WithNestedMarkets *bool `json:"with_nested_markets,omitempty"`
}

// EventResult is one event of an EventsResponse.
type EventResult struct {
	Event   json.RawMessage   `json:"event"`
	Markets []json.RawMessage `json:"markets"`
}

// EventsResponse is the answer of POST /batch/events.
type EventsResponse struct {
	Events map[string]EventResult `json:"events"`
	Errors map[string]ItemError   `json:"errors"`
}

// SeriesRequest is the body of POST /batch/series.
type SeriesRequest struct {
	SeriesTickers []string `json:"series_tickers"`
}

// SeriesResponse is the answer of POST /batch/series: each series object
// as GET /series/{t} returns it under "series".
type SeriesResponse struct {
	Series map[string]json.RawMessage `json:"series"`
	Errors map[string]ItemError       `json:"errors"`
}

// Paths of the batch endpoints.
const (
	PathBatch   = "/batch"
	PathMarkets = "/batch/markets"
	PathEvents  = "/batch/events"
	PathSeries  = "/batch/series"
)
