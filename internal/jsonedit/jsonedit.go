// Package jsonedit edits JSON documents at byte level: it finds object
// members and array elements by offset and splices new bytes in, so that
// every byte it was not asked to change stays exactly as it was (key order,
// whitespace, number spellings, escapes).
//
// The scanning functions do not validate: they require a document that
// encoding/json.Valid accepts, and the offsets they are given must be ones
// they returned (or 0). Callers check a document once with json.Valid, then
// scan it as often as they like. Nothing here keeps state between calls;
// every function is safe for concurrent use on a shared, unmodified
// document.
package jsonedit

import (
	"bytes"
	"slices"
)

// Member is one member of a JSON object, as offsets into the document.
type Member struct {
	// Key is the raw key between its quotes (escapes are not decoded: a key
	// written with escapes does not equal its plain spelling).
	Key []byte
	// Start and End bound the member's value: doc[Start:End].
	Start, End int
}

// SkipSpace returns the offset of the first non-space byte at or after i.
func SkipSpace(doc []byte, i int) int {
	for i < len(doc) {
		switch doc[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// Skip returns the offset just past the value that starts at doc[i] (no
// leading space), or -1 when i is out of range.
func Skip(doc []byte, i int) int {
	if i < 0 || i >= len(doc) {
		return -1
	}
	switch doc[i] {
	case '"':
		return skipString(doc, i)
	case '{', '[':
		depth := 0
		for i < len(doc) {
			switch doc[i] {
			case '"':
				i = skipString(doc, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default:
		// A number, true, false or null: up to the next delimiter.
		for i < len(doc) {
			switch doc[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the offset just past the string starting at doc[i].
func skipString(doc []byte, i int) int {
	i++
	for {
		q := bytes.IndexByte(doc[i:], '"')
		if q < 0 {
			return -1
		}
		i += q
		// The quote ends the string unless an odd number of backslashes
		// escapes it.
		n := 0
		for j := i - 1; j >= 0 && doc[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return i + 1
		}
		i++
	}
}

// Members appends to dst the members of the object that starts at doc[i]
// (no leading space) and returns them; ok is false when doc[i] is not '{'.
func Members(dst []Member, doc []byte, i int) (_ []Member, ok bool) {
	if i < 0 || i >= len(doc) || doc[i] != '{' {
		return dst, false
	}
	i = SkipSpace(doc, i+1)
	for i < len(doc) && doc[i] == '"' {
		keyEnd := skipString(doc, i)
		key := doc[i+1 : keyEnd-1]
		i = SkipSpace(doc, keyEnd)
		i = SkipSpace(doc, i+1) // the colon
		end := Skip(doc, i)
		if end < 0 {
			return dst, false
		}
		dst = append(dst, Member{Key: key, Start: i, End: end})
		i = SkipSpace(doc, end)
		if i < len(doc) && doc[i] == ',' {
			i = SkipSpace(doc, i+1)
		}
	}
	return dst, true
}

// Find returns the member named key.
func Find(members []Member, key string) (Member, bool) {
	for _, m := range members {
		if string(m.Key) == key {
			return m, true
		}
	}
	return Member{}, false
}

// Elements calls yield with the bounds of each element of the array that
// starts at doc[i] (no leading space), until yield returns false. It
// reports false when doc[i] is not '['.
func Elements(doc []byte, i int, yield func(start, end int) bool) bool {
	if i < 0 || i >= len(doc) || doc[i] != '[' {
		return false
	}
	i = SkipSpace(doc, i+1)
	for i < len(doc) && doc[i] != ']' {
		end := Skip(doc, i)
		if end < 0 {
			return false
		}
		if !yield(i, end) {
			return true
		}
		i = SkipSpace(doc, end)
		if i < len(doc) && doc[i] == ',' {
			i = SkipSpace(doc, i+1)
		}
	}
	return true
}

// PlainString returns the contents of the string value doc[start:end]
// when it is a string without escapes (every value kproxy edits is one).
func PlainString(doc []byte, start, end int) ([]byte, bool) {
	if end-start < 2 || doc[start] != '"' || doc[end-1] != '"' {
		return nil, false
	}
	s := doc[start+1 : end-1]
	if bytes.IndexByte(s, '\\') >= 0 {
		return nil, false
	}
	return s, true
}

// Edits is a set of splices to make in one document. The zero value is
// empty and ready to use; it is not safe for concurrent use.
type Edits struct {
	list []edit
	buf  []byte // the new texts, one after another
}

type edit struct {
	start, end int // replaced range; start == end inserts
	from, to   int // the new text: buf[from:to]
	seq        int // insertion order, to keep several inserts at one offset in order
}

// Insert adds text at offset at. text is copied: the caller may reuse it.
func (e *Edits) Insert(at int, text []byte) { e.Replace(at, at, text) }

// Replace replaces doc[start:end] with text (copied). Replaced ranges must
// not overlap each other.
func (e *Edits) Replace(start, end int, text []byte) {
	from := len(e.buf)
	e.buf = append(e.buf, text...)
	e.list = append(e.list, edit{start: start, end: end, from: from, to: len(e.buf), seq: len(e.list)})
}

// Len is the number of edits made.
func (e *Edits) Len() int { return len(e.list) }

// Reset empties e, keeping its storage.
func (e *Edits) Reset() { e.list, e.buf = e.list[:0], e.buf[:0] }

// Apply returns doc with the edits made, in a new slice of exactly the
// result's size; with no edits it returns doc itself. doc is not modified.
func (e *Edits) Apply(doc []byte) []byte {
	if len(e.list) == 0 {
		return doc
	}
	slices.SortStableFunc(e.list, func(a, b edit) int {
		if a.start != b.start {
			return a.start - b.start
		}
		return a.seq - b.seq
	})
	n := len(doc) + len(e.buf)
	for _, ed := range e.list {
		n -= ed.end - ed.start
	}
	out := make([]byte, 0, n)
	at := 0
	for _, ed := range e.list {
		out = append(out, doc[at:ed.start]...)
		out = append(out, e.buf[ed.from:ed.to]...)
		at = ed.end
	}
	return append(out, doc[at:]...)
}
