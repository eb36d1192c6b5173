package wsproxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
)

// TestThroughKproxy runs the pass-through inside a whole kproxy (app.New,
// the Echo server, its access log and metrics) and shuts it down the way
// SIGTERM does.
func TestThroughKproxy(t *testing.T) {
	leakCheck(t)
	fake, up := startFake(t)
	fake.SetPublicKey(&testKey().PublicKey)
	cfg := config.Default()
	cfg.Cache.Disk.Path = "" // tests never write the real ~/.cache/kproxy
	cfg.Upstream.URL = up.URL
	cfg.Log.Access = true
	cfg.ShutdownTimeout = config.Duration(5 * time.Second)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a, err := app.New(cfg, app.Options{LogOutput: logs})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	bctx := bound(t)

	c, resp, err := websocket.Dial(bctx, "ws://"+ln.Addr().String()+kalshitest.WSPath, &websocket.DialOptions{HTTPHeader: signed(t)})
	if err != nil {
		t.Fatalf("Dial through kproxy: %v (%v)", err, resp)
	}
	defer c.CloseNow()
	c.Write(bctx, websocket.MessageText, []byte(`{"id":1,"cmd":"subscribe","params":{"channels":["market_lifecycle_v2"]}}`))
	if _, msg, err := c.Read(bctx); err != nil || !strings.Contains(string(msg), `"type":"subscribed"`) {
		t.Fatalf("subscribe through kproxy: %s, %v", msg, err)
	}
	if fake.VerifiedSignatures() != 1 {
		t.Errorf("the fake verified %d signatures, want 1", fake.VerifiedSignatures())
	}

	mresp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(metricsText), "\nkproxy_ws_connections 1\n") {
		t.Errorf("/metrics does not show one open connection:\n%s", grep(string(metricsText), "kproxy_ws"))
	}

	for _, path := range []string{kalshitest.WSPath + "/x", "/trade-api/ws/v3", "/trade-api/ws/v2/"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Code string }
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || body.Code != "not_found" {
			t.Errorf("GET %s = %d %q, want 404 not_found", path, resp.StatusCode, body.Code)
		}
	}

	readErr := make(chan error, 1)
	go func() { _, _, err := c.Read(bctx); readErr <- err }()
	stop() // SIGTERM
	if err := <-readErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("at shutdown the client saw %v, want close 1001", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	a.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), `"status":101`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the access log is flushed every 200ms
	}
	if !strings.Contains(logs.String(), `"route":"/trade-api/ws/v2"`) || !strings.Contains(logs.String(), `"status":101`) {
		t.Errorf("no access line with status 101 for the WebSocket:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"end":"shutdown"`) {
		t.Errorf("no connection line ending in shutdown:\n%s", logs.String())
	}
}

func grep(text, word string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.Contains(line, word) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
