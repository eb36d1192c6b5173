package batch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/client"
	"github.com/kproxy/kproxy/fetch"
	"github.com/kproxy/kproxy/route"
)

// Typed batches mirror the seed's batch_get_markets, batch_get_events and
// batch_get_series: a list of tickers in, one result per distinct ticker
// out, failures reported per ticker under "errors". Each ticker's fetches
// are built as paths and pass the same checks as /batch items.

// Defaults and bounds of /batch/markets.
const (
	defaultLimit = 200
	maxLimit     = 1000
)

// marketStatuses is the status filter vocabulary of GET /markets.
var marketStatuses = map[string]bool{"unopened": true, "open": true, "paused": true, "closed": true, "settled": true}

type marketsRequest struct {
	SeriesTickers []string `json:"series_tickers"`
	Status        string   `json:"status"`
	Limit         *int     `json:"limit"`
	AllPages      bool     `json:"all_pages"`
}

type eventsRequest struct {
	EventTickers      []string `json:"event_tickers"`
	WithNestedMarkets *bool    `json:"with_nested_markets"`
}

type seriesRequest struct {
	SeriesTickers []string `json:"series_tickers"`
}

// marketsQuery is a validated /batch/markets request, minus its tickers.
type marketsQuery struct {
	status   string
	limit    int
	allPages bool
}

// handleMarkets serves POST /batch/markets: the markets of each series,
// series in parallel, the pages of one series in sequence.
func (h *Handler) handleMarkets(c echo.Context) error {
	start := time.Now()
	var req marketsRequest
	if err := decode(c, &req); err != nil {
		return refuse(c, err)
	}
	tickers, ierr := h.tickers("series_tickers", req.SeriesTickers)
	if ierr != nil {
		return refuse(c, ierr)
	}
	q := marketsQuery{status: req.Status, limit: defaultLimit, allPages: req.AllPages}
	if q.status != "" && !marketStatuses[q.status] {
		return refuse(c, badRequest("status %q is not one of unopened, open, paused, closed, settled", q.status))
	}
	if req.Limit != nil {
		if *req.Limit < 1 || *req.Limit > maxLimit {
			return refuse(c, badRequest("limit %d is not between 1 and %d", *req.Limit, maxLimit))
		}
		q.limit = *req.Limit
	}
	cl := newCall(c.Request())
	return h.serve(c, start, typedPlan(tickers, func(ctx context.Context, t string) client.Response {
		return h.seriesMarkets(ctx, cl, t, q)
	}, foldMarkets))
}

// handleEvents serves POST /batch/events: GET /events/{t} for each ticker,
// with_nested_markets defaulting to true as in the seed.
func (h *Handler) handleEvents(c echo.Context) error {
	start := time.Now()
	var req eventsRequest
	if err := decode(c, &req); err != nil {
		return refuse(c, err)
	}
	tickers, ierr := h.tickers("event_tickers", req.EventTickers)
	if ierr != nil {
		return refuse(c, ierr)
	}
	nested := req.WithNestedMarkets == nil || *req.WithNestedMarkets
	cl := newCall(c.Request())
	return h.serve(c, start, typedPlan(tickers, func(ctx context.Context, t string) client.Response {
		return h.event(ctx, cl, t, nested)
	}, foldEvents))
}

// handleSeries serves POST /batch/series: GET /series/{t} for each ticker.
func (h *Handler) handleSeries(c echo.Context) error {
	start := time.Now()
	var req seriesRequest
	if err := decode(c, &req); err != nil {
		return refuse(c, err)
	}
	tickers, ierr := h.tickers("series_tickers", req.SeriesTickers)
	if ierr != nil {
		return refuse(c, ierr)
	}
	cl := newCall(c.Request())
	return h.serve(c, start, typedPlan(tickers, func(ctx context.Context, t string) client.Response {
		return h.series(ctx, cl, t)
	}, foldSeries))
}

// tickers validates a ticker list (count, then syntax) and removes
// duplicates. The count bound applies to the list as sent.
func (h *Handler) tickers(field string, list []string) ([]string, *inputError) {
	if err := h.checkCount(field, len(list)); err != nil {
		return nil, err
	}
	return checkTickers(field, list)
}

// typedPlan makes one slot and one job per distinct ticker; the slot's id
// is the ticker.
func typedPlan(tickers []string, run func(context.Context, string) client.Response, fold func([]client.Response) any) plan {
	p := plan{ids: tickers, jobs: make([]job, len(tickers)), fold: fold}
	for i, t := range tickers {
		p.jobs[i] = job{slots: []int{i}, run: func(ctx context.Context) client.Response { return run(ctx, t) }}
	}
	return p
}

// seriesMarkets lists the markets of series t: one page, or with allPages
// every page following the cursor until it is empty, at most h.maxPages.
// The answer's body is the list of markets; NextCursor is set when more
// markets exist. Cache is the worst outcome of the pages (MISS, then
// STALE, then HIT). An empty listing of a series that does not exist is a
// 404: GET /markets answers an unknown series_ticker with an empty list.
// A page that fails fails the series: no partial listing is returned.
func (h *Handler) seriesMarkets(ctx context.Context, cl *call, t string, q marketsQuery) client.Response {
	markets := []json.RawMessage{}
	cursor, cache := "", "HIT"
	for range h.maxPages {
		v := url.Values{"series_ticker": {t}, "limit": {strconv.Itoa(q.limit)}}
		if q.status != "" {
			v.Set("status", q.status)
		}
		if cursor != "" {
			v.Set("cursor", cursor)
		}
		r, body := h.getTyped(ctx, cl, route.Prefix+"markets?"+v.Encode())
		if !r.OK() {
			return r
		}
		cache = worse(cache, r.Cache)
		var page struct {
			Markets []json.RawMessage `json:"markets"`
			Cursor  string            `json:"cursor"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return badAnswer(cache, fmt.Errorf("markets page: %w", err))
		}
		markets = append(markets, page.Markets...)
		cursor = page.Cursor
		if cursor == "" || !q.allPages {
			break
		}
	}
	if len(markets) == 0 && cursor == "" {
		if r, ok := h.seriesExists(ctx, cl, t); !ok {
			return r
		}
	}
	body, err := json.Marshal(markets)
	if err != nil {
		return badAnswer(cache, err)
	}
	return client.Response{Status: http.StatusOK, Cache: cache, Body: body, NextCursor: cursor}
}

// seriesExists asks GET /series/{t} whether series t exists. Only a 404
// says no (with the answer to give); any other outcome, including a
// failure or an unconfigured route, leaves the empty listing as it is.
func (h *Handler) seriesExists(ctx context.Context, cl *call, t string) (client.Response, bool) {
	tg, ierr := h.resolve(route.Prefix + "series/" + t)
	if ierr != nil {
		return client.Response{}, true
	}
	res := h.get(ctx, cl, tg)
	if res.Outcome == fetch.Failed || res.Entry.Status != http.StatusNotFound {
		return client.Response{}, true
	}
	return client.Response{Status: http.StatusNotFound, Cache: res.Outcome.XCache(), Error: "series " + t + " not found", Code: "not_found"}, false
}

// event fetches event t: body {"event": {...}, "markets": [...]}.
func (h *Handler) event(ctx context.Context, cl *call, t string, nested bool) client.Response {
	r, body := h.getTyped(ctx, cl, route.Prefix+"events/"+t+"?with_nested_markets="+strconv.FormatBool(nested))
	if !r.OK() {
		return r
	}
	var ev struct {
		Event   json.RawMessage `json:"event"`
		Markets json.RawMessage `json:"markets"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || isNull(ev.Event) {
		return badAnswer(r.Cache, fmt.Errorf("no event object (%v)", err))
	}
	if isNull(ev.Markets) {
		ev.Markets = json.RawMessage("[]")
	}
	out, err := json.Marshal(ev)
	if err != nil {
		return badAnswer(r.Cache, err)
	}
	r.Body = out
	return r
}

// series fetches series t: body is the "series" object of the answer.
func (h *Handler) series(ctx context.Context, cl *call, t string) client.Response {
	r, body := h.getTyped(ctx, cl, route.Prefix+"series/"+t)
	if !r.OK() {
		return r
	}
	var s struct {
		Series json.RawMessage `json:"series"`
	}
	if err := json.Unmarshal(body, &s); err != nil || isNull(s.Series) {
		return badAnswer(r.Cache, fmt.Errorf("no series object (%v)", err))
	}
	r.Body = s.Series
	return r
}

// getTyped fetches one path of a typed batch. On a 2xx answer it returns
// the upstream body to parse; otherwise the item's error answer, whose
// body is dropped (a typed error is reported as {status, error}).
func (h *Handler) getTyped(ctx context.Context, cl *call, path string) (client.Response, []byte) {
	t, ierr := h.resolve(path)
	if ierr != nil {
		// Tickers are checked, so only a route left out of cache.routes
		// gets here.
		return ierr.response(), nil
	}
	res := h.get(ctx, cl, t)
	r := response(res)
	r.Body = nil
	if !r.OK() {
		return r, nil
	}
	return r, res.Entry.Body
}

// badAnswer is the answer for an upstream 2xx whose body is not what the
// route promises.
func badAnswer(cache string, err error) client.Response {
	return client.Response{Status: http.StatusBadGateway, Cache: cache, Code: "bad_upstream_answer", Error: "unexpected upstream answer: " + err.Error()}
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// worse returns the worse of two cache outcomes: MISS, then STALE, then HIT.
func worse(a, b string) string {
	switch {
	case a == "MISS" || b == "MISS":
		return "MISS"
	case a == "STALE" || b == "STALE":
		return "STALE"
	}
	return "HIT"
}

// Answers of the typed batches. Their shapes are those of
// client.MarketsResponse, EventsResponse and SeriesResponse, with bodies
// kept raw.
type (
	marketsAnswer struct {
		MarketsBySeries map[string]json.RawMessage  `json:"markets_by_series"`
		Errors          map[string]client.ItemError `json:"errors"`
		Truncated       map[string]string           `json:"truncated,omitempty"`
	}
	eventsAnswer struct {
		Events map[string]json.RawMessage  `json:"events"`
		Errors map[string]client.ItemError `json:"errors"`
	}
	seriesAnswer struct {
		Series map[string]json.RawMessage  `json:"series"`
		Errors map[string]client.ItemError `json:"errors"`
	}
)

// split sorts typed answers into results and errors by ticker.
func split(rs []client.Response) (ok map[string]json.RawMessage, failed map[string]client.ItemError) {
	ok, failed = map[string]json.RawMessage{}, map[string]client.ItemError{}
	for _, r := range rs {
		if r.OK() {
			ok[r.ID] = r.Body
		} else {
			failed[r.ID] = client.ItemError{Status: r.Status, Error: r.Error, Code: r.Code}
		}
	}
	return ok, failed
}

func foldMarkets(rs []client.Response) any {
	a := marketsAnswer{}
	a.MarketsBySeries, a.Errors = split(rs)
	for _, r := range rs {
		if r.OK() && r.NextCursor != "" {
			if a.Truncated == nil {
				a.Truncated = map[string]string{}
			}
			a.Truncated[r.ID] = r.NextCursor
		}
	}
	return a
}

func foldEvents(rs []client.Response) any {
	a := eventsAnswer{}
	a.Events, a.Errors = split(rs)
	return a
}

func foldSeries(rs []client.Response) any {
	a := seriesAnswer{}
	a.Series, a.Errors = split(rs)
	return a
}
