// Package httperr writes the JSON errors kproxy produces itself:
// {"error": "<message>", "code": "<machine_code>"} with the right status.
package httperr

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
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
