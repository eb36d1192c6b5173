package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Error is a failure kproxy answers itself (the upstream gave no answer to
// pass on). Status and Code are what the client gets.
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
		return &Error{Status: http.StatusGatewayTimeout, Code: "upstream_timeout", Msg: "upstream " + host + " timed out", Err: err}
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return &Error{Status: 499, Code: "client_closed", Msg: "request canceled", Err: err}
	default:
		return &Error{Status: http.StatusBadGateway, Code: "upstream_unreachable", Msg: "upstream " + host + " unreachable", Err: err}
	}
}
