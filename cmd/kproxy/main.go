// Command kproxy is a caching reverse proxy for Kalshi's Trade API v2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/app"
	"github.com/kproxy/kproxy/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "check-config":
			return checkConfig(args[1:], stdout, stderr)
		case "healthcheck":
			return healthcheck(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("kproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	src := sourceFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "kproxy", version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kproxy: unknown command %q (commands: check-config, healthcheck)\n", fs.Arg(0))
		return 2
	}
	cfg, _, err := config.Load(*src)
	if err != nil {
		fmt.Fprintln(stderr, "kproxy:", err)
		return 1
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// A soft memory limit sized from the cache bound: the garbage
		// collector works harder before the process outgrows what the
		// operator planned for (cache.max_bytes plus headroom).
		debug.SetMemoryLimit(app.MemoryLimit(cfg))
	}
	a, err := app.New(cfg, app.Options{LogOutput: stderr})
	if err != nil {
		fmt.Fprintln(stderr, "kproxy:", err)
		return 1
	}
	defer a.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "kproxy: listen: %s: %v\n", cfg.Listen, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Serve(ctx, ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(stderr, "kproxy:", err)
		return 1
	}
	return 0
}

// sourceFlags declares the flags that override the configuration.
func sourceFlags(fs *flag.FlagSet) *config.Sources {
	src := &config.Sources{}
	fs.StringVar(&src.File, "config", "", "config file (default: config.yaml in the working directory, if present)")
	fs.StringVar(&src.Listen, "listen", "", "listen address (default :8080)")
	fs.StringVar(&src.Upstream, "upstream", "", "upstream origin (default https://external-api.kalshi.com)")
	return src
}

func checkConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kproxy check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	src := sourceFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, file, err := config.Load(*src)
	if err != nil {
		fmt.Fprintln(stderr, "kproxy:", err)
		return 1
	}
	if file == "" {
		file = "(built-in defaults)"
	}
	fmt.Fprintf(stdout, "# effective configuration (file: %s)\n%s", file, cfg.YAML())
	return 0
}

func healthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kproxy healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080/healthz", "URL to GET")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Get(*url)
	if err != nil {
		fmt.Fprintln(stderr, "kproxy healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "kproxy healthcheck: %s answered %s\n", *url, resp.Status)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}
