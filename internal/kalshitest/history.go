package kalshitest

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file holds the fake's clock, the live/historical boundary, the
// settled (finalized) data and the /historical/* routes; trades are in
// trades.go, candlesticks in candles.go. The package documentation says what
// the clock and the cutoff decide. Beyond it: events keep listing historical
// markets in their nested markets (Kalshi keeps old events on their usual
// routes), and the cutoff does not follow the clock by itself.

// DefaultHistoricalCutoffUnix is the default historical cutoff,
// 2026-01-01T00:00:00Z: the KXCPIYOY-25SEP and -25OCT events are historical,
// everything else is live.
const DefaultHistoricalCutoffUnix int64 = 1767225600

// Option configures a [Server] in [New].
type Option func(*Server)

// WithNow sets the fake's clock (see [Server.SetNow]).
func WithNow(now func() time.Time) Option { return func(s *Server) { s.SetNow(now) } }

// WithHistoricalCutoff sets the historical cutoff (see
// [Server.SetHistoricalCutoff]).
func WithHistoricalCutoff(t time.Time) Option {
	return func(s *Server) { s.SetHistoricalCutoff(t) }
}

// SetNow replaces the fake's clock; nil selects [time.Now]. now must be safe
// for concurrent use; it is called by request handlers. Use the same clock as
// the code under test so that both agree on which candles are complete.
func (s *Server) SetNow(now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	s.now.Store(&now)
}

// Now returns the time on the fake's clock.
func (s *Server) Now() time.Time { return (*s.now.Load())() }

// SetHistoricalCutoff sets the boundary between the live and the historical
// tier, truncated to the second (see the package documentation). It takes
// effect for requests routed after it returns.
func (s *Server) SetHistoricalCutoff(t time.Time) { s.cutoff.Store(t.Unix()) }

// HistoricalCutoff returns the current historical cutoff.
func (s *Server) HistoricalCutoff() time.Time { return time.Unix(s.cutoff.Load(), 0).UTC() }

// TradeCount returns the number of trades of a market over its whole life
// (open_time to close_time), whatever the clock and the cutoff, and false if
// the data universe does not hold the market. The trades served by
// /markets/trades and /historical/trades for that ticker, without min_ts and
// max_ts, add up to this count once the clock is past close_time.
func (s *Server) TradeCount(ticker string) (int, bool) {
	m := s.data.Load().marketBy[ticker]
	if m == nil {
		return 0, false
	}
	return m.hist.nTrades, true
}

// historical reports whether md is served only by /historical/markets.
func (s *Server) historical(md *marketData) bool {
	return md.hist.settled != 0 && md.hist.settled < s.cutoff.Load()
}

// marketHistory is what trades and candlesticks of a market derive from:
// its lifetime and pure functions of its ticker.
type marketHistory struct {
	ticker  string
	open    int64 // open_time, Unix seconds
	close   int64 // close_time, Unix seconds
	settled int64 // settlement_ts, Unix seconds; 0 while unsettled
	nTrades int
	trades  func() []*trade // newest first, built on first use
	walk    priceWalk
}

func newMarketHistory(m market, seriesTicker string) *marketHistory {
	h := &marketHistory{
		ticker:  m.Ticker,
		open:    unixOf(m.OpenTime),
		close:   unixOf(m.CloseTime),
		settled: unixOf(m.SettlementTS),
		nTrades: tradeCount(m.Ticker, seriesTicker),
		walk:    newPriceWalk(m),
	}
	h.trades = onceTrades(h)
	return h
}

// unixOf parses an RFC 3339 time; "" (or garbage, a bug in the data) is 0.
func unixOf(s string) int64 {
	if s == "" {
		return 0
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic("kalshitest: bad time in data: " + s)
	}
	return t.Unix()
}

// cpiEvent describes one event of the KXCPIYOY series.
type cpiEvent struct {
	code                string // event ticker suffix, e.g. 26MAR
	month               string // the CPI month, e.g. "March 2026"
	open, close, settle string
	value               string   // expiration_value: the released YoY CPI
	statuses            []string // per threshold; "" = finalized
}

// cpiThresholds are the strikes of every KXCPIYOY event, in market order.
var cpiThresholds = [...]string{"2.6", "2.8", "3.0", "3.2"}

// cpiSpecs returns the KXCPIYOY series: monthly CPI events whose markets are
// settled (see the package documentation for which are finalized).
func cpiSpecs() []seriesSpec {
	events := []cpiEvent{
		{"25SEP", "September 2025", "2025-09-12T14:00:00Z", "2025-10-15T12:25:00Z", "2025-10-15T12:45:00Z", "2.9", nil},
		{"25OCT", "October 2025", "2025-10-16T14:00:00Z", "2025-11-13T13:25:00Z", "2025-11-13T13:45:00Z", "3.0", nil},
		{"26MAR", "March 2026", "2026-03-12T14:00:00Z", "2026-04-10T12:25:00Z", "2026-04-10T12:45:00Z", "2.6", nil},
		{"26APR", "April 2026", "2026-04-11T14:00:00Z", "2026-05-12T12:25:00Z", "2026-05-12T12:45:00Z", "2.7",
			[]string{"finalized", "finalized", "determined", "closed"}},
	}
	specs := make([]seriesSpec, len(events))
	for i, ev := range events {
		specs[i] = cpiSpec(ev)
	}
	return specs
}

func cpiSpec(ev cpiEvent) seriesSpec {
	const ticker = "KXCPIYOY"
	eventTicker := ticker + "-" + ev.code
	outcomes := make([]outcome, len(cpiThresholds))
	for i, th := range cpiThresholds {
		outcomes[i] = outcome{"T" + th, "Above " + th + "%"}
	}
	title := "CPI year-over-year in " + ev.month + "?"
	expiry := time.Unix(unixOf(ev.close)+300, 0).UTC().Format(time.RFC3339)
	return seriesSpec{
		ticker:        ticker,
		eventTicker:   eventTicker,
		title:         "CPI year-over-year",
		frequency:     "monthly",
		category:      "Economics",
		categories:    []string{"Economics"},
		tags:          []string{"Inflation", "CPI"},
		sources:       []source{{"Bureau of Labor Statistics", "https://www.bls.gov/cpi/"}},
		contractURL:   "https://kalshi-public-docs.s3.amazonaws.com/regulatory/product-certifications/CPI.pdf",
		termsURL:      "https://kalshi-public-docs.s3.amazonaws.com/contract_terms/CPI.pdf",
		eventTitle:    title,
		eventSubTitle: ev.month,
		marketTitle:   title,
		outcomes:      outcomes,
		rulesPrimary: func(label string) string {
			return "If CPI year-over-year for " + ev.month + " is " + strings.ToLower(label) + ", then the market resolves to Yes."
		},
		rulesSecondary: "The outcome is determined by the BLS CPI release, not seasonally adjusted, rounded to one decimal.",
		openTime:       ev.open,
		closeTime:      ev.close,
		expectedExpiry: expiry,
		expiration:     ev.settle,
		finish: func(i int, m *market) {
			status := "finalized"
			if ev.statuses != nil {
				status = ev.statuses[i]
			}
			settle(m, status, ev.value, cpiThresholds[i], ev.settle)
		},
	}
}

// settle turns m into a market in status: a closed market has no result;
// a determined or finalized market carries result, settlement_value_dollars,
// settlement_ts and expiration_value (value > threshold resolves Yes), and no
// resting orders.
func settle(m *market, status, value, threshold, at string) {
	m.Status = status
	m.CanCloseEarly = false
	m.Volume24hFP = "0.00"
	if status == "closed" {
		m.UpdatedTime = m.CloseTime
		return
	}
	v, _ := strconv.ParseFloat(value, 64)
	th, _ := strconv.ParseFloat(threshold, 64)
	m.Result, m.SettlementValueDollars, m.LastPriceDollars = "no", "0.0000", "0.0100"
	if v > th {
		m.Result, m.SettlementValueDollars, m.LastPriceDollars = "yes", "1.0000", "0.9900"
	}
	m.ExpirationValue = value
	m.SettlementTS = at
	m.UpdatedTime = at
	m.YesBidDollars, m.YesAskDollars, m.NoBidDollars, m.NoAskDollars = "0.0000", "0.0000", "0.0000", "0.0000"
	m.YesBidSizeFP, m.YesAskSizeFP = "0.00", "0.00"
	m.OpenInterestFP = "0.00"
}

// cutoffBody is the body of GET /historical/cutoff.
type cutoffBody struct {
	MarketSettledTS              string `json:"market_settled_ts"`
	TradesCreatedTS              string `json:"trades_created_ts"`
	OrdersUpdatedTS              string `json:"orders_updated_ts"`
	MarketPositionsLastUpdatedTS string `json:"market_positions_last_updated_ts"`
}

// GET /historical/cutoff
func (s *Server) getHistoricalCutoff(w http.ResponseWriter, _ *http.Request) {
	c := s.HistoricalCutoff().Format(time.RFC3339)
	writeJSON(w, http.StatusOK, mustMarshal(cutoffBody{c, c, c, c}))
}

// GET /historical/markets: markets settled before the cutoff, in universe
// order; tickers, event_ticker and series_ticker filter (combined with AND),
// mve_filter is validated (the fake has no multivariate markets).
func (s *Server) getHistoricalMarkets(w http.ResponseWriter, r *http.Request) {
	q, limit, offset, ok := pageQuery(w, r, 100, 1000)
	if !ok {
		return
	}
	if v := q.Get("mve_filter"); v != "" && v != "only" && v != "exclude" {
		badRequest(w, fmt.Errorf("invalid mve_filter %q: want only or exclude", v))
		return
	}
	onlyMVE := q.Get("mve_filter") == "only"
	f := marketFilterOf(q)
	var selected [][]byte
	for _, m := range s.data.Load().markets {
		if onlyMVE || !s.historical(m) || !f.matches(m) {
			continue
		}
		selected = append(selected, m.raw)
	}
	page, cursor := paginate(selected, offset, limit)
	writeJSON(w, http.StatusOK, listBody("markets", page, cursor))
}

// setOf returns the set of items, or nil when there are none.
func setOf(items []string) map[string]bool {
	if len(items) == 0 {
		return nil
	}
	set := make(map[string]bool, len(items))
	for _, it := range items {
		set[it] = true
	}
	return set
}

// historicalMarket returns the market of the {ticker} wildcard if it is in
// the historical tier; otherwise it answers 404 and returns nil.
func (s *Server) historicalMarket(w http.ResponseWriter, r *http.Request) *marketData {
	m := s.data.Load().marketBy[r.PathValue("ticker")]
	if m == nil || !s.historical(m) {
		s.notFound(w, r)
		return nil
	}
	return m
}

// liveMarket returns the market of the {ticker} wildcard if it is in the
// live tier; otherwise it answers 404 and returns nil.
func (s *Server) liveMarket(w http.ResponseWriter, r *http.Request) *marketData {
	m := s.data.Load().marketBy[r.PathValue("ticker")]
	if m == nil || s.historical(m) {
		s.notFound(w, r)
		return nil
	}
	return m
}

// GET /historical/markets/{ticker}
func (s *Server) getHistoricalMarket(w http.ResponseWriter, r *http.Request) {
	if m := s.historicalMarket(w, r); m != nil {
		writeJSON(w, http.StatusOK, m.body)
	}
}
