package wsproxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/wsproxy"
)

// bound is the limit of every wait in these tests: a broken proxy fails,
// never hangs.
func bound(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// gaugeValue reads kproxy_ws_connections.
func gaugeValue(m *metrics.Metrics) float64 {
	var pb dto.Metric
	if err := m.WSConnections.Write(&pb); err != nil {
		panic(err)
	}
	return pb.GetGauge().GetValue()
}

// rig is a wsproxy in front of an upstream, both on local HTTP servers.
type rig struct {
	p     *wsproxy.Proxy
	front *httptest.Server
	m     *metrics.Metrics
	log   *kproxytest.Buffer
}

// leakCheck records the goroutine count now and, at cleanup (after every
// cleanup registered later), waits for it to come back, bounded.
func leakCheck(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		defer func() {
			if n := runtime.NumGoroutine(); n > base {
				buf := make([]byte, 1<<16)
				t.Logf("goroutines:\n%s", buf[:runtime.Stack(buf, true)])
			}
		}()
		kproxytest.Eventually(t, 5*time.Second, fmt.Sprintf("goroutines back to the baseline %d", base), func() bool { return runtime.NumGoroutine() <= base })
	})
}

// newRig starts a proxy to upstreamURL (an http:// URL of a test server).
func newRig(t *testing.T, upstreamURL string, tune func(*wsproxy.Config)) *rig {
	t.Helper()
	u, err := url.Parse(upstreamURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	u.Path = kalshitest.WSPath
	r := &rig{m: metrics.New(func() (int, int64) { return 0, 0 }), log: &kproxytest.Buffer{}}
	cfg := wsproxy.Config{Upstream: u, Metrics: r.m, Logger: slog.New(slog.NewJSONHandler(r.log, nil)), CloseTimeout: time.Second}
	if tune != nil {
		tune(&cfg)
	}
	r.p, err = wsproxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.front = httptest.NewServer(r.p)
	t.Cleanup(func() {
		r.p.Close()
		r.front.Close()
		if g := gaugeValue(r.m); g != 0 {
			t.Errorf("kproxy_ws_connections = %v after the test, want 0", g)
		}
	})
	return r
}

func (r *rig) wsURL() string {
	return "ws" + strings.TrimPrefix(r.front.URL, "http") + kalshitest.WSPath
}

// waitGauge waits until kproxy_ws_connections is want.
func (r *rig) waitGauge(t *testing.T, want float64) {
	t.Helper()
	kproxytest.Eventually(t, 5*time.Second, fmt.Sprintf("kproxy_ws_connections = %v", want), func() bool { return gaugeValue(r.m) == want })
}

// startFake serves a fake Kalshi, with its WebSocket heartbeat off unless
// the test turns it on.
func startFake(t *testing.T) (*kalshitest.Server, *httptest.Server) {
	t.Helper()
	fake := kalshitest.New()
	fake.SetWSHeartbeat(0)
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		fake.DropWS()
		srv.Close()
	})
	return fake, srv
}

func signed(t *testing.T) http.Header {
	t.Helper()
	return kalshitest.SignedWSHeader(t, kalshitest.TestKey(t), "my-key-id")
}

func dial(t *testing.T, r *rig, h http.Header, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	opts.HTTPHeader = h
	return kalshitest.DialWS(bound(t), t, r.wsURL(), opts)
}

func TestSignedHandshakeVerifiedByUpstream(t *testing.T) {
	leakCheck(t)
	fake, up := startFake(t)
	fake.SetPublicKey(&kalshitest.TestKey(t).PublicKey)
	r := newRig(t, up.URL, nil)

	h := signed(t)
	h.Set("X-Custom", "kept as is")
	c := dial(t, r, h, nil)
	ctx := bound(t)
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"id":1,"cmd":"subscribe","params":{"channels":["ticker"],"market_tickers":["KXFEDDECISION-26JUN30-H0"]}}`)); err != nil {
		t.Fatal(err)
	}
	_, reply, err := c.Read(ctx)
	if err != nil || string(reply) != `{"id":1,"type":"subscribed","msg":{"channel":"ticker","sid":1}}` {
		t.Fatalf("subscribe reply %s, %v", reply, err)
	}
	if got := fake.VerifiedSignatures(); got != 1 {
		t.Errorf("the fake verified %d signatures, want 1", got)
	}
	r.waitGauge(t, 1)

	// The fake pushes through kproxy.
	if n := fake.PushTicker(kalshitest.Ticker{Market: "KXFEDDECISION-26JUN30-H0", YesBid: "0.4200"}); n != 1 {
		t.Fatalf("PushTicker reached %d connections, want 1", n)
	}
	_, msg, err := c.Read(ctx)
	if err != nil || !strings.Contains(string(msg), `"yes_bid_dollars":"0.4200"`) {
		t.Errorf("pushed ticker %s, %v", msg, err)
	}

	var hs kalshitest.Recorded
	for _, rec := range fake.Requests() {
		if rec.Path == kalshitest.WSPath {
			hs = rec
		}
	}
	for _, name := range []string{kalshitest.HeaderKey, kalshitest.HeaderTimestamp, kalshitest.HeaderSignature, "X-Custom", "Sec-Websocket-Key", "Sec-Websocket-Version"} {
		if got, want := hs.Header.Get(name), h.Get(name); name[:3] != "Sec" && got != want {
			t.Errorf("upstream got %s %q, want %q", name, got, want)
		}
		if hs.Header.Get(name) == "" {
			t.Errorf("upstream handshake lacks %s", name)
		}
	}
	if got := hs.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want 127.0.0.1", got)
	}
	c.Close(websocket.StatusNormalClosure, "")
	r.waitGauge(t, 0)
	if log := r.log.String(); strings.Contains(log, h.Get(kalshitest.HeaderSignature)) || strings.Contains(log, "my-key-id") {
		t.Errorf("the log holds credentials: %s", log)
	} else if !strings.Contains(log, `"msg":"websocket closed"`) || !strings.Contains(log, `"end":"closed"`) {
		t.Errorf("no connection line in the log: %s", log)
	}
}

func TestRefusedHandshakePassedThrough(t *testing.T) {
	leakCheck(t)
	fake, up := startFake(t)
	r := newRig(t, up.URL, nil)
	ctx := bound(t)

	check := func(t *testing.T, wantStatus int, wantBody, wantType string) {
		t.Helper()
		_, resp, err := websocket.Dial(ctx, r.wsURL(), &websocket.DialOptions{HTTPHeader: signed(t)})
		if err == nil {
			t.Fatal("Dial succeeded, want a refusal")
		}
		if resp == nil || resp.StatusCode != wantStatus {
			t.Fatalf("response %v, want status %d", resp, wantStatus)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != wantBody {
			t.Errorf("body %q, want %q", body, wantBody)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, wantType) {
			t.Errorf("Content-Type %q, want %q", ct, wantType)
		}
	}
	t.Run("403 Forbidden", func(t *testing.T) {
		fake.RefuseWS(http.StatusForbidden, "Forbidden\n")
		check(t, http.StatusForbidden, "Forbidden\n", "text/plain")
		fake.RefuseWS(0, "")
	})
	t.Run("bad signature", func(t *testing.T) {
		other, _ := rsa.GenerateKey(rand.Reader, 1024)
		fake.SetPublicKey(&other.PublicKey)
		defer fake.SetPublicKey(nil)
		check(t, http.StatusUnauthorized, `{"error":{"code":"invalid_signature","message":"invalid signature","service":"exchange"}}`, "application/json")
	})
	if fake.WSState().Handshakes != 0 {
		t.Error("a refused handshake was accepted upstream")
	}
	if g := gaugeValue(r.m); g != 0 {
		t.Errorf("kproxy_ws_connections = %v after refusals, want 0", g)
	}
}

func TestHandshakeFailures(t *testing.T) {
	leakCheck(t)
	ctx := bound(t)
	jsonError := func(t *testing.T, resp *http.Response, wantStatus int, wantCode string) {
		t.Helper()
		if resp == nil || resp.StatusCode != wantStatus {
			t.Fatalf("response %v, want %d", resp, wantStatus)
		}
		var body struct{ Error, Code string }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Code != wantCode {
			t.Errorf("body code %q (%v), want %q", body.Code, err, wantCode)
		}
	}

	t.Run("upstream unreachable is 502", func(t *testing.T) {
		r := newRig(t, "http://"+kproxytest.ClosedAddr(t), nil)
		_, resp, _ := websocket.Dial(ctx, r.wsURL(), nil)
		jsonError(t, resp, http.StatusBadGateway, "upstream_unreachable")
	})
	t.Run("upstream that never answers is 504 after the handshake timeout", func(t *testing.T) {
		fake, up := startFake(t)
		release := fake.Stall()
		defer release()
		r := newRig(t, up.URL, func(c *wsproxy.Config) { c.HandshakeTimeout = 200 * time.Millisecond })
		_, resp, _ := websocket.Dial(ctx, r.wsURL(), nil)
		jsonError(t, resp, http.StatusGatewayTimeout, "upstream_timeout")
	})
	t.Run("plain GET is 404", func(t *testing.T) {
		_, up := startFake(t)
		r := newRig(t, up.URL, nil)
		resp, err := http.Get(r.front.URL + kalshitest.WSPath)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		jsonError(t, resp, http.StatusNotFound, "not_found")
	})
	t.Run("POST is 405", func(t *testing.T) {
		_, up := startFake(t)
		r := newRig(t, up.URL, nil)
		resp, err := http.Post(r.front.URL+kalshitest.WSPath, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		jsonError(t, resp, http.StatusMethodNotAllowed, "method_not_allowed")
	})
}

// rawUpstream is a hand-made WebSocket server: it completes one handshake
// on each accepted connection and hands the connection to the test.
type rawUpstream struct {
	ln    net.Listener
	conns chan *rawConn
}

type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

func newRawUpstream(t *testing.T) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, conns: make(chan *rawConn, 4)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil {
				c.Close()
				continue
			}
			fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acceptKey(req.Header.Get("Sec-WebSocket-Key")))
			u.conns <- &rawConn{c, br}
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		close(u.conns)
		for c := range u.conns {
			c.Close()
		}
	})
	return u
}

func (u *rawUpstream) url() string { return "http://" + u.ln.Addr().String() }

func (u *rawUpstream) next(t *testing.T) *rawConn {
	t.Helper()
	select {
	case c := <-u.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-bound(t).Done():
		t.Fatal("no upstream connection")
		return nil
	}
}

// rawDial makes a WebSocket handshake by hand and returns the connection
// after the 101.
func rawDial(t *testing.T, r *rig) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", r.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: kproxy\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", kalshitest.WSPath, key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		t.Fatalf("handshake answer %d, accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	return &rawConn{c, br}
}

// frame encodes a frame by hand; a non-nil key masks it.
func frame(first byte, payload []byte, key []byte) []byte {
	b := []byte{first}
	maskBit := byte(0)
	if key != nil {
		maskBit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, maskBit|byte(n))
	case n < 1<<16:
		b = append(b, maskBit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, maskBit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if key == nil {
		return append(b, payload...)
	}
	b = append(b, key...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func readN(t *testing.T, c *rawConn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// TestFramesByteIdentical sends hand-made frames both ways (text, binary,
// fragments, RSV1 set as permessage-deflate does, ping, pong, 16- and
// 64-bit lengths, close with a code) and checks the other side receives
// exactly the same bytes.
func TestFramesByteIdentical(t *testing.T) {
	leakCheck(t)
	up := newRawUpstream(t)
	r := newRig(t, up.url(), nil)
	client := rawDial(t, r)
	server := up.next(t)
	key := []byte{1, 2, 3, 4}
	big := bytes.Repeat([]byte("x"), 70000)
	mid := bytes.Repeat([]byte{0, 0xff}, 200)

	fromClient := bytes.Join([][]byte{
		frame(0x81, []byte(`{"id":1,"cmd":"subscribe"}`), key),
		frame(0x82, mid, key),
		frame(0x01, []byte("frag"), key), frame(0x89, []byte("in between"), key), frame(0x80, []byte("ment"), key),
		frame(0xC1, []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, key),
		frame(0x8A, []byte("unsolicited pong"), key),
		frame(0x82, big, key),
		frame(0x88, closePayload(4001, "client bye"), key),
	}, nil)
	fromServer := bytes.Join([][]byte{
		frame(0x89, []byte("heartbeat"), nil),
		frame(0x81, []byte(`{"type":"ticker"}`), nil),
		frame(0x82, big, nil),
		frame(0x88, closePayload(4002, "server bye"), nil),
	}, nil)

	if _, err := client.Write(fromClient); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, server, len(fromClient)); !bytes.Equal(got, fromClient) {
		t.Errorf("upstream received %d bytes that differ from the %d the client sent", len(got), len(fromClient))
	}
	if _, err := server.Write(fromServer); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, client, len(fromServer)); !bytes.Equal(got, fromServer) {
		t.Errorf("client received %d bytes that differ from the %d the upstream sent", len(got), len(fromServer))
	}
	// Close handshake done both ways: the upstream closes TCP, and the
	// client is closed by kproxy.
	server.Close()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("client read %d, %v after the close handshake; want EOF", n, err)
	}
	r.waitGauge(t, 0)
	if log := r.log.String(); !strings.Contains(log, `"client_close":4001`) || !strings.Contains(log, `"upstream_close":4002`) {
		t.Errorf("close codes missing from the log: %s", log)
	}
}

// closeRecorder is an upstream built on coder/websocket that reports how
// each connection ended.
func closeRecorder(t *testing.T, serve func(ctx context.Context, c *websocket.Conn)) (*httptest.Server, chan error) {
	t.Helper()
	ends := make(chan error, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := context.Background()
		if serve != nil {
			serve(ctx, c)
			return
		}
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				ends <- err
				return
			}
			c.Write(ctx, typ, msg)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, ends
}

func TestCloseCodesBothWays(t *testing.T) {
	leakCheck(t)
	ctx := bound(t)
	t.Run("client closes with 4001", func(t *testing.T) {
		up, ends := closeRecorder(t, nil)
		r := newRig(t, up.URL, nil)
		c := dial(t, r, nil, nil)
		if err := c.Close(4001, "done"); err != nil {
			t.Errorf("client Close: %v (the upstream's close reply should come back)", err)
		}
		if err := <-ends; websocket.CloseStatus(err) != 4001 {
			t.Errorf("upstream saw %v, want close 4001", err)
		}
		r.waitGauge(t, 0)
	})
	t.Run("upstream closes with 4002", func(t *testing.T) {
		up, _ := closeRecorder(t, func(ctx context.Context, c *websocket.Conn) { c.Close(4002, "server done") })
		r := newRig(t, up.URL, nil)
		c := dial(t, r, nil, nil)
		_, _, err := c.Read(ctx)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4002 || ce.Reason != "server done" {
			t.Errorf("client saw %v, want close 4002 server done", err)
		}
		r.waitGauge(t, 0)
	})
}

func TestPingsPassThrough(t *testing.T) {
	leakCheck(t)
	fake, up := startFake(t)
	r := newRig(t, up.URL, nil)
	ctx := bound(t)

	t.Run("a client ping is answered by the upstream", func(t *testing.T) {
		c := dial(t, r, nil, nil)
		readCtx := c.CloseRead(ctx)
		if err := c.Ping(readCtx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		if got := fake.WSState().Pings; got != 1 {
			t.Errorf("the upstream saw %d pings, want 1 (kproxy must not answer them)", got)
		}
	})
	t.Run("the upstream heartbeat reaches the client", func(t *testing.T) {
		fake.SetWSHeartbeat(20 * time.Millisecond)
		defer fake.SetWSHeartbeat(0)
		pinged := make(chan []byte, 1)
		c := dial(t, r, nil, &websocket.DialOptions{OnPingReceived: func(_ context.Context, p []byte) bool {
			select {
			case pinged <- append([]byte(nil), p...):
			default:
			}
			return true
		}})
		readCtx := c.CloseRead(ctx)
		select {
		case <-pinged:
		case <-readCtx.Done():
			t.Fatal("no heartbeat ping reached the client")
		}
		if err := fake.WaitWS(ctx, func(st kalshitest.WSState) bool { return st.Pongs >= 1 }); err != nil {
			t.Errorf("the client's pong did not reach the upstream: %v", err)
		}
	})
}

func TestShutdownSendsGoingAway(t *testing.T) {
	leakCheck(t)
	up, ends := closeRecorder(t, nil)
	r := newRig(t, up.URL, nil)
	ctx := bound(t)
	clients := []*websocket.Conn{dial(t, r, nil, nil), dial(t, r, nil, nil)}
	r.waitGauge(t, 2)
	errs := make(chan error, len(clients))
	for _, c := range clients {
		go func() { _, _, err := c.Read(ctx); errs <- err }()
	}
	if err := r.p.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v, want nil (every connection closed in time)", err)
	}
	for range clients {
		if err := <-errs; websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("client saw %v, want close 1001", err)
		}
		if err := <-ends; websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("upstream saw %v, want close 1001", err)
		}
	}
	if got := gaugeValue(r.m); got != 0 {
		t.Errorf("kproxy_ws_connections = %v after Shutdown, want 0", got)
	}
	_, resp, err := websocket.Dial(ctx, r.wsURL(), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("handshake after Shutdown: %v, %v; want 503", resp, err)
	}
}

func TestIdleTimeout(t *testing.T) {
	leakCheck(t)
	up, ends := closeRecorder(t, nil)
	r := newRig(t, up.URL, func(c *wsproxy.Config) { c.IdleTimeout = 150 * time.Millisecond })
	c := dial(t, r, nil, nil)
	_, _, err := c.Read(bound(t))
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "idle timeout" {
		t.Errorf("client saw %v, want close 1001 idle timeout", err)
	}
	if err := <-ends; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("upstream saw %v, want close 1001", err)
	}
	r.waitGauge(t, 0)
}

func TestUpstreamVanishes(t *testing.T) {
	leakCheck(t)
	fake, up := startFake(t)
	r := newRig(t, up.URL, nil)
	c := dial(t, r, nil, nil)
	if err := fake.WaitWS(bound(t), func(st kalshitest.WSState) bool { return st.Connections == 1 }); err != nil {
		t.Fatal(err)
	}
	fake.DropWS()
	_, _, err := c.Read(bound(t))
	if got := websocket.CloseStatus(err); got != websocket.StatusBadGateway {
		t.Errorf("client saw %v, want close 1014 (bad gateway)", err)
	}
	r.waitGauge(t, 0)
}

func TestClientVanishes(t *testing.T) {
	leakCheck(t)
	up, ends := closeRecorder(t, nil)
	r := newRig(t, up.URL, nil)
	client := rawDial(t, r)
	r.waitGauge(t, 1)
	client.Close()
	if err := <-ends; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("upstream saw %v, want close 1001 (client went away)", err)
	}
	r.waitGauge(t, 0)
}

func TestFrameTooBig(t *testing.T) {
	leakCheck(t)
	up := newRawUpstream(t)
	r := newRig(t, up.url(), func(c *wsproxy.Config) { c.MaxFrameBytes = 1024 })
	client := rawDial(t, r)
	server := up.next(t)
	key := []byte{9, 9, 9, 9}
	if _, err := client.Write(frame(0x82, make([]byte, 4096), key)); err != nil {
		t.Fatal(err)
	}
	// The client gets 1009, the upstream 1001 (masked) and nothing of the
	// frame.
	want := frame(0x88, closePayload(1009, "frame too big"), nil)
	if got := readN(t, client, len(want)); !bytes.Equal(got, want) {
		t.Errorf("client got % x, want % x", got, want)
	}
	hdr := readN(t, server, 6)
	if hdr[0] != 0x88 || hdr[1]&0x80 == 0 {
		t.Fatalf("upstream got header % x, want a masked close frame", hdr)
	}
	payload := readN(t, server, int(hdr[1]&0x7f))
	for i := range payload {
		payload[i] ^= hdr[2+i%4]
	}
	if code := binary.BigEndian.Uint16(payload); code != 1001 {
		t.Errorf("upstream close code %d (%q), want 1001", code, payload[2:])
	}
	client.Write(frame(0x88, closePayload(1009, ""), key)) // the client's reply
	server.Write(frame(0x88, closePayload(1001, ""), nil)) // the upstream's
	r.waitGauge(t, 0)
}

func TestClientStopsReading(t *testing.T) {
	leakCheck(t)
	up, ends := closeRecorder(t, func(ctx context.Context, c *websocket.Conn) {
		// Push until writes fail: the client never reads.
		msg := bytes.Repeat([]byte("p"), 64<<10)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		go c.Read(wctx) // takes the close frame
		for c.Write(wctx, websocket.MessageBinary, msg) == nil {
		}
	})
	_ = ends
	r := newRig(t, up.URL, func(c *wsproxy.Config) { c.WriteTimeout = 200 * time.Millisecond })
	client := rawDial(t, r)
	r.waitGauge(t, 1)
	// kproxy gives up on the client after WriteTimeout and closes both
	// sides; the gauge going back to 0 proves it did not hang.
	r.waitGauge(t, 0)
	client.Close()
	if !strings.Contains(r.log.String(), `"end":"client_gone"`) {
		t.Errorf("log does not say the client was dropped: %s", r.log.String())
	}
}

func TestClientNeverCompletesHandshake(t *testing.T) {
	leakCheck(t)
	fake, up := startFake(t)
	u, _ := url.Parse("ws" + strings.TrimPrefix(up.URL, "http") + kalshitest.WSPath)
	p, err := wsproxy.New(wsproxy.Config{Upstream: u})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p)
	srv.Config.ReadHeaderTimeout = 100 * time.Millisecond // as kproxy's own server, shorter
	srv.Start()
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: kproxy\r\nUpgrade: websocket\r\n", kalshitest.WSPath) // never ends
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("the server did not close the connection: %v", err)
	}
	if n := fake.Count(kalshitest.WSPath); n != 0 {
		t.Errorf("the upstream saw %d handshakes, want 0", n)
	}
	if p.Open() != 0 {
		t.Errorf("Open = %d, want 0", p.Open())
	}
}

func TestNewValidates(t *testing.T) {
	for _, raw := range []string{"http://h/x", "ftp://h", "ws:///path"} {
		u, _ := url.Parse(raw)
		if _, err := wsproxy.New(wsproxy.Config{Upstream: u}); err == nil {
			t.Errorf("New(%q) succeeded, want an error", raw)
		}
	}
	if _, err := wsproxy.New(wsproxy.Config{}); err == nil {
		t.Error("New without upstream succeeded")
	}
}

func TestWSSUpstream(t *testing.T) {
	leakCheck(t)
	fake := kalshitest.New()
	fake.SetWSHeartbeat(0)
	up := httptest.NewTLSServer(fake)
	defer up.Close()
	defer fake.DropWS()
	r := newRig(t, up.URL, func(c *wsproxy.Config) {
		c.Upstream.Scheme = "wss"
		c.TLSConfig = up.Client().Transport.(*http.Transport).TLSClientConfig
	})
	c := dial(t, r, nil, nil)
	ctx := bound(t)
	c.Write(ctx, websocket.MessageText, []byte(`{"id":7,"cmd":"list_subscriptions"}`))
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != `{"id":7,"type":"ok","msg":[]}` {
		t.Errorf("over wss: %s, %v", msg, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
}
