package status_test

// End-to-end truth tests of the status page: a whole kproxy in front of the
// fake Kalshi runs a known workload, and every headline figure of
// /status.json is checked against what the fake Kalshi itself received
// (its request log) and the X-Cache answers the clients themselves saw,
// never against kproxy's own counters.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/batch/wire"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/status"
)

// seen counts the X-Cache answers clients received.
type seen struct {
	mu                      sync.Mutex
	hit, stale, miss, other int64
}

func (s *seen) add(xcache string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch xcache {
	case "HIT":
		s.hit++
	case "STALE":
		s.stale++
	case "MISS":
		s.miss++
	default:
		s.other++
	}
}

func (s *seen) total() int64 { return s.hit + s.stale + s.miss }

// client is one script using kproxy: its name (Kproxy-Client) and its
// own keep-alive connection. kproxy counts a request after its answer is
// written (a streamed or large answer may reach the client first), but
// reads a connection's next request only once the previous one's handler
// returned: a request sent on every client's connection after the
// workload (settle) comes after every count.
type client struct {
	k    *kproxy
	name string
	hc   *http.Client
	s    *seen
}

// client makes a client named name that counts its X-Cache answers in s.
func (k *kproxy) client(name string, s *seen) *client {
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	k.t.Cleanup(tr.CloseIdleConnections)
	return &client{k: k, name: name, hc: &http.Client{Transport: tr}, s: s}
}

// do sends a request and reads its whole answer (so the connection is
// kept).
func (c *client) do(method, path string, body []byte) (*http.Response, []byte) {
	c.k.t.Helper()
	req, err := http.NewRequest(method, c.k.url(path), bytes.NewReader(body))
	if err != nil {
		c.k.t.Fatal(err)
	}
	if c.name != "" {
		req.Header.Set("Kproxy-Client", c.name)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.k.t.Errorf("%s %s: %v", method, path, err)
		return nil, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.k.t.Errorf("%s %s: %v", method, path, err)
	}
	return resp, b
}

// get sends a GET on a cached route and counts its X-Cache.
func (c *client) get(path string) {
	c.k.t.Helper()
	resp, _ := c.do(http.MethodGet, path, nil)
	if resp == nil {
		return
	}
	if resp.StatusCode != http.StatusOK {
		c.k.t.Errorf("GET %s = %d, want 200", path, resp.StatusCode)
	}
	c.s.add(resp.Header.Get("X-Cache"))
}

// settle sends one request on every client's connection: kproxy has
// counted everything they sent before.
func settle(cs ...*client) {
	for _, c := range cs {
		c.do(http.MethodGet, "/healthz", nil)
	}
}

// upstreamCalls is how many requests the fake Kalshi received on the
// cached routes' paths (everything under /trade-api/v2/ but the portfolio).
func (k *kproxy) upstreamCalls() int64 {
	var n int64
	for _, r := range k.fake.Requests() {
		if strings.HasPrefix(r.Path, "/trade-api/v2/") && !strings.HasPrefix(r.Path, "/trade-api/v2/portfolio") {
			n++
		}
	}
	return n
}

// ratio is part/whole as the page rounds it (4 decimals).
func ratio(part, whole int64) float64 {
	return math.Round(float64(part)/float64(whole)*1e4) / 1e4
}

func eq(p *float64, want float64) bool { return p != nil && *p == want }

// checkHeadline checks the page's headline figures against the clients'
// X-Cache answers s and the fake's count of upstream calls.
func checkHeadline(t *testing.T, r status.Report, s *seen, upstream int64) {
	t.Helper()
	req := s.total()
	if got, want := r.Requests, (status.Counts{Total: req, Hit: s.hit, Stale: s.stale, Miss: s.miss, Expired: r.Requests.Expired, Upstream: upstream}); got != want {
		t.Errorf("requests = %+v, want %+v (clients saw %d HIT, %d STALE, %d MISS; the fake got %d calls)", got, want, s.hit, s.stale, s.miss, upstream)
	}
	want := status.Avoided{Requests: req, Upstream: upstream, Count: req - upstream}
	for _, a := range []struct {
		name string
		got  status.Avoided
	}{{"since start", r.Avoided.Avoided}, {"last minute", r.Avoided.LastMinute}} {
		if share := ratio(req-upstream, req); a.got.Requests != want.Requests || a.got.Upstream != want.Upstream ||
			a.got.Count != want.Count || !eq(a.got.Share, share) {
			t.Errorf("upstream calls avoided %s = %+v (share %v), want %+v (share %v)", a.name, a.got, deref(a.got.Share), want, share)
		}
	}
	if hr := ratio(s.hit, req); !eq(r.HitRatio.SinceStart, hr) || !eq(r.HitRatio.LastMinute, hr) {
		t.Errorf("hit ratio = %v since start, %v last minute; want %v (fresh HITs / requests)",
			deref(r.HitRatio.SinceStart), deref(r.HitRatio.LastMinute), hr)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// routeRow is the page's row of route; it fails the test without one.
func routeRow(t *testing.T, r status.Report, route string) status.Route {
	t.Helper()
	for _, row := range r.Routes {
		if row.Route == route {
			return row
		}
	}
	t.Fatalf("no row for %s in %+v", route, r.Routes)
	return status.Route{}
}

// Twenty pollers of one market list, all within its ttl: one upstream
// call, every other request avoided; the busiest ten clients are listed
// with exactly the requests they sent.
func TestTruthManyPollersWithinTTL(t *testing.T) {
	const list = "/trade-api/v2/markets?series_ticker=KXFEDDECISION"
	k := start(t, func(c *config.Config) {
		// A long ttl: every request of the workload is within it however
		// slowly the machine runs it.
		c.Cache.Overrides = append(c.Cache.Overrides, config.Override{Pattern: "/trade-api/v2/markets", TTL: ptr(config.Duration(time.Hour))})
	})
	var s seen
	var wg sync.WaitGroup
	pollers := make([]*client, 20)
	for i := range pollers {
		pollers[i] = k.client(fmt.Sprintf("poller-%02d", i+1), &s)
		wg.Go(func() {
			for range i + 1 { // poller-n sends n requests: 210 in all
				pollers[i].get(list)
			}
		})
	}
	wg.Wait()
	settle(pollers...)
	r, _ := k.report()
	up := k.upstreamCalls()
	if up != 1 || s.total() != 210 {
		t.Fatalf("the fake got %d calls for %d requests, want 1 for 210", up, s.total())
	}
	checkHeadline(t, r, &s, up)
	row := routeRow(t, r, "/trade-api/v2/markets")
	if row.Requests != 210 || row.Upstream != up || row.Avoided != 210-up {
		t.Errorf("route row = %+v, want 210 requests, %d upstream, %d avoided", row, up, 210-up)
	}
	if len(r.Clients) != 10 {
		t.Fatalf("clients = %+v, want the 10 busiest", r.Clients)
	}
	var upstream int64
	for i, c := range r.Clients {
		if want := fmt.Sprintf("poller-%02d", 20-i); c.Name != want || c.Requests != int64(20-i) {
			t.Errorf("clients[%d] = %+v, want %s with %d requests", i, c, want, 20-i)
		}
		upstream += c.Upstream
	}
	if upstream > up {
		t.Errorf("the listed clients were charged %d upstream calls, the fake got %d", upstream, up)
	}
	if len(r.Advice) != 0 {
		t.Errorf("advice = %q, want none (the cache saves these calls)", r.Advice)
	}
}

// A /batch of 10 items, twice: everything is charged to /batch, and its
// upstream calls are the fake's count for the items.
func TestTruthBatchChargedToItsEndpoint(t *testing.T) {
	k := start(t, nil)
	items := make([]wire.Item, 10)
	for i := range items {
		items[i] = wire.Item{Path: fmt.Sprintf("/trade-api/v2/events?series_ticker=KXFEDDECISION&limit=%d", i+1)}
	}
	body, err := json.Marshal(wire.BatchRequest{Requests: items})
	if err != nil {
		t.Fatal(err)
	}
	var s seen
	c := k.client("batcher", &s)
	for range 2 {
		_, b := c.do(http.MethodPost, "/batch", body)
		var br wire.BatchResponse
		if err := json.Unmarshal(b, &br); err != nil || len(br.Responses) != 10 {
			t.Fatalf("POST /batch: %v, %d responses", err, len(br.Responses))
		}
		for _, it := range br.Responses {
			if it.Status != http.StatusOK {
				t.Errorf("item %s = %d %s", it.ID, it.Status, it.Error)
			}
			s.add(it.Cache)
		}
	}
	settle(c)
	r, _ := k.report()
	up := int64(k.fake.Count("/trade-api/v2/events"))
	if up != k.upstreamCalls() || up != 10 {
		t.Fatalf("the fake got %d calls for the items (%d in all), want 10", up, k.upstreamCalls())
	}
	checkHeadline(t, r, &s, up)
	row := routeRow(t, r, "/batch")
	if row.Requests != 20 || row.Upstream != up || row.Hit != s.hit {
		t.Errorf("/batch row = %+v, want 20 requests, %d HIT, %d upstream", row, s.hit, up)
	}
	for _, row := range r.Routes {
		if row.Route != "/batch" {
			t.Errorf("row %+v: the items' route got a row, want everything charged to /batch", row)
		}
	}
}

// Single-market misses within the auto-batch window go upstream as one
// combined /markets?tickers= call, charged to the route the clients asked
// for: /markets/{ticker}.
func TestTruthAutoBatchChargedToSingleMarket(t *testing.T) {
	k := start(t, func(c *config.Config) { c.Batch.AutoWindow = config.Duration(time.Second) })
	tickers := k.fake.MarketTickers("KXEARNINGSMENTIONMETA")[:5]
	var s seen
	var wg sync.WaitGroup
	desks := make([]*client, len(tickers))
	for i, tk := range tickers {
		desks[i] = k.client(fmt.Sprintf("desk-%d", i), &s)
		wg.Go(func() { desks[i].get("/trade-api/v2/markets/" + tk) })
	}
	wg.Wait()
	settle(desks...)
	r, _ := k.report()
	up := k.upstreamCalls()
	combined := int64(k.fake.Count("/trade-api/v2/markets"))
	for _, tk := range tickers {
		if n := k.fake.Count("/trade-api/v2/markets/" + tk); n != 0 {
			t.Errorf("the fake got %d single calls for %s, want it combined", n, tk)
		}
	}
	// All five arrive within the 1 s window on any machine; the figures
	// below hold whatever the fake counted.
	if combined != up || combined < 1 || combined >= int64(len(tickers)) {
		t.Fatalf("the fake got %d combined calls (%d in all) for %d single-market misses", combined, up, len(tickers))
	}
	checkHeadline(t, r, &s, up)
	row := routeRow(t, r, "/trade-api/v2/markets/{ticker}")
	if row.Requests != int64(len(tickers)) || row.Upstream != up {
		t.Errorf("route row = %+v, want %d requests and %d upstream", row, len(tickers), up)
	}
	for _, row := range r.Routes {
		if row.Route == "/trade-api/v2/markets" {
			t.Errorf("the combined call's route got a row %+v, want it charged to /markets/{ticker}", row)
		}
	}
}

// Pass-throughs are no cached route's requests or upstream calls: a write
// to a cached route's own path and a private read leave the headline
// figures alone.
func TestTruthPassThroughsAreLeftOut(t *testing.T) {
	k := start(t, nil)
	var s seen
	c := k.client("bot", &s)
	c.get("/trade-api/v2/series/KXFEDDECISION")
	c.do(http.MethodGet, "/trade-api/v2/portfolio/balance", nil)
	c.do(http.MethodPost, "/trade-api/v2/markets", []byte("{}"))
	settle(c)
	if got := k.fake.Total(); got != 3 {
		t.Fatalf("the fake got %d requests, want 3 (one fetch, two pass-throughs)", got)
	}
	r, _ := k.report()
	checkHeadline(t, r, &s, 1)
	if r.PassedThrough != 2 {
		t.Errorf("passed_through = %d, want 2", r.PassedThrough)
	}
}

// url is kproxy's URL of path.
func (k *kproxy) url(path string) string { return k.URL + path }

func ptr[T any](v T) *T { return &v }

// pollEvery is how often the slow poller of the tests polls the market
// list, whose ttl is 2 s.
const pollEvery = 3 * time.Second

// listWindows sets the market list's stale_while_revalidate to swr and
// turns stale_wait off: a request that refetches waits for its own fetch.
func listWindows(swr time.Duration) func(*config.Config) {
	return func(c *config.Config) {
		c.Cache.Overrides = append(c.Cache.Overrides, config.Override{Pattern: "/trade-api/v2/markets",
			StaleWhileRevalidate: ptr(config.Duration(swr))})
		c.Cache.StaleWait = 0
	}
}

// One script polls a market list every 3 s, slower than its 2 s ttl, 6
// times: every poll costs an upstream call (the first a fetch, the others
// the refetch of an expired copy; no stale_while_revalidate), the cache
// saves nothing, and the page says so. No refresh ahead of expiry can
// change these figures: a poll 3 s after the last fetch never finds a
// copy still fresh, so nothing is refreshed ahead for it.
func TestTruthSlowPoller(t *testing.T) {
	const list = "/trade-api/v2/markets?series_ticker=KXFEDDECISION"
	k := start(t, listWindows(0))
	var s seen
	c := k.client("nvda-poller", &s)
	for i := range 6 {
		if i > 0 {
			k.Clock.Advance(pollEvery)
		}
		c.get(list)
	}
	settle(c)
	r, _ := k.report()
	up := k.upstreamCalls()
	if up != 6 || s.hit != 0 {
		t.Fatalf("the fake got %d calls and clients saw %d HITs for 6 slow polls, want 6 calls and no HIT", up, s.hit)
	}
	checkHeadline(t, r, &s, up)
	if r.Avoided.Count != 0 || !eq(r.Avoided.Share, 0) || !eq(r.HitRatio.SinceStart, 0) {
		t.Errorf("avoided %+v (share %v), hit ratio %v; want 0, 0%%, 0", r.Avoided.Avoided, deref(r.Avoided.Share), deref(r.HitRatio.SinceStart))
	}
	if r.Requests.Expired != 5 {
		t.Errorf("expired = %d, want the 5 polls after the first", r.Requests.Expired)
	}
	want := "Clients poll /trade-api/v2/markets slower than its ttl (2s): the cache cannot save these calls; raise the ttl or turn on the live feed."
	if len(r.Advice) != 1 || r.Advice[0] != want {
		t.Errorf("advice = %q, want [%q]", r.Advice, want)
	}
	if len(r.Clients) != 1 || r.Clients[0] != (status.Client{Name: "nvda-poller", Requests: 6, Upstream: up}) {
		t.Errorf("clients = %+v, want nvda-poller with 6 requests and %d upstream calls", r.Clients, up)
	}
}

// A STALE answer served while its copy is refreshed in the background is
// one STALE request and its refresh one upstream call.
func TestTruthStaleWithRefresh(t *testing.T) {
	const list = "/trade-api/v2/markets?series_ticker=KXFEDDECISION"
	k := start(t, listWindows(time.Hour))
	var s seen
	c := k.client("bot", &s)
	c.get(list) // MISS: the first fetch
	k.Clock.Advance(pollEvery)
	c.get(list)          // STALE: served at once, refreshed behind
	k.app.Fetcher.Wait() // the refresh has reached the fake
	settle(c)
	r, _ := k.report()
	up := k.upstreamCalls()
	if s.miss != 1 || s.stale != 1 || up != 2 {
		t.Fatalf("clients saw %d MISS, %d STALE; the fake got %d calls; want 1, 1 and 2 (the fetch and the refresh)", s.miss, s.stale, up)
	}
	checkHeadline(t, r, &s, up)
	if r.Requests.Expired != 1 {
		t.Errorf("expired = %d, want 1 (the STALE)", r.Requests.Expired)
	}
}

// A /batch/markets series read with all_pages, twice: every page is a
// request charged to /batch/markets, and the first time each costs the
// one upstream call the fake Kalshi counts; the second time none does.
func TestTruthBatchPagesChargedToTheirEndpoint(t *testing.T) {
	k := start(t, nil)
	k.fake.AddSeries("KXPAGED", 25)
	body, err := json.Marshal(wire.MarketsRequest{SeriesTickers: []string{"KXPAGED"}, Limit: 10, AllPages: true})
	if err != nil {
		t.Fatal(err)
	}
	c := k.client("pager", &seen{})
	var pages int64
	for round := range 2 {
		_, b := c.do(http.MethodPost, "/batch/markets", body)
		var mr wire.MarketsResponse
		if err := json.Unmarshal(b, &mr); err != nil || len(mr.MarketsBySeries["KXPAGED"]) != 25 {
			t.Fatalf("POST /batch/markets: %v, %d markets, want 25", err, len(mr.MarketsBySeries["KXPAGED"]))
		}
		if round == 0 {
			pages = int64(k.fake.Count("/trade-api/v2/markets"))
		}
	}
	settle(c)
	r, _ := k.report()
	if up := k.upstreamCalls(); up != pages || pages < 3 {
		t.Fatalf("the fake got %d calls, %d of them the first round's pages; want only the pages, at least 3", up, pages)
	}
	want := status.Counts{Total: 2 * pages, Hit: pages, Miss: pages, Upstream: pages}
	if r.Requests != want {
		t.Errorf("requests = %+v, want %+v (each page a request; the fake got %d)", r.Requests, want, pages)
	}
	row := routeRow(t, r, "/batch/markets")
	if row.Requests != 2*pages || row.Upstream != pages || row.Avoided != pages || !eq(row.AvoidedShare, 0.5) {
		t.Errorf("/batch/markets row = %+v, want %d requests, %d upstream, %d avoided (50%%)", row, 2*pages, pages, pages)
	}
	if len(r.Clients) != 1 || r.Clients[0] != (status.Client{Name: "pager", Requests: 2 * pages, Upstream: pages}) {
		t.Errorf("clients = %+v, want pager with %d requests and %d upstream calls", r.Clients, 2*pages, pages)
	}
}
