package affinity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/kstate-dev/kstate/pkg/keyspec"
)

// Proxy is a key-affine reverse proxy to the pods of one Router, for routers
// other than the Knative activator (the CLI's dev mode): it extracts the key
// (Extract), routes it (Router.Acquire), and proxies through a Transport
// that follows 421 answers. Requests wait while the router has no ready pod
// until the request context ends.
type Proxy struct {
	// Router picks the pod.
	Router *Router
	// Spec is the configured key spec; nil means the defaults
	// (keyspec.Resolve).
	Spec *keyspec.Spec
	// MaxBody bounds the body kept for a re-send and read for a
	// structured-mode key (keyspec.DefaultMaxBody if 0).
	MaxBody int64
	// Transport sends the requests (http.DefaultTransport if nil).
	Transport http.RoundTripper
	// MaxRedirects bounds the 421 redirects of a request; see Transport.
	MaxRedirects int
	// DrainWait bounds how long a request refused by a draining pod waits
	// for the router to drop it; see Transport.
	DrainWait time.Duration
	// ErrorLog receives proxy errors (the standard logger if nil).
	ErrorLog func(format string, args ...any)

	once  sync.Once
	proxy *httputil.ReverseProxy
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, status, err := Extract(r, p.Spec, p.MaxBody)
	if err != nil {
		WriteError(w, status, err.Error())
		return
	}
	ctx := NewContext(r.Context(), rt)
	if err := rt.Acquire(ctx, p.Router); err != nil {
		status, msg := AcquireStatus(err)
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		WriteError(w, status, msg)
		return
	}
	defer rt.Release()
	p.reverseProxy().ServeHTTP(w, r.WithContext(ctx))
}

func (p *Proxy) reverseProxy() *httputil.ReverseProxy {
	p.once.Do(p.init)
	return p.proxy
}

func (p *Proxy) init() {
	base := p.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = FromContext(pr.In.Context()).ticket.addr
			pr.SetXForwarded()
		},
		Transport: &Transport{Base: base, MaxRedirects: p.MaxRedirects, DrainWait: p.DrainWait},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if p.ErrorLog != nil {
				p.ErrorLog("kstate proxy: %s %s: %v", r.Method, r.URL.Path, err)
			}
			WriteError(w, http.StatusBadGateway, fmt.Sprintf("sending the request to its pod failed: %v", err))
		},
	}
}

// Extract prepares a request for key routing: it keeps the body for a
// re-send (up to maxBody bytes, keyspec.DefaultMaxBody if <= 0) and reads
// the entity key with the spec keyspec.Resolve picks for configured. On
// failure it returns the status to answer with (keyspec.HTTPStatus: 400 for
// a missing or invalid key, 413 for a structured-mode body over the limit)
// and an error whose text is the message for the client.
func Extract(r *http.Request, configured *keyspec.Spec, maxBody int64) (*Route, int, error) {
	if maxBody <= 0 {
		maxBody = keyspec.DefaultMaxBody
	}
	rt := &Route{}
	if err := rt.BufferBody(r, maxBody); err != nil {
		return nil, http.StatusBadRequest, err
	}
	key, err := keyspec.Resolve(configured, keyspec.IsCloudEventRequest(r)).FromRequest(r, maxBody)
	if err != nil {
		return nil, keyspec.HTTPStatus(err), err
	}
	rt.Key = key
	return rt, http.StatusOK, nil
}

// AcquireStatus maps an Acquire error to the status and message a router
// answers with: 503 for a full queue, no ready pod before the request
// ended, or a closed router; 500 otherwise.
func AcquireStatus(err error) (int, string) {
	switch {
	case errors.Is(err, ErrQueueFull), errors.Is(err, ErrClosed), errors.Is(err, ErrNoReadyPod),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, err.Error()
	default:
		return http.StatusInternalServerError, err.Error()
	}
}
