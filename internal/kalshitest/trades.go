package kalshitest

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// trade is one generated trade. Trades of a market are a pure function of
// its ticker, open and close times.
type trade struct {
	ticker string
	micros int64 // created_time, Unix microseconds
	seq    int32 // 0-based position in the market's life, oldest first
	price  int16 // yes price, cents (1..99)
	count  int32
	yes    bool // taker bought YES
	block  bool
}

// tradeJSON is Kalshi's Trade object, fields in API order.
type tradeJSON struct {
	TradeID          string `json:"trade_id"`
	Ticker           string `json:"ticker"`
	CountFP          string `json:"count_fp"`
	YesPriceDollars  string `json:"yes_price_dollars"`
	NoPriceDollars   string `json:"no_price_dollars"`
	TakerSide        string `json:"taker_side"`
	TakerOutcomeSide string `json:"taker_outcome_side"`
	TakerBookSide    string `json:"taker_book_side"`
	CreatedTime      string `json:"created_time"`
	IsBlockTrade     bool   `json:"is_block_trade"`
}

func (t *trade) marshal() []byte {
	r := newPRNG(t.ticker + "#" + strconv.Itoa(int(t.seq)))
	a, b := r.next(), r.next()
	side := "no"
	if t.yes {
		side = "yes"
	}
	return mustMarshal(tradeJSON{
		TradeID: fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x",
			a>>32, (a>>16)&0xffff, a&0xfff, 0x8000|(b>>48)&0x3fff, b&0xffffffffffff),
		Ticker:           t.ticker,
		CountFP:          contracts(int(t.count)),
		YesPriceDollars:  dollars(int(t.price)),
		NoPriceDollars:   dollars(100 - int(t.price)),
		TakerSide:        side,
		TakerOutcomeSide: side,
		TakerBookSide:    "bid",
		CreatedTime:      time.UnixMicro(t.micros).UTC().Format("2006-01-02T15:04:05.000000Z"),
		IsBlockTrade:     t.block,
	})
}

// tradeCount returns how many trades a market has over its life: thousands
// for KXFEDDECISION and KXCPIYOY markets (several pages at limit=1000),
// hundreds for the earnings markets, tens for synthetic ones.
func tradeCount(ticker, seriesTicker string) int {
	r := newPRNG("trades:" + ticker)
	switch {
	case seriesTicker == "KXFEDDECISION":
		return r.between(2000, 5000)
	case seriesTicker == "KXCPIYOY":
		return r.between(1000, 2500)
	case strings.HasPrefix(seriesTicker, "KXEARNINGSMENTION"):
		return r.between(150, 1200)
	}
	return r.between(20, 200)
}

// onceTrades returns a function generating h's trades, newest first, once.
func onceTrades(h *marketHistory) func() []*trade {
	return sync.OnceValue(func() []*trade {
		n := h.nTrades
		span := (h.close - h.open) * 1e6
		if n == 0 || span <= 0 {
			return nil
		}
		r := newPRNG("tape:" + h.ticker)
		step := span / int64(n)
		all := make([]trade, n)
		out := make([]*trade, n)
		price := r.between(20, 80)
		for i := range all {
			price = min(max(price+r.between(-2, 2), 1), 99)
			at := h.open*1e6 + int64(i)*step
			if step > 1 {
				at += int64(r.next() % uint64(step))
			}
			all[i] = trade{
				ticker: h.ticker,
				micros: at,
				seq:    int32(i),
				price:  int16(price),
				count:  int32(r.between(1, 500)),
				yes:    r.next()%2 == 0,
				block:  r.next()%97 == 0,
			}
			out[n-1-i] = &all[i]
		}
		return out
	})
}

// mergeTrades returns every trade of the universe, newest first.
func (u *universe) mergeTrades() []*trade {
	var all []*trade
	for _, m := range u.markets {
		all = append(all, m.hist.trades()...)
	}
	slices.SortFunc(all, func(a, b *trade) int {
		if before(a, b) {
			return -1
		}
		if before(b, a) {
			return 1
		}
		return 0
	})
	return all
}

// before reports whether a is listed before b: newest first, then by ticker,
// then by seq descending.
func before(a, b *trade) bool {
	if a.micros != b.micros {
		return a.micros > b.micros
	}
	if a.ticker != b.ticker {
		return a.ticker < b.ticker
	}
	return a.seq > b.seq
}

// tradeCursorPrefix marks trade cursors, which name the last trade served.
const tradeCursorPrefix = "kalshitest:trade:"

func encodeTradeCursor(t *trade) string {
	return base64.RawURLEncoding.EncodeToString(
		fmt.Appendf(nil, "%s%d:%d:%s", tradeCursorPrefix, t.micros, t.seq, t.ticker))
}

func decodeTradeCursor(cursor string) (*trade, error) {
	bad := fmt.Errorf("invalid cursor %q", cursor)
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return nil, bad
	}
	rest, ok := strings.CutPrefix(string(raw), tradeCursorPrefix)
	parts := strings.SplitN(rest, ":", 3)
	if !ok || len(parts) != 3 {
		return nil, bad
	}
	micros, err1 := strconv.ParseInt(parts[0], 10, 64)
	seq, err2 := strconv.ParseInt(parts[1], 10, 32)
	if err1 != nil || err2 != nil {
		return nil, bad
	}
	return &trade{ticker: parts[2], micros: micros, seq: int32(seq)}, nil
}

// tradeQuery is a parsed trades request.
type tradeQuery struct {
	ticker string
	lo, hi int64 // created_time bounds, Unix microseconds, inclusive
	limit  int
	after  *trade // the cursor's trade; nil on the first page
	block  *bool  // is_block_trade filter
}

// parseTradeQuery parses ticker, min_ts, max_ts (Unix seconds, inclusive:
// a trade matches when its created_time truncated to the second is within),
// limit (default 100, 1-1000), cursor and is_block_trade.
func parseTradeQuery(q url.Values) (tradeQuery, error) {
	tq := tradeQuery{ticker: q.Get("ticker"), lo: 0, hi: 1<<63 - 1}
	var err error
	if tq.limit, err = limitParam(q, 100, 1000); err != nil {
		return tq, err
	}
	minTS, err := tsParam(q, "min_ts", false)
	if err != nil {
		return tq, err
	}
	maxTS, err := tsParam(q, "max_ts", false)
	if err != nil {
		return tq, err
	}
	if q.Has("min_ts") {
		tq.lo = minTS * 1e6
	}
	if q.Has("max_ts") {
		tq.hi = (maxTS+1)*1e6 - 1
	}
	if c := q.Get("cursor"); c != "" {
		if tq.after, err = decodeTradeCursor(c); err != nil {
			return tq, err
		}
	}
	if q.Has("is_block_trade") {
		b, err := boolParam(q, "is_block_trade")
		if err != nil {
			return tq, err
		}
		tq.block = &b
	}
	return tq, nil
}

// tsParam parses a Unix-seconds query parameter; a missing one is an error
// only when required.
func tsParam(q url.Values, name string, required bool) (int64, error) {
	v := q.Get(name)
	if v == "" {
		if required {
			return 0, fmt.Errorf("missing %s: want a Unix timestamp in seconds", name)
		}
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid %s %q: want a Unix timestamp in seconds", name, v)
	}
	return n, nil
}

// serveTrades answers a trades page of the trades created in [lo, hi]
// (Unix microseconds) that also match the query.
func (s *Server) serveTrades(w http.ResponseWriter, r *http.Request, historical bool) {
	tq, err := parseTradeQuery(r.URL.Query())
	if err != nil {
		badRequest(w, err)
		return
	}
	cutoff := s.cutoff.Load() * 1e6
	if historical {
		tq.hi = min(tq.hi, cutoff-1)
	} else {
		tq.lo = max(tq.lo, cutoff)
	}
	tq.hi = min(tq.hi, s.Now().UnixMicro())

	u := s.data.Load()
	var list []*trade
	if tq.ticker == "" {
		list = u.allTrades()
	} else if m := u.marketBy[tq.ticker]; m != nil {
		list = m.hist.trades()
	}
	start := sort.Search(len(list), func(i int) bool { return list[i].micros <= tq.hi })
	end := sort.Search(len(list), func(i int) bool { return list[i].micros < tq.lo })
	if tq.after != nil {
		start = max(start, sort.Search(len(list), func(i int) bool { return before(tq.after, list[i]) }))
	}
	var page [][]byte
	var last *trade
	cursor := ""
	for i := start; i < end; i++ {
		t := list[i]
		if tq.block != nil && t.block != *tq.block {
			continue
		}
		if len(page) == tq.limit {
			cursor = encodeTradeCursor(last)
			break
		}
		page = append(page, t.marshal())
		last = t
	}
	writeJSON(w, http.StatusOK, listBody("trades", page, cursor))
}

// GET /markets/trades
func (s *Server) getTrades(w http.ResponseWriter, r *http.Request) { s.serveTrades(w, r, false) }

// GET /historical/trades
func (s *Server) getHistoricalTrades(w http.ResponseWriter, r *http.Request) {
	s.serveTrades(w, r, true)
}
