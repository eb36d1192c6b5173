// Command probe runs the benchmark's small measured client scenarios
// against a loopback server. Every scenario is bounded in requests and time.
//
//	probe burst -url U [-n 200]              N connections, dialled first, each send one GET at the same instant
//	probe stale -url U [-for 4s] [-every 100ms]  repeated GETs on one keep-alive connection and on fresh ones, side by side
//	probe fill  -url U -n N [-c 16]          N GETs of U&fill=i (distinct cache keys)
//	probe time  [-post JSON] URL...          the URLs one after another (POST JSON when given); total time
//
// Each prints one line of key=value pairs per result (stale: one per
// connection kind), for bench/run.sh to parse.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kproxy/kproxy/bench/internal/benchkit"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("probe: ")
	if len(os.Args) < 2 {
		log.Fatal("usage: probe burst|stale|fill|time [flags]")
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet("probe "+cmd, flag.ExitOnError)
	target := fs.String("url", "", "loopback `URL`")
	timeout := fs.Duration("timeout", 5*time.Second, "per-request timeout")
	switch cmd {
	case "burst":
		n := fs.Int("n", 200, "concurrent requests (at most 2000)")
		fs.Parse(args)
		u := mustLoopback(*target)
		if *n <= 0 || *n > 2000 {
			log.Fatal("-n must be in [1, 2000]")
		}
		burst(u, *n, *timeout)
	case "stale":
		dur := fs.Duration("for", 4*time.Second, "how long to probe (at most 1m)")
		every := fs.Duration("every", 100*time.Millisecond, "gap between requests on each kind of connection")
		verbose := fs.Bool("v", false, "print every answer")
		fs.Parse(args)
		u := mustLoopback(*target)
		if *dur > time.Minute || *every <= 0 {
			log.Fatal("-for must be at most 1m and -every positive")
		}
		stale(u, *dur, *every, *timeout, *verbose)
	case "fill":
		n := fs.Int("n", 1000, "distinct keys (at most 1e6)")
		c := fs.Int("c", 16, "concurrency")
		fs.Parse(args)
		u := mustLoopback(*target)
		if *n <= 0 || *n > 1_000_000 || *c <= 0 || *c > 256 {
			log.Fatal("-n must be in [1, 1e6] and -c in [1, 256]")
		}
		fill(u, *n, *c, *timeout)
	case "time":
		post := fs.String("post", "", "POST this JSON body instead of GET")
		fs.Parse(args)
		var us []*url.URL
		for _, a := range fs.Args() {
			us = append(us, mustLoopback(a))
		}
		if len(us) == 0 || len(us) > 1000 {
			log.Fatal("give 1 to 1000 URLs")
		}
		timed(us, *post, *timeout)
	default:
		log.Fatalf("unknown scenario %q", cmd)
	}
}

func mustLoopback(raw string) *url.URL {
	u, err := benchkit.ParseURL(raw)
	if err != nil {
		log.Fatal(err)
	}
	return u
}

func rawGet(u *url.URL) []byte {
	return []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: probe\r\n\r\n")
}

// exchange sends req on c and reads the whole answer.
func exchange(c net.Conn, br *bufio.Reader, req []byte, timeout time.Duration) (status int, xcache string, err error) {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(req); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, "", err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Cache"), err
}

// burst dials n connections, then releases one GET on each at once.
func burst(u *url.URL, n int, timeout time.Duration) {
	req := rawGet(u)
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.DialTimeout("tcp", u.Host, timeout)
		if err != nil {
			log.Fatalf("dial %d: %v", i, err)
		}
		defer c.Close()
		conns[i] = c
	}
	type result struct {
		d      time.Duration
		status int
		err    error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	var t0 time.Time
	for i, c := range conns {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			br := bufio.NewReader(c)
			ready.Done()
			<-start
			status, _, err := exchange(c, br, req, timeout)
			results[i] = result{time.Since(t0), status, err}
		}()
	}
	ready.Wait()
	t0 = time.Now()
	close(start)
	done.Wait()
	var ds []time.Duration
	errs, non200 := 0, 0
	for _, r := range results {
		switch {
		case r.err != nil:
			errs++
		case r.status != http.StatusOK:
			non200++
		}
		ds = append(ds, r.d)
	}
	slices.Sort(ds)
	fmt.Printf("n=%d errors=%d non200=%d min_ms=%.1f p50_ms=%.1f max_ms=%.1f\n",
		n, errs, non200, ms(ds[0]), ms(ds[len(ds)/2]), ms(ds[len(ds)-1]))
}

// stale probes one keep-alive connection and a series of fresh ones side by
// side for dur.
func stale(u *url.URL, dur, every, timeout time.Duration, verbose bool) {
	req := rawGet(u)
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, kind := range []string{"keepalive", "fresh"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ds []time.Duration
			var c net.Conn
			var br *bufio.Reader
			cache := map[string]int{}
			fails := 0
			for time.Now().Before(deadline) {
				start := time.Now()
				var status int
				var xc string
				var err error
				if c == nil {
					c, err = net.DialTimeout("tcp", u.Host, timeout)
					if err == nil {
						br = bufio.NewReader(c)
					}
				}
				if err == nil {
					status, xc, err = exchange(c, br, req, timeout)
				}
				d := time.Since(start)
				if err != nil || status != http.StatusOK {
					fails++
					xc = "fail"
				}
				cache[xc]++
				ds = append(ds, d)
				if verbose {
					mu.Lock()
					fmt.Fprintf(os.Stderr, "%s t=%s %s %.2fms %v\n", kind, start.Format("15:04:05.000"), xc, ms(d), err)
					mu.Unlock()
				}
				if c != nil && (kind == "fresh" || err != nil) {
					c.Close()
					c = nil
				}
				time.Sleep(every)
			}
			if c != nil {
				c.Close()
			}
			slices.Sort(ds)
			over := len(ds) - sort.Search(len(ds), func(i int) bool { return ds[i] > 5*time.Millisecond })
			mu.Lock()
			defer mu.Unlock()
			fmt.Printf("kind=%s n=%d fails=%d over5ms=%d p50_ms=%.2f max_ms=%.2f cache=%s\n",
				kind, len(ds), fails, over, ms(ds[len(ds)/2]), ms(ds[len(ds)-1]), counts(cache))
		}()
	}
	wg.Wait()
}

// fill GETs n distinct keys: u with fill=i added to its query.
func fill(u *url.URL, n, c int, timeout time.Duration) {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: c, DisableCompression: true}}
	jobs := make(chan int)
	var mu sync.Mutex
	var errs, non200 int
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				v := *u
				q := v.Query()
				q.Set("fill", fmt.Sprint(i))
				v.RawQuery = q.Encode()
				resp, err := client.Get(v.String())
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				switch {
				case err != nil:
					errs++
				case resp.StatusCode != http.StatusOK:
					non200++
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	fmt.Printf("n=%d errors=%d non200=%d elapsed_ms=%.0f\n", n, errs, non200, ms(time.Since(start)))
}

// timed sends the requests one after another on one keep-alive client.
func timed(us []*url.URL, post string, timeout time.Duration) {
	client := &http.Client{Timeout: timeout}
	var each []string
	statuses := map[string]int{}
	start := time.Now()
	for _, u := range us {
		t := time.Now()
		var resp *http.Response
		var err error
		if post != "" {
			resp, err = client.Post(u.String(), "application/json", bytes.NewBufferString(post))
		} else {
			resp, err = client.Get(u.String())
		}
		key := "error"
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			key = fmt.Sprint(resp.StatusCode)
			if xc := resp.Header.Get("X-Cache"); xc != "" {
				key += "/" + xc
			}
		} else if !errors.Is(err, io.EOF) {
			log.Print(err)
		}
		statuses[key]++
		each = append(each, fmt.Sprintf("%.1f", ms(time.Since(t))))
	}
	fmt.Printf("n=%d total_ms=%.1f each_ms=%s status=%s\n", len(us), ms(time.Since(start)), strings.Join(each, ","), counts(statuses))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func counts(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s:%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
