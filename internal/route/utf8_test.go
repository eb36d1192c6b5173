package route

import (
	"errors"
	"net/url"
	"testing"
)

func TestCheckPathRejectsInvalidUTF8(t *testing.T) {
	for _, escaped := range []string{
		"/trade-api/v2/%c0%ae%c0%ae/portfolio",
		"/trade-api/v2/%C0%AE/markets",
		"/trade-api/v2/markets/%c0%af",
		"/trade-api/v2/markets/%e0%80%ae",
		"/trade-api/v2/markets/%ed%a0%80",
		"/trade-api/v2/markets/%f8%80%80%80%80",
		"/trade-api/v2/markets/%ff",
		"/trade-api/v2/markets/KX%e2%82",
		"/trade-api/v2/\xc0\xae\xc0\xae/portfolio",
		"/trade-api/v2/markets/\xff",
	} {
		decoded, err := url.PathUnescape(escaped)
		if err != nil {
			t.Fatalf("PathUnescape(%q): %v", escaped, err)
		}
		if err := CheckPath(escaped, decoded); !errors.Is(err, ErrInvalidUTF8) {
			t.Errorf("CheckPath(%q) = %v, want ErrInvalidUTF8", escaped, err)
		}
	}
	for _, escaped := range []string{"/trade-api/v2/markets/%C3%A9", "/trade-api/v2/markets/KX-\u00e9", "/trade-api/v2/markets/KXA-26JUN30"} {
		decoded, _ := url.PathUnescape(escaped)
		if err := CheckPath(escaped, decoded); err != nil {
			t.Errorf("CheckPath(%q) = %v, want nil (valid UTF-8)", escaped, err)
		}
	}
}
