package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/kproxy/kproxy/internal/httperr"
)

// Error is a failure kproxy answers itself (the upstream gave no answer to
// pass on). Status and Code are what the client gets; Code is one of
// httperr's Code constants.
type Error struct {
	Status     int
	Code       string
	Msg        string
	RetryAfter time.Duration // 0: no Retry-After header
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same Code: the sentinels
// below match every error of their kind, whatever its message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is: each matches every *Error of its code.
var (
	ErrClientClosed = &Error{Status: httperr.StatusClientClosed, Code: httperr.CodeClientClosed, Msg: "request canceled"}
	ErrUnreachable  = &Error{Status: http.StatusBadGateway, Code: httperr.CodeUpstreamUnreachable, Msg: "upstream unreachable"}
	ErrTimeout      = &Error{Status: http.StatusGatewayTimeout, Code: httperr.CodeUpstreamTimeout, Msg: "upstream timed out"}
	ErrRateLimited  = &Error{Status: http.StatusTooManyRequests, Code: httperr.CodeRateLimited, Msg: "rate budget spent"}
	ErrBreakerOpen  = &Error{Status: http.StatusServiceUnavailable, Code: httperr.CodeBreakerOpen, Msg: "circuit breaker open"}
	ErrInternal     = &Error{Status: http.StatusInternalServerError, Code: httperr.CodeInternal, Msg: "internal error"}
)

// Canceled is the error of a request whose client went away (499, never
// sent); err is the context's error.
func Canceled(err error) *Error {
	return &Error{Status: httperr.StatusClientClosed, Code: httperr.CodeClientClosed, Msg: "request canceled", Err: err}
}

// As returns err as an *Error: itself (or the one it wraps), else a 502
// upstream_error wrapping it.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Status: http.StatusBadGateway, Code: httperr.CodeUpstreamError, Msg: "upstream request failed", Err: err}
}

// wrap turns a transport error into an *Error naming the upstream.
func (c *Client) wrap(ctx context.Context, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	host := c.origin.Host
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return &Error{Status: http.StatusGatewayTimeout, Code: httperr.CodeUpstreamTimeout, Msg: "upstream " + host + " timed out", Err: err}
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return Canceled(err)
	default:
		return &Error{Status: http.StatusBadGateway, Code: httperr.CodeUpstreamUnreachable, Msg: "upstream " + host + " unreachable", Err: err}
	}
}
