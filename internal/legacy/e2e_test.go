package legacy_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

func start(t *testing.T, mutate func(*config.Config)) *kproxytest.Proxy {
	t.Helper()
	return kproxytest.New(t, kproxytest.WithConfig(mutate))
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	a := kproxytest.Send(http.MethodGet, url, nil)
	if a.Err != nil {
		t.Fatal(a.Err)
	}
	return a.Response, a.Body
}

const (
	vr    = "KXEARNINGSMENTIONMETA-26JUN30-VR"
	event = "KXEARNINGSMENTIONMETA-26JUN30"
)

var paths = []string{
	"/trade-api/v2/markets?series_ticker=KXEARNINGSMENTIONMETA&limit=3",
	"/trade-api/v2/markets/" + vr,
	"/trade-api/v2/markets/" + vr + "/orderbook",
	"/trade-api/v2/events/" + event + "?with_nested_markets=true",
	"/trade-api/v2/events?series_ticker=KXEARNINGSMENTIONMETA&with_nested_markets=true",
}

// TestShimOffIsByteIdentical: without the shim, what kproxy serves (on the
// miss and on the hit) is the upstream's body byte for byte.
func TestShimOffIsByteIdentical(t *testing.T) {
	p := start(t, func(*config.Config) {})
	for _, path := range paths {
		_, direct := get(t, p.UpstreamURL+path)
		for _, want := range []string{"MISS", "HIT"} {
			resp, body := get(t, p.URL+path)
			if got := resp.Header.Get("X-Cache"); got != want {
				t.Errorf("%s: X-Cache = %q, want %q", path, got, want)
			}
			if !bytes.Equal(body, direct) {
				t.Errorf("%s (%s): body differs from the upstream's:\n got %s\nwant %s", path, want, body, direct)
			}
		}
	}
}

// TestShimOnAddsLegacyFields: an old script reading yes_bid, last_price and
// volume through kproxy gets the values Kalshi used to send, on misses and
// hits alike, and the upstream is asked once.
func TestShimOnAddsLegacyFields(t *testing.T) {
	p := start(t, func(c *config.Config) { c.Compat.LegacyFields = true })
	type market struct {
		Ticker       string `json:"ticker"`
		YesBid       *int   `json:"yes_bid"`
		LastPrice    *int   `json:"last_price"`
		Volume       *int   `json:"volume"`
		OpenInterest *int   `json:"open_interest"`
	}
	check := func(where string, m market) {
		t.Helper()
		if m.Ticker != vr {
			return
		}
		if m.YesBid == nil || *m.YesBid != 33 || m.LastPrice == nil || *m.LastPrice != 37 || m.Volume == nil || *m.Volume != 2314 || m.OpenInterest == nil || *m.OpenInterest != 2061 {
			t.Errorf("%s: %s legacy fields = %v %v %v %v, want yes_bid 33, last_price 37, volume 2314, open_interest 2061",
				where, m.Ticker, deref(m.YesBid), deref(m.LastPrice), deref(m.Volume), deref(m.OpenInterest))
		}
	}
	for _, want := range []string{"MISS", "HIT"} {
		resp, body := get(t, p.URL+paths[1])
		if got := resp.Header.Get("X-Cache"); got != want {
			t.Errorf("X-Cache = %q, want %q", got, want)
		}
		var one struct{ Market market }
		if err := json.Unmarshal(body, &one); err != nil {
			t.Fatal(err)
		}
		if one.Market.Ticker != vr {
			t.Fatalf("market = %s", body)
		}
		check("single "+want, one.Market)
	}
	if n := p.Fake.Count("/trade-api/v2/markets/" + vr); n != 1 {
		t.Errorf("upstream asked %d times, want 1", n)
	}
	_, body := get(t, p.URL+paths[0])
	var page struct{ Markets []market }
	json.Unmarshal(body, &page)
	for _, m := range page.Markets {
		check("page", m)
	}
	_, body = get(t, p.URL+paths[3])
	var ev struct {
		Event   struct{ Markets []market }
		Markets []market
	}
	json.Unmarshal(body, &ev)
	if len(ev.Event.Markets) == 0 {
		t.Fatalf("event without nested markets: %s", body)
	}
	for _, m := range append(ev.Event.Markets, ev.Markets...) {
		check("event", m)
	}
	_, body = get(t, p.URL+paths[2])
	var ob struct {
		Orderbook *struct{ Yes, No [][]int } `json:"orderbook"`
	}
	json.Unmarshal(body, &ob)
	if ob.Orderbook == nil || len(ob.Orderbook.Yes) == 0 {
		t.Errorf("orderbook without the legacy book: %s", body)
	}
}

// TestShimRouteOverride: a route's legacy_fields: false wins over
// compat.legacy_fields: true, and that route stays byte-identical.
func TestShimRouteOverride(t *testing.T) {
	off := false
	p := start(t, func(c *config.Config) {
		c.Compat.LegacyFields = true
		c.Cache.Overrides = append(c.Cache.Overrides, config.Override{Pattern: "/trade-api/v2/markets/{ticker}", LegacyFields: &off})
	})
	_, direct := get(t, p.UpstreamURL+paths[1])
	if _, body := get(t, p.URL+paths[1]); !bytes.Equal(body, direct) {
		t.Errorf("route with legacy_fields false: body changed:\n%s", body)
	}
	if _, body := get(t, p.URL+paths[0]); !bytes.Contains(body, []byte(`"yes_bid":`)) {
		t.Errorf("/markets with compat.legacy_fields: no yes_bid in %s", body)
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
