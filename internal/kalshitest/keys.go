package kalshitest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// testKey is generated on first use and shared by every test of the
// process: a 2048-bit key takes long enough under -race that one per test
// adds seconds to a package.
var testKey = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, 2048)
})

// TestKey returns an RSA key shared by every test of the process. Give its
// public half to a Server with SetPublicKey; never modify it.
func TestKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := testKey()
	if err != nil {
		t.Fatalf("generating the test key: %v", err)
	}
	return k
}

// WriteKeyFile writes key as a PKCS#1 PEM file in a temporary directory of
// t and returns its path, for config's upstream.private_key_file.
func WriteKeyFile(t testing.TB, key *rsa.PrivateKey) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "kproxy.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
