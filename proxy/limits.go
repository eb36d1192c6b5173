package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/kproxy/kproxy/internal/httperr"
)

// Server limits (SECURITY.md, docs/fairness.md): what one client can hold.
const (
	// ReadHeaderTimeout cuts a client that has not sent its request line
	// and headers within it (slowloris), and a new connection that sends
	// nothing.
	ReadHeaderTimeout = 10 * time.Second
	// IdleTimeout closes a keep-alive connection idle that long.
	IdleTimeout = 120 * time.Second
	// MaxHeaderBytes bounds the request line plus headers; more is 431.
	MaxHeaderBytes = 64 << 10
	// BodyTimeout is the default bound (Config.BodyTimeout) for reading a
	// passed-through request's body.
	BodyTimeout = 10 * time.Second
	// MaxWriteBody bounds the body of a passed-through request (orders,
	// writes); a larger one is 413. Kalshi's write bodies are a few KiB.
	MaxWriteBody = 1 << 20
)

// bufferBody reads the body of a request about to be passed through into
// memory, within the body timeout and MaxWriteBody, before anything is
// sent upstream: a client trickling its body holds neither a rate-limit
// token nor an upstream connection, and the upstream never gets half a
// write. It answers the client itself (408, 413 or 400, JSON) and reports
// false when the body cannot be had. A request without a body is left
// alone.
func (s *Server) bufferBody(w http.ResponseWriter, r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return true
	}
	rc := http.NewResponseController(w)
	// Not every ResponseWriter has a connection (tests); the size bound
	// holds either way.
	_ = rc.SetReadDeadline(time.Now().Add(s.bodyTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWriteBody))
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		w.Header().Set("Connection", "close")
		var tooLarge *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &tooLarge):
			httperr.Write(w, http.StatusRequestEntityTooLarge, httperr.CodeBodyTooLarge, "request body over 1 MiB", 0)
		case errors.As(err, &ne) && ne.Timeout():
			httperr.Write(w, http.StatusRequestTimeout, httperr.CodeRequestTimeout, "request body not received within "+s.bodyTimeout.String(), 0)
		default:
			httperr.Write(w, http.StatusBadRequest, httperr.CodeBadBody, "reading the request body failed", 0)
		}
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	return true
}
