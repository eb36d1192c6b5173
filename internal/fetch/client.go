package fetch

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"

	"github.com/kproxy/kproxy/internal/header"
	"github.com/kproxy/kproxy/internal/httperr"
	"github.com/kproxy/kproxy/internal/upstream"
)

// ClientHeader names the client a request is made for (fair shares of the
// upstream budget, the status page). kproxy never forwards it upstream.
const ClientHeader = "Kproxy-Client"

// maxClientName bounds a Kproxy-Client value.
const maxClientName = 64

// ErrBadClient is the 400 answer to a Kproxy-Client value ClientName
// refuses; errors.Is matches it.
var ErrBadClient = &upstream.Error{Status: http.StatusBadRequest, Code: httperr.CodeBadClient,
	Msg: "Kproxy-Client must be one value of 1 to 64 bytes of A-Z a-z 0-9 . _ : -"}

// ClientName names the client of a request with header h from remoteAddr:
// its Kproxy-Client value; else "key:" and 8 hex digits of the SHA-256 of
// its KALSHI-ACCESS-KEY (a tag that does not reveal the key); else
// "addr:" and the host of remoteAddr; "" with none of them. A Kproxy-Client
// header that is empty, repeated, longer than 64 bytes or holds a byte
// outside [A-Za-z0-9._:-] is refused with ErrBadClient. It allocates: work
// it out when it is needed (a fetch), not on a hit.
func ClientName(h http.Header, remoteAddr string) (string, error) {
	if v, ok := h[ClientHeader]; ok {
		if len(v) != 1 || !validClientName(v[0]) {
			return "", ErrBadClient
		}
		return v[0], nil
	}
	if v := h["Kalshi-Access-Key"]; len(v) > 0 && v[0] != "" {
		sum := sha256.Sum256([]byte(v[0]))
		return "key:" + hex.EncodeToString(sum[:4]), nil
	}
	if remoteAddr != "" {
		return "addr:" + header.Host(remoteAddr), nil
	}
	return "", nil
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
