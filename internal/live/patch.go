package live

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/kproxy/kproxy/internal/jsonedit"
	"github.com/kproxy/kproxy/internal/legacy"
)

// The REST market fields a ticker message updates, in patch order.
const (
	fYesBid = iota
	fYesAsk
	fLast
	fVolume
	fOpenInterest
	fBidSize
	fAskSize
	fNoBid
	fNoAsk
	nFields
)

// fieldNames are the REST names of the pushed fields.
var fieldNames = [nFields]string{
	"yes_bid_dollars", "yes_ask_dollars", "last_price_dollars", "volume_fp", "open_interest_fp",
	"yes_bid_size_fp", "yes_ask_size_fp", "no_bid_dollars", "no_ask_dollars",
}

// legacyOf is the legacy integer field derived from each pushed field, if
// any (updated too when the route has legacy fields on).
var legacyOf = func() [nFields]legacy.Field {
	var out [nFields]legacy.Field
	for i, name := range fieldNames {
		for _, f := range legacy.MarketFields {
			if f.From == name {
				out[i] = f
			}
		}
	}
	return out
}()

// state is what the feed knows of one market's pushed fields: each value is
// the plain decimal string to write (no quotes), nil when not known. A
// state is immutable once published.
type state struct {
	values [nFields][]byte
}

// tickerMsg is the msg of a ticker message. Pointers tell a missing field
// from an empty one.
type tickerMsg struct {
	MarketTicker string  `json:"market_ticker"`
	Price        *string `json:"price_dollars"`
	YesBid       *string `json:"yes_bid_dollars"`
	YesAsk       *string `json:"yes_ask_dollars"`
	Volume       *string `json:"volume_fp"`
	OpenInterest *string `json:"open_interest_fp"`
	YesBidSize   *string `json:"yes_bid_size_fp"`
	YesAskSize   *string `json:"yes_ask_size_fp"`
}

// Reasons a ticker message is rejected.
var (
	errNoTicker  = errors.New("no market_ticker")
	errBadPrice  = errors.New("a price is not a decimal between 0 and 1")
	errBadCount  = errors.New("a count is not a non-negative decimal")
	errCrossBook = errors.New("yes_bid_dollars is above yes_ask_dollars")
)

// microUnit is 1 in millionths, the finest precision accepted.
const microUnit = 1_000_000

// micros parses a plain non-negative decimal ("0.4500", "33896.00") into
// millionths.
func micros(s []byte) (int64, bool) {
	var whole, frac int64
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		whole = whole*10 + int64(s[i]-'0')
		i++
		if i > 12 {
			return 0, false
		}
	}
	if i == 0 {
		return 0, false
	}
	if i < len(s) {
		if s[i] != '.' || i+1 == len(s) || len(s)-i-1 > 6 {
			return 0, false
		}
		scale := int64(100_000)
		for _, c := range s[i+1:] {
			if c < '0' || c > '9' {
				return 0, false
			}
			frac += int64(c-'0') * scale
			scale /= 10
		}
	}
	return whole*microUnit + frac, true
}

// complement is 1 - x of a price in millionths, written with 4 decimals as
// Kalshi writes prices ("0.6700").
func complement(x int64) []byte {
	v := (microUnit - x + 50) / 100 // ten-thousandths, rounded
	b := strconv.AppendInt(nil, v/10000, 10)
	b = append(b, '.')
	frac := strconv.AppendInt(nil, 10000+v%10000, 10)
	return append(b, frac[1:]...)
}

// parseTicker reads a ticker message's msg into its market and the values
// it sets on top of what prevOf returns for it (nil: nothing known yet). Missing fields keep
// their previous values; an empty price_dollars (a market never traded)
// leaves last_price_dollars alone. A message with any value out of range
// is rejected whole.
func parseTicker(raw json.RawMessage, prevOf func(ticker string) *state) (string, *state, error) {
	var m tickerMsg
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", nil, err
	}
	if m.MarketTicker == "" {
		return "", nil, errNoTicker
	}
	next := &state{}
	if prev := prevOf(m.MarketTicker); prev != nil {
		next.values = prev.values
	}
	set := func(f int, v *string, price bool) error {
		if v == nil || (*v == "" && f == fLast) {
			return nil
		}
		b := []byte(*v)
		x, ok := micros(b)
		switch {
		case price && (!ok || x > microUnit):
			return errBadPrice
		case !ok:
			return errBadCount
		}
		next.values[f] = b
		switch f {
		case fYesBid:
			next.values[fNoAsk] = complement(x)
		case fYesAsk:
			next.values[fNoBid] = complement(x)
		}
		return nil
	}
	for _, s := range [...]struct {
		f     int
		v     *string
		price bool
	}{
		{fYesBid, m.YesBid, true}, {fYesAsk, m.YesAsk, true}, {fLast, m.Price, true},
		{fVolume, m.Volume, false}, {fOpenInterest, m.OpenInterest, false},
		{fBidSize, m.YesBidSize, false}, {fAskSize, m.YesAskSize, false},
	} {
		if err := set(s.f, s.v, s.price); err != nil {
			return m.MarketTicker, nil, err
		}
	}
	if bid, ask := next.values[fYesBid], next.values[fYesAsk]; bid != nil && ask != nil {
		b, _ := micros(bid)
		a, _ := micros(ask)
		// An empty ask side reads 1.0000 and an empty bid side 0.0000, so a
		// bid above the ask is never a real book.
		if b > a {
			return m.MarketTicker, nil, errCrossBook
		}
	}
	return m.MarketTicker, next, nil
}

// patchMarket adds to ed the edits that write st's values into the market
// object with members ms (every other byte kept). With withLegacy the
// legacy integer fields derived from the changed ones are rewritten too, or
// inserted after their source when absent, as the shim would have.
func patchMarket(ed *jsonedit.Edits, doc []byte, ms []jsonedit.Member, st *state, withLegacy bool) {
	var text []byte
	for f, v := range st.values {
		if v == nil {
			continue
		}
		m, ok := jsonedit.Find(ms, fieldNames[f])
		if !ok {
			continue
		}
		if cur, ok := jsonedit.PlainString(doc, m.Start, m.End); !ok || !bytes.Equal(cur, v) {
			text = append(append(append(text[:0], '"'), v...), '"')
			ed.Replace(m.Start, m.End, text)
		}
		lf := legacyOf[f]
		if !withLegacy || lf.Name == "" {
			continue
		}
		lv, ok := lf.Value(nil, v)
		if !ok {
			continue
		}
		if lm, ok := jsonedit.Find(ms, lf.Name); ok {
			if !bytes.Equal(doc[lm.Start:lm.End], lv) {
				ed.Replace(lm.Start, lm.End, lv)
			}
			continue
		}
		text = append(append(append(append(text[:0], ',', '"'), lf.Name...), '"', ':'), lv...)
		ed.Insert(m.End, text)
	}
}

// tickerOf is the "ticker" of a market object, if it is a plain string.
func tickerOf(doc []byte, ms []jsonedit.Member) ([]byte, bool) {
	m, ok := jsonedit.Find(ms, "ticker")
	if !ok {
		return nil, false
	}
	return jsonedit.PlainString(doc, m.Start, m.End)
}

// timeOf parses the RFC 3339 time member name of a market object.
func timeOf(doc []byte, ms []jsonedit.Member, name string) (time.Time, bool) {
	m, ok := jsonedit.Find(ms, name)
	if !ok {
		return time.Time{}, false
	}
	s, ok := jsonedit.PlainString(doc, m.Start, m.End)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(s))
	return t, err == nil
}
