// Command kalshi-sim serves a fake Kalshi Trade API v2 (package
// kalshitest) on a local address, so that kproxy can be tried offline.
//
// Usage:
//
//	kalshi-sim [-listen 127.0.0.1:9090] [-latency 0s] [-series TICKER:N]... [-public-key FILE]
//	           [-historical-cutoff 2026-01-01T00:00:00Z]
//	           [-ws-tick 0s] [-ws-tick-markets 5] [-ws-heartbeat 10s] [-v]
//
// It logs "kalshi-sim listening on http://ADDR/trade-api/v2" once it is ready;
// point kproxy's upstream (or any Kalshi client) at that URL. Kalshi's
// WebSocket API is served on ws://ADDR/trade-api/ws/v2 (subscribe,
// update_subscription, unsubscribe, list_subscriptions; heartbeat pings).
// With -ws-tick, the simulator moves prices on its own: every tick it takes
// up to -ws-tick-markets of the markets subscribed on the ticker channel (by
// name; a subscription without tickers is not walked), moves their prices
// by a random step, changes the REST data to match and pushes a ticker
// message, so a kproxy with live.enabled shows detail=pushed offline. The data
// universe is kalshitest's default one (KXEARNINGSMENTION* series,
// KXFEDDECISION, KXBIGSERIES with 450 markets, KXCPIYOY with settled and
// finalized markets), plus one synthetic series per -series flag.
//
// Routes (all GET under /trade-api/v2; see package kalshitest): /markets,
// /markets/{ticker}, /markets/{ticker}/orderbook, /markets/trades,
// /markets/candlesticks, /events, /events/{event_ticker}, /series,
// /series/{series_ticker}, /series/{series_ticker}/markets/{ticker}/candlesticks,
// /series/{series_ticker}/events/{event_ticker}/candlesticks,
// /historical/cutoff, /historical/markets, /historical/markets/{ticker},
// /historical/markets/{ticker}/candlesticks, /historical/trades,
// /exchange/status, /portfolio/balance, and POST /portfolio/orders and
// /portfolio/events/orders. Trades and candlesticks follow the wall clock:
// those after now do not exist yet. On SIGINT or SIGTERM it stops accepting connections,
// lets in-flight requests finish (for up to 5 seconds) and exits 0.
//
// Flags:
//
//	-listen ADDR       address to listen on (default 127.0.0.1:9090; port 0 picks a free port)
//	-latency D         delay every answer by D, e.g. 150ms (default 0s)
//	-series TICKER:N   add a series TICKER with one event TICKER-26JUN30 and N markets;
//	                   repeatable, or comma-separated (KXA:10,KXB:2000)
//	-public-key FILE   verify KALSHI-ACCESS-SIGNATURE like Kalshi does, with the RSA key in
//	                   FILE: a PEM "PUBLIC KEY" (PKIX) or "RSA PUBLIC KEY" (PKCS#1); a PEM
//	                   private key ("PRIVATE KEY" or "RSA PRIVATE KEY") is accepted too and
//	                   its public half is used
//	-historical-cutoff T  the live/historical boundary served by /historical/cutoff, RFC 3339
//	                   (default 2026-01-01T00:00:00Z): markets settled and trades created
//	                   before T are served only by /historical/*
//	-ws-tick D         every D, random-walk the prices of subscribed markets and push them
//	                   (default 0s: off)
//	-ws-tick-markets N at most N markets move per tick (default 5)
//	-ws-heartbeat D    ping every WebSocket connection every D (default 10s, as Kalshi; 0s: off)
//	-v                 log every request with its status and duration
package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/internal/kalshitest"
)

// shutdownGrace bounds how long in-flight requests may run after a signal.
const shutdownGrace = 5 * time.Second

// resetEvery is how often the simulator drops the requests kalshitest
// records; it never reads them, and dropping them bounds memory in long runs.
const resetEvery = time.Minute

// maxSeriesMarkets bounds -series N.
const maxSeriesMarkets = 100_000

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return
	case errors.Is(err, errReported):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "kalshi-sim:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", cfg.listen)
	if err == nil {
		err = serve(ctx, cfg, ln, log.New(os.Stderr, "", log.LstdFlags))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kalshi-sim:", err)
		stop()
		os.Exit(1)
	}
}

// errReported is returned by parseFlags for errors the flag package has
// already printed, together with the usage.
var errReported = errors.New("invalid command line")

// config is the parsed command line.
type config struct {
	listen    string
	latency   time.Duration
	series    []seriesArg
	publicKey *rsa.PublicKey // nil: no signature verification
	verbose   bool
	cutoff    time.Time // the historical cutoff

	wsTick        time.Duration // 0: prices do not move on their own
	wsTickMarkets int
	wsHeartbeat   time.Duration // 0: no pings
}

type seriesArg struct {
	ticker string
	n      int
}

func parseFlags(args []string, output io.Writer) (config, error) {
	var cfg config
	var keyFile string
	fs := flag.NewFlagSet("kalshi-sim", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: kalshi-sim [flags]\n\nServes a fake Kalshi Trade API v2 under /trade-api/v2, for trying kproxy offline.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:9090", "`address` to listen on")
	fs.DurationVar(&cfg.latency, "latency", 0, "delay every answer by `duration`")
	fs.Func("series", "add a series `TICKER:N` with N markets (repeatable or comma-separated)", func(v string) error {
		for item := range strings.SplitSeq(v, ",") {
			s, err := parseSeries(item)
			if err != nil {
				return err
			}
			cfg.series = append(cfg.series, s)
		}
		return nil
	})
	fs.StringVar(&keyFile, "public-key", "", "verify request signatures with the PEM RSA key in `file`")
	fs.BoolVar(&cfg.verbose, "v", false, "log every request")
	cfg.cutoff = time.Unix(kalshitest.DefaultHistoricalCutoffUnix, 0).UTC()
	fs.Func("historical-cutoff", "the live/historical boundary, an RFC 3339 `time` (default 2026-01-01T00:00:00Z)", func(v string) error {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return err
		}
		cfg.cutoff = t
		return nil
	})
	fs.DurationVar(&cfg.wsTick, "ws-tick", 0, "every `duration`, random-walk the prices of subscribed markets and push ticker messages (0: off)")
	fs.IntVar(&cfg.wsTickMarkets, "ws-tick-markets", 5, "at most `N` markets move per tick")
	fs.DurationVar(&cfg.wsHeartbeat, "ws-heartbeat", kalshitest.DefaultWSHeartbeat, "ping WebSocket clients every `duration` (0: off)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, errReported
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.latency < 0 {
		return config{}, fmt.Errorf("-latency %v: must not be negative", cfg.latency)
	}
	if cfg.wsTick < 0 {
		return config{}, fmt.Errorf("-ws-tick %v: must not be negative", cfg.wsTick)
	}
	if cfg.wsTickMarkets < 1 {
		return config{}, fmt.Errorf("-ws-tick-markets %d: must be at least 1", cfg.wsTickMarkets)
	}
	if cfg.wsHeartbeat < 0 {
		return config{}, fmt.Errorf("-ws-heartbeat %v: must not be negative", cfg.wsHeartbeat)
	}
	if keyFile != "" {
		key, err := loadPublicKey(keyFile)
		if err != nil {
			return config{}, fmt.Errorf("-public-key: %w", err)
		}
		cfg.publicKey = key
	}
	return cfg, nil
}

// parseSeries parses "TICKER:N".
func parseSeries(v string) (seriesArg, error) {
	ticker, count, ok := strings.Cut(strings.TrimSpace(v), ":")
	if !ok {
		return seriesArg{}, fmt.Errorf("%q: want TICKER:N", v)
	}
	if !validTicker(ticker) {
		return seriesArg{}, fmt.Errorf("%q: the ticker must be non-empty and use only letters, digits, '-', '_' and '.'", v)
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 || n > maxSeriesMarkets {
		return seriesArg{}, fmt.Errorf("%q: N must be an integer in [0, %d]", v, maxSeriesMarkets)
	}
	return seriesArg{ticker, n}, nil
}

func validTicker(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// loadPublicKey reads an RSA public key from a PEM file holding a public key
// (PKIX or PKCS#1) or a private key (PKCS#8 or PKCS#1).
func loadPublicKey(path string) (*rsa.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block found", path)
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: unsupported PEM block %q (want PUBLIC KEY, RSA PUBLIC KEY, PRIVATE KEY or RSA PRIVATE KEY)", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return k, nil
	case *rsa.PrivateKey:
		return &k.PublicKey, nil
	}
	return nil, fmt.Errorf("%s: not an RSA key (%T)", path, key)
}

// serve serves the fake on ln until ctx is done, then shuts down gracefully.
// It returns nil after a shutdown caused by ctx.
func serve(ctx context.Context, cfg config, ln net.Listener, logger *log.Logger) error {
	fake := kalshitest.New(kalshitest.WithHistoricalCutoff(cfg.cutoff))
	fake.SetLatency(cfg.latency)
	for _, s := range cfg.series {
		fake.AddSeries(s.ticker, s.n)
	}
	if cfg.publicKey != nil {
		fake.SetPublicKey(cfg.publicKey)
	}
	fake.SetWSHeartbeat(cfg.wsHeartbeat)
	var h http.Handler = fake
	if cfg.verbose {
		h = logRequests(fake, logger)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger,
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Printf("kalshi-sim listening on http://%s/trade-api/v2", ln.Addr())
	logger.Printf("kalshi-sim WebSocket on ws://%s%s", ln.Addr(), kalshitest.WSPath)

	tick := time.NewTicker(resetEvery)
	defer tick.Stop()
	var walk <-chan time.Time
	if cfg.wsTick > 0 {
		t := time.NewTicker(cfg.wsTick)
		defer t.Stop()
		walk = t.C
	}
	for {
		select {
		case err := <-errc:
			return err
		case <-tick.C:
			fake.Reset()
		case <-walk:
			randomWalk(fake, cfg.wsTickMarkets, logger)
		case <-ctx.Done():
			// Hijacked WebSocket connections are not the server's to
			// close: say goodbye with 1001 first.
			fake.CloseWS(1001, "kalshi-sim shutting down")
			shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			defer cancel()
			if err := srv.Shutdown(shutdownCtx); err != nil {
				srv.Close() // grace period over: drop the remaining connections
			}
			if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}
	}
}

// logRequests logs one line per request: method, URI, status and duration.
func logRequests(next http.Handler, logger *log.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			status := "no answer"
			if sw.status != 0 {
				status = strconv.Itoa(sw.status)
			}
			logger.Printf("%s %s -> %s (%v)", r.Method, r.URL.RequestURI(), status, time.Since(start).Round(time.Microsecond))
		}()
		next.ServeHTTP(sw, r)
	})
}

// statusWriter remembers the status of the answer. Unwrap keeps
// http.ResponseController (hijacking, flushing) working through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// randomWalk moves the prices of up to n markets subscribed on the ticker
// channel by one random step each, updates the REST data and pushes the
// ticker messages (kalshitest.Server.Tick).
func randomWalk(fake *kalshitest.Server, n int, logger *log.Logger) {
	tickers := fake.WSSubscribedTickers(kalshitest.ChannelTicker)
	rand.Shuffle(len(tickers), func(i, j int) { tickers[i], tickers[j] = tickers[j], tickers[i] })
	var moves []kalshitest.Ticker
	for _, t := range tickers[:min(n, len(tickers))] {
		q, ok := fake.Quote(t)
		if !ok {
			continue // subscribed but not in the data: nothing to move
		}
		moves = append(moves, step(q))
	}
	if len(moves) == 0 {
		return
	}
	if _, err := fake.Tick(moves...); err != nil {
		logger.Printf("ws-tick: %v", err)
	}
}

// step moves a quote by one cent up or down (bid in [0.01, 0.97], the
// spread kept), puts the last price between bid and ask, and adds a few
// contracts of volume.
func step(q kalshitest.Ticker) kalshitest.Ticker {
	bid, ask := cents(q.YesBid), cents(q.YesAsk)
	spread := max(ask-bid, 1)
	bid = min(max(bid+[]int{-1, 1}[rand.IntN(2)], 1), 98-spread)
	ask = bid + spread
	vol := cents(q.Volume) + 100*(1+rand.IntN(50))
	return kalshitest.Ticker{
		Market: q.Market,
		YesBid: dollars(bid),
		YesAsk: dollars(ask),
		Price:  dollars(bid + rand.IntN(spread+1)),
		Volume: fmt.Sprintf("%d.%02d", vol/100, vol%100),
	}
}

// cents parses "0.4500" (or "1234.00") into hundredths; bad input is 0.
func cents(s string) int {
	whole, frac, _ := strings.Cut(s, ".")
	w, err := strconv.Atoi(whole)
	if err != nil {
		return 0
	}
	f := 0
	if len(frac) >= 2 {
		f, _ = strconv.Atoi(frac[:2])
	}
	return w*100 + f
}

// dollars formats hundredths as Kalshi prices: "0.4500".
func dollars(c int) string { return fmt.Sprintf("%d.%02d00", c/100, c%100) }
