package legacy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// addedNames are the members the shim may add to an object.
var addedNames = func() map[string]bool {
	m := map[string]bool{"orderbook": true}
	for _, f := range MarketFields {
		m[f.Name] = true
	}
	for _, f := range TradeFields {
		m[f.Name] = true
	}
	return m
}()

// within reports where out fails to hold in unchanged, "" when it does:
// every member and element of in is in out with the same value; out's
// objects may only have added members named in addedNames.
func within(in, out any, at string) string {
	switch iv := in.(type) {
	case map[string]any:
		ov, ok := out.(map[string]any)
		if !ok {
			return at + ": object became " + reflect.TypeOf(out).String()
		}
		for k, v := range iv {
			o, ok := ov[k]
			if !ok {
				return at + "." + k + ": removed"
			}
			if w := within(v, o, at+"."+k); w != "" {
				return w
			}
		}
		for k := range ov {
			if _, ok := iv[k]; !ok && !addedNames[k] {
				return at + "." + k + ": added, and not a legacy field"
			}
		}
		return ""
	case []any:
		ov, ok := out.([]any)
		if !ok || len(ov) != len(iv) {
			return at + ": array changed"
		}
		for i := range iv {
			if w := within(iv[i], ov[i], at+"[]"); w != "" {
				return w
			}
		}
		return ""
	default:
		if !reflect.DeepEqual(in, out) {
			return at + ": value changed"
		}
		return ""
	}
}

func decodeAny(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

// FuzzApply (issue 11, item 1): for every kind of answer, the shim never
// panics, never touches invalid JSON, keeps valid JSON valid, never
// changes or removes a member that was there (an existing field is never
// overwritten) and adds only legacy fields; kind None changes nothing.
func FuzzApply(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err == nil && len(b) < 64<<10 {
			for k := None; k <= Trades; k++ {
				f.Add(uint8(k), b)
			}
		}
	}
	for _, s := range []string{
		`{"market":{"yes_bid_dollars":"0.4200","yes_bid":7,"volume_fp":"12.00"}}`,
		`{"markets":[{"yes_ask_dollars":"1e3"},{"no_bid_dollars":"-0.01"},{"last_price_dollars":"0.005"}]}`,
		`{"market":{"yes_bid_dollars":"0.5","yes_bid_dollars":"0.6"}}`,
		`{"orderbook_fp":{"yes_dollars":[["0.42","10.00"]],"no_dollars":[["x","y"]]},"orderbook":1}`,
		`{"trades":[{"count_fp":"3.50","yes_price_dollars":"0.99","no_price_dollars":"0.01"}]}`,
		`{"events":[{"markets":[{"yes_bid_dollars":"0.1"}]}]}`, `{"event":{"markets":[{}]},"markets":[{"open_interest_fp":"99999999999999999999.99"}]}`,
		`{"market":`, `[]`, `null`, ``,
	} {
		for k := None; k <= Trades; k++ {
			f.Add(uint8(k), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		k := Kind(kind % uint8(Trades+1))
		orig := bytes.Clone(body)
		out := Apply(k, body)
		if !bytes.Equal(body, orig) {
			t.Fatalf("Apply(%d, %q) modified its input", k, orig)
		}
		if k == None || !json.Valid(body) {
			if !bytes.Equal(out, body) {
				t.Fatalf("Apply(%d, %q) = %q, want the body unchanged", k, body, out)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("Apply(%d, %q) = %q: not valid JSON", k, body, out)
		}
		in, err1 := decodeAny(body)
		got, err2 := decodeAny(out)
		if err1 != nil || err2 != nil {
			t.Fatalf("decoding: %v, %v", err1, err2)
		}
		if w := within(in, got, "$"); w != "" {
			t.Fatalf("Apply(%d, %q) = %q: %s", k, body, out, w)
		}
	})
}
