package kalshitest_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kproxy/kproxy/internal/kalshitest"
)

// wsKey is one RSA key shared by the WebSocket tests (generating one is slow
// under -race).
var wsKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// wsCtx is a bound for one test's waits: a broken fake fails, never hangs.
func wsCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// signedWSHeader returns the KALSHI-ACCESS-* headers of a handshake signed
// with key.
func signedWSHeader(t *testing.T, key *rsa.PrivateKey) http.Header {
	return kalshitest.SignedWSHeader(t, key, "key-id")
}

func wsURL(srv *httptest.Server) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + kalshitest.WSPath
}

// dialWS opens a client connection closed at the end of the test.
func dialWS(t *testing.T, srv *httptest.Server, h http.Header) *websocket.Conn {
	t.Helper()
	return kalshitest.DialWS(wsCtx(t), t, wsURL(srv), &websocket.DialOptions{HTTPHeader: h})
}

// wsMsg is any message of the fake, decoded loosely.
type wsMsg struct {
	ID   int64           `json:"id"`
	SID  int             `json:"sid"`
	Seq  int             `json:"seq"`
	Type string          `json:"type"`
	Msg  json.RawMessage `json:"msg"`
	raw  string
}

func readMsg(t *testing.T, c *websocket.Conn) wsMsg {
	t.Helper()
	typ, data, err := c.Read(wsCtx(t))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("message type %v, want text", typ)
	}
	var m wsMsg
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("message %q is not JSON: %v", data, err)
	}
	m.raw = string(data)
	return m
}

func sendCmd(t *testing.T, c *websocket.Conn, cmd string) {
	t.Helper()
	if err := c.Write(wsCtx(t), websocket.MessageText, []byte(cmd)); err != nil {
		t.Fatalf("Write(%s): %v", cmd, err)
	}
}

func wantRaw(t *testing.T, got wsMsg, want string) {
	t.Helper()
	if got.raw != want {
		t.Errorf("message\n got %s\nwant %s", got.raw, want)
	}
}

func TestWSHandshakeAuth(t *testing.T) {
	fake, srv := start(t)
	fake.SetPublicKey(&wsKey().PublicKey)
	other, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("signed handshake is accepted", func(t *testing.T) {
		c := dialWS(t, srv, signedWSHeader(t, wsKey()))
		c.Close(websocket.StatusNormalClosure, "")
		if got := fake.VerifiedSignatures(); got != 1 {
			t.Errorf("VerifiedSignatures = %d, want 1", got)
		}
	})
	refused := []struct {
		name   string
		header http.Header
		code   string
	}{
		{"no headers", nil, "unauthorized"},
		{"wrong key", signedWSHeader(t, other), "invalid_signature"},
	}
	for _, tc := range refused {
		t.Run(tc.name+" is refused with 401", func(t *testing.T) {
			_, resp, err := websocket.Dial(wsCtx(t), wsURL(srv), &websocket.DialOptions{HTTPHeader: tc.header})
			if err == nil {
				t.Fatal("Dial succeeded, want a refusal")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("response %v, want 401", resp)
			}
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), `"code":"`+tc.code+`"`) {
				t.Errorf("body %s, want code %q", body, tc.code)
			}
		})
	}
	if st := fake.WSState(); st.Refused != 1 || st.Handshakes != 1 {
		t.Errorf("Refused, Handshakes = %d, %d, want 1, 1 (the bad signature is refused before the WS handler)", st.Refused, st.Handshakes)
	}
}

func TestWSRefuse(t *testing.T) {
	fake, srv := start(t)
	fake.RefuseWS(http.StatusForbidden, "Forbidden\n")
	_, resp, err := websocket.Dial(wsCtx(t), wsURL(srv), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("Dial = %v, %v; want a 403", resp, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	fake.RefuseWS(0, "")
	c := dialWS(t, srv, nil)
	c.Close(websocket.StatusNormalClosure, "")
	if st := fake.WSState(); st.Refused != 1 || st.Handshakes != 1 {
		t.Errorf("Refused, Handshakes = %d, %d, want 1, 1", st.Refused, st.Handshakes)
	}
	if got := fake.Count(kalshitest.WSPath); got != 2 {
		t.Errorf("Count(WSPath) = %d, want 2 (handshakes are counted like requests)", got)
	}
}

func TestWSCommands(t *testing.T) {
	fake, srv := start(t)
	c := dialWS(t, srv, nil)
	const vr, llam, thre = "KXEARNINGSMENTIONMETA-26JUN30-VR", "KXEARNINGSMENTIONMETA-26JUN30-LLAM", "KXEARNINGSMENTIONMETA-26JUN30-THRE"

	steps := []struct {
		name, cmd string
		want      []string
	}{
		{"subscribe lifecycle", `{"id":1,"cmd":"subscribe","params":{"channels":["market_lifecycle_v2"]}}`,
			[]string{`{"id":1,"type":"subscribed","msg":{"channel":"market_lifecycle_v2","sid":1}}`}},
		{"subscribe ticker", `{"id":2,"cmd":"subscribe","params":{"channels":["ticker"],"market_tickers":["` + vr + `"]}}`,
			[]string{`{"id":2,"type":"subscribed","msg":{"channel":"ticker","sid":2}}`}},
		{"add markets", `{"id":3,"cmd":"update_subscription","params":{"sid":2,"market_tickers":["` + llam + `","` + thre + `"],"action":"add_markets"}}`,
			[]string{`{"id":3,"sid":2,"type":"ok","msg":{"market_tickers":["` + vr + `","` + llam + `","` + thre + `"]}}`}},
		{"delete markets with sids", `{"id":4,"cmd":"update_subscription","params":{"sids":[2],"market_tickers":["` + vr + `"],"action":"delete_markets"}}`,
			[]string{`{"id":4,"sid":2,"type":"ok","msg":{"market_tickers":["` + llam + `","` + thre + `"]}}`}},
		{"skip ticker ack", `{"id":5,"cmd":"update_subscription","params":{"sid":2,"market_tickers":["` + vr + `"],"action":"add_markets","skip_ticker_ack":true}}`,
			[]string{`{"id":5,"sid":2,"type":"ok"}`}},
		{"other channels are acknowledged", `{"id":6,"cmd":"subscribe","params":{"channels":["trade"]}}`,
			[]string{`{"id":6,"type":"subscribed","msg":{"channel":"trade","sid":3}}`}},
		{"list", `{"id":7,"cmd":"list_subscriptions"}`,
			[]string{`{"id":7,"type":"ok","msg":[{"channel":"market_lifecycle_v2","sid":1},{"channel":"ticker","sid":2},{"channel":"trade","sid":3}]}`}},
		{"unsubscribe", `{"id":8,"cmd":"unsubscribe","params":{"sids":[3]}}`,
			[]string{`{"id":8,"sid":3,"type":"unsubscribed"}`}},
		{"subscribe again is idempotent", `{"id":9,"cmd":"subscribe","params":{"channels":["ticker"],"market_tickers":["` + vr + `"]}}`,
			[]string{`{"id":9,"type":"subscribed","msg":{"channel":"ticker","sid":2}}`}},
		{"garbage", `not json`, []string{`{"type":"error","msg":{"code":1,"msg":"Unable to process message"}}`}},
		{"unknown command", `{"id":10,"cmd":"frobnicate"}`, []string{`{"id":10,"type":"error","msg":{"code":5,"msg":"Unknown command"}}`}},
		{"no params", `{"id":11,"cmd":"subscribe"}`, []string{`{"id":11,"type":"error","msg":{"code":2,"msg":"Params required"}}`}},
		{"no channels", `{"id":12,"cmd":"subscribe","params":{"channels":[]}}`, []string{`{"id":12,"type":"error","msg":{"code":3,"msg":"Channels required"}}`}},
		{"unknown channel", `{"id":13,"cmd":"subscribe","params":{"channels":["ticker_v2"]}}`, []string{`{"id":13,"type":"error","msg":{"code":8,"msg":"Unknown channel name"}}`}},
		{"unknown sid", `{"id":14,"cmd":"update_subscription","params":{"sid":99,"market_tickers":["X"],"action":"add_markets"}}`,
			[]string{`{"id":14,"sid":99,"type":"error","msg":{"code":7,"msg":"Unknown subscription ID"}}`}},
		{"sid and sids", `{"id":15,"cmd":"update_subscription","params":{"sid":2,"sids":[2],"market_tickers":["X"],"action":"add_markets"}}`,
			[]string{`{"id":15,"type":"error","msg":{"code":12,"msg":"Exactly one subscription ID is required"}}`}},
		{"no action", `{"id":16,"cmd":"update_subscription","params":{"sid":2,"market_tickers":["X"]}}`,
			[]string{`{"id":16,"type":"error","msg":{"code":15,"msg":"Action required"}}`}},
		{"bad action", `{"id":17,"cmd":"update_subscription","params":{"sid":2,"market_tickers":["X"],"action":"replace"}}`,
			[]string{`{"id":17,"sid":2,"type":"error","msg":{"code":13,"msg":"Unsupported action"}}`}},
		{"no tickers", `{"id":18,"cmd":"update_subscription","params":{"sid":2,"action":"add_markets"}}`,
			[]string{`{"id":18,"sid":2,"type":"error","msg":{"code":14,"msg":"Market Ticker required"}}`}},
		{"unsubscribe unknown", `{"id":19,"cmd":"unsubscribe","params":{"sids":[42]}}`,
			[]string{`{"id":19,"sid":42,"type":"error","msg":{"code":7,"msg":"Unknown subscription ID"}}`}},
		{"unsubscribe without sids", `{"id":20,"cmd":"unsubscribe","params":{}}`,
			[]string{`{"id":20,"type":"error","msg":{"code":4,"msg":"Subscription IDs required"}}`}},
	}
	for _, st := range steps {
		sendCmd(t, c, st.cmd)
		for _, w := range st.want {
			got := readMsg(t, c)
			if got.raw != w {
				t.Errorf("%s: reply\n got %s\nwant %s", st.name, got.raw, w)
			}
		}
	}
	st := fake.WSState()
	if want := []string{llam, thre, vr}; !reflect.DeepEqual(st.Tickers["ticker"], want) {
		t.Errorf("Tickers[ticker] = %v, want %v", st.Tickers["ticker"], want)
	}
	if st.Subscriptions != 2 || st.Connections != 1 || st.Unfiltered["market_lifecycle_v2"] != 1 {
		t.Errorf("state %+v, want 1 connection, 2 subscriptions, 1 unfiltered lifecycle", st)
	}
	if st.Commands != len(steps) {
		t.Errorf("Commands = %d, want %d", st.Commands, len(steps))
	}
	if cmds := fake.WSCommands(); len(cmds) != len(steps) || string(cmds[0].Data) != steps[0].cmd || cmds[0].Conn != 1 {
		t.Errorf("WSCommands()[0] = %+v, want the first command of connection 1", cmds[0])
	}
}

func TestWSPushTicker(t *testing.T) {
	fake, srv := start(t)
	const vr, llam = "KXEARNINGSMENTIONMETA-26JUN30-VR", "KXEARNINGSMENTIONMETA-26JUN30-LLAM"
	filtered := dialWS(t, srv, nil)
	all := dialWS(t, srv, nil)
	sendCmd(t, filtered, `{"id":1,"cmd":"subscribe","params":{"channels":["ticker"],"market_ticker":"`+vr+`"}}`)
	readMsg(t, filtered)
	sendCmd(t, all, `{"id":1,"cmd":"subscribe","params":{"channels":["ticker"]}}`)
	readMsg(t, all)

	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	if n := fake.PushTicker(kalshitest.Ticker{Market: llam, YesBid: "0.1000", Time: at}); n != 1 {
		t.Errorf("PushTicker(LLAM) reached %d connections, want 1 (only the unfiltered one)", n)
	}
	got := readMsg(t, all)
	if got.Type != "ticker" || got.SID != 1 {
		t.Errorf("message %s, want a ticker on sid 1", got.raw)
	}
	var msg map[string]any
	json.Unmarshal(got.Msg, &msg)
	q, _ := fake.Quote(llam)
	if msg["yes_bid_dollars"] != "0.1000" || msg["yes_ask_dollars"] != q.YesAsk || msg["market_ticker"] != llam || msg["ts_ms"] != float64(at.UnixMilli()) {
		t.Errorf("ticker msg %s: want yes_bid 0.1000, the REST yes_ask %s, ts_ms %d", got.Msg, q.YesAsk, at.UnixMilli())
	}

	n, err := fake.Tick(kalshitest.Ticker{Market: vr, YesBid: "0.4100", YesAsk: "0.4500", Price: "0.4400", Volume: "1234.00", Time: at})
	if err != nil || n != 2 {
		t.Fatalf("Tick(VR) = %d, %v; want 2, nil", n, err)
	}
	for _, c := range []*websocket.Conn{filtered, all} {
		wantRaw(t, readMsg(t, c), `{"type":"ticker","sid":1,"msg":{"market_id":"`+marketIDOf(t, fake, vr)+`","market_ticker":"`+vr+
			`","price_dollars":"0.4400","yes_bid_dollars":"0.4100","yes_ask_dollars":"0.4500","volume_fp":"1234.00","open_interest_fp":"`+q2(t, fake, vr).OpenInterest+
			`","dollar_volume":542,"dollar_open_interest":`+strconv.FormatInt(dollarOI(q2(t, fake, vr)), 10)+`,"yes_bid_size_fp":"`+q2(t, fake, vr).YesBidSize+
			`","yes_ask_size_fp":"`+q2(t, fake, vr).YesAskSize+`","last_trade_size_fp":"0.00","ts":`+strconv.FormatInt(at.Unix(), 10)+
			`,"ts_ms":`+strconv.FormatInt(at.UnixMilli(), 10)+`,"time":"2026-06-01T12:00:00Z"}}`)
	}
	// The REST data agrees with the push.
	_, body := restGet(t, srv, "/markets/"+vr)
	var m struct {
		Market map[string]any `json:"market"`
	}
	json.Unmarshal(body, &m)
	want := map[string]string{"yes_bid_dollars": "0.4100", "yes_ask_dollars": "0.4500", "last_price_dollars": "0.4400",
		"volume_fp": "1234.00", "no_bid_dollars": "0.5500", "no_ask_dollars": "0.5900"}
	for k, v := range want {
		if m.Market[k] != v {
			t.Errorf("REST %s = %v, want %s", k, m.Market[k], v)
		}
	}
	_, book := restGet(t, srv, "/markets/"+vr+"/orderbook")
	if !strings.Contains(string(book), `["0.4100","`) || !strings.Contains(string(book), `["0.5500","`) {
		t.Errorf("order book %s does not follow the new top of book (yes 0.41, no 0.55)", book)
	}
	for _, path := range []string{"/markets?tickers=" + vr, "/events/KXEARNINGSMENTIONMETA-26JUN30?with_nested_markets=true"} {
		if _, b := restGet(t, srv, path); !strings.Contains(string(b), `"yes_bid_dollars":"0.4100"`) {
			t.Errorf("GET %s does not show the new yes_bid", path)
		}
	}
	if _, err := fake.Tick(kalshitest.Ticker{Market: "NOPE"}); !errors.Is(err, kalshitest.ErrUnknownMarket) {
		t.Errorf("Tick(unknown) error = %v, want ErrUnknownMarket", err)
	}
}

// restGet fetches an API path from the fake.
func restGet(t *testing.T, srv *httptest.Server, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+api+path, nil)
	r := do(t, req)
	return r.status, r.body
}

func q2(t *testing.T, fake *kalshitest.Server, ticker string) kalshitest.Ticker {
	t.Helper()
	q, ok := fake.Quote(ticker)
	if !ok {
		t.Fatalf("Quote(%s): unknown", ticker)
	}
	return q
}

func dollarOI(q kalshitest.Ticker) int64 {
	oi, _ := strconv.ParseFloat(q.OpenInterest, 64)
	p, _ := strconv.ParseFloat(q.Price, 64)
	return int64(math.Round(oi*1e4)) * int64(math.Round(p*1e4)) / 1e8
}

// marketIDOf reads the market_id the fake uses for ticker from a snapshot.
func marketIDOf(t *testing.T, fake *kalshitest.Server, ticker string) string {
	t.Helper()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c := dialWS(t, srv, nil)
	defer c.CloseNow()
	sendCmd(t, c, `{"id":1,"cmd":"subscribe","params":{"channels":["ticker"],"market_tickers":["`+ticker+`"],"send_initial_snapshot":true}}`)
	readMsg(t, c)
	snap := readMsg(t, c)
	var msg struct {
		ID string `json:"market_id"`
	}
	json.Unmarshal(snap.Msg, &msg)
	if len(msg.ID) != 36 {
		t.Fatalf("market_id %q is not UUID-shaped", msg.ID)
	}
	return msg.ID
}

func TestWSInitialSnapshot(t *testing.T) {
	fake, srv := start(t)
	const vr = "KXEARNINGSMENTIONMETA-26JUN30-VR"
	c := dialWS(t, srv, nil)
	sendCmd(t, c, `{"id":1,"cmd":"subscribe","params":{"channels":["ticker"],"market_tickers":["`+vr+`","UNKNOWN-1"],"send_initial_snapshot":true}}`)
	readMsg(t, c)
	snap := readMsg(t, c)
	q, _ := fake.Quote(vr)
	if snap.Type != "ticker" || !strings.Contains(string(snap.Msg), `"yes_bid_dollars":"`+q.YesBid+`"`) {
		t.Errorf("snapshot %s, want a ticker with the REST yes_bid %s", snap.raw, q.YesBid)
	}
	// Nothing for the unknown market: the next message is the list reply.
	sendCmd(t, c, `{"id":2,"cmd":"list_subscriptions"}`)
	if got := readMsg(t, c); got.ID != 2 {
		t.Errorf("after the snapshot got %s, want the list reply", got.raw)
	}
}

func TestWSLifecycleAndErrors(t *testing.T) {
	fake, srv := start(t)
	c := dialWS(t, srv, nil)
	sendCmd(t, c, `{"id":1,"cmd":"subscribe","params":{"channels":["market_lifecycle_v2","ticker"],"market_tickers":["A-1"]}}`)
	readMsg(t, c)
	readMsg(t, c)
	for seq := 1; seq <= 2; seq++ {
		if n := fake.PushLifecycle(kalshitest.Lifecycle{Market: "A-1", EventType: "determined", Fields: map[string]any{"result": "yes"}}); n != 1 {
			t.Fatalf("PushLifecycle reached %d, want 1", n)
		}
		wantRaw(t, readMsg(t, c), `{"type":"market_lifecycle_v2","sid":1,"seq":`+strconv.Itoa(seq)+`,"msg":{"event_type":"determined","market_ticker":"A-1","result":"yes"}}`)
	}
	if n := fake.PushError("ticker", kalshitest.WSCodeBufferOverflow, ""); n != 1 {
		t.Fatalf("PushError reached %d, want 1", n)
	}
	wantRaw(t, readMsg(t, c), `{"sid":2,"type":"error","msg":{"code":25,"msg":"Subscription buffer overflow"}}`)
	if st := fake.WSState(); st.Subscriptions != 1 || len(st.Tickers["ticker"]) != 0 {
		t.Errorf("after a terminal error: %+v, want the ticker subscription gone", st)
	}
	if n := fake.PushTicker(kalshitest.Ticker{Market: "A-1"}); n != 0 {
		t.Errorf("PushTicker after code 25 reached %d, want 0", n)
	}
	fake.PushRaw([]byte("garbage{"))
	if _, data, err := c.Read(wsCtx(t)); err != nil || string(data) != "garbage{" {
		t.Errorf("PushRaw: read %q, %v", data, err)
	}
	if err := fake.SetMarketStatus("KXFEDDECISION-26JUN30-H0", "closed"); err != nil {
		t.Fatal(err)
	}
	if _, b := restGet(t, srv, "/markets?status=closed"); !strings.Contains(string(b), "KXFEDDECISION-26JUN30-H0") {
		t.Errorf("GET /markets?status=closed does not list the closed market: %.200s", b)
	}
}

func TestWSWaitDropClose(t *testing.T) {
	fake, srv := start(t)
	ctx := wsCtx(t)
	c1 := dialWS(t, srv, nil)
	c2 := dialWS(t, srv, nil)
	done := make(chan error, 1)
	go func() { done <- fake.WaitWSTickers(ctx, "ticker", 3) }()
	sendCmd(t, c1, `{"id":1,"cmd":"subscribe","params":{"channels":["ticker"],"market_tickers":["A","B"]}}`)
	readMsg(t, c1)
	sendCmd(t, c2, `{"id":1,"cmd":"subscribe","params":{"channels":["ticker"],"market_tickers":["B","C"]}}`)
	readMsg(t, c2)
	if err := <-done; err != nil {
		t.Fatalf("WaitWSTickers: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := fake.WaitWSTickers(short, "ticker", 4); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitWSTickers(4) = %v, want a deadline error", err)
	}

	errs := make(chan error, 2)
	for _, c := range []*websocket.Conn{c1, c2} {
		go func() { _, _, err := c.Read(ctx); errs <- err }() // reading completes the close handshake
	}
	if n := fake.CloseWS(4000, "bye"); n != 2 {
		t.Errorf("CloseWS = %d, want 2", n)
	}
	for range 2 {
		if err := <-errs; websocket.CloseStatus(err) != 4000 {
			t.Errorf("after CloseWS the client read %v, want close 4000", err)
		}
	}
	if st := fake.WSState(); st.Connections != 0 || st.Subscriptions != 0 {
		t.Errorf("after CloseWS: %+v", st)
	}

	c3 := dialWS(t, srv, nil)
	if n := fake.DropWS(); n != 1 {
		t.Errorf("DropWS = %d, want 1", n)
	}
	_, _, err := c3.Read(ctx)
	if websocket.CloseStatus(err) != -1 {
		t.Errorf("after DropWS the client read %v, want a connection error without a close frame", err)
	}
}

func TestWSHeartbeatAndPings(t *testing.T) {
	fake, srv := start(t)
	fake.SetWSHeartbeat(20 * time.Millisecond)
	ctx := wsCtx(t)
	pinged := make(chan struct{}, 1)
	c, _, err := websocket.Dial(ctx, wsURL(srv), &websocket.DialOptions{OnPingReceived: func(context.Context, []byte) bool {
		select {
		case pinged <- struct{}{}:
		default:
		}
		return true
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	readCtx := c.CloseRead(ctx) // reads (and answers pings) in the background
	select {
	case <-pinged:
	case <-readCtx.Done():
		t.Fatal("no heartbeat ping")
	}
	if err := fake.WaitWS(ctx, func(st kalshitest.WSState) bool { return st.Pongs >= 1 }); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("client Ping: %v", err)
	}
	if st := fake.WSState(); st.Pings != 1 {
		t.Errorf("Pings = %d, want 1", st.Pings)
	}
}
