package legacy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/route"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode: %v\n%s", err, b)
	}
	return v
}

func marketsOf(t testing.TB, v any) []map[string]any {
	t.Helper()
	arr, ok := v.([]any)
	if !ok {
		t.Fatalf("markets = %T, want an array", v)
	}
	out := make([]map[string]any, len(arr))
	for i, m := range arr {
		out[i] = m.(map[string]any)
	}
	return out
}

// derivedNames matches one inserted member, as the shim writes it.
var derivedNames = func() *regexp.Regexp {
	var names []string
	for _, f := range append(append([]Field{}, MarketFields...), TradeFields...) {
		names = append(names, f.Name)
	}
	return regexp.MustCompile(`,"(` + strings.Join(names, "|") + `)":-?[0-9]+`)
}()

// wantOnlyInsertions fails unless out is in with members inserted and
// nothing else changed: deleting the inserted members gives in back byte
// for byte.
func wantOnlyInsertions(t *testing.T, in, out []byte) {
	t.Helper()
	if back := derivedNames.ReplaceAll(out, nil); !bytes.Equal(back, in) {
		t.Errorf("removing the derived members does not give the upstream body back:\n got %s\nwant %s", back, in)
	}
}

// wantLegacy fails unless each market in got has every legacy field of the
// corresponding pre-March-2026 market, with the same value.
func wantLegacy(t *testing.T, got, old []map[string]any) {
	t.Helper()
	if len(got) != len(old) {
		t.Fatalf("%d markets, want %d", len(got), len(old))
	}
	for i := range got {
		for _, f := range MarketFields {
			if g, w := got[i][f.Name], old[i][f.Name]; g != w {
				t.Errorf("market %v: %s = %v, want %v (from %s %v)", got[i]["ticker"], f.Name, g, w, f.From, got[i][f.From])
			}
		}
	}
}

func TestMarketsPageMatchesPreMigrationFields(t *testing.T) {
	in := read(t, "markets_page.json")
	out := Apply(Markets, in)
	wantOnlyInsertions(t, in, out)
	old := marketsOf(t, decode(t, read(t, "markets_page_legacy_pre_2026-03-12.json"))["markets"])
	wantLegacy(t, marketsOf(t, decode(t, out)["markets"]), old)
}

func TestMarketsPageGolden(t *testing.T) {
	out := Apply(Markets, read(t, "markets_page.json"))
	golden := filepath.Join("testdata", "markets_page.legacy.golden.json")
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := read(t, "markets_page.legacy.golden.json"); !bytes.Equal(out, want) {
		t.Errorf("Apply(markets_page.json) differs from %s:\n%s", golden, out)
	}
}

func TestPreMigrationBodyUnchanged(t *testing.T) {
	in := read(t, "markets_page_legacy_pre_2026-03-12.json")
	if out := Apply(Markets, in); !sameSlice(out, in) {
		t.Errorf("Apply changed a body that has every legacy field already:\n%s", out)
	}
}

func TestExistingFieldNeverOverwritten(t *testing.T) {
	in := []byte(`{"market":{"ticker":"A","yes_bid_dollars":"0.3300","yes_bid":99,"volume":"odd","volume_fp":"10.00"}}`)
	out := Apply(Market, in)
	want := `{"market":{"ticker":"A","yes_bid_dollars":"0.3300","yes_bid":99,"volume":"odd","volume_fp":"10.00"}}`
	if string(out) != want {
		t.Errorf("Apply = %s, want %s", out, want)
	}
}

func TestSingleMarket(t *testing.T) {
	page := decode(t, read(t, "markets_page.json"))
	one, _ := json.Marshal(map[string]any{"market": marketsOf(t, page["markets"])[1]})
	out := Apply(Market, one)
	wantOnlyInsertions(t, one, out)
	old := marketsOf(t, decode(t, read(t, "markets_page_legacy_pre_2026-03-12.json"))["markets"])[1:2]
	wantLegacy(t, []map[string]any{decode(t, out)["market"].(map[string]any)}, old)
}

func TestEventNestedAndTopLevelMarkets(t *testing.T) {
	old := marketsOf(t, decode(t, read(t, "markets_page_legacy_pre_2026-03-12.json"))["markets"])
	for _, name := range []string{"event_with_nested_markets.json", "event_without_nested_markets.json"} {
		t.Run(name, func(t *testing.T) {
			in := read(t, name)
			out := Apply(Event, in)
			wantOnlyInsertions(t, in, out)
			v := decode(t, out)
			n := 0
			if nested, ok := v["event"].(map[string]any)["markets"]; ok && nested != nil {
				wantLegacy(t, marketsOf(t, nested), old[:len(nested.([]any))])
				n++
			}
			if top, ok := v["markets"]; ok {
				wantLegacy(t, marketsOf(t, top), old[:len(top.([]any))])
				n++
			}
			if n == 0 {
				t.Fatal("no markets found in the sample")
			}
		})
	}
}

func TestEventsList(t *testing.T) {
	ev := decode(t, read(t, "event_with_nested_markets.json"))["event"]
	in, _ := json.Marshal(map[string]any{"events": []any{ev, ev}, "cursor": ""})
	out := Apply(Events, in)
	wantOnlyInsertions(t, in, out)
	old := marketsOf(t, decode(t, read(t, "markets_page_legacy_pre_2026-03-12.json"))["markets"])
	for _, e := range decode(t, out)["events"].([]any) {
		nested := e.(map[string]any)["markets"].([]any)
		wantLegacy(t, marketsOf(t, nested), old[:len(nested)])
	}
}

func TestOrderbook(t *testing.T) {
	in := read(t, "orderbook.json")
	out := Apply(Orderbook, in)
	// The book's object ends right before the body's final "\n}": the new
	// member goes there and nothing else moves.
	k := bytes.LastIndex(in, []byte("\n}"))
	if !bytes.HasPrefix(out, in[:k]) || !bytes.HasSuffix(out, in[k:]) || !bytes.HasPrefix(out[k:], []byte(`,"orderbook":{`)) {
		t.Errorf("Apply(orderbook) changed more than adding orderbook after orderbook_fp:\n%s", out)
	}
	var v struct {
		Orderbook struct{ Yes, No [][]int } `json:"orderbook"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	wantYes := [][]int{{30, 500}, {32, 210}, {33, 150}}
	wantNo := [][]int{{60, 800}, {62, 120}, {63, 42}}
	if !reflect.DeepEqual(v.Orderbook.Yes, wantYes) || !reflect.DeepEqual(v.Orderbook.No, wantNo) {
		t.Errorf("orderbook = %v / %v, want %v / %v", v.Orderbook.Yes, v.Orderbook.No, wantYes, wantNo)
	}
}

func TestOrderbookShapes(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty book", `{"orderbook_fp":{}}`, `{"orderbook_fp":{},"orderbook":{"yes":[],"no":[]}}`},
		{"null side", `{"orderbook_fp":{"yes_dollars":null,"no_dollars":[["0.5000","1.50"]]}}`,
			`{"orderbook_fp":{"yes_dollars":null,"no_dollars":[["0.5000","1.50"]]},"orderbook":{"yes":[],"no":[[50,1]]}}`},
		{"present already", `{"orderbook_fp":{},"orderbook":{"yes":[[1,1]]}}`, `{"orderbook_fp":{},"orderbook":{"yes":[[1,1]]}}`},
		{"bad level", `{"orderbook_fp":{"yes_dollars":[["0.5000"]]}}`, `{"orderbook_fp":{"yes_dollars":[["0.5000"]]}}`},
		{"number level", `{"orderbook_fp":{"yes_dollars":[[0.5,1]]}}`, `{"orderbook_fp":{"yes_dollars":[[0.5,1]]}}`},
		{"three parts", `{"orderbook_fp":{"yes_dollars":[["0.5000","1.00","x"]]}}`, `{"orderbook_fp":{"yes_dollars":[["0.5000","1.00","x"]]}}`},
		{"side not array", `{"orderbook_fp":{"yes_dollars":"x"}}`, `{"orderbook_fp":{"yes_dollars":"x"}}`},
	} {
		if got := Apply(Orderbook, []byte(tc.in)); string(got) != tc.want {
			t.Errorf("%s: Apply(%s) = %s, want %s", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestTrades(t *testing.T) {
	in := read(t, "trades.json")
	out := Apply(Trades, in)
	wantOnlyInsertions(t, in, out)
	var v struct {
		Trades []struct {
			Count    int `json:"count"`
			YesPrice int `json:"yes_price"`
			NoPrice  int `json:"no_price"`
		} `json:"trades"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	type trade struct{ count, yes, no int }
	want := []trade{{136, 36, 64}, {2, 37, 64}}
	if len(v.Trades) != len(want) {
		t.Fatalf("%d trades, want %d", len(v.Trades), len(want))
	}
	for i, w := range want {
		if got := (trade{v.Trades[i].Count, v.Trades[i].YesPrice, v.Trades[i].NoPrice}); got != w {
			t.Errorf("trade %d = %+v, want %+v", i, got, w)
		}
	}
}

// sameSlice reports whether a is b itself (not a copy).
func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func TestUnchanged(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind Kind
		in   string
	}{
		{"invalid JSON", Markets, `{"markets":[{"yes_bid_dollars":"0.33"}]`},
		{"trailing garbage", Markets, `{"markets":[{"yes_bid_dollars":"0.33"}]} x`},
		{"empty body", Markets, ``},
		{"not an object", Markets, `[{"yes_bid_dollars":"0.33"}]`},
		{"markets null", Markets, `{"markets":null,"cursor":""}`},
		{"markets an object", Markets, `{"markets":{"yes_bid_dollars":"0.33"}}`},
		{"market an array", Market, `{"market":[{"yes_bid_dollars":"0.33"}]}`},
		{"elements not objects", Markets, `{"markets":[1,"x",null,[]]}`},
		{"kind none", None, `{"markets":[{"yes_bid_dollars":"0.33"}]}`},
		{"empty price", Market, `{"market":{"last_price_dollars":""}}`},
		{"number price", Market, `{"market":{"last_price_dollars":0.33}}`},
		{"escaped price", Market, `{"market":{"last_price_dollars":"0.3\u0033"}}`},
		{"exponent", Market, `{"market":{"last_price_dollars":"3.3e-1"}}`},
		{"error body", Market, `{"error":{"code":"not_found","message":"x"}}`},
		{"events without markets", Events, `{"events":[{"event_ticker":"E"}],"cursor":""}`},
	} {
		in := []byte(tc.in)
		if out := Apply(tc.kind, in); !sameSlice(out, in) {
			t.Errorf("%s: Apply(%s) = %s, want the body itself", tc.name, tc.in, out)
		}
	}
}

func TestCompactAndNestedShapes(t *testing.T) {
	in := `{ "markets" : [ { "ticker" : "A" , "yes_bid_dollars" : "0.0050" , "custom_strike" : {"yes_bid_dollars":"0.9900"} } , {"volume_fp":"4918.41"} ] }`
	want := `{ "markets" : [ { "ticker" : "A" , "yes_bid_dollars" : "0.0050","yes_bid":1 , "custom_strike" : {"yes_bid_dollars":"0.9900"} } , {"volume_fp":"4918.41","volume":4918} ] }`
	if got := Apply(Markets, []byte(in)); string(got) != want {
		t.Errorf("Apply = %s\nwant   %s", got, want)
	}
}

func TestCentsAndContracts(t *testing.T) {
	for _, tc := range []struct {
		in           string
		cents, count int64
		ok           bool
	}{
		{"0.3300", 33, 0, true},
		{"1.0000", 100, 1, true},
		{"0.125", 13, 0, true},
		{"0.1249", 12, 0, true},
		{"0.0050", 1, 0, true},
		{"0.0049", 0, 0, true},
		{"4918.41", 491841, 4918, true},
		{"12", 1200, 12, true},
		{"0.5", 50, 0, true},
		{"-0.125", -13, 0, true},
		{"-2.50", -250, -2, true},
		{"0.999999", 100, 0, true},
		{"", 0, 0, false},
		{"-", 0, 0, false},
		{".5", 0, 0, false},
		{"5.", 0, 0, false},
		{"1e2", 0, 0, false},
		{"0x10", 0, 0, false},
		{"1.2.3", 0, 0, false},
		{"1234567890123456", 0, 0, false},
	} {
		c, ok := Cents([]byte(tc.in))
		if ok != tc.ok || c != tc.cents {
			t.Errorf("Cents(%q) = %d, %v, want %d, %v", tc.in, c, ok, tc.cents, tc.ok)
		}
		n, ok := Contracts([]byte(tc.in))
		if ok != tc.ok || n != tc.count {
			t.Errorf("Contracts(%q) = %d, %v, want %d, %v", tc.in, n, ok, tc.count, tc.ok)
		}
	}
}

func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		want    Kind
	}{
		{"/trade-api/v2/markets", Markets},
		{"/trade-api/v2/markets/{ticker}", Market},
		{"/trade-api/v2/markets/{t}", Market},
		{"/trade-api/v2/markets/trades", Trades},
		{"/trade-api/v2/markets/{ticker}/orderbook", Orderbook},
		{"/trade-api/v2/events", Events},
		{"/trade-api/v2/events/{event_ticker}", Event},
		{"/trade-api/v2/events/{event_ticker}/metadata", None},
		{"/trade-api/v2/series/{series_ticker}", None},
		{"/trade-api/v2/markets/candlesticks", None},
		{"/markets", None},
	} {
		if got := KindOf(tc.pattern); got != tc.want {
			t.Errorf("KindOf(%q) = %d, want %d", tc.pattern, got, tc.want)
		}
	}
}

func TestTransformFollowsRoutePolicy(t *testing.T) {
	in := read(t, "markets_page.json")
	off := &route.Route{Pattern: "/trade-api/v2/markets"}
	if out := Transform(off, in); !sameSlice(out, in) {
		t.Error("Transform with legacy_fields off changed the body")
	}
	on := &route.Route{Pattern: "/trade-api/v2/markets", Policy: route.Policy{LegacyFields: true}}
	if out := Transform(on, in); !bytes.Contains(out, []byte(`"yes_bid":33`)) {
		t.Errorf("Transform with legacy_fields on = %s, want yes_bid", out)
	}
	series := &route.Route{Pattern: "/trade-api/v2/series/{series_ticker}", Policy: route.Policy{LegacyFields: true}}
	if out := Transform(series, in); !sameSlice(out, in) {
		t.Error("Transform changed a route the shim does not cover")
	}
}
