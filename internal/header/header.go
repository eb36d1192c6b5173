// Package header holds the HTTP header rules kproxy's forwarding paths
// share: which fields are hop-by-hop, how X-Forwarded-For grows, and how a
// comma-separated list is walked. It imports nothing of kproxy's.
package header

import (
	"net"
	"net/http"
	"strings"
)

// HopByHop are the connection-specific fields no proxy forwards or stores
// (RFC 9110 section 7.6.1), in canonical form.
var HopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// Set returns a lookup set of names (canonical form) plus HopByHop.
func Set(names ...string) map[string]bool {
	s := make(map[string]bool, len(names)+len(HopByHop))
	for _, n := range HopByHop {
		s[n] = true
	}
	for _, n := range names {
		s[http.CanonicalHeaderKey(n)] = true
	}
	return s
}

// ForwardedFor is the X-Forwarded-For value of a request from remoteAddr
// that carried prior (its own X-Forwarded-For values): prior, then the
// peer's host.
func ForwardedFor(prior []string, remoteAddr string) []string {
	ip := Host(remoteAddr)
	if len(prior) > 0 {
		ip = strings.Join(prior, ", ") + ", " + ip
	}
	return []string{ip}
}

// Host is the host of a host:port address, or addr itself when it has no
// port.
func Host(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// Next takes the first member off a comma-separated list value (RFC 9110
// section 5.6.1) and splits it at the first sep: the member's name with
// spaces trimmed, the text after sep as is ("" without one), and the rest
// of the list. Walk a value with
//
//	for v != "" { name, arg, v = header.Next(v, ";"); ... }
//
// It does not allocate.
func Next(v, sep string) (name, arg, rest string) {
	member, rest, _ := strings.Cut(v, ",")
	name, arg, _ = strings.Cut(member, sep)
	return strings.TrimSpace(name), arg, rest
}
