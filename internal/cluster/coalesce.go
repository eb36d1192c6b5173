package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/kproxy/kproxy/internal/fetch"
	"github.com/kproxy/kproxy/internal/httperr"
	"github.com/kproxy/kproxy/internal/upstream"
)

var _ fetch.Shared = (*Cluster)(nil)

// Kinds of fill messages (the first byte of a message on v1:fill).
const (
	fillStored  = 's' // the entry is in L2
	fillAnswer  = 'a' // a one-off answer is under v1:o:<token>
	fillError   = 'e' // a failure is under v1:o:<token>
	fillPrivate = 'p' // the answer was for the claimant's credentials: fetch yourself
	fillRetry   = 'r' // a purge fenced the answer off: claim again
)

// outcomeTTL is how long a one-off answer or failure stays for waiters.
const outcomeTTL = 5 * time.Second

// Acquire implements fetch.Shared. The local singleflight leader of key
// calls it; across replicas exactly one holds the claim at a time. The
// waiter registers for fill messages before it first looks, so a fill
// published in between is not missed; lost messages are covered by a
// re-check every Backstop, and a claimant that dies stops renewing its
// lease, which expires within LeaseTTL, so a waiter takes the claim over.
func (c *Cluster) Acquire(ctx context.Context, key string, fresh bool, since time.Time) fetch.Turn {
	if !c.up.Load() {
		return fetch.Turn{}
	}
	minFetched := int64(math.MinInt64)
	if !fresh && !since.IsZero() {
		// A forced refresh accepts only an answer fetched after it began.
		minFetched = since.UnixNano()
	}
	msgs, stop := c.watch(key)
	defer stop()
	waited := false
	tick := time.NewTicker(c.backstop)
	defer tick.Stop()
	for {
		t, held, err := c.tryClaim(key, minFetched)
		if err != nil {
			// Redis failed under us: fetch locally (local coalescing
			// still holds within this replica).
			c.log.Debug("redis claim failed; fetching without a claim", "key", key, "err", err)
			return fetch.Turn{}
		}
		if !held {
			if waited && t.Entry != nil {
				t.Waited = true
			}
			return t
		}
		waited = true
	wait:
		select {
		case <-ctx.Done():
			return fetch.Turn{Waited: true, Err: &upstream.Error{Status: 504, Code: httperr.CodeCoalesceTimeout,
				Msg: "timed out waiting for another replica's fetch", Err: ctx.Err()}}
		case <-tick.C:
		case m := <-msgs:
			if m == "" {
				break wait
			}
			switch m[0] {
			case fillPrivate:
				return fetch.Turn{}
			case fillAnswer, fillError:
				if t, ok := c.outcome(key, m[1:17], m[0]); ok {
					return t
				}
			}
		}
		if !c.up.Load() {
			return fetch.Turn{}
		}
	}
}

// tryClaim runs the claim script once: it returns a turn with an entry or
// a claim, or held when another replica holds the claim. minFetched is the
// oldest acceptable fetch time in Unix nanoseconds.
func (c *Cluster) tryClaim(key string, minFetched int64) (t fetch.Turn, held bool, err error) {
	token := fmt.Sprintf("%016x", rand.Uint64())
	ctx, cancel := c.call()
	defer cancel()
	ek, lk := c.key("e", key), c.key("l", key)
	res, err := claimScript.Run(ctx, c.rdb, []string{ek, lk, c.keyEpoch},
		token, c.leaseTTL.Milliseconds(), nanos(c.now().UnixNano()), nanos(minFetched)).Slice()
	c.report(err)
	if err != nil {
		return fetch.Turn{}, false, err
	}
	if len(res) != 2 {
		return fetch.Turn{}, false, errors.New("cluster: unexpected claim reply")
	}
	code, _ := res[0].(int64)
	switch code {
	case 1:
		s, _ := res[1].(string)
		e, derr := decodeRecord(key, []byte(s))
		if derr != nil {
			// An entry this version cannot read: fetch it anew, as the
			// claimant (the fill overwrites it).
			c.log.Warn("ignoring an undecodable L2 entry", "key", key)
			return c.claimOver(key, token, ek, lk)
		}
		return fetch.Turn{Entry: e, Stored: true}, false, nil
	case 2:
		s, _ := res[1].(string)
		return fetch.Turn{Claim: c.newClaim(key, token, s)}, false, nil
	case 3:
		return fetch.Turn{}, true, nil
	}
	return fetch.Turn{}, false, errors.New("cluster: unexpected claim reply")
}

// claimOver takes the claim regardless of the stored entry (at the
// largest time no entry is fresh).
func (c *Cluster) claimOver(key, token, ek, lk string) (fetch.Turn, bool, error) {
	ctx, cancel := c.call()
	defer cancel()
	res, err := claimScript.Run(ctx, c.rdb, []string{ek, lk, c.keyEpoch},
		token, c.leaseTTL.Milliseconds(), nanos(math.MaxInt64), nanos(math.MaxInt64)).Slice()
	if err != nil || len(res) != 2 {
		return fetch.Turn{}, false, err
	}
	if code, _ := res[0].(int64); code == 2 {
		s, _ := res[1].(string)
		return fetch.Turn{Claim: c.newClaim(key, token, s)}, false, nil
	}
	return fetch.Turn{}, true, nil
}

// outcome reads a claimed fetch's one-off answer or failure.
func (c *Cluster) outcome(key, token string, kind byte) (fetch.Turn, bool) {
	b, err := c.get(c.key("o", token))
	if err != nil {
		return fetch.Turn{}, false
	}
	if kind == fillError {
		e, err := decodeError(b)
		if err != nil {
			return fetch.Turn{}, false
		}
		return fetch.Turn{Err: e, Waited: true}, true
	}
	e, err := decodeRecord(key, b)
	if err != nil {
		return fetch.Turn{}, false
	}
	return fetch.Turn{Entry: e, Waited: true}, true
}

// claim is this replica's right to fetch one key; its lease is renewed
// until Done.
type claim struct {
	c      *Cluster
	key    string
	token  string
	epoch  string
	stop   chan struct{}
	closed bool
}

func (c *Cluster) newClaim(key, token, epoch string) *claim {
	cl := &claim{c: c, key: key, token: token, epoch: epoch, stop: make(chan struct{})}
	c.spawn(cl.renew)
	return cl
}

// renew keeps the lease alive while the fetch runs, at most FetchTimeout,
// and not after Close.
func (cl *claim) renew() {
	c := cl.c
	t := time.NewTicker(max(c.leaseTTL/3, 10*time.Millisecond))
	defer t.Stop()
	limit := time.NewTimer(c.fetchTO)
	defer limit.Stop()
	for {
		select {
		case <-cl.stop:
			return
		case <-c.quit:
			return
		case <-limit.C:
			return
		case <-t.C:
			if !c.up.Load() {
				continue
			}
			ctx, cancel := c.call()
			err := renewScript.Run(ctx, c.rdb, []string{c.key("l", cl.key)}, cl.token, c.leaseTTL.Milliseconds()).Err()
			cancel()
			c.report(err)
		}
	}
}

// Done implements fetch.Claim.
func (cl *claim) Done(o fetch.SharedOutcome) {
	if cl.closed {
		return
	}
	cl.closed = true
	close(cl.stop)
	c := cl.c
	kind, valueKey, value, px := byte(fillPrivate), c.key("o", cl.token), []byte(nil), outcomeTTL
	switch {
	case o.Private:
	case o.Err != nil:
		kind, value = fillError, encodeError(o.Err)
	case o.Entry != nil && o.Retention > 0:
		kind, valueKey, value, px = fillStored, c.key("e", cl.key), record(o.Entry), o.Retention
	case o.Entry != nil:
		kind, value = fillAnswer, record(o.Entry)
	}
	if !c.up.Load() {
		return
	}
	ctx, cancel := c.call()
	defer cancel()
	msg := string(kind) + cl.token + cl.key
	fenced := string(byte(fillRetry)) + cl.token + cl.key
	err := fillScript.Run(ctx, c.rdb, []string{valueKey, c.key("l", cl.key), c.keyEpoch},
		cl.token, cl.epoch, value, max(px.Milliseconds(), 1), c.chFill, msg, fenced).Err()
	c.report(err)
}

// nanos is the claim script's form of a time in Unix nanoseconds: 8 bytes,
// big-endian, as a cache record holds it.
func nanos(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

// Encoding of a shared fetch failure (under v2:o:<token>), kept briefly so
// that waiting replicas answer with it instead of fetching again. Integers
// are big-endian:
//
//	0     magic 'E'
//	1     version (1)
//	2-3   status
//	4-11  Retry-After, nanoseconds
//	      code, message: each a u16 length, then the bytes
const (
	errorMagic   = 'E'
	errorVersion = 1
	errorFixed   = 12
)

// errBadOutcome rejects a value that is not a failure this version wrote.
var errBadOutcome = errors.New("cluster: corrupt or foreign failure value")

func encodeError(e *upstream.Error) []byte {
	b := []byte{errorMagic, errorVersion}
	b = binary.BigEndian.AppendUint16(b, uint16(e.Status))
	b = binary.BigEndian.AppendUint64(b, uint64(max(e.RetryAfter, 0)))
	b = appendString16(b, e.Code)
	return appendString16(b, e.Msg)
}

// decodeError rebuilds a failure from encodeError's form; it never panics
// and rejects anything else with errBadOutcome.
func decodeError(b []byte) (*upstream.Error, error) {
	if len(b) < errorFixed || b[0] != errorMagic || b[1] != errorVersion {
		return nil, errBadOutcome
	}
	status := int(binary.BigEndian.Uint16(b[2:4]))
	ra := binary.BigEndian.Uint64(b[4:12])
	code, rest, ok := cutString16(b[errorFixed:])
	msg, rest, ok2 := cutString16(rest)
	if !ok || !ok2 || len(rest) != 0 || ra > 1<<62 {
		return nil, errBadOutcome
	}
	return &upstream.Error{Status: status, Code: code, Msg: msg, RetryAfter: time.Duration(ra)}, nil
}

func appendString16(b []byte, s string) []byte {
	s = s[:min(len(s), math.MaxUint16)]
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// cutString16 reads a u16 length and that many bytes from the start of b.
func cutString16(b []byte) (s string, rest []byte, ok bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > len(b)-2 {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}
