package batch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/internal/httperr"
)

// inputError is a batch request refused as a whole, before any item runs.
type inputError struct {
	status int
	code   string
	msg    string
}

func badRequest(format string, args ...any) *inputError {
	return &inputError{status: http.StatusBadRequest, code: httperr.CodeBadRequest, msg: fmt.Sprintf(format, args...)}
}

// refuse answers a request refused as a whole with the contract's JSON error.
func refuse(c echo.Context, e *inputError) error {
	httperr.Write(c.Response(), e.status, e.code, e.msg, 0)
	return nil
}

// decode reads the request body, at most MaxBody bytes, into v: exactly one
// JSON value with no unknown fields. The Content-Type is not checked; a
// body that parses as JSON is accepted.
func decode(c echo.Context, v any) *inputError {
	// The unwrapped writer lets net/http close the connection after a body
	// over the limit, rather than read the rest of it.
	body := http.MaxBytesReader(c.Response().Writer, c.Request().Body, MaxBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	var extra json.RawMessage
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		return &inputError{status: http.StatusBadRequest, code: httperr.CodeBadJSON, msg: "body has data after its JSON value"}
	default:
		if e := decodeError(err); e.status != http.StatusBadRequest {
			return e
		}
		return &inputError{status: http.StatusBadRequest, code: httperr.CodeBadJSON, msg: "body has data after its JSON value"}
	}
}

// decodeError classifies a JSON decoding failure.
func decodeError(err error) *inputError {
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return &inputError{status: http.StatusRequestEntityTooLarge, code: httperr.CodeBodyTooLarge, msg: fmt.Sprintf("body is larger than %d bytes", tooBig.Limit)}
	case errors.Is(err, io.EOF):
		return &inputError{status: http.StatusBadRequest, code: httperr.CodeBadJSON, msg: "body is empty"}
	case errors.As(err, &typeErr):
		return &inputError{status: http.StatusBadRequest, code: httperr.CodeBadJSON, msg: fmt.Sprintf("field %q: want a JSON %s, got %s", typeErr.Field, typeErr.Type, typeErr.Value)}
	default:
		return &inputError{status: http.StatusBadRequest, code: httperr.CodeBadJSON, msg: "body is not valid JSON for this endpoint: " + err.Error()}
	}
}

// checkCount refuses an empty list and one over the item bound.
func (h *Handler) checkCount(field string, n int) *inputError {
	switch {
	case n == 0:
		return badRequest("%s is required and must not be empty", field)
	case n > h.maxItems:
		return &inputError{status: http.StatusRequestEntityTooLarge, code: httperr.CodeTooManyItems, msg: fmt.Sprintf("%s has %d entries; the limit is %d", field, n, h.maxItems)}
	}
	return nil
}

// maxTicker bounds a ticker's length.
const maxTicker = 128

// checkTickers refuses a list holding a malformed ticker and returns the
// tickers without duplicates, in first-seen order. A ticker is 1 to 128
// letters, digits, '-', '_' or '.', starting with a letter or digit: the
// shape of Kalshi's tickers, and nothing that could change a path.
func checkTickers(field string, tickers []string) ([]string, *inputError) {
	seen := make(map[string]bool, len(tickers))
	out := make([]string, 0, len(tickers))
	for i, t := range tickers {
		if !validTicker(t) {
			return nil, &inputError{status: http.StatusBadRequest, code: httperr.CodeBadTicker,
				msg: fmt.Sprintf("%s[%d] = %q is not a ticker (1 to %d letters, digits, '-', '_' or '.', starting with a letter or digit)", field, i, t, maxTicker)}
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, nil
}

func validTicker(t string) bool {
	if t == "" || len(t) > maxTicker {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '-' && c != '_' && c != '.') {
			return false
		}
	}
	return true
}
