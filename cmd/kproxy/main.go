// Command kproxy is a caching reverse proxy for Kalshi's Trade API v2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kproxy/kproxy/internal/app"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/upstream"
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
		case "help":
			fmt.Fprint(stdout, mainHelp())
			return 0
		}
	}
	fs := newFlagSet("kproxy", stderr)
	src := sourceFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if code, done := parse(fs, args, stdout, stderr, mainHelp); done {
		return code
	}
	if *showVersion {
		fmt.Fprintln(stdout, "kproxy", version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kproxy: unknown command %q (commands: check-config, healthcheck, help; kproxy -h for help)\n", fs.Arg(0))
		return 2
	}
	// Signals are caught before the listener opens: once kproxy answers,
	// SIGTERM drains it. After the first signal the default action is
	// back, so a second Ctrl-C ends kproxy at once, drain or not.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	k, err := start(*src, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "kproxy:", err)
		return 1
	}
	defer k.app.Close()
	// The log package's default logger is written to by libraries
	// kproxy uses: net/http (the Transport's "Unsolicited response
	// received on idle HTTP channel", http2's "header list too large") and
	// coder/websocket (a bad origin pattern). Through kproxy's logger those
	// lines have log.format like every other (CONTRACT.md, Logs).
	slog.SetDefault(k.app.Logger)
	if os.Getenv("GOMEMLIMIT") == "" {
		// A soft memory limit sized from the cache bound: the garbage
		// collector works harder before the process outgrows what the
		// operator planned for (cache.max_bytes plus headroom).
		debug.SetMemoryLimit(app.MemoryLimit(k.app.Config))
	}
	if err := k.app.Serve(ctx, k.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		k.app.Logger.Error("serving failed", "err", err)
		return 1
	}
	return 0
}

// instance is a kproxy ready to serve: built and listening.
type instance struct {
	loaded *config.Loaded
	app    *app.App
	ln     net.Listener
}

// close releases what start acquired without serving.
func (k *instance) close() {
	k.ln.Close()
	k.app.Close()
}

// start does everything kproxy does before it serves, in the order it does
// it: load and validate the configuration, build the app (which loads the
// key file), open the listener. Startup and check-config both call it, so
// check-config passes exactly when kproxy would start. The first error is
// returned, naming the key (and the variable or flag that set it).
func start(src config.Sources, logs io.Writer) (*instance, error) {
	l, err := config.Resolve(src)
	if err != nil {
		return nil, err
	}
	a, err := app.New(l.Config, app.Options{LogOutput: logs, Version: version})
	if err != nil {
		var kf *upstream.KeyFileError
		if errors.As(err, &kf) {
			// Named like every other bad value: the key, and the
			// variable or flag that set it.
			return nil, &config.KeyError{Key: l.Name("upstream.private_key_file"), Value: kf.File, Err: kf.Err}
		}
		return nil, err
	}
	ln, err := net.Listen("tcp", l.Config.Listen)
	if err != nil {
		a.Close()
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err // the address is in the message already
		}
		return nil, &config.KeyError{Key: l.Name("listen"), Value: l.Config.Listen, Err: fmt.Errorf("cannot listen: %w", err)}
	}
	return &instance{loaded: l, app: a, ln: ln}, nil
}

// sourceFlags declares the flags that override the configuration.
func sourceFlags(fs *flag.FlagSet) *config.Sources {
	src := &config.Sources{}
	fs.StringVar(&src.File, "config", "", "read settings from `FILE` (default: config.yaml in the working directory, if present; env KPROXY_CONFIG)")
	fs.StringVar(&src.Listen, "listen", "", "serve on `ADDR`, host:port (default :8080; env KPROXY_LISTEN)")
	fs.StringVar(&src.Upstream, "upstream", "", "send to the Kalshi origin `URL` (default https://external-api.kalshi.com; env KPROXY_UPSTREAM)")
	return src
}

// newFlagSet makes a flag set whose parse errors go to stderr; help is
// printed by parse.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	return fs
}

// parse parses args; done reports that the command should end with code:
// 0 after -h, -help or --help (help on stdout), 2 after a bad argument.
func parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, help func() string) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, help())
		return 0, true
	default:
		fmt.Fprintf(stderr, "run '%s -h' for help\n", fs.Name())
		return 2, true
	}
}

// flagsHelp lists the flags of fs.
func flagsHelp(fs *flag.FlagSet) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(tw, "  -%s %s\t%s\n", f.Name, name, usage)
	})
	tw.Flush()
	return b.String()
}

func mainHelp() string {
	fs := newFlagSet("kproxy", io.Discard)
	sourceFlags(fs)
	fs.Bool("version", false, "print the version and exit")
	var b strings.Builder
	b.WriteString(`kproxy is a caching proxy for Kalshi's Trade API v2: point your scripts' base URL at
http://127.0.0.1:8080/trade-api/v2 instead of Kalshi's and public market data comes from
memory, identical requests share one call to Kalshi, and everything private (orders,
portfolio) passes straight through, signatures untouched.

Usage:
  kproxy [-config FILE] [-listen ADDR] [-upstream URL]   serve (Ctrl-C or SIGTERM stops it)
  kproxy check-config [-config FILE] [-listen ADDR] [-upstream URL]
                                  check the configuration as startup does and print the
                                  effective one (every route's TTL); exit 0 iff kproxy would start
  kproxy healthcheck [-url URL]   GET /healthz, exit 0 on 200 (for Docker HEALTHCHECK)
  kproxy -version                 print the version
  kproxy help, kproxy -h          this help; kproxy COMMAND -h for a command's own

Flags:
`)
	b.WriteString(flagsHelp(fs))
	b.WriteString(`
Examples:
  kproxy                                     serve on :8080 in front of Kalshi
  kproxy -upstream https://api.elections.kalshi.com   the other production host
  KPROXY_UPSTREAM_TIMEOUT=1500ms KPROXY_CACHE_MAX_BYTES=64MiB kproxy
  curl -si 'localhost:8080/trade-api/v2/markets?limit=1' | grep -i x-cache    MISS, then HIT

Configuration, first match wins: flag, environment variable, config file, built-in default.
Every setting in config.yaml has a variable: KPROXY_ + its key in upper case with "_" for "."
(cache.max_bytes -> KPROXY_CACHE_MAX_BYTES). Durations are Go durations (500ms, 5s, 10m),
sizes bytes or 64MiB-style. An empty variable counts as unset; a KPROXY_* variable that names
no setting is an error. Lists (cache.routes, cache.overrides) can only be set in the file.

Environment variables, with their defaults:
`)
	b.WriteString(envHelp())
	b.WriteString(`
Docs: README.md, docs/configuration.md and the commented config.yaml in the kproxy source
(module github.com/kproxy/kproxy); kproxy check-config shows what is in effect.
`)
	return b.String()
}

// envHelp lists every variable kproxy reads, generated from the
// configuration struct so that it never falls behind it.
func envHelp() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  KPROXY_CONFIG\tconfig file (default: config.yaml in the working directory, if present)\n")
	for _, v := range config.Vars() {
		def := v.Default
		switch {
		case envNotes[v.Key] != "":
			def = envNotes[v.Key]
		case def == "" && v.Kind == "text":
			def = `""`
		case def == "":
			def = "unset (" + v.Kind + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", v.Name, def)
		if v.Key == "upstream.url" {
			fmt.Fprintf(tw, "  KPROXY_UPSTREAM\tthe same as KPROXY_UPSTREAM_URL (set only one)\n")
		}
	}
	fmt.Fprintf(tw, "  KPROXY_URL\tignored: the examples read it to find kproxy\n")
	tw.Flush()
	return b.String()
}

// envNotes explain defaults that a value alone does not.
var envNotes = map[string]string{
	"upstream.read_rate":                    "unset: the tier's (basic 20 a second)",
	"upstream.write_rate":                   "unset: the tier's (basic 10 a second)",
	"upstream.ws_url":                       `"": derived from upstream.url`,
	"cache.defaults.stale_while_revalidate": "unset: 1s on routes whose data moves with trading, else the route's ttl",
	"cache.disk.path":                       `the user cache directory + /kproxy (~/.cache/kproxy); "off" = no disk tier`,
	"cache.defaults.stale_if_error":         "unset: 10m",
	"admin.token":                           `"": admin routes off (404)`,
	"redis.url":                             `"": no shared tier`,
}

func checkConfigHelp() string {
	fs := newFlagSet("kproxy check-config", io.Discard)
	sourceFlags(fs)
	return `kproxy check-config: check the configuration exactly as startup does, and print the
effective one.

Usage:
  kproxy check-config [-config FILE] [-listen ADDR] [-upstream URL]

It reads the same flags, KPROXY_* variables and file as kproxy itself, then does everything
startup does short of serving: checks every value, loads upstream.private_key_file, builds
the proxy, and opens and closes the listen address. Exit 0 when kproxy would start, with the
effective configuration on stdout (the rate limits of your tier, the WebSocket URL, and every
route's ttl and stale windows, after cache.defaults and cache.overrides, written out), each
value with a comment saying where it came from (# from flag -listen, # from KPROXY_..., # from
file, # default); the output is itself a config file kproxy reads back. Exit 1 with the first
error otherwise, e.g.
  kproxy: config: KPROXY_UPSTREAM_TIMEOUT (upstream.timeout): "abc": not a duration ...
Because it opens the listen address, it fails while another process (a running kproxy) holds
it; add -listen 127.0.0.1:0 to check everything else.

Flags:
` + flagsHelp(fs) + `
Environment variables: see kproxy -h.
`
}

func checkConfig(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("kproxy check-config", stderr)
	src := sourceFlags(fs)
	if code, done := parse(fs, args, stdout, stderr, checkConfigHelp); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kproxy check-config: unexpected argument %q (kproxy check-config -h for help)\n", fs.Arg(0))
		return 2
	}
	k, err := start(*src, io.Discard)
	if err != nil {
		fmt.Fprintln(stderr, "kproxy:", err)
		return 1
	}
	k.close()
	file := k.loaded.File
	if file == "" {
		file = "(built-in defaults)"
	}
	fmt.Fprintf(stdout, "# effective configuration (file: %s); kproxy would start with it\n%s", file, k.loaded.YAML())
	return 0
}

func healthcheckHelp() string {
	fs := newFlagSet("kproxy healthcheck", io.Discard)
	healthcheckFlags(fs)
	return `kproxy healthcheck: GET a URL (kproxy's /healthz by default) and exit 0 on 200, 1 otherwise.
For container health checks: the image has no shell and no curl.

Usage:
  kproxy healthcheck [-url URL] [-timeout DURATION]

Flags:
` + flagsHelp(fs)
}

func healthcheckFlags(fs *flag.FlagSet) (url *string, timeout *time.Duration) {
	url = fs.String("url", "http://127.0.0.1:8080/healthz", "`URL` to GET")
	timeout = fs.Duration("timeout", 3*time.Second, "give up after `DURATION`, a Go duration such as 500ms or 3s")
	return url, timeout
}

func healthcheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("kproxy healthcheck", stderr)
	url, timeout := healthcheckFlags(fs)
	if code, done := parse(fs, args, stdout, stderr, healthcheckHelp); done {
		return code
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
