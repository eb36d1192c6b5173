package batch

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/kproxy/kproxy/internal/httperr"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/batch/wire"
)

// itemSpec is one element of POST /batch's "requests". Path is a pointer
// so that a missing path (a malformed request) differs from an empty one.
type itemSpec struct {
	ID       string  `json:"id"`
	Path     *string `json:"path"`
	Method   string  `json:"method"`
	AllPages bool    `json:"all_pages"`
}

type batchRequest struct {
	Requests []itemSpec `json:"requests"`
}

// handleBatch serves POST /batch: each item is a GET of a public cached
// route, answered in request order. Structural problems (bad JSON, unknown
// fields, a missing path, no items) refuse the whole request; an item whose
// path or method is not allowed gets a per-item 400 and is never fetched.
// Items with the same cache key (and all_pages) share one fetch. An item
// with all_pages is a backfill: see backfill.
func (h *Handler) handleBatch(c echo.Context) error {
	start := time.Now()
	var req batchRequest
	if err := decode(c, &req); err != nil {
		return refuse(c, err)
	}
	if err := h.checkCount("requests", len(req.Requests)); err != nil {
		return refuse(c, err)
	}
	for i, it := range req.Requests {
		if it.Path == nil {
			return refuse(c, badRequest("requests[%d].path is required", i))
		}
	}
	cl := h.newCall(c)
	p := plan{ids: make([]string, len(req.Requests))}
	byKey := map[string]int{} // cache key -> index of its job
	for i, it := range req.Requests {
		p.ids[i] = it.ID
		if it.ID == "" {
			p.ids[i] = strconv.Itoa(i)
		}
		t, ierr := h.resolveItem(it)
		if ierr != nil {
			answer := ierr.response()
			p.jobs = append(p.jobs, job{slots: []int{i}, run: func(context.Context) wire.Response { return answer }})
			continue
		}
		key := t.key
		if it.AllPages {
			key = "all_pages " + key
		}
		if j, dup := byKey[key]; dup {
			p.jobs[j].slots = append(p.jobs[j].slots, i)
			continue
		}
		byKey[key] = len(p.jobs)
		run := func(ctx context.Context) wire.Response { return response(h.get(ctx, cl, t)) }
		if it.AllPages {
			run = func(ctx context.Context) wire.Response { return h.backfill(ctx, cl, t) }
		}
		p.jobs = append(p.jobs, job{slots: []int{i}, run: run})
	}
	p.fold = foldBatch
	return h.serve(c, start, p)
}

// resolveItem checks one item's method, path and all_pages.
func (h *Handler) resolveItem(it itemSpec) (target, *itemError) {
	if it.Method != "" && it.Method != http.MethodGet {
		return target{}, &itemError{status: http.StatusBadRequest, code: httperr.CodeBadMethod, msg: "method " + strconv.Quote(it.Method) + " not allowed; a batch carries only GETs"}
	}
	t, ierr := h.resolve(*it.Path)
	if ierr == nil && it.AllPages {
		if _, ok := listKey(t.route); !ok {
			return target{}, &itemError{status: http.StatusBadRequest, code: httperr.CodeNotPaginated, msg: "all_pages: route " + t.route.Pattern + " is not cursor-paginated"}
		}
	}
	return t, ierr
}

// backfill answers an all_pages item: the pages of t's listing, followed
// from t's own query (which may hold a cursor to resume from), joined in
// one body {"<list>": [...], ..., "cursor": c, "pages": N, "truncated": b}.
// Every array-valued top-level member of the pages is joined under its
// key, in order of first appearance, the route's list member first and
// always present; the elements are written as the upstream sent them
// (compacted), never re-encoded. truncated is true when batch.max_pages
// stopped the listing with more to come; cursor is then where it
// continues, else "". Cache is HIT only when every page was a HIT (see
// worse). A failed page fails the item with that page's answer, Pages the
// pages read before it and NextCursor that page's cursor.
func (h *Handler) backfill(ctx context.Context, cl *call, t target) wire.Response {
	key, _ := listKey(t.route)
	lists := []joined{{key: key}}
	l := h.follow(ctx, cl, true, func(cursor string) string {
		if q := withCursor(t.rawQuery, cursor); q != "" {
			return t.escapedPath + "?" + q
		}
		return t.escapedPath
	}, func(p *listPage, body []byte) error {
		if _, err := p.items(key, body); err != nil {
			return err
		}
		for i := range p.members {
			m := &p.members[i]
			if m.kind != array || m.key == "pages" || m.key == "truncated" {
				continue // "pages" and "truncated" are the answer's own members
			}
			j := slices.IndexFunc(lists, func(x joined) bool { return x.key == m.key })
			if j < 0 {
				j = len(lists)
				lists = append(lists, joined{key: m.key})
			}
			if items := m.items(body); len(items) > 0 {
				lists[j].parts = append(lists[j].parts, items)
			}
		}
		return nil
	})
	if l.failed != nil {
		r := *l.failed
		r.Pages, r.NextCursor = l.pages, l.cursor
		if l.pages == 0 { // the item's own page failed: its own cursor, if any
			q, _ := url.ParseQuery(t.rawQuery)
			r.NextCursor = q.Get("cursor")
		}
		return r
	}
	return wire.Response{Status: http.StatusOK, Cache: l.cache, Body: joinedBody(lists, l), Pages: l.pages, NextCursor: l.cursor}
}

// joined is one list of a backfill: its key and, per page, its
// comma-separated elements (slices of the pages' cached bodies, copied
// once into the answer).
type joined struct {
	key   string
	parts [][]byte
}

// joinedBody writes a backfill's body.
func joinedBody(lists []joined, l listing) []byte {
	size := len(l.cursor) + 64
	for _, x := range lists {
		size += len(x.key) + 8
		for _, p := range x.parts {
			size += len(p) + 1
		}
	}
	b := make([]byte, 0, size)
	b = append(b, '{')
	for _, x := range lists {
		k, _ := json.Marshal(x.key)
		b = append(append(b, k...), ":["...)
		for i, p := range x.parts {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, p...)
		}
		b = append(b, "],"...)
	}
	c, _ := json.Marshal(l.cursor)
	b = append(append(append(b, `"cursor":`...), c...), `,"pages":`...)
	b = strconv.AppendInt(b, int64(l.pages), 10)
	b = append(append(b, `,"truncated":`...), strconv.FormatBool(l.cursor != "")...)
	return append(b, '}')
}

// foldBatch writes the answer of POST /batch, wire.BatchResponse, with the
// items' bodies as they are (see appendResponse).
func foldBatch(rs []wire.Response) any {
	size := 32
	for _, r := range rs {
		size += len(r.Body) + len(r.Error) + 96
	}
	b := append(make([]byte, 0, size), `{"responses":[`...)
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendResponse(b, r, false)
	}
	return rawAnswer(append(b, "]}\n"...))
}
