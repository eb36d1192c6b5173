package batch

import (
	"encoding/json"
	"testing"

	"github.com/kproxy/kproxy/batch/wire"
)

func TestParseListPage(t *testing.T) {
	tests := []struct {
		name, body, items, cursor string
		bad                       bool
	}{
		{"compact", `{"markets":[{"ticker":"A"},{"ticker":"B"}],"cursor":"c1"}`, `{"ticker":"A"},{"ticker":"B"}`, "c1", false},
		{"pretty", "{\n  \"cursor\": \"\",\n  \"markets\": [\n    {\"ticker\": \"A\",\n     \"n\": 1}\n  ]\n}", `{"ticker":"A","n":1}`, "", false},
		{"empty", `{"markets":[],"cursor":""}`, ``, "", false},
		{"null", `{"markets":null,"cursor":""}`, ``, "", false},
		{"extra members", `{"x":{"markets":[1]},"markets":[{"t":"[\"]"}],"y":[1,2]}`, `{"t":"[\"]"}`, "", false},
		{"repeated member: the last wins", `{"markets":[1],"cursor":"a","markets":[2],"cursor":null}`, `2`, "", false},
		{"next_cursor", `{"markets":[1],"next_cursor":"n"}`, `1`, "n", false},
		{"cursor before next_cursor", `{"next_cursor":"n","cursor":"c","markets":[]}`, ``, "c", false},
		{"not an object", `[1,2]`, ``, "", true},
		{"markets not an array", `{"markets":{"a":1}}`, ``, "", true},
		{"cursor not a string", `{"markets":[],"cursor":5}`, ``, "", true},
		{"next_cursor not a string", `{"markets":[],"next_cursor":[]}`, ``, "", true},
		{"markets replaced by an object", `{"markets":[1],"markets":{}}`, ``, "", true},
		{"truncated", `{"markets":[{"t":1},`, ``, "", true},
		{"invalid element", `{"markets":[tru]}`, ``, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parseListPage([]byte(tt.body)).(*listPage)
			items, err := p.items("markets", []byte(tt.body))
			if err == nil {
				err = p.err
			}
			if (err != nil) != tt.bad {
				t.Fatalf("err = %v, want error: %v", err, tt.bad)
			}
			if tt.bad {
				return
			}
			if got := string(items); got != tt.items {
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

func TestAppendResponseWritesTheBodyAsIs(t *testing.T) {
	tests := []struct {
		name    string
		r       wire.Response
		oneLine bool
		want    string
	}{
		{"no body", wire.Response{ID: "a", Status: 404, Error: "not <found>", Code: "not_found"}, false,
			`{"id":"a","status":404,"error":"not <found>","code":"not_found"}`},
		{"body last, as is", wire.Response{ID: "b", Status: 200, Cache: "HIT", Body: json.RawMessage(`{"x": [1, 2]}`), Pages: 2}, false,
			`{"id":"b","status":200,"cache":"HIT","pages":2,"body":{"x": [1, 2]}}`},
		{"line break kept in a document", wire.Response{ID: "c", Status: 200, Body: json.RawMessage("{\n\"x\":1}")}, false,
			"{\"id\":\"c\",\"status\":200,\"body\":{\n\"x\":1}}"},
		{"line break compacted in a line", wire.Response{ID: "d", Status: 200, Body: json.RawMessage("{\r\n \"x\": \"a\\nb\"\n}"), NextCursor: "c1"}, true,
			`{"id":"d","status":200,"next_cursor":"c1","body":{"x":"a\nb"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendResponse([]byte("x"), tt.r, tt.oneLine))
			if got != "x"+tt.want {
				t.Errorf("appendResponse = %s, want x%s", got, tt.want)
			}
			var back wire.Response
			if err := json.Unmarshal([]byte(tt.want), &back); err != nil || back.ID != tt.r.ID || back.Status != tt.r.Status {
				t.Errorf("does not decode back: %+v, %v", back, err)
			}
		})
	}
}

func TestWithCursor(t *testing.T) {
	tests := []struct{ name, query, cursor, want string }{
		{"no cursor keeps the query", "ticker=A&limit=5", "", "ticker=A&limit=5"},
		{"appended", "ticker=A&limit=5", "c1", "ticker=A&limit=5&cursor=c1"},
		{"replaces the item's cursor", "cursor=old&ticker=A&cursor=older", "new", "ticker=A&cursor=new"},
		{"empty query", "", "c/+=", "cursor=c%2F%2B%3D"},
		{"other encodings kept", "tickers=A%2CB&x=", "c", "tickers=A%2CB&x=&cursor=c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := withCursor(tt.query, tt.cursor); got != tt.want {
				t.Errorf("withCursor(%q, %q) = %q, want %q", tt.query, tt.cursor, got, tt.want)
			}
		})
	}
}
