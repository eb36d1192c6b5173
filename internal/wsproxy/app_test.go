package wsproxy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

// TestThroughKproxy runs the pass-through inside a whole kproxy (app.New,
// the Echo server, its access log and metrics) and shuts it down the way
// SIGTERM does.
func TestThroughKproxy(t *testing.T) {
	leakCheck(t)
	fake, up := startFake(t)
	fake.SetPublicKey(&kalshitest.TestKey(t).PublicKey)
	p := kproxytest.New(t, kproxytest.WithServe(), kproxytest.WithFake(fake), kproxytest.WithUpstreamURL(up.URL),
		kproxytest.WithConfig(func(c *config.Config) {
			c.Log.Access = true
			c.ShutdownTimeout = config.Duration(5 * time.Second)
		}))
	a, base, logs, stop, served := p.App, p.URL, p.Logs, p.Drain, p.Served()
	bctx := bound(t)

	c, resp, err := websocket.Dial(bctx, "ws://"+p.Addr+kalshitest.WSPath, &websocket.DialOptions{HTTPHeader: signed(t)})
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
	a.Close() // flushes the access log
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
