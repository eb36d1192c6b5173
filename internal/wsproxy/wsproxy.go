// Package wsproxy passes WebSocket connections through to Kalshi's
// WebSocket API, every frame unchanged in both directions.
//
// # Design
//
// The handshake is forwarded with the client's end-to-end headers as they
// are (Kalshi signs timestamp + "GET" + path, not the host, so the client's
// signature stays valid); a refused handshake comes back with the upstream's
// status, headers and body. After 101 the connection is a frame-aware byte
// tunnel: wsproxy reads each frame header to learn where the frame ends,
// then copies the header and payload bytes to the other side untouched
// (masked payloads stay masked, compressed ones compressed, fragments
// fragments). Pings, pongs and close frames are frames like any other, so a
// client's ping is answered by the upstream, the upstream's heartbeat pings
// reach the client, and close codes travel both ways.
//
// Knowing the frame boundaries is what lets wsproxy speak for itself when it
// must, without ever buffering or altering a message: at shutdown, after an
// idle timeout, when one side vanishes or a client frame exceeds the limit,
// it waits for the frame in flight on each side to end, writes a close frame
// of its own (1001 going away, 1009 too big, 1014 when the upstream is
// gone), stops relaying, and waits a bounded time for the close replies
// before closing the TCP connections. A frame cut in the middle by a dying
// peer cannot be completed: the other side then gets its TCP connection
// closed without a close frame.
//
// A [Proxy] never caches anything and never shares a connection: every
// client handshake opens its own upstream connection.
package wsproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/kproxy/kproxy/internal/header"
	"github.com/kproxy/kproxy/internal/httperr"
	"github.com/kproxy/kproxy/internal/metrics"
)

// Defaults of the Config fields.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = 2 * time.Minute
	DefaultWriteTimeout     = 30 * time.Second
	DefaultCloseTimeout     = 2 * time.Second
	DefaultMaxFrameBytes    = 16 << 20
)

// maxRefusedBody bounds the body of a refused handshake that is passed on.
const maxRefusedBody = 1 << 20

// Config configures a Proxy. Only Upstream is required.
type Config struct {
	// Upstream is the WebSocket URL handshakes go to (ws:// or wss://, e.g.
	// wss://external-api-ws.kalshi.com/trade-api/ws/v2). Its path is the
	// path sent upstream; the client's query string is appended.
	Upstream *url.URL
	// HandshakeTimeout bounds the upstream part of a handshake: dial, TLS,
	// request, response (and the body of a refusal). Zero means
	// DefaultHandshakeTimeout. The client's part (sending its request
	// headers) is bounded by the http.Server's ReadHeaderTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection on which no frame started in either
	// direction for that long (Kalshi pings every 10 s, so a live upstream
	// is never idle). Zero means DefaultIdleTimeout; negative: no limit.
	IdleTimeout time.Duration
	// WriteTimeout bounds one write to a peer; a peer that stops reading for
	// longer is dropped (a client that stops reading cannot hold the
	// upstream forever). Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// CloseTimeout bounds a close that wsproxy starts: waiting for the
	// frame in flight, writing its close frame and waiting for the reply.
	// Zero means DefaultCloseTimeout.
	CloseTimeout time.Duration
	// MaxFrameBytes is the largest payload accepted in one frame from a
	// client; a larger frame closes the connection (1009 to the client,
	// 1001 to the upstream) before any of it is forwarded. Zero means
	// DefaultMaxFrameBytes; negative: no limit. Frames from the upstream
	// are not limited (they are streamed, never buffered).
	MaxFrameBytes int64
	// TLSConfig is used for wss upstreams; nil means the system roots.
	// ServerName defaults to the upstream host; NextProtos is always
	// http/1.1 only.
	TLSConfig *tls.Config
	// Dial opens the TCP connection to the upstream; nil means a
	// net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Metrics, if set, gets kproxy_ws_connections.
	Metrics *metrics.Metrics
	// Logger gets one line per connection when it ends, and refusals;
	// nil discards. Headers are never logged.
	Logger *slog.Logger
}

// Proxy is an http.Handler for the WebSocket path. It is safe for
// concurrent use. Every open connection is tracked, so that Shutdown and
// Close can end them (http.Server.Shutdown does not track hijacked
// connections).
type Proxy struct {
	cfg      Config
	target   url.URL // Upstream with an http(s) scheme
	addr     string  // host:port to dial
	tls      *tls.Config
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	log      *slog.Logger
	maxFrame int64 // < 0: no limit

	mu      sync.Mutex
	conns   map[*tunnel]struct{}
	pending int           // handshakes in progress
	closing bool          // Shutdown or Close was called
	changed chan struct{} // closed and replaced when conns or pending shrink
}

// New validates cfg and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	u := cfg.Upstream
	if u == nil {
		return nil, errors.New("wsproxy: no upstream URL")
	}
	p := &Proxy{cfg: cfg, conns: make(map[*tunnel]struct{}), changed: make(chan struct{})}
	p.target = *u
	port := "80"
	switch u.Scheme {
	case "ws":
		p.target.Scheme = "http"
	case "wss":
		p.target.Scheme, port = "https", "443"
	default:
		return nil, fmt.Errorf("wsproxy: upstream %q: scheme must be ws or wss", u.String())
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("wsproxy: upstream %q: no host", u.String())
	}
	if p.target.Path == "" {
		p.target.Path = "/"
	}
	p.target.RawQuery, p.target.Fragment = "", ""
	if u.Port() != "" {
		port = u.Port()
	}
	p.addr = net.JoinHostPort(u.Hostname(), port)
	if p.target.Scheme == "https" {
		p.tls = &tls.Config{}
		if cfg.TLSConfig != nil {
			p.tls = cfg.TLSConfig.Clone()
		}
		if p.tls.ServerName == "" {
			p.tls.ServerName = u.Hostname()
		}
		p.tls.NextProtos = []string{"http/1.1"}
	}
	p.dial = cfg.Dial
	if p.dial == nil {
		p.dial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	p.log = cfg.Logger
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.maxFrame = cfg.MaxFrameBytes
	if p.maxFrame == 0 {
		p.maxFrame = DefaultMaxFrameBytes
	}
	if p.cfg.HandshakeTimeout <= 0 {
		p.cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if p.cfg.IdleTimeout == 0 {
		p.cfg.IdleTimeout = DefaultIdleTimeout
	}
	if p.cfg.WriteTimeout <= 0 {
		p.cfg.WriteTimeout = DefaultWriteTimeout
	}
	if p.cfg.CloseTimeout <= 0 {
		p.cfg.CloseTimeout = DefaultCloseTimeout
	}
	return p, nil
}

// Upstream returns the WebSocket URL handshakes go to.
func (p *Proxy) Upstream() *url.URL {
	u := *p.cfg.Upstream
	return &u
}

// Open returns the number of open pass-through connections.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// isUpgrade reports whether r asks for a WebSocket (RFC 6455 section 4.1:
// HTTP/1.1, Connection containing "upgrade", Upgrade containing
// "websocket").
func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && r.ProtoAtLeast(1, 1) && r.ProtoMajor == 1 &&
		headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// ServeHTTP forwards a WebSocket handshake and, once the upstream switched
// protocols, relays the connection until it ends. It answers, as JSON:
// 405 for a method other than GET or HEAD, 404 (as for any unknown path)
// for a request that is not a WebSocket handshake, 503 while shutting down, 502
// when the upstream cannot be reached or answers nonsense and 504 when it
// does not answer within the handshake timeout.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httperr.Write(w, http.StatusMethodNotAllowed, httperr.CodeMethodNotAllowed, "the WebSocket endpoint takes GET handshakes only", 0)
		return
	}
	if !isUpgrade(r) {
		// The contract routes only a handshake here; anything else is the
		// 404 of any unknown path.
		httperr.Write(w, http.StatusNotFound, httperr.CodeNotFound,
			"no such route; "+r.URL.Path+" takes WebSocket handshakes only (Connection: Upgrade, Upgrade: websocket)", 0)
		return
	}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		httperr.Write(w, http.StatusServiceUnavailable, httperr.CodeDraining, "kproxy is shutting down", 0)
		return
	}
	p.pending++
	p.mu.Unlock()
	registered := false
	defer func() {
		if !registered {
			p.mu.Lock()
			p.pending--
			p.notifyLocked()
			p.mu.Unlock()
		}
	}()

	up, res, err := p.handshake(r)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client is gone
		}
		var he *handshakeError
		if errors.As(err, &he) {
			p.log.Warn("websocket handshake failed", "upstream", p.addr, "err", he.err)
			httperr.Write(w, he.status, he.code, he.msg, 0)
		}
		return
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		defer up.Close()
		p.passRefusal(w, res)
		return
	}

	h := w.Header()
	for k, vs := range res.Header {
		h[k] = vs
	}
	w.WriteHeader(http.StatusSwitchingProtocols)
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		p.log.Error("websocket: cannot take over the client connection", "err", err)
		return
	}
	if err := brw.Writer.Flush(); err != nil {
		client.Close()
		up.Close()
		return
	}
	client.SetDeadline(time.Time{})

	t := newTunnel(p, r, client, brw.Reader, up.conn, up.r)
	p.mu.Lock()
	p.pending--
	registered = true
	p.conns[t] = struct{}{}
	closing := p.closing
	p.mu.Unlock()
	if m := p.cfg.Metrics; m != nil {
		m.WSConnections.Inc()
	}
	if closing {
		t.stop(endShutdown)
	}
	t.run()
	if m := p.cfg.Metrics; m != nil {
		m.WSConnections.Dec()
	}
	p.mu.Lock()
	delete(p.conns, t)
	p.notifyLocked()
	p.mu.Unlock()
}

// notifyLocked wakes Shutdown and Close. p.mu must be held.
func (p *Proxy) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Shutdown refuses new handshakes (503), asks every open connection to
// close (a 1001 close frame to both sides, then the close handshake), and
// waits until every connection and every handshake in progress has ended
// or ctx is done; then it cuts what is left and returns ctx's error.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	for t := range p.conns {
		t.stop(endShutdown)
	}
	p.mu.Unlock()
	err := p.wait(ctx)
	if err != nil {
		p.Close()
	}
	return err
}

// Close refuses new handshakes and cuts every open connection at once
// (no close frames), returning when they have ended.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closing = true
	for t := range p.conns {
		t.kill()
	}
	p.mu.Unlock()
	p.waitConns()
}

// wait blocks until no connection and no handshake is left, or ctx ends.
func (p *Proxy) wait(ctx context.Context) error {
	for {
		p.mu.Lock()
		n := len(p.conns) + p.pending
		changed := p.changed
		p.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitConns blocks until no connection is left (killed tunnels end
// promptly; handshakes in progress are bounded by the handshake timeout and
// are not waited for).
func (p *Proxy) waitConns() {
	for {
		p.mu.Lock()
		n := len(p.conns)
		changed := p.changed
		p.mu.Unlock()
		if n == 0 {
			return
		}
		<-changed
	}
}

// upstreamConn is an upstream connection after its 101: conn, with r
// holding the bytes already read after the response headers.
type upstreamConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func (u *upstreamConn) Close() error { return u.conn.Close() }

// handshakeError is a failure kproxy answers itself.
type handshakeError struct {
	status    int
	code, msg string
	err       error
}

func (e *handshakeError) Error() string { return e.err.Error() }

// handshake sends the client's handshake upstream and reads the answer.
// On a non-101 answer res.Body holds the upstream's body (readable until
// the handshake deadline) and the caller closes the connection.
func (p *Proxy) handshake(r *http.Request) (*upstreamConn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.HandshakeTimeout)
	defer cancel()
	fail := func(err error) error {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errDeadline) {
			return &handshakeError{http.StatusGatewayTimeout, httperr.CodeUpstreamTimeout, "the upstream WebSocket handshake timed out", err}
		}
		return &handshakeError{http.StatusBadGateway, httperr.CodeUpstreamUnreachable, "the upstream WebSocket endpoint failed: " + p.addr, err}
	}
	conn, err := p.dial(ctx, "tcp", p.addr)
	if err != nil {
		return nil, nil, fail(err)
	}
	if p.tls != nil {
		tc := tls.Client(conn, p.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, nil, fail(err)
		}
		conn = tc
	}
	// The deadline bounds every read and write below; ending ctx (client
	// gone, timeout) unblocks them at once.
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	out := p.outRequest(r)
	br := bufio.NewReaderSize(conn, 16<<10)
	var res *http.Response
	err = out.Write(conn)
	if err == nil {
		res, err = http.ReadResponse(br, out)
	}
	if err == nil && res.StatusCode != http.StatusSwitchingProtocols {
		// Read the refusal's body while the deadline holds.
		// A body cut short is passed on as far as it came.
		body, _ := io.ReadAll(io.LimitReader(res.Body, maxRefusedBody))
		res.Body.Close()
		res.Body = io.NopCloser(bytes.NewReader(body))
	}
	if !stop() || ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		if isTimeout(err) {
			err = fmt.Errorf("%w: %v", errDeadline, err)
		}
		return nil, nil, fail(err)
	}
	if res.StatusCode == http.StatusSwitchingProtocols && !headerHasToken(res.Header, "Upgrade", "websocket") {
		conn.Close()
		return nil, nil, &handshakeError{http.StatusBadGateway, httperr.CodeUpstreamBadUpgrade,
			"the upstream switched to a protocol other than websocket", fmt.Errorf("upstream Upgrade %q", res.Header.Get("Upgrade"))}
	}
	conn.SetDeadline(time.Time{})
	return &upstreamConn{conn, br}, res, nil
}

var errDeadline = errors.New("deadline exceeded")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// removeHopByHop deletes the hop-by-hop headers of h, including those named
// by its Connection header.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range header.HopByHop {
		delete(h, name)
	}
}

// outRequest builds the upstream handshake: the client's headers (values
// byte for byte) without the hop-by-hop ones, then Connection: Upgrade and
// the client's own Upgrade value, and X-Forwarded-For with the client's
// address appended, as the REST pass-through does.
func (p *Proxy) outRequest(r *http.Request) *http.Request {
	h := make(http.Header, len(r.Header)+3)
	for k, vs := range r.Header {
		h[k] = append([]string(nil), vs...)
	}
	upgrade := r.Header["Upgrade"]
	removeHopByHop(h)
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = upgrade
	if r.RemoteAddr != "" {
		h["X-Forwarded-For"] = header.ForwardedFor(r.Header["X-Forwarded-For"], r.RemoteAddr)
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // keeps Request.Write from adding Go's
	}
	u := p.target
	u.RawQuery = r.URL.RawQuery
	return &http.Request{
		Method:     http.MethodGet,
		URL:        &u,
		Host:       p.target.Host,
		Header:     h,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
	}
}

// passRefusal answers the client with the upstream's refusal: status,
// end-to-end headers and body.
func (p *Proxy) passRefusal(w http.ResponseWriter, res *http.Response) {
	body, _ := io.ReadAll(res.Body)
	h := w.Header()
	for k, vs := range res.Header {
		h[k] = vs
	}
	removeHopByHop(h)
	h.Del("Content-Length")
	h.Set("Content-Length", fmt.Sprint(len(body)))
	p.log.Info("websocket handshake refused by the upstream", "status", res.StatusCode, "upstream", p.addr)
	w.WriteHeader(res.StatusCode)
	w.Write(body)
}
