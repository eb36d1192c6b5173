package batch

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/kproxy/kproxy/batch/wire"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/route"
)

// Paging: /batch/markets (a series' markets) and /batch items with
// all_pages (a backfill) both follow Kalshi's cursor with follow, one page
// after the other, each page an ordinary fetch (its own cache entry, keyed
// by its URL with cursor=, through the rate limit, coalescing and breaker).

// paginated maps the route patterns (without route.Prefix) that Kalshi
// pages with a cursor to the member holding their list. Only these accept
// all_pages on a /batch item.
var paginated = map[string]string{
	"markets":                        "markets",
	"markets/trades":                 "trades",
	"events":                         "events",
	"events/multivariate":            "events",
	"events/fee_changes":             "event_fee_changes",
	"milestones":                     "milestones",
	"structured_targets":             "structured_targets",
	"multivariate_event_collections": "multivariate_contracts",
	"historical/markets":             "markets",
	"historical/trades":              "trades",
	"incentive_programs":             "incentive_programs",
}

// listKey returns the list member of a cursor-paginated route, and false
// for any other route.
func listKey(rt *route.Route) (string, bool) {
	k, ok := paginated[strings.TrimPrefix(rt.Pattern, route.Prefix)]
	return k, ok
}

// listing is the outcome of following one listing's cursor.
type listing struct {
	// pages counts the pages read (2xx and well-formed).
	pages int
	// cache is the worst outcome of the pages read (see worse); HIT when
	// none was read.
	cache string
	// cursor is where the listing continues: "" when it is complete. When
	// a page failed, it is the cursor of that page (where to retry from).
	cursor string
	// failed, when set, is the answer of the page that stopped the listing:
	// its upstream status and body, or kproxy's own error.
	failed *wire.Response
}

// follow reads a listing: the page at pathAt(""), then, when all is set,
// the page at pathAt(cursor) for each cursor the previous page gave, until
// a page gives none or h.maxPages pages are read. take receives each page
// read, in order. The first page that fails (a refused path, a failed
// fetch, a non-2xx answer, a body that is not a JSON object, or one take
// refuses with an error) stops the listing: pages already taken stay taken.
func (h *Handler) follow(ctx context.Context, cl *call, all bool, pathAt func(cursor string) string, take func(p *listPage, body []byte) error) listing {
	l := listing{cache: "HIT"}
	for l.pages < h.maxPages {
		t, ierr := h.resolve(pathAt(l.cursor))
		if ierr != nil {
			r := ierr.response()
			l.failed = &r
			return l
		}
		res := h.get(ctx, cl, t)
		if res.Outcome == fetch.Failed || res.Entry.Status/100 != 2 {
			r := response(res)
			l.failed = &r
			return l
		}
		cache := res.Outcome.XCache()
		page := res.Entry.Derive("list-page", parseListPage).(*listPage)
		err := page.err
		if err == nil {
			err = take(page, res.Entry.Body)
		}
		if err != nil {
			r := badAnswer(cache, fmt.Errorf("page %d: %w", l.pages+1, err))
			l.failed = &r
			return l
		}
		l.cache = worse(l.cache, cache)
		l.pages++
		l.cursor = page.cursor
		if l.cursor == "" || !all {
			break
		}
	}
	return l
}

// withCursor returns rawQuery with its cursor parameters replaced by
// cursor=c; the other parameters keep their order and encoding. An empty c
// returns rawQuery as it is.
func withCursor(rawQuery, c string) string {
	if c == "" {
		return rawQuery
	}
	var b strings.Builder
	for part := range strings.SplitSeq(rawQuery, "&") {
		if name, _, _ := strings.Cut(part, "="); part == "" || name == "cursor" {
			continue
		}
		b.WriteString(part)
		b.WriteByte('&')
	}
	b.WriteString("cursor=")
	b.WriteString(url.QueryEscape(c))
	return b.String()
}

// listPage is what paging needs of one page, parsed once per cache entry:
// its top-level members but the cursor, with where the elements of the
// array-valued ones sit in the body, and the cursor.
type listPage struct {
	// members are in order of first appearance; a repeated name keeps its
	// last value, as encoding/json reads it.
	members []member
	cursor  string
	err     error
}

// member is one top-level member of a page.
type member struct {
	key        string
	kind       kind
	start, end int    // array: body[start:end] are its elements
	compact    []byte // array: the elements, compacted, when the body spread them over lines
}

type kind uint8

const (
	array kind = iota
	null
	other // neither an array nor null
)

// items returns the elements of an array member, comma-separated and
// compact (empty for null).
func (m *member) items(body []byte) []byte {
	switch {
	case m.kind != array:
		return nil
	case m.compact != nil:
		return m.compact
	}
	return body[m.start:m.end]
}

// items returns the elements of the page's array member key, without
// brackets, compact: empty when the member is absent or null, an error
// when it is something else.
func (p *listPage) items(key string, body []byte) ([]byte, error) {
	for i := range p.members {
		if m := &p.members[i]; m.key == key {
			if m.kind == other {
				return nil, fmt.Errorf("%s is not an array", key)
			}
			return m.items(body), nil
		}
	}
	return nil, nil
}

// parseListPage reads a page once, fully validating it. The cursor is the
// string member "cursor", else "next_cursor" (incentive_programs); null or
// absent is "" (no more pages).
func parseListPage(body []byte) any {
	p := &listPage{}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		p.err = errors.New("not a JSON object")
		return p
	}
	var cursor, next string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			p.err = err
			return p
		}
		key := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			p.err = err
			return p
		}
		if key == "cursor" || key == "next_cursor" {
			var c *string
			if err := json.Unmarshal(raw, &c); err != nil {
				p.err = fmt.Errorf("%s is not a string", key)
				return p
			}
			v := ""
			if c != nil {
				v = *c
			}
			if key == "cursor" {
				cursor = v
			} else {
				next = v
			}
			continue
		}
		m := member{key: key, kind: other}
		switch {
		case string(raw) == "null":
			m.kind = null
		case raw[0] == '[':
			end := int(dec.InputOffset())
			m.kind = array
			m.start, m.end = arrayElements(body, end-len(raw), end)
			if bytes.ContainsAny(body[m.start:m.end], "\n\r\t") {
				var buf bytes.Buffer
				json.Compact(&buf, body[m.start:m.end])
				m.compact = buf.Bytes()
			}
		}
		if i := slices.IndexFunc(p.members, func(x member) bool { return x.key == key }); i >= 0 {
			p.members[i] = m
		} else {
			p.members = append(p.members, m)
		}
	}
	if _, err := dec.Token(); err != nil {
		p.err = err
	}
	p.cursor = cmp.Or(cursor, next)
	return p
}

// arrayElements returns the bounds of the elements of the JSON array at
// body[start:end], without the brackets and surrounding space.
func arrayElements(body []byte, start, end int) (int, int) {
	start, end = start+1, end-1
	for start < end && isSpace(body[start]) {
		start++
	}
	for end > start && isSpace(body[end-1]) {
		end--
	}
	return start, end
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// worse returns the worse of two cache outcomes: HIT only when both are,
// STALE when the worse is a stale copy, else MISS (a page came from the
// upstream).
func worse(a, b string) string {
	switch {
	case a == "HIT" && b == "HIT":
		return "HIT"
	case (a == "HIT" || a == "STALE") && (b == "HIT" || b == "STALE"):
		return "STALE"
	}
	return "MISS"
}

// appendItems appends the comma-separated elements items to list, which
// holds comma-separated elements already.
func appendItems(list, items []byte) []byte {
	if len(items) == 0 {
		return list
	}
	if len(list) > 0 {
		list = append(list, ',')
	}
	return append(list, items...)
}
