// Command kproxyprof is kproxy built exactly as cmd/kproxy builds it, plus
// net/http/pprof on a separate loopback port, for profiling the hit path
// under load. It is a benchmark tool, never a deployment.
//
// Usage:
//
//	kproxyprof -pprof 127.0.0.1:PORT [-config FILE] [-listen ADDR] [-upstream URL]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/bench/internal/benchkit"
	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
)

func main() {
	src := &config.Sources{}
	flag.StringVar(&src.File, "config", "", "config file")
	flag.StringVar(&src.Listen, "listen", "", "listen address")
	flag.StringVar(&src.Upstream, "upstream", "", "upstream origin")
	pprofAddr := flag.String("pprof", "127.0.0.1:6060", "loopback `address` for /debug/pprof/")
	flag.Parse()

	if err := benchkit.CheckAddr(*pprofAddr); err != nil {
		log.Fatal("kproxyprof: -pprof ", err)
	}
	cfg, _, err := config.Load(*src)
	if err != nil {
		log.Fatal("kproxyprof: ", err)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// As cmd/kproxy does.
		debug.SetMemoryLimit(app.MemoryLimit(cfg))
	}
	a, err := app.New(cfg, app.Options{LogOutput: os.Stderr})
	if err != nil {
		log.Fatal("kproxyprof: ", err)
	}
	defer a.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	pln, err := net.Listen("tcp", *pprofAddr)
	if err != nil {
		log.Fatal("kproxyprof: ", err)
	}
	psrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go psrv.Serve(pln)
	defer psrv.Close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Fatalf("kproxyprof: listen: %s: %v", cfg.Listen, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "kproxyprof: pprof on http://%s/debug/pprof/\n", pln.Addr())
	if err := a.Serve(ctx, ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Print("kproxyprof: ", err)
	}
}
