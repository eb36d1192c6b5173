package batch_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkMarketsWarm is the seed's table's last row: seven series whose
// pages are all in the cache, one POST /batch/markets over loopback.
func BenchmarkMarketsWarm(b *testing.B) {
	e := start(b, setup{})
	body := `{"series_tickers":["` + strings.Join(earnings[:7], `","`) + `"]}`
	post := func() {
		resp, err := http.Post(e.url+"/batch/markets", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	post()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		post()
	}
}
