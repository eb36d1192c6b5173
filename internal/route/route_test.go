package route

import (
	"testing"
	"time"
)

func TestKey(t *testing.T) {
	tests := []struct {
		name, path, query, want string
	}{
		{"no query", "/trade-api/v2/markets", "", "/trade-api/v2/markets"},
		{"sorted already", "/p", "a=1&b=2", "/p?a=1&b=2"},
		{"sorts by name", "/p", "status=open&limit=5&series_ticker=X", "/p?limit=5&series_ticker=X&status=open"},
		{"keeps repeated order", "/p", "tickers=B&a=1&tickers=A", "/p?a=1&tickers=B&tickers=A"},
		{"keeps comma list order", "/p", "tickers=B,A", "/p?tickers=B,A"},
		{"drops empty pairs", "/p", "&a=1&&b=2&", "/p?a=1&b=2"},
		{"normalizes escapes", "/p", "status=%6Fpen&x=a%2Cb", "/p?status=open&x=a,b"},
		{"escapes specials", "/p", "q=a b&r=%26", "/p?q=a%20b&r=%26"},
		{"plus is a space", "/p", "q=a+b", "/p?q=a%20b"},
		{"name without value", "/p", "b&a", "/p?a=&b="},
		{"bad escape kept", "/p", "a=%zz", "/p?a=%25zz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Key(tt.path, tt.query); got != tt.want {
				t.Errorf("Key(%q, %q) = %q, want %q", tt.path, tt.query, got, tt.want)
			}
		})
	}
}

func TestKeyIsStable(t *testing.T) {
	// A key fed back in is its own key.
	for _, q := range []string{"b=2&a=1", "q=a b&r=%26", "tickers=B&tickers=A"} {
		k := Key("/p", q)
		_, canon, _ := cut(k)
		if again := Key("/p", canon); again != k {
			t.Errorf("Key of canonical %q = %q, want unchanged", k, again)
		}
	}
}

func cut(k string) (string, string, bool) {
	for i := range k {
		if k[i] == '?' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

func testTable(t *testing.T) *Table {
	t.Helper()
	specs := []Spec{}
	for _, p := range []string{
		"markets", "markets/{ticker}", "markets/trades", "markets/{ticker}/orderbook",
		"events/{event_ticker}", "events/multivariate",
		"live_data/milestone/{id}", "live_data/{type}/milestone/{id}",
	} {
		specs = append(specs, Spec{Pattern: Prefix + p, Policy: Policy{TTL: time.Second}})
	}
	tab, err := NewTable(specs)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestMatch(t *testing.T) {
	tab := testTable(t)
	tests := []struct{ path, want string }{
		{"/trade-api/v2/markets", "/trade-api/v2/markets"},
		{"/trade-api/v2/markets/KX-1", "/trade-api/v2/markets/{ticker}"},
		{"/trade-api/v2/markets/trades", "/trade-api/v2/markets/trades"},
		{"/trade-api/v2/markets/trades/orderbook", "/trade-api/v2/markets/{ticker}/orderbook"},
		{"/trade-api/v2/markets/KX-1/orderbook", "/trade-api/v2/markets/{ticker}/orderbook"},
		{"/trade-api/v2/events/multivariate", "/trade-api/v2/events/multivariate"},
		{"/trade-api/v2/live_data/milestone/7", "/trade-api/v2/live_data/milestone/{id}"},
		{"/trade-api/v2/live_data/nfl/milestone/7", "/trade-api/v2/live_data/{type}/milestone/{id}"},
		{"/trade-api/v2/markets/", ""},
		{"/trade-api/v2/markets/KX-1/other", ""},
		{"/trade-api/v2/portfolio/balance", ""},
		{"/trade-api/v2", ""},
		{"/other", ""},
	}
	for _, tt := range tests {
		got := ""
		if r := tab.Match(tt.path); r != nil {
			got = r.Pattern
		}
		if got != tt.want {
			t.Errorf("Match(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestNewTableRejectsBadPatterns(t *testing.T) {
	for _, p := range []string{
		"/markets", Prefix, Prefix + "portfolio/balance", Prefix + "account/limits",
		Prefix + "historical/fills", Prefix + "markets//x", Prefix + "m{x}", Prefix + "a/../b",
	} {
		if _, err := NewTable([]Spec{{Pattern: p}}); err == nil {
			t.Errorf("NewTable(%q) succeeded, want an error", p)
		}
	}
	_, err := NewTable([]Spec{{Pattern: Prefix + "a/{x}"}, {Pattern: Prefix + "a/{y}"}})
	if err == nil {
		t.Errorf("duplicate patterns accepted")
	}
}

func TestIsPrivate(t *testing.T) {
	tests := map[string]bool{
		"/trade-api/v2/portfolio":                                     true,
		"/trade-api/v2/portfolio/orders":                              true,
		"/trade-api/v2/portfolioX":                                    false,
		"/trade-api/v2/historical/fills":                              true,
		"/trade-api/v2/historical/markets":                            false,
		"/trade-api/v2/exchange/user_data_timestamp":                  true,
		"/trade-api/v2/series/S/events/E/forecast_percentile_history": true,
		"/trade-api/v2/api_keys/generate":                             true,
		"/trade-api/v2/markets":                                       false,
	}
	for path, want := range tests {
		if got := IsPrivate(path); got != want {
			t.Errorf("IsPrivate(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestCheckPath(t *testing.T) {
	tests := []struct {
		escaped, decoded string
		want             error
	}{
		{"/trade-api/v2/markets/KX-1", "/trade-api/v2/markets/KX-1", nil},
		{"/trade-api/v2/markets/", "/trade-api/v2/markets/", nil},
		{"/trade-api/v2/../x", "/trade-api/v2/../x", ErrDotSegment},
		{"/trade-api/v2/./x", "/trade-api/v2/./x", ErrDotSegment},
		{"/trade-api/v2/%2e%2e/x", "/trade-api/v2/../x", ErrDotSegment},
		{"/trade-api/v2/a%2fb", "/trade-api/v2/a/b", ErrEncodedSlash},
		{"/trade-api/v2/a%5Cb", "/trade-api/v2/a\\b", ErrBackslash},
		{"/trade-api/v2/a\\b", "/trade-api/v2/a\\b", ErrBackslash},
		{"/trade-api/v2/a%00", "/trade-api/v2/a\x00", ErrControl},
		{"/trade-api/v2/a%7f", "/trade-api/v2/a\x7f", ErrControl},
		{"/trade-api/v2//host/x", "/trade-api/v2//host/x", ErrEmptySegment},
	}
	for _, tt := range tests {
		if got := CheckPath(tt.escaped, tt.decoded); got != tt.want {
			t.Errorf("CheckPath(%q) = %v, want %v", tt.escaped, got, tt.want)
		}
	}
	long := "/trade-api/v2/" + string(make([]byte, MaxPathLen))
	if got := CheckPath(long, long); got != ErrTooLong {
		t.Errorf("CheckPath(long) = %v, want %v", got, ErrTooLong)
	}
}

func TestLabelNeverARawPath(t *testing.T) {
	tab := testTable(t)
	tests := map[string]string{
		"/trade-api/v2/markets/KX-1":       "/trade-api/v2/markets/{ticker}",
		"/trade-api/v2/portfolio/orders/9": "/trade-api/v2/portfolio/*",
		"/trade-api/v2/random/123":         "/trade-api/v2/*",
	}
	for path, want := range tests {
		if got := Label(path, tab.Match(path)); got != want {
			t.Errorf("Label(%q) = %q, want %q", path, got, want)
		}
	}
}

func BenchmarkKeyCanonical(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Key("/trade-api/v2/markets", "limit=200&series_ticker=KXEARNINGSMENTIONMETA&status=open")
	}
}

func BenchmarkKeyUnsorted(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Key("/trade-api/v2/markets", "status=open&series_ticker=KXEARNINGSMENTIONMETA&limit=200")
	}
}

func BenchmarkMatch(b *testing.B) {
	tab, _ := NewTable([]Spec{{Pattern: Prefix + "markets"}, {Pattern: Prefix + "markets/{ticker}"}, {Pattern: Prefix + "markets/{ticker}/orderbook"}})
	b.ReportAllocs()
	for b.Loop() {
		tab.Match("/trade-api/v2/markets/KXEARNINGSMENTIONMETA-26JUN30-VR/orderbook")
	}
}

func TestIsPrivateSeesThroughCaseAndParams(t *testing.T) {
	for _, p := range []string{
		"/trade-api/v2/portfolio;a/balance",
		"/trade-api/v2/PORTFOLIO/balance",
		"/trade-api/v2/Portfolio;x=1/orders",
		"/trade-api/v2/series/S/markets/M/Forecast_Percentile_History",
	} {
		if !IsPrivate(p) {
			t.Errorf("IsPrivate(%q) = false, want true", p)
		}
	}
	if IsPrivate("/trade-api/v2/markets;a") {
		t.Errorf("IsPrivate(/trade-api/v2/markets;a) = true, want false")
	}
}
