// Package legacy adds back to Kalshi answers the integer price and count
// fields Kalshi removed on 2026-03-12, derived from their *_dollars and *_fp
// forms, leaving every other byte of the body as the upstream sent it.
//
// Derived fields: cents = round(x * 100) of a *_dollars string (exactly, in
// decimal, half away from zero: "0.125" gives 13); contracts = the integer
// part of a *_fp string ("4918.41" gives 4918). A field the object has
// already is never overwritten; a source field that is missing, empty or not
// a plain decimal string yields no derived field. Each derived member is
// inserted right after the member it is derived from, on the same line, in
// compact form (`"yes_bid_dollars": "0.3300","yes_bid":33,`). A body that is
// not valid JSON, or whose shape is not the route's, is returned unchanged.
//
// Everything here is pure and safe for concurrent use.
package legacy

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/kproxy/kproxy/internal/jsonedit"
	"github.com/kproxy/kproxy/internal/route"
)

// Field is one removed integer field and the current field it comes from.
type Field struct {
	// Name is the removed field ("yes_bid"); From is its current form
	// ("yes_bid_dollars").
	Name, From string
	// Count marks a contracts field (integer part of a *_fp count); the
	// others are cents.
	Count bool
}

// Value is the legacy value derived from the current field's string
// contents (without quotes), appended to dst as a JSON number.
func (f Field) Value(dst, current []byte) ([]byte, bool) {
	var v int64
	var ok bool
	if f.Count {
		v, ok = Contracts(current)
	} else {
		v, ok = Cents(current)
	}
	if !ok {
		return dst, false
	}
	return strconv.AppendInt(dst, v, 10), true
}

// MarketFields are the fields a market object gains.
var MarketFields = []Field{
	{Name: "yes_bid", From: "yes_bid_dollars"},
	{Name: "yes_ask", From: "yes_ask_dollars"},
	{Name: "no_bid", From: "no_bid_dollars"},
	{Name: "no_ask", From: "no_ask_dollars"},
	{Name: "last_price", From: "last_price_dollars"},
	{Name: "previous_yes_bid", From: "previous_yes_bid_dollars"},
	{Name: "previous_yes_ask", From: "previous_yes_ask_dollars"},
	{Name: "previous_price", From: "previous_price_dollars"},
	{Name: "liquidity", From: "liquidity_dollars"},
	{Name: "settlement_value", From: "settlement_value_dollars"},
	{Name: "notional_value", From: "notional_value_dollars"},
	{Name: "volume", From: "volume_fp", Count: true},
	{Name: "volume_24h", From: "volume_24h_fp", Count: true},
	{Name: "open_interest", From: "open_interest_fp", Count: true},
}

// TradeFields are the fields a trade object gains.
var TradeFields = []Field{
	{Name: "count", From: "count_fp", Count: true},
	{Name: "yes_price", From: "yes_price_dollars"},
	{Name: "no_price", From: "no_price_dollars"},
}

// marketIndex and tradeIndex map a field list's names to their position:
// i for fs[i].From, -i-1 for fs[i].Name.
var marketIndex, tradeIndex = fieldIndex(MarketFields), fieldIndex(TradeFields)

func fieldIndex(fs []Field) map[string]int {
	if len(fs) > 16 {
		panic("legacy: more than 16 fields in one list")
	}
	m := make(map[string]int, 2*len(fs))
	for i, f := range fs {
		m[f.From], m[f.Name] = i, -i-1
	}
	return m
}

// Kind is the shape of a route's answer as far as the shim is concerned.
type Kind uint8

// Kinds of answers.
const (
	// None: the shim leaves the answer alone.
	None Kind = iota
	// Markets: {"markets":[market...]} (/markets).
	Markets
	// Market: {"market":market} (/markets/{ticker}).
	Market
	// Events: {"events":[{..."markets":[market...]}...]} (/events).
	Events
	// Event: {"event":{..."markets":[...]},"markets":[...]} (/events/{event_ticker}).
	Event
	// Orderbook: {"orderbook_fp":{"yes_dollars":[[p,n]...],"no_dollars":[...]}}.
	Orderbook
	// Trades: {"trades":[trade...]} (/markets/trades).
	Trades
)

// KindOf maps a route pattern to the shape of its answers; parameter names
// do not matter (/markets/{t} is /markets/{ticker}).
func KindOf(pattern string) Kind {
	rest, ok := strings.CutPrefix(pattern, route.Prefix)
	if !ok {
		return None
	}
	segs := strings.Split(rest, "/")
	param := func(s string) bool { return len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}' }
	switch {
	case len(segs) == 1 && segs[0] == "markets":
		return Markets
	case len(segs) == 1 && segs[0] == "events":
		return Events
	case len(segs) == 2 && segs[0] == "markets" && segs[1] == "trades":
		return Trades
	case len(segs) == 2 && segs[0] == "markets" && param(segs[1]):
		return Market
	case len(segs) == 2 && segs[0] == "events" && param(segs[1]):
		return Event
	case len(segs) == 3 && segs[0] == "markets" && param(segs[1]) && segs[2] == "orderbook":
		return Orderbook
	}
	return None
}

// Transform is the shim as a fetch.Config.Transform: it applies to routes
// whose LegacyFields policy is on and returns body itself otherwise (and
// whenever it has nothing to add).
func Transform(rt *route.Route, body []byte) []byte {
	if rt == nil || !rt.LegacyFields {
		return body
	}
	return Apply(KindOf(rt.Pattern), body)
}

// Apply adds the legacy fields to a body of kind k. It returns body itself
// when it adds nothing (kind None, invalid JSON, another shape, fields all
// present already), else a new slice; body is never modified.
func Apply(k Kind, body []byte) []byte {
	if k == None || !json.Valid(body) {
		return body
	}
	s := shim{doc: body}
	switch k {
	case Markets, Market, Events, Event:
		EachMarket(k, body, func(members []jsonedit.Member) { s.fields(members, MarketFields) })
	case Orderbook:
		if top, ok := s.object(jsonedit.SkipSpace(body, 0)); ok {
			s.orderbook(top)
		}
	case Trades:
		top, ok := s.object(jsonedit.SkipSpace(body, 0))
		if !ok {
			break
		}
		if m, ok := jsonedit.Find(top, "trades"); ok {
			jsonedit.Elements(body, m.Start, func(start, _ int) bool {
				if t, ok := s.object(start); ok {
					s.fields(t, TradeFields)
				}
				return true
			})
		}
	}
	return s.ed.Apply(body)
}

// EachMarket calls yield with the members of every market object in doc, an
// answer of kind k: Markets ("markets"[]), Market ("market"), Events
// ("events"[]."markets"[] and a top-level "markets"[]) or Event
// ("event"."markets"[] and "markets"[]); other kinds hold none. Elements
// that are not objects are passed over. doc must be valid JSON (json.Valid).
// The members slice is reused between calls: yield must not keep it.
func EachMarket(k Kind, doc []byte, yield func(members []jsonedit.Member)) {
	top, ok := jsonedit.Members(nil, doc, jsonedit.SkipSpace(doc, 0))
	if !ok {
		return
	}
	var buf []jsonedit.Member
	list := func(parent []jsonedit.Member) {
		m, ok := jsonedit.Find(parent, "markets")
		if !ok {
			return
		}
		jsonedit.Elements(doc, m.Start, func(start, _ int) bool {
			var ok bool
			if buf, ok = jsonedit.Members(buf[:0], doc, start); ok {
				yield(buf)
			}
			return true
		})
	}
	switch k {
	case Markets:
		list(top)
	case Market:
		if m, ok := jsonedit.Find(top, "market"); ok {
			if buf, ok = jsonedit.Members(buf[:0], doc, m.Start); ok {
				yield(buf)
			}
		}
	case Events:
		if m, ok := jsonedit.Find(top, "events"); ok {
			var ev []jsonedit.Member
			jsonedit.Elements(doc, m.Start, func(start, _ int) bool {
				var ok bool
				if ev, ok = jsonedit.Members(ev[:0], doc, start); ok {
					list(ev)
				}
				return true
			})
		}
		list(top)
	case Event:
		if m, ok := jsonedit.Find(top, "event"); ok {
			if ev, ok := jsonedit.Members(nil, doc, m.Start); ok {
				list(ev)
			}
		}
		list(top)
	}
}

// shim collects the insertions for one body.
type shim struct {
	doc     []byte
	ed      jsonedit.Edits
	scratch []byte
}

// object returns the members of the object at doc[i] in a slice of its own
// (nested walks keep their parents' lists).
func (s *shim) object(i int) ([]jsonedit.Member, bool) {
	return jsonedit.Members(make([]jsonedit.Member, 0, 64), s.doc, i)
}

// fields inserts each missing field of fs after its source member. One
// pass over the members finds the sources and the fields present already.
func (s *shim) fields(members []jsonedit.Member, fs []Field) {
	var src [16]int // index+1 in members of fs[i].From; 0: absent
	var has [16]bool
	index := marketIndex
	if &fs[0] == &TradeFields[0] {
		index = tradeIndex
	}
	for mi, m := range members {
		if i, ok := index[string(m.Key)]; ok {
			if i >= 0 {
				src[i] = mi + 1
			} else {
				has[-i-1] = true
			}
		}
	}
	for i, f := range fs {
		if src[i] == 0 || has[i] {
			continue
		}
		m := members[src[i]-1]
		cur, ok := jsonedit.PlainString(s.doc, m.Start, m.End)
		if !ok {
			continue
		}
		text := append(s.scratch[:0], ',', '"')
		text = append(text, f.Name...)
		text = append(text, '"', ':')
		if text, ok = f.Value(text, cur); ok {
			s.ed.Insert(m.End, text)
		}
		s.scratch = text
	}
}

// orderbook adds "orderbook":{"yes":[[cents,count]...],"no":[...]} after
// "orderbook_fp". A side that is missing or null becomes []; a level that is
// not a pair of decimal strings leaves the whole book alone.
func (s *shim) orderbook(top []jsonedit.Member) {
	fp, ok := jsonedit.Find(top, "orderbook_fp")
	if !ok {
		return
	}
	if _, has := jsonedit.Find(top, "orderbook"); has {
		return
	}
	sides, ok := s.object(fp.Start)
	if !ok {
		return
	}
	text := []byte(`,"orderbook":{`)
	for i, side := range [...]struct{ name, from string }{{"yes", "yes_dollars"}, {"no", "no_dollars"}} {
		if i > 0 {
			text = append(text, ',')
		}
		text = append(text, '"')
		text = append(text, side.name...)
		text = append(text, `":[`...)
		if m, ok := jsonedit.Find(sides, side.from); ok && s.doc[m.Start] != 'n' {
			var good bool
			if text, good = s.levels(text, m.Start); !good {
				return
			}
		}
		text = append(text, ']')
	}
	text = append(text, '}')
	s.ed.Insert(fp.End, text)
}

// levels appends the [cents,count] pairs of the level array at doc[i].
func (s *shim) levels(text []byte, i int) ([]byte, bool) {
	good, n := true, 0
	isArray := jsonedit.Elements(s.doc, i, func(start, _ int) bool {
		var parts [2][]byte
		k := 0
		jsonedit.Elements(s.doc, start, func(ps, pe int) bool {
			if k < 2 {
				parts[k], good = jsonedit.PlainString(s.doc, ps, pe)
			}
			k++
			return good
		})
		if !good || k != 2 {
			good = false
			return false
		}
		price, ok1 := Cents(parts[0])
		count, ok2 := Contracts(parts[1])
		if !ok1 || !ok2 {
			good = false
			return false
		}
		if n > 0 {
			text = append(text, ',')
		}
		n++
		text = append(text, '[')
		text = strconv.AppendInt(text, price, 10)
		text = append(text, ',')
		text = strconv.AppendInt(text, count, 10)
		text = append(text, ']')
		return true
	})
	return text, good && isArray
}

// maxDigits bounds the integer digits accepted, far from int64 overflow.
const maxDigits = 15

// decimal splits a plain decimal ("-12.345") into sign, integer part and
// fraction digits.
func decimal(s []byte) (neg bool, whole int64, frac []byte, ok bool) {
	if len(s) > 0 && s[0] == '-' {
		neg, s = true, s[1:]
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		whole = whole*10 + int64(s[i]-'0')
		i++
	}
	if i == 0 || i > maxDigits {
		return false, 0, nil, false
	}
	if i < len(s) {
		if s[i] != '.' || i+1 == len(s) {
			return false, 0, nil, false
		}
		frac = s[i+1:]
		for _, c := range frac {
			if c < '0' || c > '9' {
				return false, 0, nil, false
			}
		}
	}
	return neg, whole, frac, true
}

// Cents is round(x * 100) of the decimal string x, computed exactly and
// rounded half away from zero ("0.3300" -> 33, "0.125" -> 13, "1" -> 100).
func Cents(s []byte) (int64, bool) {
	neg, whole, frac, ok := decimal(s)
	if !ok {
		return 0, false
	}
	v := whole * 100
	if len(frac) > 0 {
		v += int64(frac[0]-'0') * 10
	}
	if len(frac) > 1 {
		v += int64(frac[1] - '0')
	}
	if len(frac) > 2 && frac[2] >= '5' {
		v++
	}
	if neg {
		v = -v
	}
	return v, true
}

// Contracts is the integer part of the decimal count string x ("4918.41" ->
// 4918, "-2.50" -> -2).
func Contracts(s []byte) (int64, bool) {
	neg, whole, _, ok := decimal(s)
	if !ok {
		return 0, false
	}
	if neg {
		whole = -whole
	}
	return whole, true
}
