package batch

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/kproxy/kproxy/internal/httperr"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/batch/wire"
	"github.com/kproxy/kproxy/cache"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/route"
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
	cl := h.newCall(c)
	return h.serve(c, start, typedPlan(tickers, func(ctx context.Context, t string) wire.Response {
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
	cl := h.newCall(c)
	return h.serve(c, start, typedPlan(tickers, func(ctx context.Context, t string) wire.Response {
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
	cl := h.newCall(c)
	return h.serve(c, start, typedPlan(tickers, func(ctx context.Context, t string) wire.Response {
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
func typedPlan(tickers []string, run func(context.Context, string) wire.Response, fold func([]wire.Response) any) plan {
	p := plan{ids: tickers, jobs: make([]job, len(tickers)), fold: fold}
	for i, t := range tickers {
		p.jobs[i] = job{slots: []int{i}, run: func(ctx context.Context) wire.Response { return run(ctx, t) }}
	}
	return p
}

// seriesMarkets lists the markets of series t: one page, or with allPages
// every page following the cursor until it is empty, at most h.maxPages.
// The answer's body is the list of markets; NextCursor is set when more
// markets exist. Cache is the worst outcome of the pages (see worse). An
// empty listing of a series that does not exist is a 404: GET /markets
// answers an unknown series_ticker with an empty list. A page that fails
// fails the series: no partial listing is returned.
func (h *Handler) seriesMarkets(ctx context.Context, cl *call, t string, q marketsQuery) wire.Response {
	var markets []byte // the elements of every page, comma-separated
	l := h.follow(ctx, cl, q.allPages, func(cursor string) string {
		v := url.Values{"series_ticker": {t}, "limit": {strconv.Itoa(q.limit)}}
		if q.status != "" {
			v.Set("status", q.status)
		}
		if cursor != "" {
			v.Set("cursor", cursor)
		}
		return route.Prefix + "markets?" + v.Encode()
	}, func(p *listPage, body []byte) error {
		items, err := p.items("markets", body)
		markets = appendItems(markets, items)
		return err
	})
	if l.failed != nil {
		r := *l.failed
		r.Body = nil // a typed error is reported as {status, error}
		return r
	}
	if len(markets) == 0 && l.cursor == "" {
		if r, ok := h.seriesExists(ctx, cl, t); !ok {
			return r
		}
	}
	body := make([]byte, 0, len(markets)+2)
	body = append(append(append(body, '['), markets...), ']')
	return wire.Response{Status: http.StatusOK, Cache: l.cache, Body: body, NextCursor: l.cursor}
}

// seriesExists asks GET /series/{t} whether series t exists. Only a 404
// says no (with the answer to give); any other outcome, including a
// failure or an unconfigured route, leaves the empty listing as it is.
func (h *Handler) seriesExists(ctx context.Context, cl *call, t string) (wire.Response, bool) {
	tg, ierr := h.resolve(route.Prefix + "series/" + t)
	if ierr != nil {
		return wire.Response{}, true
	}
	res := h.get(ctx, cl, tg)
	if res.Outcome == fetch.Failed || res.Entry.Status != http.StatusNotFound {
		return wire.Response{}, true
	}
	return wire.Response{Status: http.StatusNotFound, Cache: res.Outcome.XCache(), Error: "series " + t + " not found", Code: httperr.CodeNotFound}, false
}

// event fetches event t: body {"event": {...}, "markets": [...]}.
func (h *Handler) event(ctx context.Context, cl *call, t string, nested bool) wire.Response {
	r, e := h.getTyped(ctx, cl, route.Prefix+"events/"+t+"?with_nested_markets="+strconv.FormatBool(nested))
	if !r.OK() {
		return r
	}
	body := e.Body
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
func (h *Handler) series(ctx context.Context, cl *call, t string) wire.Response {
	r, e := h.getTyped(ctx, cl, route.Prefix+"series/"+t)
	if !r.OK() {
		return r
	}
	body := e.Body
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
// the upstream entry to read; otherwise the item's error answer, whose body
// is dropped (a typed error is reported as {status, error}).
func (h *Handler) getTyped(ctx context.Context, cl *call, path string) (wire.Response, *cache.Entry) {
	t, ierr := h.resolve(path)
	if ierr != nil {
		// Tickers are checked, so only a route left out of cache.routes
		// gets here.
		return ierr.response(), nil
	}
	res := h.get(ctx, cl, t)
	if res.Outcome != fetch.Failed && res.Entry.Status/100 == 2 {
		return wire.Response{Status: res.Entry.Status, Cache: res.Outcome.XCache()}, res.Entry
	}
	r := response(res)
	r.Body = nil
	return r, nil
}

// badAnswer is the answer for an upstream 2xx whose body is not what the
// route promises.
func badAnswer(cache string, err error) wire.Response {
	return wire.Response{Status: http.StatusBadGateway, Cache: cache, Code: httperr.CodeBadUpstreamAnswer, Error: "unexpected upstream answer: " + err.Error()}
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// split sorts typed answers into results and errors by ticker.
func split(rs []wire.Response) (ok map[string]json.RawMessage, failed map[string]wire.ItemError) {
	ok, failed = map[string]json.RawMessage{}, map[string]wire.ItemError{}
	for _, r := range rs {
		if r.OK() {
			ok[r.ID] = r.Body
		} else {
			failed[r.ID] = wire.ItemError{Status: r.Status, Error: r.Error, Code: r.Code}
		}
	}
	return ok, failed
}

func foldMarkets(rs []wire.Response) any {
	ok, failed := split(rs)
	fields := []field{{"markets_by_series", ok}, {"errors", failed}}
	truncated := map[string]string{}
	for _, r := range rs {
		if r.OK() && r.NextCursor != "" {
			truncated[r.ID] = r.NextCursor
		}
	}
	if len(truncated) > 0 {
		fields = append(fields, field{"truncated", truncated})
	}
	return encodeAnswer(fields...)
}

func foldEvents(rs []wire.Response) any {
	ok, failed := split(rs)
	return encodeAnswer(field{"events", ok}, field{"errors", failed})
}

func foldSeries(rs []wire.Response) any {
	ok, failed := split(rs)
	return encodeAnswer(field{"series", ok}, field{"errors", failed})
}

// rawAnswer is a JSON document already encoded; writeJSON sends it as is.
type rawAnswer []byte

// field is one member of a typed batch answer.
type field struct {
	name  string
	value any
}

// encodeAnswer writes a typed batch answer. The per-ticker bodies
// (map[string]json.RawMessage) are upstream JSON that kproxy has already
// parsed: they are written as they are, not re-encoded, so a warm batch
// costs no JSON work on the markets themselves. Keys are sorted, as
// encoding/json sorts map keys.
func encodeAnswer(fields ...field) rawAnswer {
	size := 64
	for _, f := range fields {
		if raw, ok := f.value.(map[string]json.RawMessage); ok {
			for k, v := range raw {
				size += len(k) + len(v) + 8
			}
		}
	}
	b := make([]byte, 1, size)
	b[0] = '{'
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, f.name)
		b = append(b, ':')
		raw, ok := f.value.(map[string]json.RawMessage)
		if !ok {
			v, _ := json.Marshal(f.value)
			b = append(b, v...)
			continue
		}
		b = append(b, '{')
		for j, k := range slices.Sorted(maps.Keys(raw)) {
			if j > 0 {
				b = append(b, ',')
			}
			kq, _ := json.Marshal(k)
			b = append(append(append(b, kq...), ':'), raw[k]...)
		}
		b = append(b, '}')
	}
	return append(b, '}', '\n')
}
