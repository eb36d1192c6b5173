package batch

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kproxy/kproxy/internal/httperr"
	"net/http"
	"net/url"
	"strings"

	"github.com/kproxy/kproxy/batch/wire"
	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/route"
)

// target is an item path that passed every check: a public cacheable route
// under route.Prefix, ready for the fetch path.
type target struct {
	route       *route.Route
	key         string
	escapedPath string
	rawQuery    string
}

// itemError is why an item is answered without being fetched.
type itemError struct {
	status int
	code   string
	msg    string
}

func (e *itemError) response() wire.Response {
	return wire.Response{Status: e.status, Error: e.msg, Code: e.code}
}

func badPath(format string, args ...any) *itemError {
	return &itemError{status: http.StatusBadRequest, code: httperr.CodeBadPath, msg: fmt.Sprintf(format, args...)}
}

// resolve checks an item path (path and query, as a client wrote it) and
// returns its target. Only a relative reference whose path is a public
// cacheable route under route.Prefix passes: absolute URLs, a host
// ("//host"), fragments, dot segments, encoded slashes or backslashes,
// control characters, over-long paths and private routes are refused, and
// are never sent upstream.
func (h *Handler) resolve(raw string) (target, *itemError) {
	if raw == "" {
		return target{}, badPath("path is empty")
	}
	if len(raw) > route.MaxPathLen {
		return target{}, badPath("path is longer than %d bytes", route.MaxPathLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return target{}, badPath("path does not parse: %v", err)
	}
	switch {
	case u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "":
		return target{}, badPath("path must be relative to kproxy (no scheme or host)")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return target{}, badPath("path must not have a fragment")
	case !strings.HasPrefix(u.Path, route.Prefix):
		return target{}, badPath("path must start with %s", route.Prefix)
	}
	escaped := u.EscapedPath()
	if err := route.CheckPath(escaped, u.Path); err != nil {
		return target{}, badPath("%v", err)
	}
	if i := strings.IndexFunc(u.RawQuery, unsafeInQuery); i >= 0 {
		return target{}, badPath("query has a byte that must be percent-encoded at offset %d", i)
	}
	if route.IsPrivate(u.Path) {
		return target{}, &itemError{status: http.StatusBadRequest, code: httperr.CodeNotBatchable, msg: "private route; a batch carries only public GETs"}
	}
	rt := h.routes.Match(u.Path)
	if rt == nil {
		return target{}, &itemError{status: http.StatusBadRequest, code: httperr.CodeNotBatchable, msg: "not a public cached route"}
	}
	return target{route: rt, key: route.Key(u.Path, u.RawQuery), escapedPath: escaped, rawQuery: u.RawQuery}, nil
}

// unsafeInQuery reports whether r may not appear as is in a request
// target's query (RFC 3986 section 3.4): controls, space, non-ASCII and
// the delimiters that must be encoded.
func unsafeInQuery(r rune) bool {
	return r <= ' ' || r >= 0x7f || strings.ContainsRune("\"<>\\^`{|}#", r)
}

// response converts a fetch result into an item's answer (without its id).
// A non-2xx upstream answer keeps its body and gets an error message
// taken from it.
func response(res fetch.Result) wire.Response {
	if res.Outcome == fetch.Failed {
		return wire.Response{Status: res.Err.Status, Cache: res.Outcome.XCache(), Error: res.Err.Msg, Code: res.Err.Code}
	}
	e := res.Entry
	r := wire.Response{Status: e.Status, Cache: res.Outcome.XCache(), Body: embed(e.Body)}
	if !r.OK() {
		r.Error, r.Code = upstreamError(e.Status, e.Body)
	}
	return r
}

// embed returns body as a JSON value: itself when it is JSON, else a JSON
// string; nil for an empty body.
func embed(body []byte) json.RawMessage {
	if len(body) == 0 {
		return nil
	}
	if json.Valid(body) {
		return body
	}
	s, _ := json.Marshal(string(body))
	return s
}

// upstreamError extracts the message and code of an upstream error body:
// Kalshi's {"error":{"code","message"}} envelope, its 429 form
// {"error":"too many requests"}, or {"code","message"}. It falls back to
// the status text.
func upstreamError(status int, body []byte) (msg, code string) {
	var env struct {
		Error   json.RawMessage `json:"error"`
		Code    string          `json:"code"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(body, &env) == nil {
		var s string
		var detail struct{ Code, Message string }
		switch {
		case json.Unmarshal(env.Error, &s) == nil && s != "":
			msg = s
		case json.Unmarshal(env.Error, &detail) == nil && detail.Message != "":
			msg, code = detail.Message, detail.Code
		case env.Message != "":
			msg, code = env.Message, env.Code
		}
	}
	if msg == "" {
		msg = strings.ToLower(http.StatusText(status))
	}
	if msg == "" {
		msg = fmt.Sprintf("upstream status %d", status)
	}
	return msg, code
}
