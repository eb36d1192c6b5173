package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// Automatic batching: single-market misses (GET /markets/{ticker}) that
// arrive within a short window are fetched upstream as one
// GET /markets?tickers=A,B,C call and split back into single-market answers
// shaped as {"market": {...}}, each stored under its own key. Under a rate
// limit, N misses then cost one token instead of N.

const (
	marketPattern  = route.Prefix + "markets/{ticker}"
	marketsPattern = route.Prefix + "markets"
	// maxAutoTickers bounds one combined call (Kalshi's batch candlestick
	// route takes at most 100 tickers; we keep list calls to the same size).
	maxAutoTickers = 100
)

type autoBatcher struct {
	f      *Fetcher
	window time.Duration

	mu      sync.Mutex
	pending *autoBatch
}

type autoBatch struct {
	tickers []string
	waiters map[string]chan autoAnswer
	// hdr is the first request's header. The combined call goes with
	// OwnKey credentials: no client signed its path, so kproxy's own key
	// signs it, or it carries no client credentials at all.
	hdr http.Header
	// hooks are the waiters' upstream attempt hooks (fetch/flight.go): a
	// failed combined attempt answers their stale holders at once.
	hooks []func(int, error)
	// client is the first request's client (fair shares).
	client string
	once   sync.Once
}

type autoAnswer struct {
	status   int
	header   http.Header
	body     []byte
	err      *upstream.Error
	fallback bool // fetch this ticker on its own
}

// autoTicker reports whether req is an automatically batchable single-market
// request, and its ticker.
func (f *Fetcher) autoTicker(req *Request) (string, bool) {
	if f.auto == nil || req.Route.Pattern != marketPattern || req.RawQuery != "" {
		return "", false
	}
	t := req.EscapedPath[strings.LastIndexByte(req.EscapedPath, '/')+1:]
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", false
		}
	}
	return t, t != ""
}

// get answers one single-market fetch through the current batch window. A
// ticker the combined call cannot answer is fetched alone, under call (its
// own client's credentials, signed for its own path).
func (a *autoBatcher) get(ctx context.Context, call *upstream.Call, ticker string, hdr http.Header) (int, http.Header, []byte, *upstream.Error) {
	ch := make(chan autoAnswer, 1)
	a.mu.Lock()
	b := a.pending
	if b == nil {
		b = &autoBatch{waiters: map[string]chan autoAnswer{}, hdr: hdr}
		a.pending = b
		time.AfterFunc(a.window, func() { a.flush(b) })
	}
	if _, dup := b.waiters[ticker]; dup {
		// Cannot happen through singleflight, but never lose a waiter.
		a.mu.Unlock()
		return a.f.get(ctx, call, route.Prefix+"markets/"+ticker, "", hdr)
	}
	b.tickers = append(b.tickers, ticker)
	if len(b.tickers) == 1 {
		b.client = call.Client
	}
	if call.OnAttempt != nil {
		b.hooks = append(b.hooks, call.OnAttempt)
	}
	b.waiters[ticker] = ch
	full := len(b.tickers) >= maxAutoTickers
	if full {
		a.pending = nil
	}
	a.mu.Unlock()
	if full {
		go b.once.Do(func() { a.run(b) })
	}
	var ans autoAnswer
	select {
	case ans = <-ch:
	case <-ctx.Done():
		return 0, nil, nil, upstream.As(ctx.Err())
	}
	if ans.fallback {
		return a.f.get(ctx, call, route.Prefix+"markets/"+ticker, "", hdr)
	}
	return ans.status, ans.header, ans.body, ans.err
}

func (a *autoBatcher) flush(b *autoBatch) {
	a.mu.Lock()
	if a.pending == b {
		a.pending = nil
	}
	a.mu.Unlock()
	b.once.Do(func() { a.run(b) })
}

// run makes the combined call and answers every waiter, each exactly once:
// a panic answers those still waiting with a 500 internal_error.
func (a *autoBatcher) run(b *autoBatch) {
	answered := make(map[string]bool, len(b.tickers))
	send := func(t string, ans autoAnswer) {
		if !answered[t] {
			answered[t] = true
			b.waiters[t] <- ans // buffered: never blocks
		}
	}
	defer func() {
		if p := recover(); p != nil {
			a.f.log.Error("panic in automatic batch", "tickers", len(b.tickers), "panic", p)
			for _, t := range b.tickers {
				send(t, autoAnswer{err: errInternal})
			}
		}
	}()
	if len(b.tickers) == 1 {
		send(b.tickers[0], autoAnswer{fallback: true})
		return
	}
	// No request's context: the call serves them all, and a timer started
	// it. It is bounded by the fetch timeout.
	ctx, cancel := context.WithTimeout(context.Background(), a.f.timeout)
	defer cancel()
	call := &upstream.Call{Route: marketsPattern, Charge: marketPattern, Client: b.client, Credentials: upstream.OwnKey}
	if len(b.hooks) > 0 {
		call.OnAttempt = func(status int, err error) {
			for _, h := range b.hooks {
				h(status, err)
			}
		}
	}
	q := "tickers=" + strings.Join(b.tickers, ",") + "&limit=" + strconv.Itoa(len(b.tickers))
	status, header, body, err := a.f.get(ctx, call, marketsPattern, q, b.hdr)
	a.f.m.AutoBatch(len(b.tickers))
	switch {
	case err != nil:
		for _, t := range b.tickers {
			send(t, autoAnswer{err: err})
		}
		return
	case status >= 500 || status == http.StatusTooManyRequests:
		// The upstream is failing or out of budget: asking again per
		// ticker would only make it worse. Share the answer.
		for _, t := range b.tickers {
			send(t, autoAnswer{status: status, header: header, body: body})
		}
		return
	case status != http.StatusOK:
		for _, t := range b.tickers {
			send(t, autoAnswer{fallback: true})
		}
		return
	}
	var page struct {
		Markets []json.RawMessage `json:"markets"`
	}
	found := map[string][]byte{}
	if json.Unmarshal(body, &page) == nil {
		for _, raw := range page.Markets {
			var m struct {
				Ticker string `json:"ticker"`
			}
			if json.Unmarshal(raw, &m) != nil || m.Ticker == "" {
				continue
			}
			var buf bytes.Buffer
			buf.WriteString(`{"market":`)
			if json.Compact(&buf, raw) != nil {
				continue
			}
			buf.WriteByte('}')
			found[m.Ticker] = buf.Bytes()
		}
	}
	h := http.Header{"Content-Type": header.Values("Content-Type")}
	if len(h["Content-Type"]) == 0 {
		h.Set("Content-Type", "application/json")
	}
	for _, t := range b.tickers {
		if one, ok := found[t]; ok {
			send(t, autoAnswer{status: http.StatusOK, header: h, body: one})
		} else {
			// Unknown to the list call: the single route gives the
			// real answer (a 404, usually).
			send(t, autoAnswer{fallback: true})
		}
	}
}
