package wsproxy_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/kproxy/kproxy/internal/wsproxy"
)

// BenchmarkEcho measures one 1 KiB message round trip (client -> upstream
// echo -> client), straight to the upstream and through wsproxy, side by
// side.
func BenchmarkEcho(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(context.Background())
			if err != nil {
				return
			}
			c.Write(context.Background(), typ, msg)
		}
	}))
	defer up.Close()
	upWS := "ws" + strings.TrimPrefix(up.URL, "http")
	u, _ := url.Parse(upWS + "/trade-api/ws/v2")
	p, err := wsproxy.New(wsproxy.Config{Upstream: u})
	if err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(p)
	defer front.Close()
	defer p.Close()
	msg := bytes.Repeat([]byte("k"), 1024)
	for _, tc := range []struct{ name, url string }{
		{"direct", upWS + "/trade-api/ws/v2"},
		{"via_wsproxy", "ws" + strings.TrimPrefix(front.URL, "http") + "/trade-api/ws/v2"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			c, _, err := websocket.Dial(ctx, tc.url, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseNow()
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := c.Read(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
