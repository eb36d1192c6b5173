// Package client is a typed Go client for kproxy's batch API.
//
// Every method makes one POST to kproxy. A batch answered at all is a
// success even when some of its items failed: look at each item's Status
// (or a typed response's Errors). A request kproxy refuses as a whole (bad
// input, too many items) returns an *Error.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/kproxy/kproxy/batch/wire"
)

// Paths of the batch endpoints, for Stream.
const (
	PathBatch   = wire.PathBatch
	PathMarkets = wire.PathMarkets
	PathEvents  = wire.PathEvents
	PathSeries  = wire.PathSeries
)

// ndjson is the media type of progress streams.
const ndjson = "application/x-ndjson"

// Client calls one kproxy. It is safe for concurrent use once built; do not
// modify Header while calls are in flight.
type Client struct {
	base string
	hc   *http.Client
	// Header is sent with every request (an Authorization header, say).
	// kproxy passes it on with the items' upstream fetches, except the
	// KALSHI-ACCESS-* signature headers, which cannot be valid for them.
	Header http.Header
}

// New returns a client of the kproxy at baseURL (e.g.
// "http://127.0.0.1:8080"). A nil httpClient means http.DefaultClient.
func New(baseURL string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: httpClient}
}

// Batch runs a generic batch. The responses are in the order of items.
func (c *Client) Batch(ctx context.Context, items []Item) (*BatchResponse, error) {
	return callFor[BatchResponse](ctx, c, PathBatch, BatchRequest{Requests: items})
}

// Markets fetches the markets of several series.
func (c *Client) Markets(ctx context.Context, req MarketsRequest) (*MarketsResponse, error) {
	return callFor[MarketsResponse](ctx, c, PathMarkets, req)
}

// Events fetches several events.
func (c *Client) Events(ctx context.Context, req EventsRequest) (*EventsResponse, error) {
	return callFor[EventsResponse](ctx, c, PathEvents, req)
}

// Series fetches several series.
func (c *Client) Series(ctx context.Context, req SeriesRequest) (*SeriesResponse, error) {
	return callFor[SeriesResponse](ctx, c, PathSeries, req)
}

// callFor posts req to path and decodes the answer into a new T.
func callFor[T any](ctx context.Context, c *Client, path string, req any) (*T, error) {
	var out T
	if err := c.call(ctx, path, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Stream posts body to the batch endpoint at path (PathBatch, PathMarkets,
// ...) asking for progress, and calls fn with each item line as the server
// sends it, from the calling goroutine. It returns the final Done line. If
// fn returns an error, Stream closes the connection, which makes kproxy
// stop the remaining work, and returns that error.
func (c *Client) Stream(ctx context.Context, path string, body any, fn func(Line) error) (*Done, error) {
	resp, err := c.post(ctx, path, body, ndjson)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), ndjson) {
		return nil, fmt.Errorf("kproxy: POST %s: want a %s stream, got %q", path, ndjson, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	for {
		raw, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(raw)) > 0 {
			done, lerr := handleLine(raw, fn)
			if lerr != nil || done != nil {
				return done, lerr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("kproxy: POST %s: stream ended before its done line: %w", path, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return nil, fmt.Errorf("kproxy: POST %s: reading the stream: %w", path, err)
		}
	}
}

// handleLine decodes one stream line: the Done line is returned, an item
// line goes to fn.
func handleLine(raw []byte, fn func(Line) error) (*Done, error) {
	var probe struct {
		Done bool `json:"done"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("kproxy: bad stream line: %w", err)
	}
	if probe.Done {
		var d Done
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("kproxy: bad done line: %w", err)
		}
		return &d, nil
	}
	var l Line
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("kproxy: bad item line: %w", err)
	}
	return nil, fn(l)
}

// call posts in to path and decodes the JSON answer into out.
func (c *Client) call(ctx context.Context, path string, in, out any) error {
	resp, err := c.post(ctx, path, in, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("kproxy: POST %s: decoding the answer: %w", path, err)
	}
	return nil
}

// post sends one request and returns a 200 response; any other status is
// returned as an *Error, its body consumed.
func (c *Client) post(ctx context.Context, path string, in any, accept string) (*http.Response, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("kproxy: encoding the request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("kproxy: %w", err)
	}
	for k, vs := range c.Header {
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kproxy: POST %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// decodeError reads kproxy's {"error","code"} body; another body becomes
// the message as is (shortened).
func decodeError(resp *http.Response) *Error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Status: resp.StatusCode}
	var body struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if json.Unmarshal(raw, &body) == nil && body.Error != "" {
		e.Code, e.Message = body.Code, body.Error
		return e
	}
	e.Message = strings.TrimSpace(string(raw))
	if len(e.Message) > 200 {
		e.Message = e.Message[:200] + "..."
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}
