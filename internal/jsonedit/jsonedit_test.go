package jsonedit

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestMembers(t *testing.T) {
	doc := []byte(` { "a" : 1 , "b":"x\"}" ,"c":{"d":[1,{"e":"]"}]},"f":[ ],"g":null,"h":-1.5e3 } `)
	if !json.Valid(doc) {
		t.Fatal("test document is not valid JSON")
	}
	ms, ok := Members(nil, doc, SkipSpace(doc, 0))
	if !ok {
		t.Fatal("Members: not an object")
	}
	want := map[string]string{"a": `1`, "b": `"x\"}"`, "c": `{"d":[1,{"e":"]"}]}`, "f": `[ ]`, "g": `null`, "h": `-1.5e3`}
	if len(ms) != len(want) {
		t.Fatalf("%d members, want %d", len(ms), len(want))
	}
	for _, m := range ms {
		if got := string(doc[m.Start:m.End]); got != want[string(m.Key)] {
			t.Errorf("member %s = %s, want %s", m.Key, got, want[string(m.Key)])
		}
	}
	if _, ok := Members(nil, doc, 0); ok {
		t.Error("Members at a space: ok, want not an object")
	}
}

func TestElements(t *testing.T) {
	doc := []byte(`[ 1, "a,b" ,{"x":[2,3]},[],  true ]`)
	var got []string
	Elements(doc, 0, func(s, e int) bool { got = append(got, string(doc[s:e])); return true })
	if want := []string{`1`, `"a,b"`, `{"x":[2,3]}`, `[]`, `true`}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Elements = %q, want %q", got, want)
	}
	got = nil
	Elements(doc, 0, func(s, e int) bool { got = append(got, string(doc[s:e])); return len(got) < 2 })
	if len(got) != 2 {
		t.Errorf("Elements went on after yield returned false: %q", got)
	}
	if Elements([]byte(`{}`), 0, func(int, int) bool { return true }) {
		t.Error("Elements of an object reported an array")
	}
}

func TestEdits(t *testing.T) {
	doc := []byte(`{"a":"1","b":2}`)
	var ed Edits
	if out := ed.Apply(doc); &out[0] != &doc[0] {
		t.Error("Apply without edits copied the document")
	}
	ms, _ := Members(nil, doc, 0)
	a, _ := Find(ms, "a")
	b, _ := Find(ms, "b")
	ed.Insert(b.End, []byte(`,"d":4`))
	ed.Replace(a.Start, a.End, []byte(`"one"`))
	ed.Insert(a.End, []byte(`,"c":3`))
	ed.Insert(b.End, []byte(`,"e":5`))
	if got, want := string(ed.Apply(doc)), `{"a":"one","c":3,"b":2,"d":4,"e":5}`; got != want {
		t.Errorf("Apply = %s, want %s", got, want)
	}
	if string(doc) != `{"a":"1","b":2}` {
		t.Errorf("Apply modified its input: %s", doc)
	}
}

func TestPlainString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{{`"0.33"`, "0.33", true}, {`""`, "", true}, {`"a\"b"`, "", false}, {`12`, "", false}, {`null`, "", false}} {
		got, ok := PlainString([]byte(tc.in), 0, len(tc.in))
		if string(got) != tc.want || ok != tc.ok {
			t.Errorf("PlainString(%s) = %q, %v, want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
