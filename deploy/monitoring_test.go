package deploy_test

// Tests of the shipped monitoring: deploy/prometheus/alerts.yml (loaded and
// unit-tested by promtool) and deploy/grafana/kproxy.json (a dashboard
// Grafana imports), and that every metric their queries read is one kproxy
// really exports.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/kalshitest"
	"github.com/kproxy/kproxy/internal/kproxytest"
)

const (
	alertsFile     = "deploy/prometheus/alerts.yml"
	alertTestsFile = "deploy/prometheus/alerts_test.yml"
	dashboardFile  = "deploy/grafana/kproxy.json"
)

// promtool returns the path of promtool, failing the test when it is
// missing: CI installs it (Debian's prometheus package), so a missing one is
// a broken environment, not a reason to pass.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (%v): install Debian's prometheus package (apt-get install -y prometheus)", err)
	}
	return p
}

// runPromtool runs promtool with args in dir and fails the test unless it
// exits 0 and prints SUCCESS.
func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestAlertRulesLoad(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "deploy", "prometheus")
	out := runPromtool(t, dir, "check", "rules", "alerts.yml")
	if n := len(alertRules(t)); !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", n)) {
		t.Errorf("promtool check rules: want %d rules found, got:\n%s", n, out)
	}
}

func TestAlertRulesUnitTests(t *testing.T) {
	runPromtool(t, filepath.Join(repoRoot(t), "deploy", "prometheus"), "test", "rules", "alerts_test.yml")
}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func alertRules(t *testing.T) []alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal([]byte(readRepoFile(t, alertsFile)), &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var rules []alertRule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// The alerts the issue asks for exist, each with a for: clause, a severity
// that routes and the words a quant needs, and each is unit-tested both
// firing and quiet.
func TestEveryAlertIsCompleteAndTested(t *testing.T) {
	rules := alertRules(t)
	var names []string
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		names = append(names, r.Alert)
		if r.For == "" {
			t.Errorf("%s: no for: clause (a single bad scrape would page)", r.Alert)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity = %q, want critical or warning", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
	}
	for _, want := range []string{"KproxyDown", "KproxyBreakerOpen", "KproxyUpstream429", "KproxyHitRatioCollapse", "KproxyCacheThrash"} {
		if !slices.Contains(names, want) {
			t.Errorf("alerts.yml has no %s alert", want)
		}
	}

	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name       string `yaml:"name"`
			AlertTests []struct {
				EvalTime  string           `yaml:"eval_time"`
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal([]byte(readRepoFile(t, alertTestsFile)), &tests); err != nil {
		t.Fatalf("%s: %v", alertTestsFile, err)
	}
	if !slices.Equal(tests.RuleFiles, []string{"alerts.yml"}) {
		t.Errorf("%s: rule_files = %q, want [alerts.yml]", alertTestsFile, tests.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertTests {
			if !slices.Contains(names, at.Alertname) {
				t.Errorf("%s: test %q checks unknown alert %q", alertTestsFile, tc.Name, at.Alertname)
			}
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname] = true
			} else {
				quiet[at.Alertname] = true
			}
		}
	}
	for _, n := range names {
		if !fires[n] {
			t.Errorf("%s: no test where %s fires", alertTestsFile, n)
		}
		if !quiet[n] {
			t.Errorf("%s: no test where %s stays quiet", alertTestsFile, n)
		}
	}
}

// dashboard is the part of a Grafana dashboard model the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal([]byte(readRepoFile(t, dashboardFile)), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows.
func (d dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// queries returns every PromQL expression of the dashboard by a name that
// says where it is, with the variables' label_values() queries.
func (d dashboard) queries(t *testing.T) map[string]string {
	t.Helper()
	q := map[string]string{}
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			q[fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var s struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &s); err != nil {
			t.Fatalf("variable %s: query: %v", v.Name, err)
		}
		m := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`).FindStringSubmatch(s.Query)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, s.Query)
		}
		q["variable "+v.Name] = m[1]
	}
	return q
}

// The dashboard is one Grafana imports: a known schema, a datasource
// variable every query uses, panels that fit the 24-column grid without
// overlapping, and one panel at least for each thing the issue lists.
func TestDashboardImportable(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both must be set", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion = %d, want about 39 (Grafana 10/11)", d.SchemaVersion)
	}
	const dsUID = "${DS_PROMETHEUS}"
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Name == "DS_PROMETHEUS" && v.Type == "datasource" && string(v.Query) == `"prometheus"` {
			hasDS = true
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != dsUID) {
			t.Errorf("variable %s: datasource %+v, want uid %s", v.Name, v.Datasource, dsUID)
		}
	}
	if !hasDS {
		t.Errorf("templating has no DS_PROMETHEUS variable of type datasource (query prometheus)")
	}
	ids := map[int]bool{}
	type rect struct {
		name       string
		x, y, w, h int
	}
	var rects []rect
	for _, p := range d.allPanels() {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 || ids[p.ID] {
			t.Errorf("%s: id must be positive and unique", name)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W < 1 || g.H < 1 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v does not fit the 24-column grid", name, g)
		}
		for _, r := range rects {
			if g.X < r.x+r.w && r.x < g.X+g.W && g.Y < r.y+r.h && r.y < g.Y+g.H {
				t.Errorf("%s overlaps %s", name, r.name)
			}
		}
		rects = append(rects, rect{name, g.X, g.Y, g.W, g.H})
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("%s: a panel needs a title and a query", name)
		}
		if p.Datasource == nil || p.Datasource.UID != dsUID || p.Datasource.Type != "prometheus" {
			t.Errorf("%s: datasource %+v, want prometheus %s", name, p.Datasource, dsUID)
		}
		for _, tg := range p.Targets {
			if tg.Datasource != nil && tg.Datasource.UID != dsUID {
				t.Errorf("%s target %s: datasource %+v, want %s", name, tg.RefID, tg.Datasource, dsUID)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s target %s: empty expr", name, tg.RefID)
			}
		}
	}

	var all strings.Builder
	for _, e := range d.queries(t) {
		all.WriteString(e + "\n")
	}
	for _, c := range []struct{ what, re string }{
		{"hit ratio", `kproxy_requests_total\{cache="HIT"`},
		{"requests by outcome", `sum by \(cache\) \(rate\(kproxy_requests_total`},
		{"upstream rate", `rate\(kproxy_upstream_requests_total\{job`},
		{"read budget", `kproxy_upstream_budget_per_second`},
		{"429s from Kalshi", `kproxy_upstream_requests_total\{code="429"`},
		{"429s given by kproxy", `kproxy_requests_total\{code="429"`},
		{"breaker state", `kproxy_breaker_state`},
		{"latency by route", `histogram_quantile\(0\.99, sum by \(le, route\) \(rate\(kproxy_request_duration_seconds_bucket`},
		{"cache bytes", `kproxy_cache_bytes`},
		{"evictions", `rate\(kproxy_cache_evictions_total`},
	} {
		if !regexp.MustCompile(c.re).MatchString(all.String()) {
			t.Errorf("no dashboard query shows %s (want a match for %s)", c.what, c.re)
		}
	}
}

// grafanaVars stands in for Grafana's variables so promtool can parse the
// dashboard's queries.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	`"$job"`, `".*"`, `"$instance"`, `".*"`,
)

// Every dashboard query is valid PromQL: each becomes a recording rule in a
// scratch rules file that promtool checks.
func TestDashboardQueriesParse(t *testing.T) {
	d := loadDashboard(t)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	var where []string
	for w, e := range d.queries(t) {
		where = append(where, w)
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", len(rules)), Expr: grafanaVars.Replace(e)})
		if strings.Contains(grafanaVars.Replace(e), "$") {
			t.Errorf("%s: a Grafana variable the test does not know: %s", w, e)
		}
	}
	data, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool(t), "check", "rules", "dashboard.yml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s\nqueries (in order): %q", err, out, where)
	}
}

// promqlNoise are the parts of a PromQL expression that are not metric
// names: strings, label matchers, ranges, grouping clauses.
var promqlNoise = []*regexp.Regexp{
	regexp.MustCompile(`"(?:[^"\\]|\\.)*"`),
	regexp.MustCompile(`\{[^}]*\}`),
	regexp.MustCompile(`\[[^\]]*\]`),
	regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`),
}

var (
	promqlIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan", "Inf", "NaN"}
)

// metricNames returns the metric names an expression selects: identifiers
// that are neither functions (followed by "(") nor keywords.
func metricNames(expr string) []string {
	s := grafanaVars.Replace(expr)
	for _, re := range promqlNoise {
		s = re.ReplaceAllString(s, " ")
	}
	var names []string
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // the exponent or unit of a number
		}
		id := s[loc[0]:loc[1]]
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") || slices.Contains(promqlKeywords, id) {
			continue
		}
		if !slices.Contains(names, id) {
			names = append(names, id)
		}
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`up{job=~".*kproxy.*"} == 0`, []string{"up"}},
		{`histogram_quantile(0.99, sum by (le, route) (rate(kproxy_request_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))`, []string{"kproxy_request_duration_seconds_bucket"}},
		{"sum(rate(a_total[5m])) / max(b) > 0.5 * 1e3 and on (instance) c offset 1h", []string{"a_total", "b", "c"}},
	} {
		if got := metricNames(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("metricNames(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
}

// scrapeKproxy runs kproxy in-process in front of the fake Kalshi, sends it
// traffic that creates a series of every labelled family (hits, misses, a
// retried 503, collapsed requests, a batch) and returns the names of the
// samples /metrics exposes, with its sample lines. Its read and write
// budgets are 1000 and 10 requests/s.
func scrapeKproxy(t *testing.T) (map[string]bool, []string) {
	t.Helper()
	p := kproxytest.New(t, kproxytest.WithConfig(func(cfg *config.Config) {
		read, write := 1000.0, 10.0
		cfg.Upstream.ReadRate, cfg.Upstream.WriteRate = &read, &write
	}))
	fake := p.Fake
	do := func(method, path, body string) {
		t.Helper()
		req, err := http.NewRequest(method, p.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	do("GET", "/trade-api/v2/series/KXFEDDECISION", "")                  // MISS
	do("GET", "/trade-api/v2/series/KXFEDDECISION", "")                  // HIT
	do("GET", "/trade-api/v2/portfolio/balance", "")                     // BYPASS
	do("POST", "/batch/series", `{"series_tickers": ["KXFEDDECISION"]}`) // batch item
	fake.SetFault(kalshitest.Fault{Status: http.StatusServiceUnavailable, Times: 1})
	do("GET", "/trade-api/v2/markets/KXFEDDECISION-26JUN30-H0", "") // a retried 503

	// Collapsed requests: the fake holds the first fetch until all eight
	// requests have reached kproxy, so seven join it.
	release := fake.Stall()
	market := "/trade-api/v2/markets/" + fake.MarketTickers("KXEARNINGSMENTIONMETA")[0]
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { kproxytest.Send(http.MethodGet, p.URL+market, nil) })
	}
	kproxytest.Eventually(t, 5*time.Second, "the first fetch reaches the fake", func() bool { return fake.Count(market) == 1 })
	p.AwaitInFlight(8)
	release()
	wg.Wait()

	resp, err := http.Get(p.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	var samples []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
			samples = append(samples, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names, samples
}

// Every metric the dashboard and the alert rules read is one kproxy
// exports (histograms as _bucket, _sum, _count), so no panel stays empty
// and no alert waits on a series that never comes. up is Prometheus's own.
func TestMonitoringMetricsExist(t *testing.T) {
	exported, samples := scrapeKproxy(t)
	queries := loadDashboard(t).queries(t)
	for _, r := range alertRules(t) {
		if r.Alert != "" {
			queries["alert "+r.Alert] = r.Expr
		}
	}
	used := 0
	for where, expr := range queries {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric found in %q", where, expr)
		}
		for _, n := range names {
			used++
			if n == "up" {
				continue
			}
			if !exported[n] {
				t.Errorf("%s: metric %s is not in kproxy's /metrics output", where, n)
			}
		}
	}
	if used < 30 {
		t.Errorf("only %d metric references found in the dashboard and rules; the extraction is broken", used)
	}
	// The budget the dashboard draws the upstream rate against is the
	// configured one.
	for _, want := range []string{
		`kproxy_upstream_budget_per_second{kind="read"} 1000`,
		`kproxy_upstream_budget_per_second{kind="write"} 10`,
	} {
		if !slices.Contains(samples, want) {
			t.Errorf("/metrics has no line %s", want)
		}
	}
}

// The headline panels compute what their titles say: promtool evaluates
// their queries on known series, per minute: 480 hits, 60 stale answers
// and 60 misses on the market list, 120 batch items, 600 bypasses; 120
// upstream calls for the market list (misses and stale refreshes), 60 for
// the batch items' events and 60 private pass-throughs; 30 collapsed
// requests (they save nothing beyond what the upstream count shows); a
// read budget of 8/s; an open breaker. Hit ratio 480/600; calls avoided
// 1 - 180/720 (pass-throughs are no cached route's calls); upstream rate
// 4/s of 8. Whole rates per second: the figures are exact in binary,
// whatever order the sums add in.
func TestDashboardHeadlineNumbers(t *testing.T) {
	d := loadDashboard(t)
	expr := func(title string) string {
		for _, p := range d.allPanels() {
			if p.Title == title && len(p.Targets) > 0 {
				return grafanaVars.Replace(p.Targets[0].Expr)
			}
		}
		t.Fatalf("no panel %q", title)
		return ""
	}
	lbl := `job="kproxy", instance="k1:8080"`
	req := func(cache string) string {
		return `kproxy_requests_total{` + lbl + `, route="/trade-api/v2/markets", method="GET", code="200", cache="` + cache + `"}`
	}
	upstream := func(route string) string {
		return `kproxy_upstream_requests_total{` + lbl + `, route="` + route + `", code="200"}`
	}
	type sample struct {
		Labels string  `yaml:"labels"`
		Value  float64 `yaml:"value"`
	}
	type exprTest struct {
		Expr       string   `yaml:"expr"`
		EvalTime   string   `yaml:"eval_time"`
		ExpSamples []sample `yaml:"exp_samples"`
	}
	check := func(title string, want float64) exprTest {
		return exprTest{Expr: expr(title), EvalTime: "10m", ExpSamples: []sample{{Labels: "{}", Value: want}}}
	}
	doc := map[string]any{
		"tests": []any{map[string]any{
			"interval": "1m",
			"input_series": []map[string]string{
				{"series": req("HIT"), "values": "0+480x10"},
				{"series": req("STALE"), "values": "0+60x10"},
				{"series": req("MISS"), "values": "0+60x10"},
				{"series": req("BYPASS"), "values": "0+600x10"},
				{"series": `kproxy_batch_items_total{` + lbl + `, status="200"}`, "values": "0+120x10"},
				{"series": `kproxy_coalesced_total{` + lbl + `, route="/trade-api/v2/markets"}`, "values": "0+30x10"},
				{"series": upstream("/trade-api/v2/markets"), "values": "0+120x10"},
				{"series": upstream("/trade-api/v2/events/{event_ticker}"), "values": "0+60x10"},
				{"series": upstream("/trade-api/v2/portfolio/*"), "values": "0+60x10"},
				{"series": `kproxy_upstream_budget_per_second{` + lbl + `, kind="read"}`, "values": "8x10"},
				{"series": `kproxy_upstream_budget_per_second{` + lbl + `, kind="write"}`, "values": "10x10"},
				{"series": `kproxy_breaker_state{` + lbl + `}`, "values": "0 0 0 0 0 0 0 0 2 2 2"},
			},
			"promql_expr_test": []exprTest{
				check("Hit ratio (5m)", 0.8),
				check("Upstream calls avoided (5m)", 0.75),
				check("Upstream rate / read budget", 0.5),
				check("Circuit breaker", 2),
			},
		}},
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "headline_test.yml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "test", "rules", "headline_test.yml")
}
