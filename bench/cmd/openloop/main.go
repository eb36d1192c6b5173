// Command openloop is an open-loop HTTP/1.1 load generator: it schedules
// requests at a fixed rate for a fixed time whatever the server does, and
// measures each request's latency from the moment it was released to the
// connection pool, so time spent waiting for a busy connection counts and a
// slow answer is not hidden by the requests it delayed (no coordinated
// omission). Only loopback targets are accepted; the run is bounded by
// -rate x -duration requests.
//
// Usage:
//
//	openloop -url http://127.0.0.1:PORT/path -rate 5000 -duration 5s [-conns 64] [-H 'Name: value']...
//
// It prints one line: requests=N errors=E non200=S rate=R p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=..
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kproxy/kproxy/bench/internal/benchkit"
)

// maxRequests bounds one run.
const maxRequests = 5_000_000

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	target := flag.String("url", "", "loopback `URL` to load")
	rate := flag.Int("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 5*time.Second, "how long to send")
	conns := flag.Int("conns", 64, "keep-alive connections")
	timeout := flag.Duration("timeout", 2*time.Second, "per-request timeout")
	var hdrs headers
	flag.Var(&hdrs, "H", "request `header` (repeatable)")
	flag.Parse()

	u, err := benchkit.ParseURL(*target)
	if err != nil {
		log.Fatalf("openloop: -url %v", err)
	}
	total := int(float64(*rate) * duration.Seconds())
	if *rate <= 0 || total <= 0 || total > maxRequests || *conns <= 0 || *conns > 4096 {
		log.Fatalf("openloop: need 0 < rate x duration <= %d and 0 < conns <= 4096", maxRequests)
	}
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: openloop\r\n", u.RequestURI(), u.Host)
	for _, h := range hdrs {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("\r\n")
	raw := []byte(req.String())

	jobs := make(chan time.Time, min(total, 1<<16))
	results := make([]workerResult, *conns)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(r *workerResult) {
			defer wg.Done()
			r.run(u.Host, raw, *timeout, jobs)
		}(&results[i])
	}

	interval := time.Second / time.Duration(*rate)
	start := time.Now().Add(50 * time.Millisecond) // let the workers dial
	for i := 0; i < total; {
		now := time.Now()
		due := start.Add(time.Duration(i) * interval)
		if due.After(now) {
			time.Sleep(due.Sub(now))
			continue
		}
		// A job carries the time it was handed to the connections: a
		// request that waits for a free connection counts that wait, while
		// the generator's own timer slack does not.
		for ; i < total && !start.Add(time.Duration(i)*interval).After(now); i++ {
			jobs <- time.Now()
		}
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)

	var lat []time.Duration
	var errs, non200 int
	for _, r := range results {
		lat = append(lat, r.lat...)
		errs += r.errs
		non200 += r.non200
	}
	slices.Sort(lat)
	fmt.Printf("requests=%d errors=%d non200=%d rate=%.0f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
		len(lat), errs, non200, float64(len(lat))/elapsed.Seconds(),
		pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 99.9), pct(lat, 100))
	if len(lat) == 0 {
		os.Exit(1)
	}
}

// pct is the p-th percentile of sorted latencies, in microseconds.
func pct(sorted []time.Duration, p float64) int64 {
	if len(sorted) == 0 {
		return -1
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i].Microseconds()
}

// workerResult is what one connection measured.
type workerResult struct {
	lat          []time.Duration
	errs, non200 int
}

// run sends one request per job on its own keep-alive connection,
// redialling after an error.
func (w *workerResult) run(addr string, req []byte, timeout time.Duration, jobs <-chan time.Time) {
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for released := range jobs {
		if c == nil {
			var err error
			if c, err = net.DialTimeout("tcp", addr, timeout); err != nil {
				c = nil
				w.errs++
				continue
			}
			br = bufio.NewReaderSize(c, 64<<10)
		}
		c.SetDeadline(time.Now().Add(timeout))
		status, err := roundTrip(c, br, req)
		if err != nil {
			w.errs++
			c.Close()
			c = nil
			continue
		}
		w.lat = append(w.lat, time.Since(released))
		if status != 200 {
			w.non200++
		}
	}
}

// roundTrip writes req and reads one answer with a Content-Length body.
func roundTrip(c net.Conn, br *bufio.Reader, req []byte) (int, error) {
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return 0, errors.New("bad status line")
	}
	status, _ := strconv.Atoi(f[1])
	n := int64(-1)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		s := strings.TrimSpace(string(line))
		if s == "" {
			break
		}
		if k, v, ok := strings.Cut(s, ":"); ok && strings.EqualFold(k, "Content-Length") {
			n, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if n < 0 {
		return 0, errors.New("answer without Content-Length")
	}
	_, err = io.CopyN(io.Discard, br, n)
	return status, err
}
