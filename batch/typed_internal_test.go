package batch

import (
	"encoding/json"
	"testing"
)

func TestParseMarketsPage(t *testing.T) {
	tests := []struct {
		name, body, items, cursor string
		bad                       bool
	}{
		{"compact", `{"markets":[{"ticker":"A"},{"ticker":"B"}],"cursor":"c1"}`, `{"ticker":"A"},{"ticker":"B"}`, "c1", false},
		{"pretty", "{\n  \"cursor\": \"\",\n  \"markets\": [\n    {\"ticker\": \"A\",\n     \"n\": 1}\n  ]\n}", `{"ticker":"A","n":1}`, "", false},
		{"empty", `{"markets":[],"cursor":""}`, ``, "", false},
		{"null", `{"markets":null,"cursor":""}`, ``, "", false},
		{"extra members", `{"x":{"markets":[1]},"markets":[{"t":"[\"]"}],"y":[1,2]}`, `{"t":"[\"]"}`, "", false},
		{"not an object", `[1,2]`, ``, "", true},
		{"markets not an array", `{"markets":{"a":1}}`, ``, "", true},
		{"cursor not a string", `{"markets":[],"cursor":5}`, ``, "", true},
		{"truncated", `{"markets":[{"t":1},`, ``, "", true},
		{"invalid element", `{"markets":[tru]}`, ``, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parseMarketsPage([]byte(tt.body)).(*marketsPage)
			if (p.err != nil) != tt.bad {
				t.Fatalf("err = %v, want error: %v", p.err, tt.bad)
			}
			if tt.bad {
				return
			}
			if got := string(p.items([]byte(tt.body))); got != tt.items {
				t.Errorf("items = %q, want %q", got, tt.items)
			}
			if p.cursor != tt.cursor {
				t.Errorf("cursor = %q, want %q", p.cursor, tt.cursor)
			}
		})
	}
}

func TestEncodeAnswerIsValidJSON(t *testing.T) {
	got := encodeAnswer(
		field{"markets_by_series", map[string]json.RawMessage{"B": json.RawMessage(`[{"t":"b"}]`), "A": json.RawMessage(`[]`)}},
		field{"errors", map[string]any{"C": map[string]any{"status": 404}}},
	)
	want := `{"markets_by_series":{"A":[],"B":[{"t":"b"}]},"errors":{"C":{"status":404}}}` + "\n"
	if string(got) != want {
		t.Errorf("encodeAnswer = %s, want %s", got, want)
	}
	if !json.Valid(got) {
		t.Errorf("not valid JSON")
	}
}
