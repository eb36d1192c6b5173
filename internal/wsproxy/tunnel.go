package wsproxy

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Frame opcodes (RFC 6455 section 5.2).
const opClose = 0x8

// Close codes wsproxy sends itself (RFC 6455 section 7.4, IANA registry).
const (
	closeGoingAway  = 1001
	closeTooBig     = 1009
	closeBadGateway = 1014
)

// maxHeader is the longest frame header: 2 bytes, 8 of extended length,
// 4 of mask key.
const maxHeader = 14

var errBadFrame = errors.New("wsproxy: malformed frame header")

// frameHeader is what wsproxy needs to know of a frame: where it ends, and
// whether it is a close frame (whose code is logged).
type frameHeader struct {
	opcode byte
	masked bool
	key    [4]byte
	length int64
}

// readHeader reads one frame header from r into buf (at least maxHeader
// bytes) and returns its raw bytes, which are forwarded unchanged. A clean
// end of the stream before a frame is io.EOF.
func readHeader(r *bufio.Reader, buf []byte) ([]byte, frameHeader, error) {
	var fh frameHeader
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return nil, fh, err
	}
	fh.opcode = buf[0] & 0x0f
	fh.masked = buf[1]&0x80 != 0
	n := 2
	switch l := buf[1] & 0x7f; l {
	case 126:
		if _, err := io.ReadFull(r, buf[2:4]); err != nil {
			return nil, fh, unexpected(err)
		}
		fh.length = int64(binary.BigEndian.Uint16(buf[2:4]))
		n = 4
	case 127:
		if _, err := io.ReadFull(r, buf[2:10]); err != nil {
			return nil, fh, unexpected(err)
		}
		u := binary.BigEndian.Uint64(buf[2:10])
		if u>>63 != 0 {
			return nil, fh, errBadFrame
		}
		fh.length = int64(u)
		n = 10
	default:
		fh.length = int64(l)
	}
	if fh.masked {
		if _, err := io.ReadFull(r, buf[n:n+4]); err != nil {
			return nil, fh, unexpected(err)
		}
		copy(fh.key[:], buf[n:n+4])
		n += 4
	}
	return buf[:n], fh, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// closeMsg is a close frame wsproxy writes itself.
type closeMsg struct {
	code   uint16
	reason string
}

// closeFrame encodes a close frame; frames to a server (the upstream) are
// masked, as RFC 6455 requires of a client.
func closeFrame(m closeMsg, masked bool) []byte {
	payload := binary.BigEndian.AppendUint16(nil, m.code)
	payload = append(payload, m.reason[:min(len(m.reason), 123)]...)
	b := []byte{0x80 | opClose, byte(len(payload))}
	if !masked {
		return append(b, payload...)
	}
	b[1] |= 0x80
	var key [4]byte
	rand.Read(key[:])
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

// peer is one side of a tunnel.
type peer struct {
	name   string // "client" or "upstream", for the log
	conn   net.Conn
	r      *bufio.Reader
	masked bool // frames wsproxy writes to this peer must be masked (it is the upstream)

	// sem is held (a token in the channel) while a frame is written to
	// conn, by the relay or by wsproxy's own close; it guards the fields
	// below.
	sem          chan struct{}
	closeWritten bool // a close frame (forwarded or wsproxy's) was written to conn
	broken       bool // a frame to conn was cut short: nothing more may be written

	frames    atomic.Int64 // frames written to conn
	bytes     atomic.Int64 // bytes written to conn
	sentClose atomic.Bool  // this peer sent a close frame and it was forwarded
	closeCode atomic.Int32 // the code of that close frame (1005: none given)
}

func newPeer(name string, conn net.Conn, r *bufio.Reader, masked bool) *peer {
	return &peer{name: name, conn: conn, r: r, masked: masked, sem: make(chan struct{}, 1)}
}

// endReason is why a tunnel ended, as logged.
type endReason int32

const (
	endNormal       endReason = iota // close frames went both ways, or a side closed after its close frame
	endClientGone                    // the client vanished or stopped reading
	endUpstreamGone                  // the upstream vanished or stopped reading
	endShutdown                      // kproxy is shutting down
	endIdle                          // no frame for IdleTimeout
	endTooBig                        // the client sent a frame larger than MaxFrameBytes
)

func (r endReason) String() string {
	return [...]string{"closed", "client_gone", "upstream_gone", "shutdown", "idle_timeout", "frame_too_big"}[r]
}

// relayEnd is how a relay ended.
type relayEnd struct {
	src, dst  *peer
	dstFailed bool // writing to dst failed (else reading src ended)
	err       error
}

// tunnel is one pass-through connection. Two relays copy frames, one per
// direction; run supervises them. Once wsproxy takes over the close
// (begin), both relays stop forwarding and only wait for their peer's close
// reply.
type tunnel struct {
	p          *Proxy
	start      time.Time
	remote     string
	client, up *peer

	last     atomic.Int64 // UnixNano of the last frame header read, either way
	takeover atomic.Bool  // set by begin: relays discard instead of forwarding
	reason   atomic.Int32 // endReason, set by begin

	stopc     chan endReason // cap 1: a stop request (Shutdown)
	beginOnce sync.Once
	closing   chan struct{} // closed by begin
	sent      chan struct{} // closed when begin's close frames are written (or given up)
	killOnce  sync.Once
}

func newTunnel(p *Proxy, r *http.Request, client net.Conn, clientR *bufio.Reader, up net.Conn, upR *bufio.Reader) *tunnel {
	t := &tunnel{
		p:       p,
		start:   time.Now(),
		remote:  r.RemoteAddr,
		client:  newPeer("client", client, clientR, false),
		up:      newPeer("upstream", up, upR, true),
		stopc:   make(chan endReason, 1),
		closing: make(chan struct{}),
		sent:    make(chan struct{}),
	}
	t.last.Store(t.start.UnixNano())
	return t
}

// stop asks the tunnel to close with both sides getting a 1001 close frame.
// It does not block.
func (t *tunnel) stop(r endReason) {
	select {
	case t.stopc <- r:
	default:
	}
}

// kill closes both TCP connections (idempotent).
func (t *tunnel) kill() {
	t.killOnce.Do(func() {
		t.client.conn.Close()
		t.up.conn.Close()
	})
}

// begin takes over the close: relays stop forwarding, dead (if any) is
// closed at once, and toClient / toUp (if any) are written as close frames
// once the frame in flight to that side has ended. Only the first call has
// an effect.
func (t *tunnel) begin(r endReason, toClient, toUp *closeMsg, dead *peer) {
	t.beginOnce.Do(func() {
		t.reason.Store(int32(r))
		t.takeover.Store(true)
		if dead != nil {
			dead.conn.Close()
		}
		close(t.closing)
		go func() {
			defer close(t.sent)
			var wg sync.WaitGroup
			if toClient != nil {
				wg.Go(func() { t.sendClose(t.client, *toClient) })
			}
			if toUp != nil {
				wg.Go(func() { t.sendClose(t.up, *toUp) })
			}
			wg.Wait()
		}()
	})
}

// sendClose writes wsproxy's own close frame to pk, unless a close frame
// went there already or its stream is broken. It waits for the frame in
// flight for at most CloseTimeout.
func (t *tunnel) sendClose(pk *peer, m closeMsg) {
	timer := time.NewTimer(t.p.cfg.CloseTimeout)
	defer timer.Stop()
	select {
	case pk.sem <- struct{}{}:
	case <-timer.C:
		return // a frame is stuck half-written: the TCP close will do
	}
	defer func() { <-pk.sem }()
	if pk.closeWritten || pk.broken {
		return
	}
	pk.conn.SetWriteDeadline(time.Now().Add(min(t.p.cfg.WriteTimeout, t.p.cfg.CloseTimeout)))
	b := closeFrame(m, pk.masked)
	if _, err := pk.conn.Write(b); err != nil {
		pk.broken = true
		return
	}
	pk.closeWritten = true
	pk.frames.Add(1)
	pk.bytes.Add(int64(len(b)))
}

// run relays until both directions have ended, then closes both
// connections and logs the connection.
func (t *tunnel) run() {
	ends := make(chan relayEnd, 2)
	go t.relay(t.up, t.client, -1, ends)
	go t.relay(t.client, t.up, t.p.maxFrame, ends)

	var idle <-chan time.Time
	var idleTimer *time.Timer
	if d := t.p.cfg.IdleTimeout; d > 0 {
		idleTimer = time.NewTimer(d)
		defer idleTimer.Stop()
		idle = idleTimer.C
	}
	closing := t.closing
	var deadline <-chan time.Time
	for pending := 2; pending > 0; {
		select {
		case e := <-ends:
			pending--
			t.relayEnded(e)
		case r := <-t.stopc:
			going := &closeMsg{closeGoingAway, "kproxy is shutting down"}
			t.begin(r, going, going, nil)
		case <-idle:
			d := t.p.cfg.IdleTimeout
			if since := time.Since(time.Unix(0, t.last.Load())); since < d {
				idleTimer.Reset(d - since)
				continue
			}
			m := &closeMsg{closeGoingAway, "idle timeout"}
			t.begin(endIdle, m, m, nil)
		case <-closing:
			closing = nil
			timer := time.NewTimer(t.p.cfg.CloseTimeout)
			defer timer.Stop()
			deadline = timer.C
		case <-deadline:
			t.kill()
		}
	}
	t.kill()
	select {
	case <-t.closing:
		<-t.sent // bounded: the connections are closed, writes fail at once
	default:
	}
	t.logEnd()
}

// relayEnded decides what to do when a relay ended outside a takeover.
func (t *tunnel) relayEnded(e relayEnd) {
	if t.takeover.Load() {
		return // part of a close wsproxy is handling
	}
	lost := func(gone *peer) {
		if gone == t.client {
			t.begin(endClientGone, nil, &closeMsg{closeGoingAway, "client went away"}, t.client)
		} else {
			t.begin(endUpstreamGone, &closeMsg{closeBadGateway, "upstream connection lost"}, nil, t.up)
		}
	}
	if e.dstFailed {
		lost(e.dst)
		return
	}
	src, other := e.src, e.dst
	switch {
	case src.sentClose.Load() && other.sentClose.Load():
		// Close frames went both ways: the close handshake is complete.
		t.begin(endNormal, nil, nil, nil)
		t.kill()
	case src.sentClose.Load():
		// src closed after its close frame; other's reply is still due.
		t.begin(endNormal, nil, nil, src)
	default:
		lost(src)
	}
}

// relay copies frames from src to dst until src ends, dst fails, or (after
// a takeover) src sends its close frame. limit bounds one frame's payload
// (< 0: no limit).
func (t *tunnel) relay(src, dst *peer, limit int64, ends chan<- relayEnd) {
	hbuf := make([]byte, maxHeader)
	buf := make([]byte, 32<<10)
	for {
		hdr, fh, err := readHeader(src.r, hbuf)
		if err != nil {
			ends <- relayEnd{src: src, dst: dst, err: err}
			return
		}
		t.last.Store(time.Now().UnixNano())
		if !t.takeover.Load() && limit >= 0 && fh.length > limit {
			t.begin(endTooBig, &closeMsg{closeTooBig, "frame too big"}, &closeMsg{closeGoingAway, "client sent a frame too big"}, nil)
		}
		if !t.takeover.Load() {
			dst.sem <- struct{}{}
			if !t.takeover.Load() { // begin may have won the race for sem
				werr, rerr := t.forward(src, dst, hdr, fh, buf)
				<-dst.sem
				switch {
				case werr != nil:
					ends <- relayEnd{src: src, dst: dst, dstFailed: true, err: werr}
					return
				case rerr != nil:
					ends <- relayEnd{src: src, dst: dst, err: rerr}
					return
				}
				continue
			}
			<-dst.sem
		}
		// wsproxy has taken over: discard, until src's close frame.
		if _, err := io.CopyN(io.Discard, src.r, fh.length); err != nil {
			ends <- relayEnd{src: src, dst: dst, err: err}
			return
		}
		if fh.opcode == opClose {
			ends <- relayEnd{src: src, dst: dst}
			return
		}
	}
}

// forward writes one frame, header then payload, from src to dst; dst.sem
// must be held. It returns the error of a write (dst failed) or of a read
// (src ended mid-frame); either leaves dst's stream broken.
func (t *tunnel) forward(src, dst *peer, hdr []byte, fh frameHeader, buf []byte) (werr, rerr error) {
	wt := t.p.cfg.WriteTimeout
	// The header goes out in the same write as the start of the payload:
	// one write per small frame.
	pending := copy(buf, hdr)
	written := int64(0)
	var closePayload [125]byte
	var got int64
	for remaining := fh.length; remaining > 0 || pending > 0; {
		var err error
		if remaining > 0 {
			var n int
			n, err = src.r.Read(buf[pending:min(int64(len(buf)), int64(pending)+remaining)])
			if fh.opcode == opClose && got < int64(len(closePayload)) {
				copy(closePayload[got:], buf[pending:pending+n])
			}
			got += int64(n)
			remaining -= int64(n)
			pending += n
		}
		if pending > 0 {
			dst.conn.SetWriteDeadline(time.Now().Add(wt))
			if _, werr := dst.conn.Write(buf[:pending]); werr != nil {
				dst.broken = true
				return werr, nil
			}
			written += int64(pending)
			pending = 0
		}
		if err != nil && remaining > 0 {
			dst.broken = true
			return nil, unexpected(err)
		}
	}
	dst.frames.Add(1)
	dst.bytes.Add(written)
	if fh.opcode == opClose {
		dst.closeWritten = true
		code := int32(1005) // no status code
		if got >= 2 && got <= 125 {
			p := closePayload[:2]
			if fh.masked {
				p = []byte{p[0] ^ fh.key[0], p[1] ^ fh.key[1]}
			}
			code = int32(binary.BigEndian.Uint16(p))
		}
		src.closeCode.Store(code)
		src.sentClose.Store(true)
	}
	return nil, nil
}

// logEnd writes the connection's line: never a header, so no credentials.
func (t *tunnel) logEnd() {
	t.p.log.Info("websocket closed",
		"remote", t.remote,
		"duration", time.Since(t.start).Round(time.Millisecond).String(),
		"end", endReason(t.reason.Load()).String(),
		"client_frames", t.up.frames.Load(), "client_bytes", t.up.bytes.Load(),
		"upstream_frames", t.client.frames.Load(), "upstream_bytes", t.client.bytes.Load(),
		"client_close", t.client.closeCode.Load(), "upstream_close", t.up.closeCode.Load(),
	)
}
