package live

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// Kalshi's channels and the error codes that end a subscription ("the user
// must resubscribe").
const (
	chanLifecycle = "market_lifecycle_v2"
	chanTicker    = "ticker"
	codeChannel   = 10 // channel error
	codeOverflow  = 25 // subscription buffer overflow
)

// maxPerCommand bounds the tickers of one subscription command.
const maxPerCommand = 500

// envelope is every frame Kalshi sends.
type envelope struct {
	ID   int64           `json:"id"`
	Type string          `json:"type"`
	Sid  int64           `json:"sid"`
	Msg  json.RawMessage `json:"msg"`
}

type command struct {
	ID     int64  `json:"id"`
	Cmd    string `json:"cmd"`
	Params any    `json:"params"`
}

type subscribeParams struct {
	Channels            []string `json:"channels"`
	MarketTickers       []string `json:"market_tickers,omitempty"`
	SendInitialSnapshot bool     `json:"send_initial_snapshot,omitempty"`
	SkipTickerAck       bool     `json:"skip_ticker_ack,omitempty"`
}

type updateParams struct {
	Sids                []int64  `json:"sids"`
	MarketTickers       []string `json:"market_tickers"`
	Action              string   `json:"action"`
	SendInitialSnapshot bool     `json:"send_initial_snapshot,omitempty"`
}

type dialResult struct {
	conn   *websocket.Conn
	status int    // a refused handshake's HTTP status
	body   string // and the start of its body
	err    error
}

// runner is the state of the feed's one goroutine: the hot set, the
// connection and its subscriptions. Only run touches it.
type runner struct {
	f   *Feed
	ctx context.Context
	hot map[string]*market

	conn     *websocket.Conn
	cancel   context.CancelFunc // ends the connection's goroutines
	frames   chan []byte
	readErr  chan error
	upSince  time.Time
	attempts int

	dialC  chan dialResult
	retryC <-chan time.Time
	flushC <-chan time.Time

	nextID           int64
	lifeSid, tickSid int64
	lifeReq, tickReq int64           // ids of subscribe commands awaiting their answer
	sent             map[string]bool // tickers sent on the ticker subscription
	pendAdd, pendDel map[string]bool

	// dirty holds the markets whose new state is not yet written into the
	// cache, done the labels of the frames handled meanwhile: a burst of
	// frames is applied with one rewrite per cached answer.
	dirty map[string]bool
	done  []string
}

// run owns the connection, reconnecting with backoff until Close.
func (f *Feed) run() {
	defer close(f.finished)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &runner{f: f, ctx: ctx, hot: map[string]*market{}, pendAdd: map[string]bool{}, pendDel: map[string]bool{}, dirty: map[string]bool{}}
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	r.dial()
	for {
		select {
		case <-f.done:
			r.shutdown()
			return
		case res := <-r.dialC:
			r.dialC = nil
			r.connected(res)
		case <-r.retryC:
			r.retryC = nil
			r.dial()
		case b := <-r.frames:
			r.frames1(b)
		case err := <-r.readErr:
			r.lost(err)
		case t := <-f.cands:
			r.consider(t)
		case <-r.flushC:
			r.flushC = nil
			r.flush()
			r.sync(nil)
		case <-sweep.C:
			f.sweep()
		}
	}
}

// dial starts a handshake in the background; its result comes on dialC.
func (r *runner) dial() {
	f := r.f
	ch := make(chan dialResult, 1)
	r.dialC = ch
	go func() {
		h, err := f.signer.SignHeaders(http.MethodGet, f.path)
		if err != nil {
			ch <- dialResult{err: err}
			return
		}
		ctx, cancel := context.WithTimeout(r.ctx, f.handshake)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, f.url, &websocket.DialOptions{HTTPClient: f.client, HTTPHeader: h})
		res := dialResult{conn: c, err: err}
		if err != nil && resp != nil {
			res.status = resp.StatusCode
			if resp.Body != nil {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
				res.body = string(b)
			}
		}
		ch <- res
	}()
}

// connected starts a session on a new connection, or schedules the next
// attempt after a failed one.
func (r *runner) connected(res dialResult) {
	f := r.f
	if res.err != nil {
		if res.status != 0 {
			f.log.Error("live feed: Kalshi refused the WebSocket handshake; check upstream.api_key_id, upstream.private_key_file and the clock (signatures carry a timestamp); serving by ttl meanwhile",
				"url", f.url, "status", res.status, "body", res.body, "attempt", r.attempts+1)
		} else {
			f.log.Warn("live feed: cannot connect; serving by ttl meanwhile", "url", f.url, "err", res.err.Error(), "attempt", r.attempts+1)
		}
		r.sync(func(st *Stats) { st.Refused++ })
		r.retry()
		return
	}
	c := res.conn
	c.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(r.ctx)
	r.conn, r.cancel, r.upSince = c, cancel, time.Now()
	r.frames, r.readErr = make(chan []byte, 64), make(chan error, 1)
	r.lifeSid, r.tickSid, r.lifeReq, r.tickReq = 0, 0, 0, 0
	r.sent = map[string]bool{}
	clear(r.pendDel)
	for t := range r.hot {
		r.pendAdd[t] = true
	}
	go read(ctx, c, r.frames, r.readErr)
	go ping(ctx, c, f.pingEvery)
	f.status.Store(statusConnected)
	f.setConnected(true)
	f.log.Info("live feed: connected", "url", f.url, "hot_markets", len(r.hot))
	r.flush()
	r.sync(func(st *Stats) { st.Connects++ })
}

// read hands every frame of c to the run loop until c fails.
func read(ctx context.Context, c *websocket.Conn, frames chan<- []byte, errc chan<- error) {
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			errc <- err
			return
		}
		select {
		case frames <- b:
		case <-ctx.Done():
			return
		}
	}
}

// ping checks that c is alive: a pong later than every ends it. Kalshi's
// own pings are answered by the library while read runs.
func ping(ctx context.Context, c *websocket.Conn, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		err := c.Ping(pctx)
		cancel()
		if err != nil {
			c.CloseNow()
			return
		}
	}
}

// lost ends the session: pushed answers go back to ttl freshness, the
// states are forgotten (they may miss updates from now on), and the next
// attempt is scheduled.
func (r *runner) lost(err error) {
	f := r.f
	up := time.Since(r.upSince)
	f.log.Warn("live feed: connection lost; pushed answers are back on their ttl until it is back", "err", err.Error(), "up_for", up.Round(time.Millisecond).String())
	r.endSession()
	if up >= f.backoff[2] {
		r.attempts = 0
	}
	r.retry()
}

// endSession drops the connection and everything that depended on it.
func (r *runner) endSession() {
	f := r.f
	if r.conn != nil {
		r.conn.CloseNow()
		r.cancel()
	}
	r.conn, r.frames, r.readErr = nil, nil, nil
	f.healthy.Store(false)
	f.status.Store(statusConnecting)
	f.setConnected(false)
	for _, m := range r.hot {
		m.st.Store(nil)
	}
	clear(r.dirty)
	f.revertAll()
	r.flushC = nil
	r.sync(nil)
}

// retry schedules the next handshake after a jittered, capped backoff.
func (r *runner) retry() {
	base, ceil := r.f.backoff[0], r.f.backoff[1]
	d := base << min(r.attempts, 30)
	if d <= 0 || d > ceil {
		d = ceil
	}
	d = d/2 + rand.N(d/2+1)
	r.attempts++
	r.retryC = time.After(d)
}

// shutdown closes the connection with a close frame and stops.
func (r *runner) shutdown() {
	f := r.f
	if r.conn != nil {
		// The close handshake needs the reader to go on reading: take what
		// it still hands over meanwhile.
		stop := make(chan struct{})
		go func(frames <-chan []byte) {
			for {
				select {
				case <-frames:
				case <-stop:
					return
				}
			}
		}(r.frames)
		r.conn.Close(websocket.StatusGoingAway, "kproxy is shutting down")
		close(stop)
	}
	if ch := r.dialC; ch != nil {
		// A handshake under way ends with the run's context; should it
		// succeed first, its connection is closed at once.
		go func() {
			if res := <-ch; res.conn != nil {
				res.conn.CloseNow()
			}
		}()
	}
	r.endSession()
	f.status.Store(statusOff)
}

// send writes one command; a failed write ends the connection (the reader
// then reports it).
func (r *runner) send(cmd string, params any) int64 {
	r.nextID++
	b, err := json.Marshal(command{ID: r.nextID, Cmd: cmd, Params: params})
	if err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	if err := r.conn.Write(ctx, websocket.MessageText, b); err != nil {
		r.conn.CloseNow()
	}
	return r.nextID
}

// later runs flush after d unless one is due already.
func (r *runner) later(d time.Duration) {
	if r.flushC == nil {
		r.flushC = time.After(d)
	}
}

// flush brings the subscriptions in line with the hot set: lifecycle
// first, then ticker for all hot markets, or the pending additions and
// removals of an existing ticker subscription.
func (r *runner) flush() {
	if r.conn == nil {
		return
	}
	if r.lifeSid == 0 && r.lifeReq == 0 {
		r.lifeReq = r.send("subscribe", subscribeParams{Channels: []string{chanLifecycle}})
	}
	if r.tickReq != 0 {
		return // the answer to the ticker subscribe comes first
	}
	if r.tickSid == 0 {
		clear(r.pendDel)
		if len(r.hot) == 0 {
			return
		}
		all := sortedKeys(r.hot)
		clear(r.pendAdd)
		// A subscribe without tickers would be the whole exchange: the
		// first command carries at most maxPerCommand, the rest follow as
		// additions once the subscription exists.
		first := all[:min(len(all), maxPerCommand)]
		for _, t := range all[len(first):] {
			r.pendAdd[t] = true
		}
		r.tickReq = r.send("subscribe", subscribeParams{Channels: []string{chanTicker}, MarketTickers: first, SendInitialSnapshot: true, SkipTickerAck: true})
		for _, t := range first {
			r.sent[t] = true
		}
		return
	}
	if dels := sortedKeys(r.pendDel); len(dels) > 0 {
		clear(r.pendDel)
		for chunk := range slices.Chunk(dels, maxPerCommand) {
			r.send("update_subscription", updateParams{Sids: []int64{r.tickSid}, MarketTickers: chunk, Action: "delete_markets"})
			for _, t := range chunk {
				delete(r.sent, t)
			}
		}
	}
	if adds := sortedKeys(r.pendAdd); len(adds) > 0 {
		clear(r.pendAdd)
		for chunk := range slices.Chunk(adds, maxPerCommand) {
			r.send("update_subscription", updateParams{Sids: []int64{r.tickSid}, MarketTickers: chunk, Action: "add_markets", SendInitialSnapshot: true})
			for _, t := range chunk {
				r.sent[t] = true
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// consider makes ticker hot if its single-market answer is stored (so a
// ticker nobody could fetch never takes a place), evicting the least
// recently requested market when the set is full.
func (r *runner) consider(ticker string) {
	f := r.f
	if r.hot[ticker] != nil {
		return
	}
	if e, ok := f.inner.Get(singlePrefix + ticker); !ok || e.Status != http.StatusOK {
		return
	}
	if len(r.hot) >= f.maxHot {
		var lru *market
		for _, m := range r.hot {
			if lru == nil || m.last.Load() < lru.last.Load() {
				lru = m
			}
		}
		r.evict(lru)
	}
	m := &market{ticker: ticker}
	m.last.Store(tick(f.now()))
	r.hot[ticker] = m
	r.publish()
	r.pendAdd[ticker] = true
	r.later(f.flushWait)
	r.sync(nil)
}

// evict drops m from the hot set: its answers go back to ttl freshness and
// its ticker subscription is removed.
func (r *runner) evict(m *market) {
	delete(r.hot, m.ticker)
	m.st.Store(nil)
	r.f.revertMarket(m.ticker)
	delete(r.pendAdd, m.ticker)
	if r.sent[m.ticker] {
		r.pendDel[m.ticker] = true
		r.later(r.f.flushWait)
	}
}

// publish gives the hit path a new view of the hot set.
func (r *runner) publish() {
	view := make(map[string]*market, len(r.hot))
	for t, m := range r.hot {
		view[t] = m
	}
	r.f.hot.Store(&view)
}

// maxBurst bounds the frames applied together.
const maxBurst = 256

// frames1 handles b and the frames already waiting behind it (up to
// maxBurst), then writes the new states into the cache, each cached answer
// once, and only then counts the frames as handled.
func (r *runner) frames1(b []byte) {
	r.frame(b)
	for range maxBurst - 1 {
		select {
		case next := <-r.frames:
			r.frame(next)
			continue
		default:
		}
		break
	}
	r.apply()
}

// apply writes the dirty markets' states into every cached answer holding
// them, then reports the frames handled.
func (r *runner) apply() {
	if len(r.dirty) > 0 {
		keys := map[string]bool{}
		for t := range r.dirty {
			for _, k := range r.f.idx.holders(t) {
				keys[k] = true
			}
		}
		clear(r.dirty)
		for k := range keys {
			r.f.repatch(k)
		}
	}
	for _, typ := range r.done {
		r.handled(typ)
	}
	r.done = r.done[:0]
}

// frame handles one message from Kalshi. Nothing in a frame can stop the
// feed: what is not understood is counted, logged once per kind, and
// dropped.
func (r *runner) frame(b []byte) {
	f := r.f
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil || env.Type == "" {
		f.count("invalid")
		f.logOnce("invalid", "live feed: a frame that is not a Kalshi message", "frame", clip(b))
		r.done = append(r.done, "invalid")
		return
	}
	typ := env.Type
	switch env.Type {
	case chanTicker:
		typ = r.ticker(env)
	case chanLifecycle:
		typ = r.lifecycle(env)
	case "subscribed":
		r.subscribed(env)
	case "error":
		r.error(env)
	case "unsubscribed":
		r.ended(env.Sid, "unsubscribed")
	case "ok", "event_lifecycle", "event_fee_update":
	default:
		typ = "unknown"
		f.logOnce("unknown", "live feed: a message type kproxy does not know (ignored)", "type", clip([]byte(env.Type)))
	}
	f.count(typ)
	r.done = append(r.done, typ)
}

// handled counts a frame of typ once it has been dealt with.
func (r *runner) handled(typ string) {
	r.f.update(func(st *Stats) {
		st.Frames++
		switch typ {
		case "invalid":
			st.Invalid++
		case "unknown":
			st.Unknown++
		case "rejected":
			st.Rejected++
		case "error":
			st.Errors++
		case chanTicker:
			st.Tickers++
		case chanLifecycle:
			st.Lifecycles++
		}
	})
	r.sync(nil)
}

// sync publishes the hot set's size (and change, if set) in the stats.
func (r *runner) sync(change func(*Stats)) {
	r.f.update(func(st *Stats) {
		if change != nil {
			change(st)
		}
		st.Hot, st.Subscribed = len(r.hot), len(r.sent)
	})
}

func clip(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// ticker applies a ticker message to every cached answer holding its
// market; it returns the message's label: "ticker" (applied), "ignored"
// (not on our subscription, or a market no longer hot) or "rejected".
func (r *runner) ticker(env envelope) string {
	f := r.f
	if r.tickSid == 0 || (env.Sid != 0 && env.Sid != r.tickSid) {
		return "ignored" // not (or no longer) our subscription
	}
	ticker, st, err := parseTicker(env.Msg, func(t string) *state {
		if m := r.hot[t]; m != nil {
			return m.st.Load()
		}
		return nil
	})
	if err != nil {
		f.logOnce("rejected", "live feed: ticker message rejected, cached answers left as they were", "market", ticker, "reason", err.Error())
		return "rejected"
	}
	m := r.hot[ticker]
	if m == nil {
		return "ignored" // not hot (any more): nothing of ours to keep fresh
	}
	m.st.Store(st)
	r.dirty[ticker] = true
	return chanTicker
}

// push rewrites every cached answer that holds ticker.
func (f *Feed) push(ticker string) {
	for _, key := range f.idx.holders(ticker) {
		f.repatch(key)
	}
}

// lifecycle removes every cached answer holding the message's market; it
// returns the message's label.
func (r *runner) lifecycle(env envelope) string {
	f := r.f
	var m struct {
		MarketTicker string `json:"market_ticker"`
		EventType    string `json:"event_type"`
	}
	if err := json.Unmarshal(env.Msg, &m); err != nil || m.MarketTicker == "" {
		f.logOnce("rejected lifecycle", "live feed: lifecycle message without a market, ignored", "msg", clip(env.Msg))
		return "rejected"
	}
	n := f.remove(m.MarketTicker)
	f.log.Debug("live feed: lifecycle event removed cached answers", "market", m.MarketTicker, "event", m.EventType, "removed", n)
	return chanLifecycle
}

// subscribed records a new subscription's sid.
func (r *runner) subscribed(env envelope) {
	var m struct {
		Channel string `json:"channel"`
		Sid     int64  `json:"sid"`
	}
	json.Unmarshal(env.Msg, &m)
	switch {
	case m.Channel == chanLifecycle || (env.ID != 0 && env.ID == r.lifeReq):
		r.lifeSid, r.lifeReq = m.Sid, 0
		if !r.f.healthy.Swap(true) {
			// Snapshots that came first were kept but not applied.
			for t, hm := range r.hot {
				if hm.st.Load() != nil {
					r.f.push(t)
				}
			}
		}
	case m.Channel == chanTicker || (env.ID != 0 && env.ID == r.tickReq):
		r.tickSid, r.tickReq = m.Sid, 0
		if len(r.pendAdd) > 0 || len(r.pendDel) > 0 {
			r.flush()
		}
	}
}

// error handles an error frame: codes 10 and 25 end a subscription, which
// is made again; an error answering a subscribe is retried later; others
// are logged once per code.
func (r *runner) error(env envelope) {
	f := r.f
	var m struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
		Sid  int64  `json:"sid"`
	}
	json.Unmarshal(env.Msg, &m)
	sid := env.Sid
	if sid == 0 {
		sid = m.Sid
	}
	f.logOnce("error "+strconv.Itoa(m.Code), "live feed: Kalshi sent an error", "code", m.Code, "msg", clip([]byte(m.Msg)), "sid", sid, "id", env.ID)
	switch {
	case (m.Code == codeChannel || m.Code == codeOverflow) && sid != 0:
		r.ended(sid, "error "+strconv.Itoa(m.Code))
	case env.ID != 0 && env.ID == r.lifeReq:
		r.lifeReq = 0
		r.later(f.backoff[0])
	case env.ID != 0 && env.ID == r.tickReq:
		r.tickReq = 0
		r.later(f.backoff[0])
	}
}

// ended handles the end of subscription sid: its markets' answers go back
// to ttl freshness and the subscription is made again.
func (r *runner) ended(sid int64, why string) {
	f := r.f
	switch sid {
	case 0:
		return
	case r.lifeSid:
		r.lifeSid = 0
		f.healthy.Store(false)
		f.revertAll()
	case r.tickSid:
		r.tickSid = 0
		clear(r.sent)
		for t, m := range r.hot {
			m.st.Store(nil)
			r.pendAdd[t] = true
		}
		f.revertAll()
	default:
		return
	}
	f.log.Warn("live feed: a subscription ended; subscribing again", "sid", sid, "why", why)
	r.later(f.backoff[0])
}
