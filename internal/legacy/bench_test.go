package legacy

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/kproxy/kproxy/internal/kalshitest"
)

// page is a /markets page of n markets from the fake Kalshi.
func page(b *testing.B, n int) []byte {
	b.Helper()
	rec := httptest.NewRecorder()
	kalshitest.New().ServeHTTP(rec, httptest.NewRequest("GET", "/trade-api/v2/markets?series_ticker=KXBIGSERIES&limit="+itoa(n), nil))
	if rec.Code != 200 {
		b.Fatalf("fake: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// BenchmarkApplyMarketsPage is the shim's cost on a 100-market page, paid
// once per upstream fetch; BenchmarkValidMarketsPage (json.Valid alone) is
// the floor it starts from.
func BenchmarkApplyMarketsPage(b *testing.B) {
	benchPage(b, func(body []byte) { Apply(Markets, body) })
}

func BenchmarkValidMarketsPage(b *testing.B) {
	benchPage(b, func(body []byte) {
		Apply(None, body)
		_ = jsonValid(body)
	})
}

// benchPage runs op on a 100-market page per iteration, counting the
// page's bytes.
func benchPage(b *testing.B, op func(body []byte)) {
	body := page(b, 100)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		op(body)
	}
}

var jsonValid = func(b []byte) bool { return json.Valid(b) }
