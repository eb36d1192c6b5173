package kalshitest

// This file is the fake of Kalshi's WebSocket API; see the "WebSocket"
// section of the package documentation and docs/websocket.md.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// WSPath is the path of Kalshi's WebSocket API. Kalshi signs a handshake
// like a REST request: KALSHI-ACCESS-TIMESTAMP + "GET" + WSPath.
const WSPath = "/trade-api/ws/v2"

// DefaultWSHeartbeat is how often the fake pings every connection unless
// [Server.SetWSHeartbeat] says otherwise (Kalshi pings every 10 seconds).
const DefaultWSHeartbeat = 10 * time.Second

// Channel names the fake gives behaviour to; every other channel of Kalshi's
// list is acknowledged on subscribe but never carries messages.
const (
	ChannelTicker    = "ticker"
	ChannelLifecycle = "market_lifecycle_v2"
)

// Kalshi's WebSocket error codes that the fake sends. Codes 10 and 25 are
// terminal: the subscription is gone and the client must resubscribe.
const (
	WSCodeUnprocessable  = 1  // Unable to process message
	WSCodeParamsRequired = 2  // Params required
	WSCodeNoChannels     = 3  // Channels required
	WSCodeNoSIDs         = 4  // Subscription IDs required
	WSCodeUnknownCommand = 5  // Unknown command
	WSCodeUnknownSID     = 7  // Unknown subscription ID
	WSCodeUnknownChannel = 8  // Unknown channel name
	WSCodeChannelError   = 10 // Channel error (terminal)
	WSCodeOneSID         = 12 // Exactly one subscription ID is required
	WSCodeBadAction      = 13 // Unsupported action
	WSCodeNoTicker       = 14 // Market Ticker required
	WSCodeNoAction       = 15 // Action required
	WSCodeBufferOverflow = 25 // Subscription buffer overflow (terminal)
)

// wsWriteTimeout bounds one message write to a client; a client that does
// not read for that long is disconnected (coder/websocket closes a
// connection whose write times out).
const wsWriteTimeout = 5 * time.Second

// wsReadLimit bounds one client message.
const wsReadLimit = 1 << 20

// wsKnownChannels is Kalshi's channel list (WS.md section 2).
var wsKnownChannels = map[string]bool{
	"orderbook_delta": true, ChannelTicker: true, "trade": true, "fill": true, "market_positions": true,
	ChannelLifecycle: true, "multivariate_market_lifecycle": true, "communications": true,
	"order_group_updates": true, "user_orders": true, "cfbenchmarks_value": true,
	"cfbenchmarks_value_5hz": true, "pyth_value": true,
}

// WSCommand is a client message as the fake received it.
type WSCommand struct {
	Conn int    // connection id: 1 for the first connection accepted, then 2, ...
	Data []byte // the message, verbatim
	At   time.Time
}

// WSState is a snapshot of the fake's WebSocket side.
type WSState struct {
	Connections   int // open connections
	Handshakes    int // handshakes accepted since New or Reset
	Refused       int // handshakes refused (RefuseWS, missing auth headers) since New or Reset
	Subscriptions int // open subscriptions over all connections
	// Tickers maps a channel to the sorted, distinct market tickers that
	// subscriptions on it name, over all connections.
	Tickers map[string][]string
	// Unfiltered maps a channel to the number of its subscriptions without a
	// market filter (a ticker subscription without tickers gets every
	// market; market_lifecycle_v2 never has a filter).
	Unfiltered map[string]int
	Pings      int // pings received from clients (each answered with a pong)
	Pongs      int // pongs received (answers to the heartbeat)
	Commands   int // client messages received
}

// Ticker is one update of the ticker channel. Market is required. An empty
// field takes the market's current REST value (see [Server.Quote]), or zero
// ("0.0000", "0.00") for a market the REST data does not hold.
type Ticker struct {
	Market        string
	YesBid        string    // yes_bid_dollars, e.g. "0.4500"
	YesAsk        string    // yes_ask_dollars
	Price         string    // price_dollars: last traded price (REST last_price_dollars)
	Volume        string    // volume_fp, e.g. "33896.00"
	OpenInterest  string    // open_interest_fp
	YesBidSize    string    // yes_bid_size_fp
	YesAskSize    string    // yes_ask_size_fp
	LastTradeSize string    // last_trade_size_fp; "" is "0.00"
	Time          time.Time // ts, ts_ms and time; zero is now
}

// Lifecycle is one market_lifecycle_v2 message.
type Lifecycle struct {
	Market    string // market_ticker
	EventType string // event_type: created, deactivated, activated, close_date_updated, determined, settled, ...
	// Fields are the other members of msg (close_ts, result,
	// settlement_value, ...), marshalled as given.
	Fields map[string]any
}

// wsHub is the WebSocket state of a Server.
type wsHub struct {
	mu         sync.Mutex
	conns      map[*wsConn]struct{}
	changed    chan struct{} // closed and replaced whenever the state changes
	heartbeat  time.Duration
	refusal    *wsRefusal // nil: handshakes are accepted
	nextConn   int
	accepting  int // handshakes past the checks and not yet registered
	handshakes int
	refused    int
	pings      int
	pongs      int
	commands   []WSCommand
}

type wsRefusal struct {
	status int
	body   []byte
}

// wsConn is one accepted connection. subs and nextSID are guarded by the
// hub's mu.
type wsConn struct {
	id      int
	c       *websocket.Conn
	ctx     context.Context // ends when the connection is done
	cancel  context.CancelFunc
	done    chan struct{} // closed once the connection is unregistered
	subs    map[int]*wsSub
	nextSID int
}

type wsSub struct {
	sid     int
	channel string
	all     bool            // no market filter
	tickers []string        // in the order they were added
	has     map[string]bool // the set of tickers
	seq     int             // last seq sent on this subscription
}

func newWSHub() *wsHub {
	return &wsHub{
		conns:     make(map[*wsConn]struct{}),
		changed:   make(chan struct{}),
		heartbeat: DefaultWSHeartbeat,
	}
}

// notifyLocked wakes every WaitWS. h.mu must be held.
func (h *wsHub) notifyLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// reset zeroes the counters and the command log (Server.Reset).
func (h *wsHub) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.handshakes, h.refused, h.pings, h.pongs = 0, 0, 0, 0
	h.commands = nil
	h.notifyLocked()
}

// SetWSHeartbeat sets how often connections accepted from now on are pinged;
// d <= 0 disables the heartbeat. The default is [DefaultWSHeartbeat]. A
// ping's payload is a counter ("1", "2", ...; coder/websocket chooses it),
// where Kalshi sends "heartbeat".
func (s *Server) SetWSHeartbeat(d time.Duration) {
	s.ws.mu.Lock()
	defer s.ws.mu.Unlock()
	s.ws.heartbeat = max(d, 0)
}

// RefuseWS makes every WebSocket handshake from now on answer status with
// body instead of 101 (a body starting with '{' is sent as
// application/json, anything else as text/plain; an empty body is a
// Kalshi-style JSON error for status). status 0 accepts handshakes again.
// Open connections are not affected (see [Server.DropWS]).
func (s *Server) RefuseWS(status int, body string) {
	var ref *wsRefusal
	if status != 0 {
		b := []byte(body)
		if body == "" {
			b = s.errorBody(status)
		}
		ref = &wsRefusal{status, b}
	}
	s.ws.mu.Lock()
	defer s.ws.mu.Unlock()
	s.ws.refusal = ref
}

// serveWS is the handler of GET WSPath. It runs after the request pipeline
// of ServeHTTP (counting, recording, stall, latency, fault, signature
// check), so a handshake carrying a bad signature has already been refused
// with 401 invalid_signature.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	h := s.ws
	h.mu.Lock()
	ref := h.refusal
	if ref != nil {
		h.refused++
		h.notifyLocked()
	}
	h.mu.Unlock()
	if ref != nil {
		ct := "text/plain; charset=utf-8"
		if strings.HasPrefix(string(ref.body), "{") {
			ct = "application/json"
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(ref.status)
		w.Write(ref.body)
		return
	}
	// Kalshi authenticates every connection; ServeHTTP verified the
	// signature if one was sent.
	if s.publicKey.Load() != nil && !requireAuthHeaders(w, r) {
		h.mu.Lock()
		h.refused++
		h.notifyLocked()
		h.mu.Unlock()
		return
	}
	cn := &wsConn{subs: make(map[int]*wsSub), done: make(chan struct{})}
	// The client may see the 101 before Accept returns; accepting lets
	// WSState, DropWS and CloseWS wait for the registration.
	h.mu.Lock()
	h.accepting++
	h.mu.Unlock()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // no Origin check: clients are scripts
		OnPingReceived: func(context.Context, []byte) bool {
			h.mu.Lock()
			h.pings++
			h.notifyLocked()
			h.mu.Unlock()
			return true
		},
		OnPongReceived: func(context.Context, []byte) {
			h.mu.Lock()
			h.pongs++
			h.notifyLocked()
			h.mu.Unlock()
		},
	})
	if err != nil {
		h.mu.Lock()
		h.accepting--
		h.notifyLocked()
		h.mu.Unlock()
		return // Accept has answered
	}
	c.SetReadLimit(wsReadLimit)
	cn.c = c
	// The request context must not be used after a hijack.
	cn.ctx, cn.cancel = context.WithCancel(context.Background())

	h.mu.Lock()
	h.nextConn++
	cn.id = h.nextConn
	h.conns[cn] = struct{}{}
	h.accepting--
	h.handshakes++
	heartbeat := h.heartbeat
	h.notifyLocked()
	h.mu.Unlock()

	var wg sync.WaitGroup
	if heartbeat > 0 {
		wg.Go(func() { cn.pingLoop(heartbeat) })
	}
	for {
		_, data, err := c.Read(cn.ctx)
		if err != nil {
			break
		}
		h.mu.Lock()
		h.commands = append(h.commands, WSCommand{Conn: cn.id, Data: data, At: time.Now()})
		h.notifyLocked()
		h.mu.Unlock()
		s.handleCommand(cn, data)
	}
	cn.cancel()
	wg.Wait()
	c.CloseNow()
	h.mu.Lock()
	delete(h.conns, cn)
	h.notifyLocked()
	h.mu.Unlock()
	close(cn.done)
}

// pingLoop pings the client every d until the connection ends.
func (cn *wsConn) pingLoop(d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-cn.ctx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(cn.ctx, d)
			cn.c.Ping(ctx) // the pong is counted by OnPongReceived
			cancel()
		}
	}
}

// send writes one text message; false means the connection is failing.
func (cn *wsConn) send(b []byte) bool {
	ctx, cancel := context.WithTimeout(cn.ctx, wsWriteTimeout)
	defer cancel()
	return cn.c.Write(ctx, websocket.MessageText, b) == nil
}

// wsReply is a command reply; its field order is Kalshi's.
type wsReply struct {
	ID   int64  `json:"id,omitempty"`
	SID  int    `json:"sid,omitempty"`
	Seq  int    `json:"seq,omitempty"`
	Type string `json:"type"`
	Msg  any    `json:"msg,omitempty"`
}

// wsData is a data message (ticker, market_lifecycle_v2, ...).
type wsData struct {
	Type string `json:"type"`
	SID  int    `json:"sid"`
	Seq  int    `json:"seq,omitempty"`
	Msg  any    `json:"msg"`
}

type wsErrorMsg struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
}

type wsChannelSID struct {
	Channel string `json:"channel"`
	SID     int    `json:"sid"`
}

type wsTickerList struct {
	MarketTickers []string `json:"market_tickers"`
}

type wsCommandEnvelope struct {
	ID     int64           `json:"id"`
	Cmd    string          `json:"cmd"`
	Params json.RawMessage `json:"params"`
}

type wsSubscribeParams struct {
	Channels            []string `json:"channels"`
	MarketTicker        string   `json:"market_ticker"`
	MarketTickers       []string `json:"market_tickers"`
	SendInitialSnapshot bool     `json:"send_initial_snapshot"`
	SkipTickerAck       bool     `json:"skip_ticker_ack"`
}

type wsUpdateParams struct {
	SID                 *int     `json:"sid"`
	SIDs                []int    `json:"sids"`
	MarketTicker        string   `json:"market_ticker"`
	MarketTickers       []string `json:"market_tickers"`
	Action              string   `json:"action"`
	SendInitialSnapshot bool     `json:"send_initial_snapshot"`
	SkipTickerAck       bool     `json:"skip_ticker_ack"`
}

type wsUnsubscribeParams struct {
	SIDs []int `json:"sids"`
}

var wsErrorText = map[int]string{
	WSCodeUnprocessable:  "Unable to process message",
	WSCodeParamsRequired: "Params required",
	WSCodeNoChannels:     "Channels required",
	WSCodeNoSIDs:         "Subscription IDs required",
	WSCodeUnknownCommand: "Unknown command",
	WSCodeUnknownSID:     "Unknown subscription ID",
	WSCodeUnknownChannel: "Unknown channel name",
	WSCodeChannelError:   "Channel error",
	WSCodeOneSID:         "Exactly one subscription ID is required",
	WSCodeBadAction:      "Unsupported action",
	WSCodeNoTicker:       "Market Ticker required",
	WSCodeNoAction:       "Action required",
	WSCodeBufferOverflow: "Subscription buffer overflow",
}

func (cn *wsConn) sendError(id int64, sid, code int) {
	cn.send(mustMarshal(wsReply{ID: id, SID: sid, Type: "error", Msg: wsErrorMsg{code, wsErrorText[code]}}))
}

// handleCommand answers one client message.
func (s *Server) handleCommand(cn *wsConn, data []byte) {
	var cmd wsCommandEnvelope
	if err := json.Unmarshal(data, &cmd); err != nil {
		cn.sendError(0, 0, WSCodeUnprocessable)
		return
	}
	switch cmd.Cmd {
	case "subscribe":
		withParams(cn, cmd, s.subscribe)
	case "update_subscription":
		withParams(cn, cmd, s.updateSubscription)
	case "unsubscribe":
		withParams(cn, cmd, s.unsubscribe)
	case "list_subscriptions":
		s.listSubscriptions(cn, cmd.ID)
	case "":
		cn.sendError(cmd.ID, 0, WSCodeUnprocessable)
	default:
		cn.sendError(cmd.ID, 0, WSCodeUnknownCommand)
	}
}

// withParams decodes cmd.Params into a P and runs the command handle with
// them; it answers code 2 instead when they are missing and 1 when they do
// not decode.
func withParams[P any](cn *wsConn, cmd wsCommandEnvelope, handle func(*wsConn, int64, P)) {
	if len(cmd.Params) == 0 || string(cmd.Params) == "null" {
		cn.sendError(cmd.ID, 0, WSCodeParamsRequired)
		return
	}
	var p P
	if err := json.Unmarshal(cmd.Params, &p); err != nil {
		cn.sendError(cmd.ID, 0, WSCodeUnprocessable)
		return
	}
	handle(cn, cmd.ID, p)
}

func tickerList(one string, many []string) []string {
	out := slices.Clone(many)
	if one != "" {
		out = append(out, one)
	}
	return out
}

// add adds tickers to the subscription and returns the ones that are new.
func (sub *wsSub) add(tickers []string) []string {
	var added []string
	for _, t := range tickers {
		if !sub.has[t] {
			sub.has[t] = true
			sub.tickers = append(sub.tickers, t)
			added = append(added, t)
		}
	}
	return added
}

func (sub *wsSub) remove(tickers []string) {
	for _, t := range tickers {
		delete(sub.has, t)
	}
	sub.tickers = slices.DeleteFunc(sub.tickers, func(t string) bool { return !sub.has[t] })
}

func (s *Server) subscribe(cn *wsConn, id int64, p wsSubscribeParams) {
	if len(p.Channels) == 0 {
		cn.sendError(id, 0, WSCodeNoChannels)
		return
	}
	for _, ch := range p.Channels {
		if !wsKnownChannels[ch] {
			cn.sendError(id, 0, WSCodeUnknownChannel)
			return
		}
	}
	tickers := tickerList(p.MarketTicker, p.MarketTickers)
	type result struct {
		sid   int
		ch    string
		added []string
	}
	var results []result
	h := s.ws
	h.mu.Lock()
	for _, ch := range p.Channels {
		var sub *wsSub
		for _, old := range cn.subs {
			if old.channel == ch {
				sub = old
			}
		}
		if sub == nil {
			cn.nextSID++
			sub = &wsSub{sid: cn.nextSID, channel: ch, has: map[string]bool{}}
			sub.all = len(tickers) == 0 || ch == ChannelLifecycle
			cn.subs[sub.sid] = sub
		}
		// Subscribing again is idempotent and adds new tickers (Kalshi, Oct 2025).
		var added []string
		if ch != ChannelLifecycle {
			added = sub.add(tickers)
		}
		results = append(results, result{sub.sid, ch, added})
	}
	h.notifyLocked()
	h.mu.Unlock()
	for _, r := range results {
		cn.send(mustMarshal(wsReply{ID: id, Type: "subscribed", Msg: wsChannelSID{r.ch, r.sid}}))
		if r.ch == ChannelTicker && p.SendInitialSnapshot {
			s.sendSnapshots(cn, r.sid, r.added)
		}
	}
}

// sendSnapshots sends a ticker message with the REST values of each known
// market of tickers (Kalshi's send_initial_snapshot).
func (s *Server) sendSnapshots(cn *wsConn, sid int, tickers []string) {
	for _, t := range tickers {
		if q, ok := s.Quote(t); ok {
			cn.send(mustMarshal(wsData{Type: "ticker", SID: sid, Msg: tickerMsg(s.fillTicker(q))}))
		}
	}
}

func (s *Server) updateSubscription(cn *wsConn, id int64, p wsUpdateParams) {
	if p.Action == "" {
		cn.sendError(id, 0, WSCodeNoAction)
		return
	}
	var sid int
	switch {
	case p.SID != nil && len(p.SIDs) == 0:
		sid = *p.SID
	case p.SID == nil && len(p.SIDs) == 1:
		sid = p.SIDs[0]
	default:
		cn.sendError(id, 0, WSCodeOneSID)
		return
	}
	tickers := tickerList(p.MarketTicker, p.MarketTickers)
	switch p.Action {
	case "add_markets", "delete_markets", "get_snapshot":
	default:
		cn.sendError(id, sid, WSCodeBadAction)
		return
	}
	if len(tickers) == 0 {
		cn.sendError(id, sid, WSCodeNoTicker)
		return
	}
	h := s.ws
	h.mu.Lock()
	sub := cn.subs[sid]
	if sub == nil {
		h.mu.Unlock()
		cn.sendError(id, sid, WSCodeUnknownSID)
		return
	}
	var added []string
	switch p.Action {
	case "add_markets":
		added = sub.add(tickers)
	case "delete_markets":
		sub.remove(tickers)
	}
	list := slices.Clone(sub.tickers)
	channel := sub.channel
	h.notifyLocked()
	h.mu.Unlock()
	if p.Action == "get_snapshot" {
		// Kalshi answers with orderbook snapshots, which the fake does not model.
		cn.send(mustMarshal(wsReply{ID: id, SID: sid, Type: "ok"}))
		return
	}
	reply := wsReply{ID: id, SID: sid, Type: "ok"}
	if !p.SkipTickerAck {
		reply.Msg = wsTickerList{MarketTickers: list}
	}
	cn.send(mustMarshal(reply))
	if channel == ChannelTicker && p.SendInitialSnapshot {
		s.sendSnapshots(cn, sid, added)
	}
}

func (s *Server) unsubscribe(cn *wsConn, id int64, p wsUnsubscribeParams) {
	if len(p.SIDs) == 0 {
		cn.sendError(id, 0, WSCodeNoSIDs)
		return
	}
	type result struct{ sid, seq int }
	var gone []result
	var unknown []int
	h := s.ws
	h.mu.Lock()
	for _, sid := range p.SIDs {
		sub := cn.subs[sid]
		if sub == nil {
			unknown = append(unknown, sid)
			continue
		}
		delete(cn.subs, sid)
		gone = append(gone, result{sid, sub.seq})
	}
	h.notifyLocked()
	h.mu.Unlock()
	for _, sid := range unknown {
		cn.sendError(id, sid, WSCodeUnknownSID)
	}
	for _, r := range gone {
		cn.send(mustMarshal(wsReply{ID: id, SID: r.sid, Seq: r.seq, Type: "unsubscribed"}))
	}
}

func (s *Server) listSubscriptions(cn *wsConn, id int64) {
	h := s.ws
	h.mu.Lock()
	list := make([]wsChannelSID, 0, len(cn.subs))
	for _, sub := range cn.subs {
		list = append(list, wsChannelSID{sub.channel, sub.sid})
	}
	h.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].SID < list[j].SID })
	cn.send(mustMarshal(wsReply{ID: id, Type: "ok", Msg: list}))
}

// wsTarget is one message to send: a connection and the message body.
type wsTarget struct {
	cn  *wsConn
	msg []byte
}

// deliver sends every target concurrently and returns how many were
// written.
func deliver(targets []wsTarget) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	for _, t := range targets {
		wg.Go(func() {
			if t.cn.send(t.msg) {
				mu.Lock()
				n++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return n
}

// tickerPayload is the msg of a ticker message, in Kalshi's field order.
type tickerPayload struct {
	MarketID           string `json:"market_id"`
	MarketTicker       string `json:"market_ticker"`
	PriceDollars       string `json:"price_dollars"`
	YesBidDollars      string `json:"yes_bid_dollars"`
	YesAskDollars      string `json:"yes_ask_dollars"`
	VolumeFP           string `json:"volume_fp"`
	OpenInterestFP     string `json:"open_interest_fp"`
	DollarVolume       int64  `json:"dollar_volume"`
	DollarOpenInterest int64  `json:"dollar_open_interest"`
	YesBidSizeFP       string `json:"yes_bid_size_fp"`
	YesAskSizeFP       string `json:"yes_ask_size_fp"`
	LastTradeSizeFP    string `json:"last_trade_size_fp"`
	TS                 int64  `json:"ts"`
	TSMs               int64  `json:"ts_ms"`
	Time               string `json:"time"`
}

// marketID is a deterministic UUID-shaped id for a ticker.
func marketID(ticker string) string {
	h := fnv.New128a()
	h.Write([]byte(ticker))
	b := h.Sum(nil)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// fillTicker completes the empty fields of t from the REST data (or zeros).
func (s *Server) fillTicker(t Ticker) Ticker {
	cur, ok := s.Quote(t.Market)
	if !ok {
		cur = Ticker{YesBid: "0.0000", YesAsk: "0.0000", Price: "0.0000", Volume: "0.00",
			OpenInterest: "0.00", YesBidSize: "0.00", YesAskSize: "0.00"}
	}
	def := cur.quotes()
	for i, v := range t.quotes() {
		*v = cmp.Or(*v, *def[i])
	}
	t.LastTradeSize = cmp.Or(t.LastTradeSize, "0.00")
	if t.Time.IsZero() {
		t.Time = time.Now()
	}
	return t
}

// tickerMsg builds the msg of a ticker message from a filled Ticker.
func tickerMsg(t Ticker) tickerPayload {
	price := units(t.Price)
	return tickerPayload{
		MarketID:           marketID(t.Market),
		MarketTicker:       t.Market,
		PriceDollars:       t.Price,
		YesBidDollars:      t.YesBid,
		YesAskDollars:      t.YesAsk,
		VolumeFP:           t.Volume,
		OpenInterestFP:     t.OpenInterest,
		DollarVolume:       units(t.Volume) * price / 1e8,
		DollarOpenInterest: units(t.OpenInterest) * price / 1e8,
		YesBidSizeFP:       t.YesBidSize,
		YesAskSizeFP:       t.YesAskSize,
		LastTradeSizeFP:    t.LastTradeSize,
		TS:                 t.Time.Unix(),
		TSMs:               t.Time.UnixMilli(),
		Time:               t.Time.UTC().Format(time.RFC3339),
	}
}

// PushTicker sends a ticker message for t.Market to every connection whose
// ticker subscription covers that market (names it, or has no filter), and
// returns the number of connections it was written to. The REST data is
// not changed (see [Server.Tick]). PushTicker panics if t.Market is empty.
func (s *Server) PushTicker(t Ticker) int {
	if t.Market == "" {
		panic("kalshitest: PushTicker needs a market")
	}
	msg := tickerMsg(s.fillTicker(t))
	h := s.ws
	h.mu.Lock()
	var targets []wsTarget
	for cn := range h.conns {
		for _, sub := range cn.subs {
			if sub.channel == ChannelTicker && (sub.all || sub.has[t.Market]) {
				targets = append(targets, wsTarget{cn, mustMarshal(wsData{Type: "ticker", SID: sub.sid, Msg: msg})})
			}
		}
	}
	h.mu.Unlock()
	return deliver(targets)
}

// Tick updates the REST data of every market in ts (see [Server.SetQuotes])
// and then pushes each ticker message (see [Server.PushTicker]), so that a
// client refetching after a push reads the pushed values. It returns the
// number of messages written, or the error of SetQuotes (then nothing is
// pushed).
func (s *Server) Tick(ts ...Ticker) (int, error) {
	if err := s.SetQuotes(ts...); err != nil {
		return 0, err
	}
	n := 0
	for _, t := range ts {
		n += s.PushTicker(t)
	}
	return n, nil
}

// PushLifecycle sends a market_lifecycle_v2 message to every connection
// subscribed to that channel, with the next seq of each subscription, and
// returns the number of connections it was written to. The REST data is not
// changed (see [Server.SetMarketStatus]).
func (s *Server) PushLifecycle(l Lifecycle) int {
	msg := make(map[string]any, len(l.Fields)+2)
	maps.Copy(msg, l.Fields)
	msg["market_ticker"] = l.Market
	msg["event_type"] = l.EventType
	h := s.ws
	h.mu.Lock()
	var targets []wsTarget
	for cn := range h.conns {
		for _, sub := range cn.subs {
			if sub.channel == ChannelLifecycle {
				sub.seq++
				targets = append(targets, wsTarget{cn, mustMarshal(wsData{Type: ChannelLifecycle, SID: sub.sid, Seq: sub.seq, Msg: msg})})
			}
		}
	}
	h.mu.Unlock()
	return deliver(targets)
}

// PushError sends an error message with code to every subscription on
// channel, carrying its sid (code's text is Kalshi's; msg, if not empty,
// replaces it). For the terminal codes 10 and 25 the subscription is removed,
// as Kalshi does: the client must subscribe again. It returns the number of
// messages written.
func (s *Server) PushError(channel string, code int, msg string) int {
	if msg == "" {
		msg = wsErrorText[code]
	}
	terminal := code == WSCodeChannelError || code == WSCodeBufferOverflow
	h := s.ws
	h.mu.Lock()
	var targets []wsTarget
	for cn := range h.conns {
		for sid, sub := range cn.subs {
			if sub.channel != channel {
				continue
			}
			targets = append(targets, wsTarget{cn, mustMarshal(wsReply{SID: sid, Type: "error", Msg: wsErrorMsg{code, msg}})})
			if terminal {
				delete(cn.subs, sid)
			}
		}
	}
	h.notifyLocked()
	h.mu.Unlock()
	return deliver(targets)
}

// PushRaw sends data, verbatim, as one text message to every open
// connection (garbage, unknown types, hand-made errors), and returns the
// number of connections it was written to.
func (s *Server) PushRaw(data []byte) int {
	h := s.ws
	h.mu.Lock()
	var targets []wsTarget
	for cn := range h.conns {
		targets = append(targets, wsTarget{cn, data})
	}
	h.mu.Unlock()
	return deliver(targets)
}

// settledLocked waits, for at most 5 s, until no handshake is between its
// 101 and its registration, so that a connection whose Dial has returned is
// counted. h.mu must be held; it is released while waiting.
func (h *wsHub) settledLocked() {
	deadline := time.After(5 * time.Second)
	for h.accepting > 0 {
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			h.mu.Lock()
			return
		}
		h.mu.Lock()
	}
}

func (s *Server) openConns() []*wsConn {
	h := s.ws
	h.mu.Lock()
	defer h.mu.Unlock()
	h.settledLocked()
	return slices.Collect(maps.Keys(h.conns))
}

// DropWS cuts every open WebSocket connection without a close frame (the TCP
// connection is closed: an upstream that vanished) and returns how many
// there were. When it returns, they are gone from [Server.WSState].
func (s *Server) DropWS() int {
	conns := s.openConns()
	for _, cn := range conns {
		cn.c.CloseNow()
	}
	for _, cn := range conns {
		<-cn.done
	}
	return len(conns)
}

// CloseWS closes every open WebSocket connection with a close frame
// carrying code and reason, waits for the close handshakes (up to 5 s each,
// concurrently), and returns how many connections there were. When it
// returns, they are gone from [Server.WSState].
func (s *Server) CloseWS(code int, reason string) int {
	conns := s.openConns()
	var wg sync.WaitGroup
	for _, cn := range conns {
		wg.Go(func() {
			cn.c.Close(websocket.StatusCode(code), reason)
			<-cn.done
		})
	}
	wg.Wait()
	return len(conns)
}

// WSState returns a snapshot of the WebSocket side. A connection whose
// client-side Dial has returned is counted (WSState waits for a handshake
// in progress to be registered).
func (s *Server) WSState() WSState {
	h := s.ws
	h.mu.Lock()
	defer h.mu.Unlock()
	h.settledLocked()
	return h.stateLocked()
}

func (h *wsHub) stateLocked() WSState {
	st := WSState{
		Connections: len(h.conns),
		Handshakes:  h.handshakes,
		Refused:     h.refused,
		Tickers:     map[string][]string{},
		Unfiltered:  map[string]int{},
		Pings:       h.pings,
		Pongs:       h.pongs,
		Commands:    len(h.commands),
	}
	sets := map[string]map[string]bool{}
	for cn := range h.conns {
		st.Subscriptions += len(cn.subs)
		for _, sub := range cn.subs {
			if sub.all {
				st.Unfiltered[sub.channel]++
			}
			if sets[sub.channel] == nil {
				sets[sub.channel] = map[string]bool{}
			}
			for t := range sub.has {
				sets[sub.channel][t] = true
			}
		}
	}
	for ch, set := range sets {
		if len(set) > 0 {
			st.Tickers[ch] = slices.Sorted(maps.Keys(set))
		}
	}
	return st
}

// WSSubscribedTickers returns the sorted, distinct market tickers named by
// subscriptions on channel over all connections.
func (s *Server) WSSubscribedTickers(channel string) []string {
	return s.WSState().Tickers[channel]
}

// WSCommands returns copies of the client messages received since New or
// the last Reset, in arrival order.
func (s *Server) WSCommands() []WSCommand {
	h := s.ws
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]WSCommand, len(h.commands))
	for i, c := range h.commands {
		c.Data = slices.Clone(c.Data)
		out[i] = c
	}
	return out
}

// WaitWS blocks until cond holds for the WebSocket state, or ctx ends (it
// then returns ctx's error). cond is evaluated once at once and again after
// every change (a connection, a subscription change, a command, a ping or
// pong, a refusal): no polling. cond must not call the Server.
func (s *Server) WaitWS(ctx context.Context, cond func(WSState) bool) error {
	h := s.ws
	for {
		h.mu.Lock()
		ok := cond(h.stateLocked())
		changed := h.changed
		h.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("kalshitest: WaitWS: %w (state %+v)", ctx.Err(), s.WSState())
		}
	}
}

// WaitWSTickers blocks until at least n distinct market tickers are
// subscribed on channel (over all connections), or ctx ends.
func (s *Server) WaitWSTickers(ctx context.Context, channel string, n int) error {
	return s.WaitWS(ctx, func(st WSState) bool { return len(st.Tickers[channel]) >= n })
}

// ErrUnknownMarket is returned by the REST update methods for a ticker the
// data universe does not hold.
var ErrUnknownMarket = errors.New("kalshitest: unknown market")
