package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
)

// ErrUnknownKey is the error of a key in the file, or a KPROXY_* variable,
// that names no setting. The message names the key and, when a known one
// is close, suggests it.
var ErrUnknownKey = errors.New("unknown key")

// ErrUnknownVariable is the error of a KPROXY_* variable that names no
// setting.
var ErrUnknownVariable = errors.New("unknown variable")

// knownKeys lists every dotted key of the file, sections and lists
// included, with "[]" where a list index goes ("cache.routes[].ttl").
func knownKeys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		eachField(t, prefix, func(_ int, f reflect.StructField, key string) {
			out = append(out, key)
			switch ft := f.Type; {
			case isScalar(ft):
			case ft.Kind() == reflect.Struct:
				walk(ft, key)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), key+"[]")
			}
		})
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

var listIndex = regexp.MustCompile(`\[\d+\]`)

// unknownKey is the error of an unknown dotted key of the file.
func unknownKey(key string, known []string) error {
	msg := fmt.Errorf("%w %s", ErrUnknownKey, key)
	// Compare with the indexes taken out, then put them back in the
	// suggestion: cache.overrides[2].tll -> cache.overrides[2].ttl.
	indexes := listIndex.FindAllString(key, -1)
	if s := suggest(listIndex.ReplaceAllString(key, "[]"), known); s != "" {
		for _, ix := range indexes {
			s = strings.Replace(s, "[]", ix, 1)
		}
		msg = fmt.Errorf("%w (did you mean %s?)", msg, s)
	}
	return &KeyError{Key: key, Err: msg}
}

// unknownVar is the error of a KPROXY_* variable that names no key; names
// are the variables kproxy reads.
func unknownVar(name string, names []string) error {
	if s := suggest(name, names); s != "" {
		return &KeyError{Key: name, Err: fmt.Errorf("%w %s (did you mean %s?)", ErrUnknownVariable, name, s)}
	}
	return &KeyError{Key: name, Err: fmt.Errorf("%w %s: no configuration key has this name (kproxy -h lists them)", ErrUnknownVariable, name)}
}

// suggest returns the known name closest to name by edit distance when it
// is close enough to be a typo (at most a third of name's length, and 3),
// else the one known name with the same last part (a key put in the wrong
// section: offline -> upstream.offline); "" when there is none.
func suggest(name string, known []string) string {
	best, bestDist := "", 0
	for _, k := range known {
		if d := levenshtein(name, k); best == "" || d < bestDist {
			best, bestDist = k, d
		}
	}
	if limit := min(3, max(1, len(lastPart(name))/3)); best != "" && bestDist <= limit {
		return best
	}
	same := ""
	for _, k := range known {
		if lastPart(k) == lastPart(name) {
			if same != "" {
				return "" // several: no single good guess
			}
			same = k
		}
	}
	return same
}

// lastPart is the part of a dotted key (or a variable name) after its
// section.
func lastPart(name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// levenshtein is the edit distance (insertions, deletions, substitutions)
// between a and b, in bytes: keys and variable names are ASCII.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
