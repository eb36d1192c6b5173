package kalshitest

import (
	"context"
	"crypto/rsa"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// SignedWSHeader returns the KALSHI-ACCESS-* headers of a WebSocket
// handshake (GET WSPath) signed now with key under the key id id.
func SignedWSHeader(t testing.TB, key *rsa.PrivateKey, id string) http.Header {
	t.Helper()
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	sig, err := Sign(key, ts, http.MethodGet, WSPath)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(HeaderKey, id)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, sig)
	return h
}

// DialWS opens a WebSocket client connection to url with opts (nil: the
// defaults), fails t if the dial fails (naming the answer's status), and
// closes the connection when the test ends. ctx bounds the dial only.
func DialWS(ctx context.Context, t testing.TB, url string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", url, err, status)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}
