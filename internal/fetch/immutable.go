package fetch

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kproxy/kproxy/internal/route"
)

// Immutable answers (docs/history.md "Immutable answers"): settled history
// that never changes. Such an answer is fresh forever: kept until evicted
// (memory and disk), never refetched, and its hits say detail=immutable. A
// client no-cache still refetches it; purges still remove it.

// DetailImmutable is the Cache-Status detail of an immutable entry's hits
// (the entry's Detail).
const DetailImmutable = "immutable"

// Forever is the freshness and retention of an immutable entry: no ttl, in
// practice (ristretto and Redis take it as a duration; 100 years fit).
const Forever = 100 * 365 * 24 * time.Hour

// settleMargin is how long after a window ends its data is taken as
// settled: a trade or a candle published a little late still lands in it.
const settleMargin = time.Minute

// immutableRule decides from the request's query, the answer's body and
// the fetch time whether an upstream 200 never changes.
type immutableRule func(q url.Values, body []byte, fetched time.Time) bool

// immutableRules is the one table of immutable answers, by route template
// without route.Prefix. docs/history.md mirrors it: keep both in step.
// Every other route keeps its ttl; in particular /historical/markets
// (lists by series or event grow as markets settle) and
// /historical/cutoff (it moves) are not immutable.
var immutableRules = map[string]immutableRule{
	// Settled before Kalshi's historical cutoff: never changes.
	"historical/markets/{ticker}":              always,
	"historical/markets/{ticker}/candlesticks": always,
	"historical/trades":                        withParam("ticker"),
	// A finalized market is final.
	"markets/{ticker}":      marketFinalized,
	"events/{event_ticker}": eventFinalized,
	// Candles of a window that ended a period and a minute ago.
	"series/{series_ticker}/markets/{ticker}/candlesticks": candlesEnded,
	"series/{series_ticker}/events/{ticker}/candlesticks":  candlesEnded,
	"markets/candlesticks":                                 candlesEnded,
	// Trades of one market up to a minute ago.
	"markets/trades": tradesEnded,
}

// isImmutable reports whether an upstream answer of status to the request
// stored under key on rt, fetched at fetched, is immutable. Only 200s are.
func isImmutable(rt *route.Route, key string, status int, body []byte, fetched time.Time) bool {
	if status != 200 {
		return false
	}
	rule := immutableRules[strings.TrimPrefix(rt.Pattern, route.Prefix)]
	if rule == nil {
		return false
	}
	_, rawQuery, _ := strings.Cut(key, "?")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return false
	}
	return rule(q, body, fetched)
}

func always(url.Values, []byte, time.Time) bool { return true }

// withParam: immutable when the query names the parameter.
func withParam(name string) immutableRule {
	return func(q url.Values, _ []byte, _ time.Time) bool { return q.Get(name) != "" }
}

// finalized is Kalshi's status of a market whose result is final.
const finalized = "finalized"

type marketStatus struct {
	Status string `json:"status"`
}

// marketFinalized: GET /markets/{ticker} of a finalized market.
func marketFinalized(_ url.Values, body []byte, _ time.Time) bool {
	var b struct {
		Market *marketStatus `json:"market"`
	}
	return json.Unmarshal(body, &b) == nil && b.Market != nil && b.Market.Status == finalized
}

// eventFinalized: GET /events/{event_ticker} whose markets are all
// finalized, read from event.markets (with_nested_markets=true) or else the
// top-level markets array. An event with no markets listed says nothing of
// its markets: not immutable.
func eventFinalized(_ url.Values, body []byte, _ time.Time) bool {
	var b struct {
		Event *struct {
			Markets []marketStatus `json:"markets"`
		} `json:"event"`
		Markets []marketStatus `json:"markets"`
	}
	if json.Unmarshal(body, &b) != nil || b.Event == nil {
		return false
	}
	markets := b.Event.Markets
	if markets == nil {
		markets = b.Markets
	}
	if len(markets) == 0 {
		return false
	}
	for _, m := range markets {
		if m.Status != finalized {
			return false
		}
	}
	return true
}

// candlesEnded: candlesticks whose end_ts is at least one period_interval
// (minutes) plus settleMargin before the fetch: the last candle is closed.
func candlesEnded(q url.Values, _ []byte, fetched time.Time) bool {
	end, ok := unixParam(q, "end_ts")
	if !ok {
		return false
	}
	period, err := strconv.ParseInt(q.Get("period_interval"), 10, 64)
	if err != nil || period <= 0 || period > 1<<20 {
		return false
	}
	return !end.Add(time.Duration(period)*time.Minute + settleMargin).After(fetched)
}

// tradesEnded: trades of one ticker whose max_ts is at least settleMargin
// before the fetch. Without max_ts the list grows.
func tradesEnded(q url.Values, _ []byte, fetched time.Time) bool {
	if q.Get("ticker") == "" {
		return false
	}
	end, ok := unixParam(q, "max_ts")
	return ok && !end.Add(settleMargin).After(fetched)
}

// unixParam reads a Unix-seconds parameter.
func unixParam(q url.Values, name string) (time.Time, bool) {
	n, err := strconv.ParseInt(q.Get(name), 10, 64)
	if err != nil || n < 0 || n > 1<<40 {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}
