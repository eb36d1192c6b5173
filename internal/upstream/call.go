package upstream

import (
	"context"
	"net/http"
)

// Credentials says whose identity an upstream call carries.
type Credentials uint8

const (
	// Forward sends the client's headers as they are: its own signature,
	// made for the path this call goes to.
	Forward Credentials = iota
	// OwnKey signs the call with kproxy's own key (Config.Signer) when one
	// is configured, and otherwise sends it without any client credential
	// (KALSHI-ACCESS-*, Authorization, Cookie stripped). For calls kproxy
	// composes itself (an automatic batch, a batch item or page), whose
	// path no client signed.
	OwnKey
)

// clientCredentials are the request fields that identify a client.
var clientCredentials = []string{
	"Kalshi-Access-Key", "Kalshi-Access-Signature", "Kalshi-Access-Timestamp", "Authorization", "Cookie",
}

// Call describes one upstream call beyond its HTTP request: how it is
// labelled, charged and credentialed, and who is told of its attempts. The
// zero value is an unlabelled call forwarding the client's credentials.
// A Call belongs to one call at a time: the client writes Attempts.
type Call struct {
	// Route is the route template of the call's own path, for metric
	// labels; "" means "other".
	Route string
	// Charge is the route template the client asked for, to which the
	// status page charges the call; "" means Route. An automatically
	// batched single market charges "/trade-api/v2/markets/{ticker}", a
	// batch item the batch endpoint ("/batch", "/batch/markets"), a
	// passed-through request "pass-through" (no route: the status page
	// leaves it out, even a write to a cached route's own path).
	Charge string
	// Client names the client for fair shares of the budget; "" is one
	// anonymous client.
	Client string
	// Credentials says whose identity the call carries.
	Credentials Credentials
	// OnAttempt, if set, is called after every attempt, retries included,
	// with the attempt's status (0 on a transport error) and error (nil
	// when an answer came). It runs on the goroutine making the call,
	// before any retry backoff, and must not block.
	OnAttempt func(status int, err error)
	// Attempts is written by the client: the attempts the call made.
	Attempts int
}

// ChargedTo is the route template the call is charged to: Charge, else
// Route.
func (c *Call) ChargedTo() string {
	if c.Charge != "" {
		return c.Charge
	}
	return c.Route
}

type callKey struct{}

// WithCall marks ctx with call, for the one caller that cannot pass it:
// an http.RoundTripper user such as httputil.ReverseProxy (the
// pass-through). Use Get everywhere else.
func WithCall(ctx context.Context, call *Call) context.Context {
	return context.WithValue(ctx, callKey{}, call)
}

// callFrom is the call ctx carries, or a new zero one.
func callFrom(ctx context.Context) *Call {
	if c, ok := ctx.Value(callKey{}).(*Call); ok && c != nil {
		return c
	}
	return &Call{}
}

// stripCredentials removes every client credential from h.
func stripCredentials(h http.Header) {
	for _, k := range clientCredentials {
		delete(h, k)
	}
}
