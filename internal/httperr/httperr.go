// Package httperr writes the JSON errors kproxy produces itself:
// {"error": "<message>", "code": "<machine_code>"} with the right status.
// It names every machine code kproxy emits, once: README's error table lists
// exactly these.
package httperr

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// StatusClientClosed is the status recorded (never sent) for a request whose
// client went away before its answer was ready, as nginx logs it.
const StatusClientClosed = 499

// Machine codes of kproxy's own errors (the "code" member of the body).
const (
	// Requests kproxy refuses itself.
	CodeBadPath          = "bad_path"           // 400: a path kproxy never forwards
	CodeBadClient        = "bad_client"         // 400: a Kproxy-Client header kproxy does not accept
	CodeBadRequest       = "bad_request"        // 400: a malformed request (admin query, batch body)
	CodeBadJSON          = "bad_json"           // 400: a batch body that is not the JSON expected
	CodeBadTicker        = "bad_ticker"         // 400: a batch ticker kproxy does not accept
	CodeBadMethod        = "bad_method"         // 400: a batch item that is not a GET
	CodeNotBatchable     = "not_batchable"      // 400: a batch item that is not a public cached route
	CodeNotPaginated     = "not_paginated"      // 400: a batch item with all_pages on a route without a cursor
	CodeBadBody          = "bad_body"           // 400: a passed-through body that could not be read
	CodeUnauthorized     = "unauthorized"       // 401: admin token missing or wrong
	CodeNotFound         = "not_found"          // 404: no such route
	CodeAdminOff         = "admin_off"          // 404: an admin route without an admin token configured
	CodeMethodNotAllowed = "method_not_allowed" // 405
	CodeRequestTimeout   = "request_timeout"    // 408: a passed-through body not received in time
	CodeBodyTooLarge     = "body_too_large"     // 413
	CodeTooManyItems     = "too_many_items"     // 413: a batch over batch.max_items
	CodeError            = "error"              // another status from the router

	// Answers kproxy could not get.
	CodeNotCached           = "not_cached"           // 504: only-if-cached and nothing servable
	CodeRateLimited         = "rate_limited"         // 429: kproxy's own upstream budget is spent
	CodeUpstreamUnreachable = "upstream_unreachable" // 502
	CodeUpstreamError       = "upstream_error"       // 502
	CodeUpstreamReadFailed  = "upstream_read_failed" // 502
	CodeUpstreamTooLarge    = "upstream_too_large"   // 502
	CodeUpstreamBadUpgrade  = "upstream_bad_upgrade" // 502: the WebSocket handshake upstream
	CodeBadUpstreamAnswer   = "bad_upstream_answer"  // 502: a batch item's 2xx body is not the route's shape
	CodeBreakerOpen         = "breaker_open"         // 503
	CodeDraining            = "draining"             // 503: shutting down
	CodeOffline             = "offline"              // 503: upstream.offline, and the request would need Kalshi
	CodeUpstreamTimeout     = "upstream_timeout"     // 504
	CodeCoalesceTimeout     = "coalesce_timeout"     // 504: another replica's fetch took too long
	CodeSigningFailed       = "signing_failed"       // 500
	CodeStatusFailed        = "status_failed"        // 500: the status page
	CodeInternal            = "internal_error"       // 500: a bug, caught and logged
	CodeClientClosed        = "client_closed"        // 499: never sent (the client is gone)
)

// Body is the JSON shape of every kproxy error.
type Body struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Write sends status with a JSON error body. retryAfter, when positive, is
// sent as Retry-After in whole seconds (at least 1).
func Write(w http.ResponseWriter, status int, code, msg string, retryAfter time.Duration) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if retryAfter > 0 {
		secs := int64((retryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	}
	b, _ := json.Marshal(Body{Error: msg, Code: code})
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
