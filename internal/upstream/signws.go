package upstream

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
)

// SignHeaders returns the KALSHI-ACCESS-* headers of a request for method
// and path (the path only: no host, no query), signed with kproxy's key as
// Kalshi documents. The WebSocket handshake is signed this way, over
// timestamp + "GET" + "/trade-api/ws/v2". Safe for concurrent use.
func (s *Signer) SignHeaders(method, path string) (http.Header, error) {
	ts := strconv.FormatInt(s.now().UnixMilli(), 10)
	sum := sha256.Sum256([]byte(ts + method + path))
	sig, err := rsa.SignPSS(rand.Reader, s.key, crypto.SHA256, sum[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("KALSHI-ACCESS-KEY", s.keyID)
	h.Set("KALSHI-ACCESS-TIMESTAMP", ts)
	h.Set("KALSHI-ACCESS-SIGNATURE", base64.StdEncoding.EncodeToString(sig))
	return h, nil
}
