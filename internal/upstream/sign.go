package upstream

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

// Signer signs requests with a Kalshi API key as Kalshi documents: RSA-PSS
// with SHA-256 (salt length = digest length) over timestamp_ms + METHOD +
// path, where path includes /trade-api/v2 and excludes the query string.
type Signer struct {
	keyID string
	key   *rsa.PrivateKey
	now   func() time.Time
}

// NewSigner builds a Signer from a key id and an RSA private key.
func NewSigner(keyID string, key *rsa.PrivateKey) *Signer {
	return &Signer{keyID: keyID, key: key, now: time.Now}
}

// KeyFileError is a private key file that cannot be used.
type KeyFileError struct {
	File string
	Err  error
}

func (e *KeyFileError) Error() string {
	return fmt.Sprintf("upstream.private_key_file %q: %v", e.File, e.Err)
}

func (e *KeyFileError) Unwrap() error { return e.Err }

// LoadSigner reads a PEM private key (PKCS#1 or PKCS#8) from file. Errors
// are *KeyFileError.
func LoadSigner(keyID, file string) (*Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, &KeyFileError{File: file, Err: err}
	}
	key, err := ParsePrivateKey(data)
	if err != nil {
		return nil, &KeyFileError{File: file, Err: err}
	}
	return NewSigner(keyID, key), nil
}

// ParsePrivateKey parses a PEM-encoded RSA private key.
func ParsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not an RSA private key in PKCS#1 or PKCS#8 form")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA private key")
	}
	return rk, nil
}

// Sign replaces any credentials on req with kproxy's own signature.
func (s *Signer) Sign(req *http.Request) error {
	ts := strconv.FormatInt(s.now().UnixMilli(), 10)
	msg := ts + req.Method + req.URL.EscapedPath()
	sum := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPSS(rand.Reader, s.key, crypto.SHA256, sum[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil {
		return err
	}
	req.Header.Del("Authorization")
	req.Header.Set("KALSHI-ACCESS-KEY", s.keyID)
	req.Header.Set("KALSHI-ACCESS-TIMESTAMP", ts)
	req.Header.Set("KALSHI-ACCESS-SIGNATURE", base64.StdEncoding.EncodeToString(sig))
	return nil
}
