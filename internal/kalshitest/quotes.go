package kalshitest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"sync"
)

// Quote returns the current REST values of a market as a [Ticker] (Time is
// zero), and false if the data universe does not hold the market.
func (s *Server) Quote(ticker string) (Ticker, bool) {
	md := s.data.Load().marketBy[ticker]
	if md == nil {
		return Ticker{}, false
	}
	var m market
	if err := json.Unmarshal(md.raw, &m); err != nil {
		panic("kalshitest: " + err.Error())
	}
	t := Ticker{Market: m.Ticker}
	dst := t.quotes()
	for i, v := range m.quotes() {
		*dst[i] = *v
	}
	return t, true
}

// quotes returns the fields of t a ticker message shares with a market's
// REST data, in the order of [market.quotes].
func (t *Ticker) quotes() [7]*string {
	return [...]*string{&t.YesBid, &t.YesAsk, &t.Price, &t.Volume, &t.OpenInterest, &t.YesBidSize, &t.YesAskSize}
}

// quotes returns the REST fields of m a ticker message carries, in the
// order of [Ticker.quotes].
func (m *market) quotes() [7]*string {
	return [...]*string{&m.YesBidDollars, &m.YesAskDollars, &m.LastPriceDollars, &m.VolumeFP,
		&m.OpenInterestFP, &m.YesBidSizeFP, &m.YesAskSizeFP}
}

// SetQuotes changes the REST data of the markets in ts the way a ticker
// message describes them: yes_bid_dollars, yes_ask_dollars,
// last_price_dollars (from Price), volume_fp, open_interest_fp,
// yes_bid_size_fp, yes_ask_size_fp, and no_bid_dollars = 1 - yes_ask,
// no_ask_dollars = 1 - yes_bid (4 decimals). Empty fields are left alone;
// every other field of the market keeps its value. GET /markets,
// /markets/{ticker}, /markets/{ticker}/orderbook (rebuilt from the new top
// of book) and /events with nested markets all serve the new values from
// the moment SetQuotes returns. It returns an error wrapping
// [ErrUnknownMarket], and changes nothing, if a ticker is not in the data.
func (s *Server) SetQuotes(ts ...Ticker) error {
	return s.updateMarkets(func(m *market) bool {
		for _, t := range ts {
			if t.Market != m.Ticker {
				continue
			}
			dst := m.quotes()
			for i, v := range t.quotes() {
				*dst[i] = cmp.Or(*v, *dst[i]) // an empty field leaves the market's alone
			}
			if t.YesAsk != "" {
				m.NoBidDollars = formatUnits(1e4 - units(t.YesAsk))
			}
			if t.YesBid != "" {
				m.NoAskDollars = formatUnits(1e4 - units(t.YesBid))
			}
		}
		return true
	}, tickersOf(ts))
}

// SetMarketStatus sets the status of a market in the REST data (e.g.
// "closed", "determined", "inactive", "active"), as a lifecycle event would;
// the status filters of GET /markets and /events follow it.
func (s *Server) SetMarketStatus(ticker, status string) error {
	return s.updateMarkets(func(m *market) bool {
		m.Status = status
		return true
	}, []string{ticker})
}

func tickersOf(ts []Ticker) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Market
	}
	return out
}

// updateMarkets applies fn to each market of tickers and swaps in a new
// universe holding the results (copy on write: readers never see half an
// update).
func (s *Server) updateMarkets(fn func(*market) bool, tickers []string) error {
	s.dataMu.Lock()
	defer s.dataMu.Unlock()
	u := s.data.Load()
	changed := map[string]*marketData{}
	for _, t := range tickers {
		md := u.marketBy[t]
		if md == nil {
			return fmt.Errorf("%w %q", ErrUnknownMarket, t)
		}
		if changed[t] != nil {
			continue
		}
		var m market
		if err := json.Unmarshal(md.raw, &m); err != nil {
			panic("kalshitest: " + err.Error())
		}
		fn(&m)
		nd := &marketData{ticker: md.ticker, event: md.event, series: md.series, status: m.Status, raw: mustMarshal(m), book: bookFor(m), hist: md.hist}
		nd.body = wrap("market", nd.raw)
		nd.bookBody = mustMarshal(orderbook{nd.book})
		changed[t] = nd
	}
	next := u
	for _, sd := range u.series {
		touched := false
		for _, e := range sd.events {
			for _, m := range e.markets {
				if changed[m.ticker] != nil {
					touched = true
				}
			}
		}
		if !touched {
			continue
		}
		ns := &seriesData{ticker: sd.ticker, raw: sd.raw, body: sd.body}
		for _, e := range sd.events {
			ne := &eventData{ticker: e.ticker, series: e.series, rawFlat: e.rawFlat}
			raws := make([][]byte, len(e.markets))
			for i, m := range e.markets {
				if nm := changed[m.ticker]; nm != nil {
					m = nm
				}
				ne.markets = append(ne.markets, m)
				raws[i] = m.raw
			}
			ne.bodies = eventBodiesFor(e.rawFlat, raws)
			ns.events = append(ns.events, ne)
		}
		next = next.with(ns)
	}
	s.data.Store(next)
	return nil
}

// eventBodiesFor returns the lazily built bodies of an event whose object
// without markets is rawFlat and whose market objects are raws, laid out
// exactly as templates.build lays them out.
func eventBodiesFor(rawFlat []byte, raws [][]byte) func() eventBodies {
	var e event
	if err := json.Unmarshal(rawFlat, &e); err != nil {
		panic("kalshitest: " + err.Error())
	}
	return eventBodiesOf(e, rawFlat, raws)
}

// eventBodiesOf returns the lazily built bodies of event e (whose object
// without markets is rawFlat) and its market objects raws. The market list
// is spliced in rather than marshalled by encoding/json, which would
// re-validate it for every body.
func eventBodiesOf(e event, rawFlat []byte, raws [][]byte) func() eventBodies {
	e.Markets = json.RawMessage("0")
	before, after, _ := bytes.Cut(mustMarshal(e), []byte(`"markets":0`))
	return sync.OnceValue(func() eventBodies {
		list := joinArray(raws)
		nested := concat(before, []byte(`"markets":`), list, after)
		return eventBodies{
			rawNested:  nested,
			bodyFlat:   concat([]byte(`{"event":`), rawFlat, []byte(`,"markets":`), list, []byte(`}`)),
			bodyNested: concat([]byte(`{"event":`), nested, []byte(`,"markets":`), list, []byte(`}`)),
		}
	})
}

// units parses a decimal string ("0.4500", "33896.00") in units of 1e-4;
// malformed input is 0.
func units(d string) int64 {
	f, err := strconv.ParseFloat(d, 64)
	if err != nil {
		return 0
	}
	return int64(math.Round(f * 1e4))
}

// formatUnits formats a price in units of 1e-4 as Kalshi does: "0.3300".
func formatUnits(n int64) string {
	if n < 0 {
		return "-" + formatUnits(-n)
	}
	return fmt.Sprintf("%d.%04d", n/1e4, n%1e4)
}
