package affinity

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers of a 421 answer, as the agent sets them (pkg/agent/errors.go).
const (
	// HeaderHolder names the pod that holds the key's slot lease.
	HeaderHolder = "Kstate-Holder"
	// HeaderHolderAddr is the host:port the holder is reached at.
	HeaderHolderAddr = "Kstate-Holder-Addr"
	// HeaderDraining marks a 503 from an agent that is shutting down and
	// applied nothing: the request may go to the slot's next owner.
	HeaderDraining = "Kstate-Draining"
)

// DefaultDrainWait is how long a request refused by a draining pod waits
// for the router to drop that pod (the endpoints update that follows its
// readiness turning false) before it is answered 503.
const DefaultDrainWait = 3 * time.Second

// DefaultMaxRedirects is how many times a request follows 421 answers
// unless configured otherwise.
const DefaultMaxRedirects = 3

// drainLimit is how much of a 421 body is read so the connection can be
// reused; a longer body costs the connection instead.
const drainLimit = 4 << 10

// Transport sends key-routed requests (a Route with a ticket in the request
// context) through Base and follows 421 Misdirected Request answers that
// name a slot holder: the request goes again, with the same body, to the
// holder's ready endpoint if the holder is a ready pod of the router,
// otherwise to the address in Kstate-Holder-Addr. A 503 with
// Kstate-Draining (a pod shutting down, nothing applied) routes the request
// again once the router has dropped that pod, waiting at most DrainWait.
// After MaxRedirects redirects or re-routes, or when the body was too large
// to keep, it answers 503 with a JSON error and Retry-After: 1. Other
// requests, and 421 answers without Kstate-Holder (an HTTP/2 misdirect,
// not an agent), pass through untouched.
//
// It must be called on the goroutine that holds the Route, as
// httputil.ReverseProxy does.
type Transport struct {
	// Base sends every attempt.
	Base http.RoundTripper
	// MaxRedirects bounds the redirects of one request (DefaultMaxRedirects
	// if 0; negative: none).
	MaxRedirects int
	// TargetHost maps a ready pod's address to the URL host a redirect is
	// sent to, for proxies that rewrite the port (the activator's
	// system-internal TLS port). Nil sends to the address itself.
	TargetHost func(addr string) string
	// DrainWait bounds the wait of a request refused by a draining pod
	// (DefaultDrainWait if 0).
	DrainWait time.Duration
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt := FromContext(req.Context())
	if rt == nil || !rt.ticket.Valid() {
		return t.Base.RoundTrip(req)
	}
	max := t.MaxRedirects
	switch {
	case max == 0:
		max = DefaultMaxRedirects
	case max < 0:
		max = 0
	}
	resp, err := t.Base.RoundTrip(req)
	var trail []string // the holders followed, for the final message
	for redirects := 0; ; redirects++ {
		if err != nil {
			return resp, err
		}
		var move func() error
		switch {
		case resp.StatusCode == http.StatusMisdirectedRequest && resp.Header.Get(HeaderHolder) != "":
			holder, holderAddr := resp.Header.Get(HeaderHolder), resp.Header.Get(HeaderHolderAddr)
			trail = append(trail, holder)
			move = func() error { return rt.ticket.redirect(req.Context(), holder, holderAddr) }
		case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(HeaderDraining) != "":
			// The pod was removed from the ready set after this request
			// was routed to it; it refused the request without applying it.
			trail = append(trail, rt.ticket.addr+" (draining)")
			move = func() error { return rt.ticket.reroute(req.Context(), t.drainWait()) }
		default:
			return resp, nil
		}
		discard(resp)
		switch {
		case redirects >= max:
			return unavailable(req, fmt.Sprintf("slot %d of key %q is moving between pods: gave up after following %d redirect(s), holders named: %s; nothing was applied, retry shortly",
				rt.ticket.slot, rt.Key, redirects, strings.Join(trail, ", "))), nil
		case !rt.replayable:
			return unavailable(req, fmt.Sprintf("slot %d of key %q is moving to another pod (%s), and the request body was too large to keep for a re-send; nothing was applied, retry shortly",
				rt.ticket.slot, rt.Key, trail[len(trail)-1])), nil
		}
		if rerr := move(); rerr != nil {
			return unavailable(req, fmt.Sprintf("slot %d of key %q is moving to another pod (%s): %v; nothing was applied, retry shortly",
				rt.ticket.slot, rt.Key, trail[len(trail)-1], rerr)), nil
		}
		out := req.Clone(req.Context())
		out.URL.Host = rt.ticket.addr
		if rt.ticket.pod != nil && t.TargetHost != nil {
			out.URL.Host = t.TargetHost(rt.ticket.addr)
		}
		out.Body = rt.NewBody()
		resp, err = t.Base.RoundTrip(out)
	}
}

func (t *Transport) drainWait() time.Duration {
	if t.DrainWait > 0 {
		return t.DrainWait
	}
	return DefaultDrainWait
}

// discard reads a little of the body so the connection can be reused, and
// closes it.
func discard(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, drainLimit)
	resp.Body.Close()
}

// unavailable is the 503 answer to a request that could not reach its
// slot's holder.
func unavailable(req *http.Request, msg string) *http.Response {
	body := ErrorBody(msg)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Retry-After", "1")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	return &http.Response{
		Status:        "503 Service Unavailable",
		StatusCode:    http.StatusServiceUnavailable,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// ErrorBody is the JSON error body kstate answers with, the agent's form:
// {"error": msg} and a newline.
func ErrorBody(msg string) string {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return string(b) + "\n"
}

// WriteError answers with status and ErrorBody(msg).
func WriteError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, ErrorBody(msg))
}
