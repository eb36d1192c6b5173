package fetch

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/maphash"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/kproxy/kproxy/internal/header"
	"github.com/kproxy/kproxy/internal/httperr"
	"github.com/kproxy/kproxy/internal/upstream"
)

// ClientHeader names the client a request is made for (fair shares of the
// upstream budget, the status page). kproxy never forwards it upstream.
const ClientHeader = "Kproxy-Client"

// maxClientName bounds a Kproxy-Client value.
const maxClientName = 64

// maxKnownNames bounds each of a Fetcher's tables of derived client names
// (key tags, addresses): well above the clients one kproxy serves. Past it
// a new key or address is named afresh on every request.
const maxKnownNames = 1024

// ErrBadClient is the 400 answer to a Kproxy-Client value ClientName
// refuses; errors.Is matches it.
var ErrBadClient = &upstream.Error{Status: http.StatusBadRequest, Code: httperr.CodeBadClient,
	Msg: "Kproxy-Client must be one value of 1 to 64 bytes of A-Z a-z 0-9 . _ : -"}

// ClientName names the client of a request with header h from remoteAddr:
// its Kproxy-Client value; else "key:" and 8 hex digits of the SHA-256 of
// its KALSHI-ACCESS-KEY (a tag that does not reveal the key); else
// "addr:" and the host of remoteAddr; "" with none of them. A Kproxy-Client
// header that is empty, repeated, longer than 64 bytes or holds a byte
// outside [A-Za-z0-9._:-] is refused with ErrBadClient. It allocates for a
// key or an address: on the hit path use (*Fetcher).ClientName.
func ClientName(h http.Header, remoteAddr string) (string, error) {
	return clientName(h, remoteAddr, nil)
}

// ClientName is the package's ClientName (same names, same errors) with
// the Fetcher's memory of the names it derived: a key or address seen
// before is named without hashing or allocating, so the status page can
// name the client of every hit. Safe for concurrent use.
func (f *Fetcher) ClientName(h http.Header, remoteAddr string) (string, error) {
	return clientName(h, remoteAddr, &f.names)
}

// clientName is ClientName, remembering derived names in known unless it
// is nil.
func clientName(h http.Header, remoteAddr string, known *knownNames) (string, error) {
	if v, ok := h[ClientHeader]; ok {
		if len(v) != 1 || !validClientName(v[0]) {
			return "", ErrBadClient
		}
		return v[0], nil
	}
	if v := h["Kalshi-Access-Key"]; len(v) > 0 && v[0] != "" {
		return known.name(false, v[0]), nil
	}
	if remoteAddr != "" {
		return known.name(true, header.Host(remoteAddr)), nil
	}
	return "", nil
}

// deriveName is the name of access key s, or of address host s.
func deriveName(addr bool, s string) string {
	if addr {
		return "addr:" + s
	}
	sum := sha256.Sum256([]byte(s))
	return "key:" + hex.EncodeToString(sum[:4])
}

// knownNames remembers derived client names: at most maxKnownNames key
// tags and as many addresses. It holds no key: the tables are indexed by
// a per-process keyed hash (maphash) of the key or address. Its zero value
// is empty and ready; a nil *knownNames remembers nothing.
//
// Readers load the tables without a lock; a new name copies its table
// under mu (names are few and stable, lookups are on every hit).
type knownNames struct {
	mu   sync.Mutex // serializes adding a name
	snap atomic.Pointer[nameTables]
}

// nameTables is one immutable state of a knownNames.
type nameTables struct {
	seed        maphash.Seed
	keys, addrs map[uint64]string
}

// name returns the name of access key s (addr false) or address host s.
func (k *knownNames) name(addr bool, s string) string {
	if k == nil {
		return deriveName(addr, s)
	}
	if t := k.snap.Load(); t != nil {
		if n, ok := t.table(addr)[maphash.String(t.seed, s)]; ok {
			return n
		}
	}
	n := deriveName(addr, s)
	k.add(addr, s, n)
	return n
}

func (t *nameTables) table(addr bool) map[uint64]string {
	if addr {
		return t.addrs
	}
	return t.keys
}

// add remembers n as the name of s, unless its table is full.
func (k *knownNames) add(addr bool, s, n string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old := k.snap.Load()
	if old == nil {
		old = &nameTables{seed: maphash.MakeSeed()}
	}
	m := old.table(addr)
	if len(m) >= maxKnownNames {
		return
	}
	next := *old
	cp := make(map[uint64]string, len(m)+1)
	for h, v := range m {
		cp[h] = v
	}
	cp[maphash.String(next.seed, s)] = n
	if addr {
		next.addrs = cp
	} else {
		next.keys = cp
	}
	k.snap.Store(&next)
}

func validClientName(s string) bool {
	if s == "" || len(s) > maxClientName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
