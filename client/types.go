package client

import (
	"fmt"

	"github.com/kproxy/kproxy/batch/wire"
)

// The batch API's wire types, owned by the server (package batch/wire).
type (
	Item            = wire.Item
	BatchRequest    = wire.BatchRequest
	Response        = wire.Response
	Line            = wire.Line
	BatchResponse   = wire.BatchResponse
	Done            = wire.Done
	ItemError       = wire.ItemError
	MarketsRequest  = wire.MarketsRequest
	MarketsResponse = wire.MarketsResponse
	EventsRequest   = wire.EventsRequest
	EventResult     = wire.EventResult
	EventsResponse  = wire.EventsResponse
	SeriesRequest   = wire.SeriesRequest
	SeriesResponse  = wire.SeriesResponse
)

// Error is an error kproxy answered instead of a batch result (a bad
// request, a body too large): the contract's {"error", "code"} body with
// the HTTP status.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("kproxy: %d %s: %s", e.Status, e.Code, e.Message)
}

// Bool returns a pointer to v, for EventsRequest.WithNestedMarkets.
func Bool(v bool) *bool { return &v }
