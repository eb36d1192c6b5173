package status_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

// browserLog collects what the page did that a user would notice: console
// errors, exceptions, and every URL it requested.
type browserLog struct {
	mu       sync.Mutex
	errors   []string
	requests []string
}

func (b *browserLog) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == "error" || ev.Type == "assert" {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			b.errors = append(b.errors, "console."+string(ev.Type)+": "+strings.Join(args, " "))
		}
	case *runtime.EventExceptionThrown:
		msg := ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
		b.errors = append(b.errors, "exception: "+msg)
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == "error" {
			b.errors = append(b.errors, "log "+string(ev.Entry.Source)+": "+ev.Entry.Text+" "+ev.Entry.URL)
		}
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request.URL)
	}
}

func (b *browserLog) snapshot() (errs, reqs []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...), append([]string(nil), b.requests...)
}

// chromium is Debian's chromium, or $CHROMIUM. A missing browser fails the
// test: CI installs it (apt-get install chromium).
func chromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no browser at %s (apt-get install chromium, or set CHROMIUM): %v", path, err)
	}
	return path
}

// TestStatusPageInBrowser loads /status in headless Chromium next to a
// kproxy in front of the fake Kalshi, makes traffic, and checks that the
// page's numbers move to exactly what /status.json says, at desktop and
// phone width, in light and dark mode, with no console error and no
// request to anything but 127.0.0.1. With KPROXY_SCREENSHOT=file.png it
// runs a longer mixed workload first and saves the desktop screenshot
// there (and the phone one beside it); otherwise both go to t.TempDir().
func TestStatusPageInBrowser(t *testing.T) {
	exe := chromium(t)
	shot := os.Getenv("KPROXY_SCREENSHOT")
	var k *kproxy
	if shot != "" {
		// 40 s of real traffic on the wall clock; the shipped budget, so
		// the gauges show a realistic share.
		k = start(t, func(c *config.Config) { c.Upstream.ReadRate, c.Upstream.WriteRate = nil, nil },
			kproxytest.WithRealClock())
	} else {
		k = start(t, listWindows(0))
	}

	timeout := 40 * time.Second
	if shot != "" {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// Belt and braces: a name other than loopback does not resolve,
		// so the browser cannot send traffic off this machine.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bl := &browserLog{}
	bctx, cancelTab := chromedp.NewContext(actx, chromedp.WithListener(bl.listen))
	defer cancelTab()

	if err := chromedp.Do(bctx,
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(k.URL+"/status"),
	); err != nil {
		t.Fatalf("loading /status: %v", err)
	}
	waitUpdates(t, bctx, 1)
	if got := fieldValue(t, bctx, "requests.total"); got != "0" {
		t.Fatalf("page shows %s requests before any traffic, want 0", got)
	}

	var want expected
	if shot != "" {
		want = k.workload(t, 40*time.Second)
	} else {
		want = k.traffic(t)
		for i := range 6 { // every 3 s on the fake clock
			if i > 0 {
				k.Clock.Advance(pollEvery)
			}
			k.slowPoll(t)
		}
		want.polls = 6
	}
	r, body := k.report()
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	// The page polls every 2 s and the collector samples every second:
	// the numbers must arrive within a few periods.
	waitField(t, bctx, "requests.total", strconv.FormatInt(r.Requests.Total, 10))
	waitField(t, bctx, "upstream_calls_avoided.upstream", strconv.FormatInt(r.Avoided.Upstream, 10))
	waitField(t, bctx, "passed_through", strconv.FormatInt(r.PassedThrough, 10))
	if want.from429 >= 0 {
		waitField(t, bctx, "rate_limited.from_kalshi", strconv.Itoa(want.from429))
	}
	page := fields(t, bctx)
	stable := []string{
		"version", "upstream", "breaker.state",
		"upstream_calls_avoided.share", "upstream_calls_avoided.count", "upstream_calls_avoided.requests",
		"upstream_calls_avoided.upstream", "hit_ratio.since_start", "stale_ratio.since_start",
		"requests.total", "requests.hit", "requests.stale", "requests.miss", "passed_through",
		"rate_limited.from_kalshi", "rate_limited.by_kproxy",
		"upstream_budget.total", "upstream_budget.read_rate", "upstream_budget.write_rate", "upstream_budget.tier",
		"cache.items", "cache.bytes", "cache.max_bytes", "redis", "live",
	}
	for _, f := range stable {
		if got, want := page[f], jsValue(lookup(doc, f)); got != want {
			t.Errorf("page %s = %q, /status.json has %q", f, got, want)
		}
	}
	if shot == "" && (r.PassedThrough != 1 || r.TooMany.ByKproxy != 1) {
		t.Errorf("/status.json passed_through %d, 429s %+v; want 1 pass-through, 1 429 given", r.PassedThrough, r.TooMany)
	}
	// The headline: its title, and the share as a percentage.
	title, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector(".hero h2").textContent`))
	if err != nil || strings.TrimSpace(title) != "Upstream calls avoided" {
		t.Errorf("headline title = %q (%v), want %q", title, err, "Upstream calls avoided")
	}
	big, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`.hero .big`)))
	if wantBig := percent(r.Avoided.Share); err != nil || strings.TrimSpace(big) != wantBig {
		t.Errorf("headline = %q (%v), want %q", big, err, wantBig)
	}
	// The slow poller is named in a plain sentence.
	if len(r.Advice) != 1 || !strings.HasPrefix(r.Advice[0], "Clients poll "+marketList+" slower than its ttl") {
		t.Fatalf("advice = %q, want one sentence on %s", r.Advice, marketList)
	}
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](fmt.Sprintf(`(document.querySelector("#advice p") || {}).textContent === %q`, r.Advice[0]),
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Errorf("the page does not show the advice %q: %v", r.Advice[0], err)
	}
	// The route table: the busiest route's row matches the JSON, and the
	// poller's row and client are charged its 6 requests and 6 calls.
	cell := func(table, key string, col int) string {
		t.Helper()
		js := fmt.Sprintf(`(function(){var c=document.querySelector('#%s tr[data-key=%q] td:nth-child(%d)');return c?c.getAttribute("data-value"):"absent";})()`, table, key, col)
		v, err := chromedp.Run(bctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("reading %s %s: %v", table, key, err)
		}
		return v
	}
	if got := cell("routes", r.Routes[0].Route, 3); got != strconv.FormatInt(r.Routes[0].Requests, 10) {
		t.Errorf("route row %s requests = %q, want %d", r.Routes[0].Route, got, r.Routes[0].Requests)
	}
	// Checked against the fake Kalshi's own count of the poller's calls.
	polls, calls := strconv.Itoa(want.polls), strconv.Itoa(k.fake.CountQuery(slowPollPath))
	if calls != polls {
		t.Errorf("the fake got %s calls for the poller's %s polls, want one each", calls, polls)
	}
	if req, up := cell("routes", marketList, 3), cell("routes", marketList, 7); req != polls || up != calls {
		t.Errorf("route row %s: %s requests, %s upstream; want %s, %s", marketList, req, up, polls, calls)
	}
	if req, up := cell("clients", "nvda-poller", 2), cell("clients", "nvda-poller", 3); req != polls || up != calls {
		t.Errorf("client nvda-poller: %s requests, %s upstream; want %s, %s", req, up, polls, calls)
	}
	lines, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#c-outcomes path.line").length`))
	if err != nil || lines == 0 {
		t.Errorf("outcome chart has %d lines (%v), want some", lines, err)
	}

	dir := t.TempDir()
	desktop := filepath.Join(dir, "status.png")
	if shot != "" {
		desktop = shot
	}
	screenshot(t, bctx, desktop)

	// Dark mode: the page follows prefers-color-scheme.
	bg := `getComputedStyle(document.body).backgroundColor`
	light, err := chromedp.Run(bctx, chromedp.Evaluate[string](bg))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(bctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	}); err != nil {
		t.Fatal(err)
	}
	if dark, err := chromedp.Run(bctx, chromedp.Evaluate[string](bg)); err != nil || dark == light {
		t.Errorf("dark mode background = %q (%v), light %q; want them to differ", dark, err, light)
	}

	// Phone width: one column, nothing wider than the screen, still live.
	n := updates(t, bctx)
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	waitUpdates(t, bctx, n+1)
	overflow, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`))
	if err != nil || overflow > 0 {
		t.Errorf("at phone width the page is %d px wider than the screen (%v)", overflow, err)
	}
	cols, err := chromedp.Run(bctx, chromedp.Evaluate[int](`getComputedStyle(document.querySelector(".tiles")).gridTemplateColumns.split(" ").length`))
	if err != nil || cols != 1 {
		t.Errorf("at phone width the tiles have %d columns (%v), want 1", cols, err)
	}
	phone := filepath.Join(dir, "status-phone.png")
	if shot != "" {
		phone = strings.TrimSuffix(shot, ".png") + "-phone.png"
	}
	screenshot(t, bctx, phone)

	errs, reqs := bl.snapshot()
	for _, e := range errs {
		t.Errorf("browser: %s", e)
	}
	if len(reqs) < 3 {
		t.Errorf("the page made %d requests, want the page and several status.json polls", len(reqs))
	}
	for _, u := range reqs {
		p, err := url.Parse(u)
		if err != nil || p.Hostname() != "127.0.0.1" {
			t.Errorf("the page requested %q: not 127.0.0.1", u)
		}
	}
}

// marketList is the route the test's slow poller asks for, at
// slowPollPath.
const (
	marketList   = "/trade-api/v2/markets"
	slowPollPath = marketList + "?series_ticker=KXFEDDECISION&status=open"
)

// slowPoll is one poll of the slow poller, a script that asks for the
// same market list slower than its ttl: every poll but the first finds
// an expired copy and costs one upstream call.
func (k *kproxy) slowPoll(t *testing.T) {
	t.Helper()
	if code, body := k.get(slowPollPath, "Kproxy-Client", "nvda-poller"); code != http.StatusOK {
		t.Fatalf("slow poll: %d %s", code, body)
	}
}

// percent formats a share as the page does.
func percent(v *float64) string {
	if v == nil {
		return "–"
	}
	digits := 1
	if *v == 0 || math.Abs(*v) >= 0.9995 {
		digits = 0
	}
	return strconv.FormatFloat(*v*100, 'f', digits, 64) + "%"
}

// expected is what a workload should leave on the page.
type expected struct {
	total, hits, misses, from429 int
	// polls counts the slow poller's requests.
	polls int
}

// traffic sends a fixed mix: misses, hits, a pass-through, and one 429
// from Kalshi (no retries in these tests, so it is also given).
func (k *kproxy) traffic(t *testing.T) expected {
	t.Helper()
	tickers := k.fake.MarketTickers("KXEARNINGSMENTIONMETA")[:10]
	for round := range 4 {
		for _, tk := range tickers {
			if code, body := k.get("/trade-api/v2/markets/" + tk); code != http.StatusOK {
				t.Fatalf("round %d %s: %d %s", round, tk, code, body)
			}
		}
	}
	k.get("/trade-api/v2/portfolio/balance")
	k.fake.SetFault(kalshitest.Fault{Status: http.StatusTooManyRequests, Times: 1, Paths: []string{"/trade-api/v2/series/"}})
	if code, _ := k.get("/trade-api/v2/series/KXFEDDECISION"); code != http.StatusTooManyRequests {
		t.Fatalf("GET with an upstream 429 = %d, want 429", code)
	}
	return expected{total: 10 + 30 + 1 + 1, hits: 30, misses: 11, from429: 1}
}

// workload runs a steadier mix for d (for the README's screenshot): a hot
// set of markets, a trickle of new ones, lists, a slow poller every 3 s, a
// pass-through now and then, and a 429 from Kalshi every few seconds.
// Loops are bounded by d.
func (k *kproxy) workload(t *testing.T, d time.Duration) expected {
	t.Helper()
	hot := k.fake.MarketTickers("KXEARNINGSMENTIONMETA")
	cold := k.fake.MarketTickers("KXBIGSERIES")
	sent, polls := 0, 0
	get := func(path string) { k.get(path); sent++ }
	end := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		get("/trade-api/v2/markets/" + hot[i%len(hot)])
		if i%3 == 0 {
			get("/trade-api/v2/events?series_ticker=KXFEDDECISION")
		}
		if i%7 == 0 {
			get("/trade-api/v2/markets/" + cold[(i/7)%len(cold)])
		}
		if i%40 == 0 {
			get("/trade-api/v2/portfolio/balance")
		}
		if i%150 == 0 { // every 3 s: slower than the list's 2 s ttl
			k.slowPoll(t)
			sent++
			polls++
		}
		if i%150 == 75 {
			k.fake.SetFault(kalshitest.Fault{Status: http.StatusTooManyRequests, Times: 1, Paths: []string{"/trade-api/v2/markets/KXBIG"}})
		}
	}
	k.fake.SetFault(kalshitest.Fault{})
	return expected{total: sent, from429: -1, polls: polls}
}

func screenshot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

func updates(t *testing.T, ctx context.Context) int {
	t.Helper()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`Number(document.body.getAttribute("data-updates") || 0)`))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitUpdates waits until the page has rendered status.json n times.
func waitUpdates(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	expr := fmt.Sprintf(`Number(document.body.getAttribute("data-updates") || 0) >= %d`, n)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("page did not update %d times: %v", n, err)
	}
}

// waitField waits until the page shows want as the raw value of field.
func waitField(t *testing.T, ctx context.Context, field, want string) {
	t.Helper()
	expr := fmt.Sprintf(`document.querySelector('[data-f=%q]').getAttribute("data-value") === %q`, field, want)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Fatalf("page never showed %s = %s (last %q): %v", field, want, fieldValue(t, ctx, field), err)
	}
}

func fieldValue(t *testing.T, ctx context.Context, field string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector('[data-f=%q]').getAttribute("data-value")`, field)))
	if err != nil {
		t.Fatalf("reading %s: %v", field, err)
	}
	return v
}

// fields returns every data-f field of the page with its raw value.
func fields(t *testing.T, ctx context.Context) map[string]string {
	t.Helper()
	m, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](
		`Object.fromEntries([...document.querySelectorAll("[data-f]")].map(e => [e.getAttribute("data-f"), e.getAttribute("data-value")]))`))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func lookup(doc map[string]any, path string) any {
	var v any = doc
	for _, p := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// jsValue renders a decoded JSON value as the page's script does:
// String(v) for scalars, JSON.stringify for objects, "null" for null.
func jsValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}
