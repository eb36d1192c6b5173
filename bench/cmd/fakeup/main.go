// Command fakeup is a controllable stand-in for Kalshi in the benchmarks:
// it answers every GET with the same body after a set latency, counts the
// requests it gets, and can be told to hang.
//
// Usage:
//
//	fakeup -listen 127.0.0.1:PORT -control 127.0.0.1:PORT2 -body FILE [-latency 500ms]
//
// Control port (loopback only):
//
//	GET  /count          requests served or hanging since the last reset
//	POST /reset          zero the count
//	POST /hang           every request from now on hangs (until /unhang, the
//	                     client leaves, or -max-hang passes)
//	POST /unhang         stop hanging; hanging requests are released (and answered)
//	POST /latency?d=D    set the latency
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kproxy/kproxy/bench/internal/benchkit"
)

// state is what the control port changes.
type state struct {
	count   atomic.Int64
	latency atomic.Int64 // nanoseconds

	mu      sync.Mutex
	release chan struct{} // non-nil while hanging; closed by unhang
}

func (s *state) hangChan() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.release
}

func (s *state) setHang(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case on && s.release == nil:
		s.release = make(chan struct{})
	case !on && s.release != nil:
		close(s.release)
		s.release = nil
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback `address` for the API")
	control := flag.String("control", "127.0.0.1:0", "loopback `address` for the control endpoints")
	bodyFile := flag.String("body", "", "`file` whose bytes answer every GET")
	latency := flag.Duration("latency", 0, "delay before each answer")
	maxHang := flag.Duration("max-hang", 2*time.Minute, "longest a request hangs")
	flag.Parse()
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		log.Fatal("fakeup: ", err)
	}
	st := &state{}
	st.latency.Store(int64(*latency))
	contentLength := strconv.Itoa(len(body))

	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st.count.Add(1)
		if ch := st.hangChan(); ch != nil {
			t := time.NewTimer(*maxHang)
			defer t.Stop()
			select {
			case <-ch:
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		if d := time.Duration(st.latency.Load()); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, `{"error":"method"}`, http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", contentLength)
		w.Write(body)
	})

	ctl := http.NewServeMux()
	ctl.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, st.count.Load())
	})
	ctl.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) { st.count.Store(0) })
	ctl.HandleFunc("POST /hang", func(w http.ResponseWriter, r *http.Request) { st.setHang(true) })
	ctl.HandleFunc("POST /unhang", func(w http.ResponseWriter, r *http.Request) { st.setHang(false) })
	ctl.HandleFunc("POST /latency", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 {
			http.Error(w, "bad d", http.StatusBadRequest)
			return
		}
		st.latency.Store(int64(d))
	})

	// Hanging requests are released before the servers shut down.
	err = benchkit.Run("fakeup", func() { st.setHang(false) },
		&http.Server{Addr: *listen, Handler: api, ReadHeaderTimeout: 10 * time.Second},
		&http.Server{Addr: *control, Handler: ctl, ReadHeaderTimeout: 10 * time.Second})
	if err != nil {
		log.Fatal("fakeup: ", err)
	}
}
