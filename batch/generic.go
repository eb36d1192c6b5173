package batch

import (
	"context"
	"github.com/kproxy/kproxy/internal/httperr"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/batch/wire"
)

// itemSpec is one element of POST /batch's "requests". Path is a pointer
// so that a missing path (a malformed request) differs from an empty one.
type itemSpec struct {
	ID     string  `json:"id"`
	Path   *string `json:"path"`
	Method string  `json:"method"`
}

type batchRequest struct {
	Requests []itemSpec `json:"requests"`
}

// handleBatch serves POST /batch: each item is a GET of a public cached
// route, answered in request order. Structural problems (bad JSON, unknown
// fields, a missing path, no items) refuse the whole request; an item whose
// path or method is not allowed gets a per-item 400 and is never fetched.
// Items with the same cache key share one fetch.
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
		if j, dup := byKey[t.key]; dup {
			p.jobs[j].slots = append(p.jobs[j].slots, i)
			continue
		}
		byKey[t.key] = len(p.jobs)
		p.jobs = append(p.jobs, job{slots: []int{i}, run: func(ctx context.Context) wire.Response {
			return response(h.get(ctx, cl, t))
		}})
	}
	p.fold = func(rs []wire.Response) any { return wire.BatchResponse{Responses: rs} }
	return h.serve(c, start, p)
}

// resolveItem checks one item's method and path.
func (h *Handler) resolveItem(it itemSpec) (target, *itemError) {
	if it.Method != "" && it.Method != http.MethodGet {
		return target{}, &itemError{status: http.StatusBadRequest, code: httperr.CodeBadMethod, msg: "method " + strconv.Quote(it.Method) + " not allowed; a batch carries only GETs"}
	}
	return h.resolve(*it.Path)
}
