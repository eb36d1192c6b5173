// Package benchkit is what the benchmark commands under bench/cmd share:
// the loopback checks on their flags and the serve-until-signal loop.
// Benchmark traffic never leaves 127.0.0.1.
package benchkit

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// CheckAddr returns an error unless addr is a host:port on the loopback
// interface.
func CheckAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: only loopback addresses are allowed", addr)
	}
	return nil
}

// ParseURL parses raw, which must be an http URL whose host is a loopback
// IP address.
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" {
		return nil, fmt.Errorf("%q: want http://127.0.0.1:PORT/path", raw)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%s: only loopback targets are allowed", u.Host)
	}
	return u, nil
}

// Run listens on every server's Addr (loopback only), serves each, and
// logs "NAME listening on ADDR" once per listener. It returns when
// SIGINT or SIGTERM arrives (nil) or when a server fails (that error):
// then it calls stop, if not nil, and shuts every server down within two
// seconds, closing those that do not finish by then.
func Run(name string, stop func(), servers ...*http.Server) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	lns := make([]net.Listener, 0, len(servers))
	defer func() {
		for _, ln := range lns {
			ln.Close() // a no-op once Serve has taken it
		}
	}()
	for _, srv := range servers {
		if err := CheckAddr(srv.Addr); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { errc <- srv.Serve(lns[i]) }()
		log.Printf("%s listening on %s", name, lns[i].Addr())
	}
	var err error
	select {
	case err = <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
	case <-ctx.Done():
	}
	if stop != nil {
		stop()
	}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	for _, srv := range servers {
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}
	return err
}
