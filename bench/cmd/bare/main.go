// Command bare is the benchmark's ceiling: a plain net/http server that
// answers fixed request URIs with bodies held in memory, identity or gzip
// (compressed once at start), and does nothing else.
//
// Usage:
//
//	bare -listen 127.0.0.1:PORT -body '/trade-api/v2/series/X=FILE' [-body URI=FILE]...
//
// A request whose URI (path and query, as sent) is not listed gets 404.
package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kproxy/kproxy/bench/internal/benchkit"
)

// answer is one prebuilt response.
type answer struct {
	body, gz       []byte
	lenID, lenGzip []string
}

var (
	jsonType = []string{"application/json"}
	gzipEnc  = []string{"gzip"}
	varyAE   = []string{"Accept-Encoding"}
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback `address` to listen on")
	answers := map[string]*answer{}
	flag.Func("body", "serve `URI=FILE` (repeatable)", func(v string) error {
		i := strings.LastIndex(v, "=") // the URI's query may hold '='; the file name must not
		if i < 0 || !strings.HasPrefix(v, "/") {
			return errors.New("want URI=FILE")
		}
		a, err := load(v[i+1:])
		if err != nil {
			return err
		}
		answers[v[:i]] = a
		return nil
	})
	flag.Parse()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := answers[r.RequestURI]
		if a == nil {
			http.NotFound(w, r)
			return
		}
		hd := w.Header()
		hd["Content-Type"] = jsonType
		hd["Vary"] = varyAE
		body, n := a.body, a.lenID
		if a.gz != nil && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			body, n = a.gz, a.lenGzip
			hd["Content-Encoding"] = gzipEnc
		}
		hd["Content-Length"] = n
		w.Write(body)
	})
	log.Printf("bare: serving %d URIs", len(answers))
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	if err := benchkit.Run("bare", nil, srv); err != nil {
		log.Fatal("bare: ", err)
	}
}

// load reads a body and precompresses it the way kproxy does.
func load(file string) (*answer, error) {
	body, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	a := &answer{body: body, lenID: []string{strconv.Itoa(len(body))}}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(body)
	zw.Close()
	if buf.Len() < len(body) {
		a.gz = buf.Bytes()
		a.lenGzip = []string{strconv.Itoa(len(a.gz))}
	}
	return a, nil
}
