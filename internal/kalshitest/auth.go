package kalshitest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
)

// Kalshi's authentication headers.
const (
	HeaderKey       = "KALSHI-ACCESS-KEY"       // API key id
	HeaderTimestamp = "KALSHI-ACCESS-TIMESTAMP" // Unix milliseconds
	HeaderSignature = "KALSHI-ACCESS-SIGNATURE" // see Sign
)

// pssOptions returns Kalshi's RSA-PSS parameters: SHA-256 with MGF1-SHA256
// and a salt as long as the digest (32 bytes).
func pssOptions() *rsa.PSSOptions {
	return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
}

// Sign returns the KALSHI-ACCESS-SIGNATURE value Kalshi expects for a request:
// the standard base64 encoding of the RSA-PSS (SHA-256, MGF1-SHA256, 32-byte
// salt) signature of ts + method + path. path is the URL path including
// /trade-api/v2, e.g. "/trade-api/v2/portfolio/balance"; a query string, if
// present, is not signed (Sign drops it). ts is the value sent in
// KALSHI-ACCESS-TIMESTAMP (Unix milliseconds).
func Sign(key *rsa.PrivateKey, ts string, method, path string) (string, error) {
	if key == nil {
		return "", errors.New("kalshitest: Sign: nil key")
	}
	path, _, _ = strings.Cut(path, "?")
	digest := sha256.Sum256([]byte(ts + method + path))
	sig, err := rsa.SignPSS(rand.Reader, key, crypto.SHA256, digest[:], pssOptions())
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// verify checks a KALSHI-ACCESS-SIGNATURE value against ts + method + path.
func verify(pub *rsa.PublicKey, ts, method, path, signature string) error {
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte(ts + method + path))
	return rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, pssOptions())
}

// VerifyRequest checks r's KALSHI-ACCESS-SIGNATURE against pub the way the
// fake (and Kalshi) does: the signed message is KALSHI-ACCESS-TIMESTAMP +
// method + the escaped URL path, without the query. It is for tests that
// check signatures at an origin of their own.
func VerifyRequest(pub *rsa.PublicKey, r *http.Request) error {
	return verify(pub, r.Header.Get(HeaderTimestamp), r.Method, r.URL.EscapedPath(), r.Header.Get(HeaderSignature))
}

// SetPublicKey enables signature verification against pub; nil disables it.
//
// While enabled, every request that carries a KALSHI-ACCESS-SIGNATURE header,
// and every request under /trade-api/v2/portfolio, is verified the way Kalshi
// does it: the signed message is KALSHI-ACCESS-TIMESTAMP + method + the
// escaped URL path (including /trade-api/v2, without the query). A request
// missing one of the three KALSHI-ACCESS-* headers answers 401 with code
// "unauthorized"; a bad signature answers 401 with code "invalid_signature"
// and counts in [Server.SignatureFailures]. The key id is not checked against
// the key. Verification happens after faults and before routing, so it also
// covers [Server.Handle] overrides.
func (s *Server) SetPublicKey(pub *rsa.PublicKey) {
	s.publicKey.Store(pub)
}

// SignatureFailures returns the number of requests rejected because their
// signature did not verify, since New or the last Reset.
func (s *Server) SignatureFailures() int { return int(s.sigFail.Load()) }

// VerifiedSignatures returns the number of requests whose signature verified,
// since New or the last Reset.
func (s *Server) VerifiedSignatures() int { return int(s.sigOK.Load()) }

// authorize runs signature verification; it answers 401 and returns false
// when the request must be rejected.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) bool {
	pub := s.publicKey.Load()
	if pub == nil {
		return true
	}
	_, signed := r.Header[http.CanonicalHeaderKey(HeaderSignature)]
	if !signed && !isPortfolio(r.URL.Path) {
		return true
	}
	key, ts, sig := r.Header.Get(HeaderKey), r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature)
	if key == "" || ts == "" || sig == "" {
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing auth headers")
		return false
	}
	if err := VerifyRequest(pub, r); err != nil {
		s.sigFail.Add(1)
		writeError(w, http.StatusUnauthorized, "invalid_signature", "invalid signature")
		return false
	}
	s.sigOK.Add(1)
	return true
}

// isPortfolio reports whether path is under /trade-api/v2/portfolio.
func isPortfolio(path string) bool {
	const p = apiPrefix + "/portfolio"
	return path == p || strings.HasPrefix(path, p+"/")
}
