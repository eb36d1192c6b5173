package batch_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// poster returns a function that POSTs body to url and fails b unless the
// answer is a 200.
func poster(b *testing.B, url, body string) func() {
	return func() {
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// BenchmarkMarketsWarm is the seed's table's last row: seven series whose
// pages are all in the cache, one POST /batch/markets over loopback.
func BenchmarkMarketsWarm(b *testing.B) {
	e := start(b, setup{})
	post := poster(b, e.url+"/batch/markets", `{"series_tickers":["`+strings.Join(earnings[:7], `","`)+`"]}`)
	post()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		post()
	}
}

// BenchmarkBackfillWarm: one /batch item with all_pages over every trade
// of a KXFEDDECISION market (several pages of 1000), all pages cached.
func BenchmarkBackfillWarm(b *testing.B) {
	e := start(b, setup{cfg: longTTL})
	afterEverything(e)
	post := poster(b, e.url+"/batch", `{"requests":[{"path":"`+tradesPath+`?ticker=`+e.fake.MarketTickers(fed)[0]+`&limit=1000","all_pages":true}]}`)
	post()
	before := e.fake.Total()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		post()
	}
	b.StopTimer()
	if n := e.fake.Total() - before; n != 0 {
		b.Fatalf("%d upstream requests while warm, want 0", n)
	}
}
