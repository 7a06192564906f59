package affinity

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Headers of a 421 answer, as the agent sets them (pkg/agent/errors.go).
const (
	// HeaderHolder names the pod that holds the key's slot lease.
	HeaderHolder = "Kstate-Holder"
	// HeaderHolderAddr is the host:port the holder is reached at.
	HeaderHolderAddr = "Kstate-Holder-Addr"
)

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
// otherwise to the address in Kstate-Holder-Addr. After MaxRedirects
// redirects, or when the body was too large to keep, it answers 503 with a
// JSON error and Retry-After: 1. Other requests, and 421 answers without
// Kstate-Holder (an HTTP/2 misdirect, not an agent), pass through untouched.
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
		if err != nil || resp.StatusCode != http.StatusMisdirectedRequest || resp.Header.Get(HeaderHolder) == "" {
			return resp, err
		}
		holder, holderAddr := resp.Header.Get(HeaderHolder), resp.Header.Get(HeaderHolderAddr)
		discard(resp)
		trail = append(trail, holder)
		switch {
		case redirects >= max:
			return unavailable(req, fmt.Sprintf("slot %d of key %q is moving between pods: gave up after following %d redirect(s), holders named: %s; nothing was applied, retry shortly",
				rt.ticket.slot, rt.Key, redirects, strings.Join(trail, ", "))), nil
		case !rt.replayable:
			return unavailable(req, fmt.Sprintf("slot %d of key %q is held by %s, and the request body was too large to keep for a re-send; nothing was applied, retry shortly",
				rt.ticket.slot, rt.Key, holder)), nil
		}
		if rerr := rt.ticket.redirect(req.Context(), holder, holderAddr); rerr != nil {
			return unavailable(req, fmt.Sprintf("slot %d of key %q is held by %s: %v; nothing was applied, retry shortly",
				rt.ticket.slot, rt.Key, holder, rerr)), nil
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
