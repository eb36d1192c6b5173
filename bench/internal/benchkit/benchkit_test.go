package benchkit

import (
	"fmt"
	"testing"
)

// TestLoopbackOnly: the flag checks let through loopback IP addresses
// only (a name could resolve anywhere), and ParseURL returns the URL as
// given.
func TestLoopbackOnly(t *testing.T) {
	parseURL := func(raw string) error {
		u, err := ParseURL(raw)
		if err == nil && u.String() != raw {
			return fmt.Errorf("parsed as %q", u)
		}
		return err
	}
	tests := []struct {
		name      string
		check     func(string) error
		good, bad []string
	}{
		{"CheckAddr", CheckAddr,
			[]string{"127.0.0.1:8080", "127.0.0.1:0", "[::1]:80"},
			[]string{"10.0.0.1:80", ":8080", "localhost:80", "127.0.0.1"}},
		{"ParseURL", parseURL,
			[]string{"http://127.0.0.1:8080/trade-api/v2/series/X?a=b", "http://[::1]:8080/"},
			[]string{"https://127.0.0.1:8080/", "http://10.0.0.1:8080/", "http://localhost:8080/", "http://127.0.0.1:%zz/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, in := range tt.good {
				if err := tt.check(in); err != nil {
					t.Errorf("%q: %v, want it accepted", in, err)
				}
			}
			for _, in := range tt.bad {
				if err := tt.check(in); err == nil {
					t.Errorf("%q accepted, want an error", in)
				}
			}
		})
	}
}
