package status_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
	"github.com/kproxy/kproxy/internal/redistest"
	"github.com/kproxy/kproxy/internal/status"
)

// kproxy is a whole kproxy in front of a fake Kalshi, both on loopback.
type kproxy struct {
	*kproxytest.Proxy
	t    *testing.T
	fake *kalshitest.Server
	app  *app.App
}

// start runs a kproxy with test rates, no retries and the configuration
// mutate changes (nil: none), on a fake clock unless options say
// otherwise.
func start(t *testing.T, mutate func(*config.Config), options ...kproxytest.Option) *kproxy {
	t.Helper()
	p := kproxytest.New(t, append([]kproxytest.Option{kproxytest.WithConfig(func(cfg *config.Config) {
		read, write := 500.0, 50.0
		cfg.Upstream.ReadRate, cfg.Upstream.WriteRate = &read, &write
		cfg.Upstream.MaxRetries = 0
		cfg.Upstream.Timeout = config.Default().Upstream.Timeout
		if mutate != nil {
			mutate(cfg)
		}
	}), kproxytest.WithAppOptions(func(o *app.Options) { o.Version = "v9.9.9-test" })}, options...)...)
	return &kproxy{Proxy: p, t: t, fake: p.Fake, app: p.App}
}

// get sends a GET with header pairs and returns the status and body.
func (k *kproxy) get(path string, header ...string) (int, []byte) {
	k.t.Helper()
	req, err := http.NewRequest(http.MethodGet, k.URL+path, nil)
	if err != nil {
		k.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		k.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		k.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// report samples the registry now and returns /status.json. The proxy
// counts a request after its answer is sent; one more request on the same
// keep-alive connection is served only once the previous handler returned,
// so the sample sees every request sent before.
func (k *kproxy) report() (status.Report, []byte) {
	k.t.Helper()
	k.get("/healthz")
	k.app.Status.Sample()
	code, body := k.get("/status.json")
	if code != http.StatusOK {
		k.t.Fatalf("GET /status.json: %d %s", code, body)
	}
	var r status.Report
	if err := json.Unmarshal(body, &r); err != nil {
		k.t.Fatalf("/status.json: %v in %s", err, body)
	}
	return r, body
}

func TestDisabledAnswers404(t *testing.T) {
	k := start(t, func(c *config.Config) { c.Status.Enabled = false })
	if k.app.Status != nil {
		t.Error("status.enabled=false still built a collector")
	}
	for _, p := range []string{"/status", "/status.json"} {
		code, body := k.get(p)
		if code != http.StatusNotFound || !strings.Contains(string(body), `"code":"`) {
			t.Errorf("GET %s with status disabled = %d %s, want a 404 JSON error", p, code, body)
		}
	}
}

func TestEnabledByDefault(t *testing.T) {
	k := start(t, nil)
	code, body := k.get("/status")
	if code != http.StatusOK || !strings.Contains(string(body), "<title>kproxy status</title>") {
		t.Fatalf("GET /status = %d, want the page", code)
	}
	r, _ := k.report()
	if r.Version != "v9.9.9-test" || r.Upstream != k.UpstreamURL {
		t.Errorf("version, upstream = %q, %q; want v9.9.9-test, %q", r.Version, r.Upstream, k.UpstreamURL)
	}
	if r.Budget.ReadRate != 500 || r.Budget.WriteRate != 50 || r.Cache.MaxBytes != 256<<20 || r.Breaker.State != "closed" {
		t.Errorf("budget %+v, cache %+v, breaker %+v; want the configuration's", r.Budget, r.Cache, r.Breaker)
	}
}

// The page is for a team's operators, but what a team trades is its own
// business: nothing from a request's path, query or headers may show.
func TestJSONNeverShowsTickersKeysOrHeaders(t *testing.T) {
	k := start(t, nil)
	const series = "KXZQSECRETDESK"
	k.fake.AddSeries(series, 2)
	tickers := k.fake.MarketTickers(series)
	secrets := append([]string{series, "zq-secret-key-id", "zq-secret-cookie"}, tickers...)
	for range 3 {
		for _, tk := range tickers {
			if code, body := k.get("/trade-api/v2/markets/"+tk, "KALSHI-ACCESS-KEY", "zq-secret-key-id", "Cookie", "s=zq-secret-cookie"); code != http.StatusOK {
				t.Fatalf("GET market %s: %d %s", tk, code, body)
			}
		}
		k.get("/trade-api/v2/markets?series_ticker="+series+"&status=open", "KALSHI-ACCESS-KEY", "zq-secret-key-id")
		k.get("/trade-api/v2/portfolio/balance", "KALSHI-ACCESS-KEY", "zq-secret-key-id")
	}
	r, body := k.report()
	for _, s := range secrets {
		if strings.Contains(strings.ToLower(string(body)), strings.ToLower(s)) {
			t.Errorf("/status.json contains %q: %s", s, body)
		}
	}
	// The pass-throughs are counted, as a number.
	if r.PassedThrough != 3 {
		t.Errorf("passed_through = %d, want 3", r.PassedThrough)
	}
	_, page := k.get("/status")
	for _, s := range secrets {
		if strings.Contains(string(page), s) {
			t.Errorf("/status page contains %q", s)
		}
	}
}

func TestUpstream429sAreCountedBothWays(t *testing.T) {
	k := start(t, nil)
	k.fake.SetFault(kalshitest.Fault{Status: http.StatusTooManyRequests, Times: 1})
	if code, _ := k.get("/trade-api/v2/series/KXFEDDECISION"); code != http.StatusTooManyRequests {
		t.Fatalf("GET with an upstream 429 and no retries = %d, want 429", code)
	}
	if code, _ := k.get("/trade-api/v2/series/KXFEDDECISION"); code != http.StatusOK {
		t.Fatalf("GET after the fault = %d, want 200", code)
	}
	r, _ := k.report()
	if r.TooMany.FromKalshi != 1 || r.TooMany.ByKproxy != 1 {
		t.Errorf("429s = %+v, want 1 from Kalshi and 1 given", r.TooMany)
	}
	if r.Budget.Total != 2 {
		t.Errorf("upstream total = %d, want 2", r.Budget.Total)
	}
}

func TestBreakerTransitionsReachThePage(t *testing.T) {
	k := start(t, func(c *config.Config) { c.Breaker.ConsecutiveFailures = 2 })
	k.fake.SetFault(kalshitest.Fault{Status: http.StatusServiceUnavailable})
	for range 2 {
		k.get("/trade-api/v2/exchange/status")
	}
	r, _ := k.report()
	if r.Breaker.State != "open" || len(r.Breaker.Transitions) != 1 || r.Breaker.Transitions[0].To != "open" {
		t.Errorf("breaker = %+v, want open after one transition", r.Breaker)
	}
}

func TestSharedTierStateIsShown(t *testing.T) {
	rs := redistest.Start(t)
	k := start(t, func(c *config.Config) { c.Redis.URL = rs.URL() })
	r, _ := k.report()
	m, ok := r.Redis.(map[string]any)
	if !ok || m["state"] != "up" || m["replicas"] == nil || r.Live != "off" {
		t.Errorf("redis = %#v, live = %#v; want state up with a replica count, live off", r.Redis, r.Live)
	}
}
