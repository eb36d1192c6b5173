package kalshitest

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"net/url"
	"strconv"
)

// maxCandles bounds the candlesticks of one answer (all markets together),
// like Kalshi's 10 000 candles per batch request.
const maxCandles = 10000

// priceWalk is a deterministic price path of a market: a slow wave plus
// hourly noise, in cents.
type priceWalk struct {
	seed   uint64
	base   float64
	amp    float64
	period float64 // seconds
	phase  float64
	spread int
	oi0    int
}

func newPriceWalk(m market) priceWalk {
	h := fnv.New64a()
	h.Write([]byte("candles:" + m.Ticker))
	r := prng(h.Sum64())
	return priceWalk{
		seed:   h.Sum64(),
		base:   float64(r.between(20, 80)),
		amp:    float64(r.between(5, 18)),
		period: float64(r.between(2, 10) * 86400),
		phase:  float64(r.between(0, 628)) / 100,
		spread: r.between(1, 3),
		oi0:    r.between(100, 3000),
	}
}

// at returns the price at ts (Unix seconds), in cents within [2, 98].
func (w priceWalk) at(ts int64) int {
	n := prng(w.seed ^ uint64(ts/3600)*0x9e3779b97f4a7c15)
	noise := float64(n.next()%7) - 3
	p := w.base + w.amp*math.Sin(2*math.Pi*float64(ts)/w.period+w.phase) + noise
	return min(max(int(math.Round(p)), 2), 98)
}

type ohlcJSON struct {
	Open  string `json:"open_dollars"`
	Low   string `json:"low_dollars"`
	High  string `json:"high_dollars"`
	Close string `json:"close_dollars"`
}

type priceJSON struct {
	Open     string `json:"open_dollars"`
	Low      string `json:"low_dollars"`
	High     string `json:"high_dollars"`
	Close    string `json:"close_dollars"`
	Mean     string `json:"mean_dollars"`
	Previous string `json:"previous_dollars"`
	Min      string `json:"min_dollars"`
	Max      string `json:"max_dollars"`
}

// candleJSON is Kalshi's candlestick object.
type candleJSON struct {
	EndPeriodTS    int64     `json:"end_period_ts"`
	YesBid         ohlcJSON  `json:"yes_bid"`
	YesAsk         ohlcJSON  `json:"yes_ask"`
	Price          priceJSON `json:"price"`
	VolumeFP       string    `json:"volume_fp"`
	OpenInterestFP string    `json:"open_interest_fp"`
}

// candle returns the candle of period p (seconds) ending at end. The period
// is cut at min(now, close): the candle of the period holding now is partial.
func (h *marketHistory) candle(end, p, now int64) []byte {
	start := end - p
	stop := min(end, now, h.close)
	pts := make([]int, 5)
	for k := range pts {
		pts[k] = h.walk.at(start + int64(k)*(stop-start)/4)
	}
	lo, hi, sum := pts[0], pts[0], 0
	for _, v := range pts {
		lo, hi, sum = min(lo, v), max(hi, v), sum+v
	}
	sp := h.walk.spread
	side := func(off int) ohlcJSON {
		c := func(v int) string { return dollars(min(max(v+off, 1), 99)) }
		return ohlcJSON{c(pts[0]), c(lo), c(hi), c(pts[4])}
	}
	r := prng(h.walk.seed ^ uint64(end)*31 ^ uint64(p))
	vol := int(r.next()%uint64(p/60*3+1)) * int(stop-start) / int(p)
	oi := h.walk.oi0 + int((start-h.open)/3600)%2000
	return mustMarshal(candleJSON{
		EndPeriodTS: end,
		YesBid:      side(-sp),
		YesAsk:      side(sp),
		Price: priceJSON{
			Open: dollars(pts[0]), Low: dollars(lo), High: dollars(hi), Close: dollars(pts[4]),
			Mean: dollars(sum / len(pts)), Previous: dollars(h.walk.at(start - 1)),
			Min: dollars(lo), Max: dollars(hi),
		},
		VolumeFP:       contracts(vol),
		OpenInterestFP: contracts(oi),
	})
}

// candleQuery is a parsed candlesticks request.
type candleQuery struct {
	start, end   int64 // Unix seconds, inclusive bounds of end_period_ts
	period       int64 // seconds
	latestBefore bool  // include_latest_before_start
}

// parseCandleQuery parses start_ts, end_ts (required, Unix seconds,
// start_ts <= end_ts), period_interval (required: 1, 60 or 1440 minutes)
// and include_latest_before_start.
func parseCandleQuery(q url.Values) (candleQuery, error) {
	var cq candleQuery
	var err error
	if cq.start, err = tsParam(q, "start_ts", true); err != nil {
		return cq, err
	}
	if cq.end, err = tsParam(q, "end_ts", true); err != nil {
		return cq, err
	}
	if cq.start > cq.end {
		return cq, fmt.Errorf("invalid start_ts %d: after end_ts %d", cq.start, cq.end)
	}
	switch v := q.Get("period_interval"); v {
	case "1", "60", "1440":
		n, _ := strconv.Atoi(v)
		cq.period = int64(n) * 60
	case "":
		return cq, errors.New("missing period_interval: want 1, 60 or 1440")
	default:
		return cq, fmt.Errorf("invalid period_interval %q: want 1, 60 or 1440", v)
	}
	if cq.latestBefore, err = boolParam(q, "include_latest_before_start"); err != nil {
		return cq, err
	}
	return cq, nil
}

// span returns the end_period_ts of the first and last candles of h that
// answer cq at now (first > last when there are none). A candle ending at E
// covers (E-period, E] and exists when that overlaps the market's life up to
// now; its E is within [start, end] (or is the latest before start, with
// include_latest_before_start).
func (h *marketHistory) span(cq candleQuery, now int64) (first, last int64) {
	p := cq.period
	live := min(h.close, now)
	if live <= h.open {
		return 1, 0
	}
	minE := ceilDiv(h.open+1, p) * p
	maxE := ceilDiv(live, p) * p
	first = max(minE, ceilDiv(cq.start, p)*p)
	last = min(maxE, cq.end/p*p)
	if cq.latestBefore && first > minE && first-p <= maxE {
		first -= p
	}
	return first, last
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// count returns the number of candles span yields.
func spanCount(first, last, p int64) int {
	if first > last {
		return 0
	}
	return int((last-first)/p) + 1
}

// candles returns the candles of h in [first, last].
func (h *marketHistory) candles(first, last, p, now int64) []byte {
	var raws [][]byte
	for e := first; e <= last; e += p {
		raws = append(raws, h.candle(e, p, now))
	}
	return joinArray(raws)
}

var errTooManyCandles = fmt.Errorf("too many candlesticks requested: at most %d per request", maxCandles)

// serveMarketCandles answers {"ticker":...,"candlesticks":[...]} for m.
func (s *Server) serveMarketCandles(w http.ResponseWriter, r *http.Request, m *marketData) {
	cq, err := parseCandleQuery(r.URL.Query())
	if err != nil {
		badRequest(w, err)
		return
	}
	now := s.Now().Unix()
	first, last := m.hist.span(cq, now)
	if spanCount(first, last, cq.period) > maxCandles {
		badRequest(w, errTooManyCandles)
		return
	}
	writeJSON(w, http.StatusOK, concat([]byte(`{"ticker":`), mustMarshal(m.ticker),
		[]byte(`,"candlesticks":`), m.hist.candles(first, last, cq.period, now), []byte(`}`)))
}

// GET /series/{series_ticker}/markets/{ticker}/candlesticks
func (s *Server) getMarketCandles(w http.ResponseWriter, r *http.Request) {
	m := s.liveMarket(w, r)
	if m == nil {
		return
	}
	if m.series != r.PathValue("series_ticker") {
		s.notFound(w, r)
		return
	}
	s.serveMarketCandles(w, r, m)
}

// GET /historical/markets/{ticker}/candlesticks
func (s *Server) getHistoricalCandles(w http.ResponseWriter, r *http.Request) {
	if m := s.historicalMarket(w, r); m != nil {
		s.serveMarketCandles(w, r, m)
	}
}

// GET /series/{series_ticker}/events/{event_ticker}/candlesticks: the live
// markets of the event, in event order. When their candles together exceed
// maxCandles, end_ts is moved back (adjusted_end_ts) until they fit.
func (s *Server) getEventCandles(w http.ResponseWriter, r *http.Request) {
	e := s.data.Load().eventBy[r.PathValue("event_ticker")]
	if e == nil || e.series != r.PathValue("series_ticker") {
		s.notFound(w, r)
		return
	}
	cq, err := parseCandleQuery(r.URL.Query())
	if err != nil {
		badRequest(w, err)
		return
	}
	var markets []*marketData
	for _, m := range e.markets {
		if !s.historical(m) {
			markets = append(markets, m)
		}
	}
	now := s.Now().Unix()
	if len(markets) > 0 {
		perMarket := int64(max(1, maxCandles/len(markets)))
		// No market's first candle is before the aligned start, so this
		// bounds every market to perMarket candles.
		if limit := ceilDiv(cq.start, cq.period)*cq.period + (perMarket-1)*cq.period; limit < cq.end {
			cq.end = max(limit, cq.start)
		}
	}
	tickers := make([]string, len(markets))
	lists := make([][]byte, len(markets))
	for i, m := range markets {
		tickers[i] = m.ticker
		first, last := m.hist.span(cq, now)
		lists[i] = m.hist.candles(first, last, cq.period, now)
	}
	writeJSON(w, http.StatusOK, concat([]byte(`{"market_tickers":`), mustMarshal(tickers),
		[]byte(`,"market_candlesticks":`), joinArray(lists),
		[]byte(`,"adjusted_end_ts":`), strconv.AppendInt(nil, cq.end, 10), []byte(`}`)))
}

// GET /markets/candlesticks: market_tickers (comma-separated, 1-100); unknown
// and historical tickers are left out of the answer.
func (s *Server) getBatchCandles(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tickers := splitList(q["market_tickers"])
	switch {
	case len(tickers) == 0:
		badRequest(w, errors.New("missing market_tickers"))
		return
	case len(tickers) > 100:
		badRequest(w, fmt.Errorf("too many market_tickers: %d, at most 100", len(tickers)))
		return
	}
	cq, err := parseCandleQuery(q)
	if err != nil {
		badRequest(w, err)
		return
	}
	u := s.data.Load()
	now := s.Now().Unix()
	var items [][]byte
	total := 0
	for _, t := range tickers {
		m := u.marketBy[t]
		if m == nil || s.historical(m) {
			continue
		}
		first, last := m.hist.span(cq, now)
		if total += spanCount(first, last, cq.period); total > maxCandles {
			badRequest(w, errTooManyCandles)
			return
		}
		items = append(items, concat([]byte(`{"market_ticker":`), mustMarshal(t),
			[]byte(`,"candlesticks":`), m.hist.candles(first, last, cq.period, now), []byte(`}`)))
	}
	writeJSON(w, http.StatusOK, concat([]byte(`{"markets":`), joinArray(items), []byte(`}`)))
}
