package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/batch/wire"
	"github.com/kproxy/kproxy/internal/header"
)

// job computes the answer shared by one or more slots of a batch (duplicate
// items share one job). It must return promptly once ctx is done.
type job struct {
	slots []int
	run   func(ctx context.Context) wire.Response
}

// plan is one request's work: ids[i] names slot i of the answer.
type plan struct {
	ids  []string
	jobs []job
	// fold builds the JSON document of a non-streamed answer from the
	// slots' responses, in slot order.
	fold func([]wire.Response) any
}

// run executes jobs, at most h.concurrency at a time, and calls emit with
// each job's answer as it completes, from the calling goroutine only. Once
// ctx is done no job starts; run returns when every started job has
// returned.
func (h *Handler) run(ctx context.Context, jobs []job, emit func(job, wire.Response)) {
	type done struct {
		j int
		r wire.Response
	}
	next := make(chan int)
	results := make(chan done)
	var wg sync.WaitGroup
	for range min(h.concurrency, len(jobs)) {
		wg.Go(func() {
			for j := range next {
				if ctx.Err() != nil {
					continue // drain: nobody waits for the rest
				}
				results <- done{j, jobs[j].run(ctx)}
			}
		})
	}
	go func() {
		defer close(next)
		for j := range jobs {
			select {
			case next <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		close(results)
	}()
	for d := range results {
		emit(jobs[d.j], d.r)
	}
}

// serve runs p and answers: with Accept: application/x-ndjson one line per
// slot as its job completes, then the done line; otherwise one JSON
// document once every job is done. When the client goes away the remaining
// jobs are not started and nothing more is written.
func (h *Handler) serve(c echo.Context, start time.Time, p plan) error {
	ctx := c.Request().Context()
	var lines *lineWriter
	if wantsStream(c.Request()) {
		lines = newLineWriter(c.Response())
	}
	results := make([]wire.Response, len(p.ids))
	var tally wire.Done
	h.run(ctx, p.jobs, func(j job, r wire.Response) {
		for _, slot := range j.slots {
			r.ID = p.ids[slot]
			results[slot] = r
			h.m.BatchItem(r.Status)
			if r.OK() {
				tally.OK++
			} else {
				tally.Failed++
			}
			if lines != nil {
				lines.write(r)
			}
		}
	})
	tally.Done, tally.ElapsedMS = true, time.Since(start).Milliseconds()
	if ctx.Err() != nil {
		h.log.Debug("batch abandoned by its client", "path", c.Path(), "answered", tally.OK+tally.Failed, "slots", len(p.ids))
		return nil
	}
	h.log.Debug("batch done", "path", c.Path(), "ok", tally.OK, "failed", tally.Failed, "elapsed_ms", tally.ElapsedMS)
	if lines != nil {
		lines.write(tally)
		return nil
	}
	return writeJSON(c.Response(), p.fold(results))
}

// wantsStream reports whether the client accepts application/x-ndjson.
func wantsStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for v != "" {
			var mt string
			mt, _, v = header.Next(v, ";")
			if strings.EqualFold(mt, "application/x-ndjson") {
				return true
			}
		}
	}
	return false
}

// writeJSON sends v as a 200 JSON answer.
func writeJSON(w http.ResponseWriter, v any) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	// A write error means the client is gone: nobody to tell.
	if raw, ok := v.(rawAnswer); ok {
		w.Write(raw)
		return nil
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return nil
}

// lineWriter writes a progress stream: one compact JSON value per line,
// each flushed at once. After the first write error (the client is gone)
// it writes nothing more. It is not safe for concurrent use.
type lineWriter struct {
	w     io.Writer
	enc   *json.Encoder
	flush func() error
	err   error
	buf   []byte
}

func newLineWriter(w *echo.Response) *lineWriter {
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // ask buffering proxies in front to pass lines through
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	rc := http.NewResponseController(w)
	lw := &lineWriter{w: w, enc: enc, flush: func() error {
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		return nil // a writer that cannot flush still delivers, later
	}}
	lw.err = lw.flush() // send the headers now: the client sees the stream start
	return lw
}

// write sends v as one line: an item's answer with appendResponse (its
// body compacted when it holds a line break, so a value never spans
// lines), anything else with json.Encoder.
func (lw *lineWriter) write(v any) {
	if lw.err != nil {
		return
	}
	if r, ok := v.(wire.Response); ok {
		lw.buf = append(appendResponse(lw.buf[:0], r, true), '\n')
		_, lw.err = lw.w.Write(lw.buf)
	} else {
		lw.err = lw.enc.Encode(v)
	}
	if lw.err == nil {
		lw.err = lw.flush()
	}
}

// appendResponse appends r to b as one JSON object, its body last. The
// body is written as it is, neither re-encoded nor re-validated (a
// backfill's body can be megabytes): every Body the handlers build is
// valid JSON (see embed, backfill and the typed results). With oneLine a
// body holding a line break is compacted.
func appendResponse(b []byte, r wire.Response, oneLine bool) []byte {
	body := r.Body
	r.Body = nil
	var head bytes.Buffer
	enc := json.NewEncoder(&head)
	enc.SetEscapeHTML(false)
	enc.Encode(r) // cannot fail: strings and ints
	h := bytes.TrimSuffix(head.Bytes(), []byte("\n"))
	if len(body) == 0 {
		return append(b, h...)
	}
	b = append(append(b, h[:len(h)-1]...), `,"body":`...)
	if oneLine && (bytes.IndexByte(body, '\n') >= 0 || bytes.IndexByte(body, '\r') >= 0) {
		var c bytes.Buffer
		if json.Compact(&c, body) == nil {
			body = c.Bytes()
		}
	}
	return append(append(b, body...), '}')
}
