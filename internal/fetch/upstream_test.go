package fetch

// The fetch path on the real upstream client against the fake Kalshi
// (internal/kalshitest): what reaches Kalshi, counted by the fake's own
// request log.

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/route"
	"github.com/kproxy/kproxy/internal/upstream"
)

// newOrigin serves fake behind an httptest server; served, when set, is told
// of every request the fake has answered.
func newOrigin(t *testing.T, fake *kalshitest.Server, served func()) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fake.ServeHTTP(w, r)
		if served != nil {
			served()
		}
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

func newRealFetcher(t *testing.T, ucfg upstream.Config, edit func(*Config)) *Fetcher {
	t.Helper()
	up, err := upstream.New(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Store: newMapStore(), Upstream: up}
	if edit != nil {
		edit(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Wait)
	return f
}

// Issue 16: the automatic batcher forwarded the first client's headers,
// signed for GET /markets/A, with the combined GET /markets?tickers= call,
// and Kalshi refused it.
func TestAutoBatchCarriesNoClientSignature(t *testing.T) {
	fake := kalshitest.New()
	fake.AddSeries("AUTO", maxAutoTickers)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	fake.SetPublicKey(&key.PublicKey)
	// A window far longer than the test: the batch goes when it is full.
	f := newRealFetcher(t, upstream.Config{Origin: newOrigin(t, fake, nil)}, func(c *Config) { c.AutoWindow = time.Hour })

	tickers := fake.MarketTickers("AUTO")
	if len(tickers) != maxAutoTickers {
		t.Fatalf("fake has %d markets, want %d", len(tickers), maxAutoTickers)
	}
	var wg sync.WaitGroup
	statuses := make([]int, len(tickers))
	for i, tk := range tickers {
		wg.Go(func() {
			req := request(tk)
			ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
			sig, err := kalshitest.Sign(key, ts, http.MethodGet, req.EscapedPath)
			if err != nil {
				t.Error(err)
				return
			}
			req.Header = http.Header{"Kalshi-Access-Key": {"client-key"}, "Kalshi-Access-Timestamp": {ts}, "Kalshi-Access-Signature": {sig}}
			res := f.Get(t.Context(), req)
			if res.Outcome != Failed {
				statuses[i] = res.Entry.Status
			}
		})
	}
	wg.Wait()
	if n := fake.SignatureFailures(); n != 0 {
		t.Errorf("requests Kalshi refused for their signature = %d, want 0", n)
	}
	if n := fake.Count(marketsPattern); n != 1 {
		t.Errorf("combined calls = %d, want 1", n)
	}
	if n := fake.Total(); n != 1 {
		t.Errorf("upstream requests = %d, want 1 (every ticker answered by the combined call)", n)
	}
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("%s: status %d, want 200", tickers[i], s)
		}
	}
}

// Issue 16: Kproxy-Client names a client for fair shares. A quiet client's
// miss behind another client's flood, from the same address, waits for
// about one token, not for the flood.
func TestQuietClientNotQueuedBehindFlood(t *testing.T) {
	const rate, flood = 5, 10 // the bucket holds 5: 5 flood misses queue, a token every 200ms (far above scheduling jitter)
	fake := kalshitest.New()
	fake.AddSeries("FLOOD", flood+1)
	var served atomic.Int32
	burstDone := make(chan struct{})
	origin := newOrigin(t, fake, func() {
		if served.Add(1) == rate {
			close(burstDone)
		}
	})
	f := newRealFetcher(t, upstream.Config{
		Origin: origin, ReadRate: rate, MaxWait: time.Minute, FairShare: true,
	}, nil)
	tickers := fake.MarketTickers("FLOOD")
	get := func(tk, client string) {
		req := request(tk)
		req.Header = http.Header{"Kproxy-Client": {client}}
		if res := f.Get(t.Context(), req); res.Outcome == Failed {
			t.Errorf("%s (%s): %v", tk, client, res.Err)
		}
	}
	var wg sync.WaitGroup
	for _, tk := range tickers[:flood] {
		wg.Go(func() { get(tk, "flood") })
	}
	<-burstDone // the bucket is empty; the rest of the flood waits in line
	before := fake.Total()
	quiet := tickers[flood]
	get(quiet, "quiet")
	wg.Wait()

	log := fake.Requests()
	at := slices.IndexFunc(log, func(r kalshitest.Recorded) bool { return r.Path == route.Prefix+"markets/"+quiet })
	if at < 0 {
		t.Fatal("the quiet client's miss never reached the upstream")
	}
	// Fair shares serve the two clients in turn: at most the flood request
	// already granted goes first.
	if ahead := at - before; ahead > 1 {
		t.Errorf("flood requests sent between the quiet miss and its fetch = %d, want at most 1", ahead)
	}
	for _, r := range log {
		if r.Header.Get("Kproxy-Client") != "" {
			t.Fatalf("Kproxy-Client reached the upstream: %q", r.Header.Get("Kproxy-Client"))
		}
	}
}
