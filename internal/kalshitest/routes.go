package kalshitest

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// balanceUpdatedTS is the fixed updated_ts of GET /portfolio/balance
// (2026-05-02T15:00:11Z, the samples' updated_time).
const balanceUpdatedTS = 1777734011

// routes returns the mux of the built-in routes.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+apiPrefix+"/markets", s.getMarkets)
	mux.HandleFunc("GET "+apiPrefix+"/markets/{ticker}", s.getMarket)
	mux.HandleFunc("GET "+apiPrefix+"/markets/{ticker}/orderbook", s.getOrderbook)
	mux.HandleFunc("GET "+apiPrefix+"/markets/trades", s.getTrades)
	mux.HandleFunc("GET "+apiPrefix+"/markets/candlesticks", s.getBatchCandles)
	mux.HandleFunc("GET "+apiPrefix+"/series/{series_ticker}/markets/{ticker}/candlesticks", s.getMarketCandles)
	mux.HandleFunc("GET "+apiPrefix+"/series/{series_ticker}/events/{event_ticker}/candlesticks", s.getEventCandles)
	mux.HandleFunc("GET "+apiPrefix+"/historical/cutoff", s.getHistoricalCutoff)
	mux.HandleFunc("GET "+apiPrefix+"/historical/markets", s.getHistoricalMarkets)
	mux.HandleFunc("GET "+apiPrefix+"/historical/markets/{ticker}", s.getHistoricalMarket)
	mux.HandleFunc("GET "+apiPrefix+"/historical/markets/{ticker}/candlesticks", s.getHistoricalCandles)
	mux.HandleFunc("GET "+apiPrefix+"/historical/trades", s.getHistoricalTrades)
	mux.HandleFunc("GET "+apiPrefix+"/events", s.getEvents)
	mux.HandleFunc("GET "+apiPrefix+"/events/{event_ticker}", s.getEvent)
	mux.HandleFunc("GET "+apiPrefix+"/series", s.getSeriesList)
	mux.HandleFunc("GET "+apiPrefix+"/series/{series_ticker}", s.getSeries)
	mux.HandleFunc("GET "+apiPrefix+"/exchange/status", getExchangeStatus)
	mux.HandleFunc("GET "+apiPrefix+"/portfolio/balance", getBalance)
	mux.HandleFunc("POST "+apiPrefix+"/portfolio/orders", s.createOrder)
	mux.HandleFunc("POST "+apiPrefix+"/portfolio/events/orders", s.createOrder)
	// Everything else, including other methods on the paths above, is a
	// Kalshi-style 404 (a method-less catch-all also keeps ServeMux from
	// answering 405).
	mux.HandleFunc("/", s.notFound)
	return mux
}

func (s *Server) notFound(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusNotFound, s.tpl.notFound)
}

// GET /markets
func (s *Server) getMarkets(w http.ResponseWriter, r *http.Request) {
	q, limit, offset, ok := pageQuery(w, r, 100, 1000)
	if !ok {
		return
	}
	status, err := statusParam(q, true)
	if err != nil {
		badRequest(w, err)
		return
	}
	f := marketFilterOf(q)

	u := s.data.Load()
	candidates := u.markets
	switch {
	case f.event != "":
		candidates = nil
		if e := u.eventBy[f.event]; e != nil {
			candidates = e.markets
		}
	case f.series != "":
		candidates = nil
		if sd := u.seriesBy[f.series]; sd != nil {
			for _, e := range sd.events {
				candidates = append(candidates, e.markets...)
			}
		}
	}
	var selected [][]byte
	for _, m := range candidates {
		if s.historical(m) || !f.matches(m) || (status != "" && !statusMatches(status, m.status)) {
			continue
		}
		selected = append(selected, m.raw)
	}
	page, cursor := paginate(selected, offset, limit)
	writeJSON(w, http.StatusOK, listBody("markets", page, cursor))
}

// GET /markets/{ticker}
func (s *Server) getMarket(w http.ResponseWriter, r *http.Request) {
	if m := s.liveMarket(w, r); m != nil {
		writeJSON(w, http.StatusOK, m.body)
	}
}

// GET /markets/{ticker}/orderbook
func (s *Server) getOrderbook(w http.ResponseWriter, r *http.Request) {
	m := s.liveMarket(w, r)
	if m == nil {
		return
	}
	depth := 0
	if v := r.URL.Query().Get("depth"); v != "" {
		d, err := strconv.Atoi(v)
		if err != nil || d > 100 {
			badRequest(w, fmt.Errorf("invalid depth %q: want an integer <= 100", v))
			return
		}
		depth = d
	}
	if depth <= 0 {
		writeJSON(w, http.StatusOK, m.bookBody)
		return
	}
	best := func(levels [][2]string) [][2]string { return levels[max(0, len(levels)-depth):] }
	writeJSON(w, http.StatusOK, mustMarshal(orderbook{bookSides{best(m.book.YesDollars), best(m.book.NoDollars)}}))
}

// GET /events
func (s *Server) getEvents(w http.ResponseWriter, r *http.Request) {
	q, limit, offset, ok := pageQuery(w, r, 200, 200)
	if !ok {
		return
	}
	status, errStatus := statusParam(q, false)
	nested, errNested := boolParam(q, "with_nested_markets")
	if err := cmp.Or(errStatus, errNested); err != nil {
		badRequest(w, err)
		return
	}
	seriesTicker := q.Get("series_ticker")

	var selected [][]byte
	for _, e := range s.data.Load().events {
		if seriesTicker != "" && e.series != seriesTicker {
			continue
		}
		if status != "" && !eventMatches(e, status) {
			continue
		}
		if nested {
			selected = append(selected, e.bodies().rawNested)
		} else {
			selected = append(selected, e.rawFlat)
		}
	}
	page, cursor := paginate(selected, offset, limit)
	writeJSON(w, http.StatusOK, listBody("events", page, cursor))
}

// eventMatches reports whether any market of e matches the status filter.
func eventMatches(e *eventData, filter string) bool {
	for _, m := range e.markets {
		if statusMatches(filter, m.status) {
			return true
		}
	}
	return false
}

// GET /events/{event_ticker}
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	e := s.data.Load().eventBy[r.PathValue("event_ticker")]
	if e == nil {
		s.notFound(w, r)
		return
	}
	nested, err := boolParam(r.URL.Query(), "with_nested_markets")
	if err != nil {
		badRequest(w, err)
		return
	}
	if nested {
		writeJSON(w, http.StatusOK, e.bodies().bodyNested)
	} else {
		writeJSON(w, http.StatusOK, e.bodies().bodyFlat)
	}
}

// GET /series
func (s *Server) getSeriesList(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.data.Load().seriesList)
}

// GET /series/{series_ticker}
func (s *Server) getSeries(w http.ResponseWriter, r *http.Request) {
	sd := s.data.Load().seriesBy[r.PathValue("series_ticker")]
	if sd == nil {
		s.notFound(w, r)
		return
	}
	writeJSON(w, http.StatusOK, sd.body)
}

// GET /exchange/status
func getExchangeStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, []byte(`{"exchange_active":true,"trading_active":true}`))
}

// balance is the body of GET /portfolio/balance. Amounts are in cents.
type balance struct {
	Balance        int64  `json:"balance"`
	PortfolioValue int64  `json:"portfolio_value"`
	UpdatedTS      int64  `json:"updated_ts"`
	KeyID          string `json:"key_id"`
}

// GET /portfolio/balance: the amounts are a pure function of the key id.
func getBalance(w http.ResponseWriter, r *http.Request) {
	if !requireAuthHeaders(w, r) {
		return
	}
	key := r.Header.Get(HeaderKey)
	h := fnv.New64a()
	h.Write([]byte(key))
	sum := h.Sum64()
	writeJSON(w, http.StatusOK, mustMarshal(balance{
		Balance:        int64(sum % 100_000_000),
		PortfolioValue: int64((sum >> 32) % 50_000_000),
		UpdatedTS:      balanceUpdatedTS,
		KeyID:          key,
	}))
}

// POST /portfolio/orders and POST /portfolio/events/orders: the order echoes
// the fields of the request body and adds order_id, status and
// client_order_id ("" when the body has none).
func (s *Server) createOrder(w http.ResponseWriter, r *http.Request) {
	if !requireAuthHeaders(w, r) {
		return
	}
	var order map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&order); err != nil || order == nil {
		badRequest(w, errors.New("invalid order: the body must be a JSON object"))
		return
	}
	if _, ok := order["client_order_id"]; !ok {
		order["client_order_id"] = json.RawMessage(`""`)
	}
	n := s.orderSeq.Add(1)
	order["order_id"] = mustMarshal(fmt.Sprintf("00000000-0000-4000-8000-%012d", n))
	order["status"] = json.RawMessage(`"resting"`)
	order["created_time"] = mustMarshal(time.Now().UTC().Format(time.RFC3339Nano))
	writeJSON(w, http.StatusCreated, wrap("order", mustMarshal(order)))
}

// requireAuthHeaders answers 401 and returns false unless the request carries
// all three KALSHI-ACCESS-* headers.
func requireAuthHeaders(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get(HeaderKey) == "" || r.Header.Get(HeaderTimestamp) == "" || r.Header.Get(HeaderSignature) == "" {
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing auth headers")
		return false
	}
	return true
}

// statusParam returns the status filter of q ("" when absent), or an error
// unless it is one of unopened, open, closed, settled, or paused when
// withPaused (GET /markets takes it, GET /events does not).
func statusParam(q url.Values, withPaused bool) (string, error) {
	v := q.Get("status")
	if v == "" || validStatus(v, withPaused) {
		return v, nil
	}
	want := "unopened, open, closed, settled"
	if withPaused {
		want = "unopened, open, paused, closed, settled"
	}
	return "", fmt.Errorf("invalid status %q: want one of %s", v, want)
}

// marketFilter is the series_ticker, event_ticker and tickers filters of a
// market list, combined with AND; an absent one matches every market.
type marketFilter struct {
	series, event string
	tickers       map[string]bool // nil: no tickers filter
}

func marketFilterOf(q url.Values) marketFilter {
	return marketFilter{series: q.Get("series_ticker"), event: q.Get("event_ticker"), tickers: setOf(splitList(q["tickers"]))}
}

func (f marketFilter) matches(m *marketData) bool {
	return (f.series == "" || m.series == f.series) &&
		(f.event == "" || m.event == f.event) &&
		(f.tickers == nil || f.tickers[m.ticker])
}

// validStatus reports whether v belongs to the status filter vocabulary of
// GET /markets (withPaused) or GET /events.
func validStatus(v string, withPaused bool) bool {
	switch v {
	case "unopened", "open", "closed", "settled":
		return true
	case "paused":
		return withPaused
	}
	return false
}

// limitParam parses the limit query parameter: def when absent, an error
// unless it is an integer in [1, maxLimit].
func limitParam(q url.Values, def, maxLimit int) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, fmt.Errorf("invalid limit %q: want an integer in [1, %d]", v, maxLimit)
	}
	return n, nil
}

// pageQuery returns r's query and its page parameters (see pageParams);
// when they are bad it answers 400 and returns ok false.
func pageQuery(w http.ResponseWriter, r *http.Request, def, maxLimit int) (q url.Values, limit, offset int, ok bool) {
	q = r.URL.Query()
	limit, offset, err := pageParams(q, def, maxLimit)
	if err != nil {
		badRequest(w, err)
		return q, 0, 0, false
	}
	return q, limit, offset, true
}

// pageParams parses limit (see limitParam) and cursor (see decodeCursor).
func pageParams(q url.Values, def, maxLimit int) (limit, offset int, err error) {
	if limit, err = limitParam(q, def, maxLimit); err != nil {
		return 0, 0, err
	}
	if offset, err = decodeCursor(q.Get("cursor")); err != nil {
		return 0, 0, err
	}
	return limit, offset, nil
}

// boolParam parses an optional boolean query parameter (false when absent).
func boolParam(q url.Values, name string) (bool, error) {
	v := q.Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("invalid %s %q: want true or false", name, v)
	}
	return b, nil
}

// cursorPrefix marks our cursors, so that random strings are rejected.
const cursorPrefix = "kalshitest:"

// encodeCursor returns the opaque cursor of the page starting at offset.
func encodeCursor(offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.Itoa(offset)))
}

// decodeCursor returns the offset encoded in cursor; "" is offset 0.
func decodeCursor(cursor string) (int, error) {
	if cursor == "" {
		return 0, nil
	}
	bad := fmt.Errorf("invalid cursor %q", cursor)
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return 0, bad
	}
	n, err := strconv.Atoi(strings.TrimPrefix(string(raw), cursorPrefix))
	if err != nil || n < 0 || !strings.HasPrefix(string(raw), cursorPrefix) {
		return 0, bad
	}
	return n, nil
}

// paginate returns the page of items starting at offset and the cursor of
// the next page ("" when this is the last page).
func paginate(items [][]byte, offset, limit int) ([][]byte, string) {
	start := min(offset, len(items))
	end := min(start+limit, len(items))
	if end >= len(items) {
		return items[start:end], ""
	}
	return items[start:end], encodeCursor(end)
}

// listBody returns {"<key>":[items...],"cursor":"<cursor>"}; cursor must not
// need JSON escaping (encodeCursor's output never does).
func listBody(key string, items [][]byte, cursor string) []byte {
	n := len(key) + len(cursor) + 24
	for _, it := range items {
		n += len(it) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"`...)
	b = append(b, key...)
	b = append(b, `":[`...)
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
	}
	b = append(b, `],"cursor":"`...)
	b = append(b, cursor...)
	return append(b, `"}`...)
}

// apiError is Kalshi's error envelope.
type apiError struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Service string `json:"service"`
}

func errorJSON(code, message string) []byte {
	return mustMarshal(apiError{errorDetail{code, message, "exchange"}})
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorJSON(code, message))
}

func badRequest(w http.ResponseWriter, err error) {
	writeError(w, http.StatusBadRequest, "bad_request", err.Error())
}

// errorBody returns the default body of a Fault with the given status.
func (s *Server) errorBody(status int) []byte {
	switch status {
	case http.StatusTooManyRequests:
		return s.tpl.tooMany
	case http.StatusNotFound:
		return s.tpl.notFound
	}
	text := strings.ToLower(http.StatusText(status))
	if text == "" {
		text = "status " + strconv.Itoa(status)
	}
	return errorJSON(strings.ReplaceAll(text, " ", "_"), text)
}

// writeJSON answers status with a JSON body. Like Kalshi, it sets no ETag
// and no Cache-Control.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}
