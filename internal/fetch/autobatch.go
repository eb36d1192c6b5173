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
	hdr     http.Header // credentials of the first request
	// hooks are the waiters' upstream attempt hooks (fetch/stale.go): a
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

// get answers one single-market fetch through the current batch window.
func (a *autoBatcher) get(ctx context.Context, ticker string, hdr http.Header) (int, http.Header, []byte, *upstream.Error) {
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
		return a.f.get(ctx, route.Prefix+"markets/"+ticker, "", hdr)
	}
	b.tickers = append(b.tickers, ticker)
	if len(b.tickers) == 1 {
		b.client = upstream.ClientFrom(ctx)
	}
	if h := upstream.AttemptHookFrom(ctx); h != nil {
		b.hooks = append(b.hooks, h)
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
		return 0, nil, nil, asError(ctx.Err())
	}
	if ans.fallback {
		return a.f.get(ctx, route.Prefix+"markets/"+ticker, "", hdr)
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

// run makes the combined call and answers every waiter.
func (a *autoBatcher) run(b *autoBatch) {
	send := func(t string, ans autoAnswer) { b.waiters[t] <- ans }
	if len(b.tickers) == 1 {
		send(b.tickers[0], autoAnswer{fallback: true})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.f.timeout)
	defer cancel()
	ctx = upstream.WithRoute(ctx, marketsPattern, nil)
	ctx = upstream.WithClient(ctx, b.client)
	if len(b.hooks) > 0 {
		ctx = upstream.WithAttemptHook(ctx, func(status int, err error) {
			for _, h := range b.hooks {
				h(status, err)
			}
		})
	}
	if a.f.up.Signs() {
		ctx = upstream.WithOwnKey(ctx)
	}
	q := "tickers=" + strings.Join(b.tickers, ",") + "&limit=" + strconv.Itoa(len(b.tickers))
	status, header, body, err := a.f.get(ctx, marketsPattern, q, b.hdr)
	if a.f.m != nil {
		a.f.m.AutoBatched.Add(float64(len(b.tickers)))
	}
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
