package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kproxy/kproxy/internal/kalshitest"
)

func TestParseWSFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-ws-tick", "250ms", "-ws-tick-markets", "3", "-ws-heartbeat", "0s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.wsTick != 250*time.Millisecond || cfg.wsTickMarkets != 3 || cfg.wsHeartbeat != 0 {
		t.Errorf("parseFlags = %+v, want tick 250ms, 3 markets, no heartbeat", cfg)
	}
	if cfg, _ := parseFlags(nil, io.Discard); cfg.wsTick != 0 || cfg.wsHeartbeat != kalshitest.DefaultWSHeartbeat {
		t.Errorf("defaults: tick %v heartbeat %v, want 0 and %v", cfg.wsTick, cfg.wsHeartbeat, kalshitest.DefaultWSHeartbeat)
	}
	for _, args := range [][]string{{"-ws-tick", "-1s"}, {"-ws-tick-markets", "0"}, {"-ws-heartbeat", "-1s"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want an error", args)
		}
	}
}

func TestStep(t *testing.T) {
	q := kalshitest.Ticker{Market: "M", YesBid: "0.0100", YesAsk: "0.0300", Volume: "10.00"}
	for range 200 {
		q = step(q)
		bid, ask, price := cents(q.YesBid), cents(q.YesAsk), cents(q.Price)
		if bid < 1 || ask > 99 || ask-bid != 2 || price < bid || price > ask {
			t.Fatalf("step left the book at bid %s ask %s price %s", q.YesBid, q.YesAsk, q.Price)
		}
	}
	if cents(q.Volume) <= 1000 {
		t.Errorf("volume %s did not grow", q.Volume)
	}
}

// TestWSTick runs the simulator with -ws-tick and checks that a subscribed
// market's price moves on its own, pushed and in the REST data alike, and
// that shutdown closes the WebSocket with 1001.
func TestWSTick(t *testing.T) {
	s := startSim(t, "-ws-tick", "10ms", "-ws-heartbeat", "0s")
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer bcancel()

	const market = "KXFEDDECISION-26JUN30-H0"
	c, _, err := websocket.Dial(bctx, "ws://"+s.addr+kalshitest.WSPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.Write(bctx, websocket.MessageText, []byte(`{"id":1,"cmd":"subscribe","params":{"channels":["ticker"],"market_tickers":["`+market+`"]}}`))
	if _, msg, err := c.Read(bctx); err != nil || !strings.Contains(string(msg), `"subscribed"`) {
		t.Fatalf("subscribe: %s, %v", msg, err)
	}
	type tickerMsg struct {
		Type string
		Msg  struct {
			MarketTicker string `json:"market_ticker"`
			VolumeFP     string `json:"volume_fp"`
		}
	}
	readTick := func() tickerMsg {
		t.Helper()
		_, msg, err := c.Read(bctx)
		if err != nil {
			t.Fatalf("no ticker pushed: %v", err)
		}
		var tick tickerMsg
		json.Unmarshal(msg, &tick)
		if tick.Type != "ticker" || tick.Msg.MarketTicker != market {
			t.Fatalf("pushed %s, want a ticker for %s", msg, market)
		}
		return tick
	}
	first := readTick()
	// Volume grows on every tick, and the REST data changes before each
	// push: what REST serves now is the first push or one still coming.
	resp, err := http.Get("http://" + s.addr + "/trade-api/v2/markets/" + market)
	if err != nil {
		t.Fatal(err)
	}
	var rest struct {
		Market struct {
			VolumeFP string `json:"volume_fp"`
		}
	}
	json.NewDecoder(resp.Body).Decode(&rest)
	resp.Body.Close()
	for tick := first; tick.Msg.VolumeFP != rest.Market.VolumeFP; tick = readTick() {
		if cents(tick.Msg.VolumeFP) > cents(rest.Market.VolumeFP) {
			t.Fatalf("REST volume_fp %s was never pushed (pushed %s, then %s)", rest.Market.VolumeFP, first.Msg.VolumeFP, tick.Msg.VolumeFP)
		}
	}

	readErr := make(chan error, 1)
	go func() { // pushes may still arrive before the close frame
		for {
			if _, _, err := c.Read(bctx); err != nil {
				readErr <- err
				return
			}
		}
	}()
	s.stop()
	if err := <-readErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("at shutdown the client saw %v, want close 1001", err)
	}
	if err := <-s.done; err != nil {
		t.Errorf("serve = %v", err)
	}
	if !strings.Contains(s.logs.String(), "kalshi-sim WebSocket on ws://") {
		t.Errorf("log %q lacks the WebSocket line", s.logs.String())
	}
}
