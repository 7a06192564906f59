package affinity

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
)

// Route is the routing state of one request: its entity key, its body kept
// for a re-send, and the Ticket it holds once routed. The handler that
// extracts the key creates it and puts it in the request context
// (NewContext); whoever calls Acquire binds the ticket; Transport reads both.
// A Route is used by one goroutine at a time.
type Route struct {
	// Key is the entity key.
	Key string

	body       []byte // the whole body when replayable
	replayable bool
	ticket     Ticket
}

type routeKey struct{}

// NewContext returns ctx carrying rt.
func NewContext(ctx context.Context, rt *Route) context.Context {
	return context.WithValue(ctx, routeKey{}, rt)
}

// FromContext returns the Route in ctx, or nil for a request that is not
// key-routed.
func FromContext(ctx context.Context) *Route {
	rt, _ := ctx.Value(routeKey{}).(*Route)
	return rt
}

// BufferBody reads up to limit bytes of r's body so the request can be sent
// again after a 421, and puts a reader of the same bytes back in r.Body. A
// body without an end within limit bytes is left streaming (the bytes read
// so far, then the rest) and the route is not replayable: a 421 for it ends
// in a 503 the client may retry. r.ContentLength is set when the whole body
// was read. On a read error the body is unusable and the request must be
// answered.
func (rt *Route) BufferBody(r *http.Request, limit int64) error {
	if r.Body == nil || r.Body == http.NoBody {
		rt.body, rt.replayable = nil, true
		return nil
	}
	if r.ContentLength > limit {
		rt.body, rt.replayable = nil, false
		return nil
	}
	var body []byte
	if r.ContentLength > 0 {
		// The server ends the body after ContentLength bytes: read exactly
		// that, without the doubling of a growing buffer.
		body = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return fmt.Errorf("reading the request body: %w", err)
		}
	} else {
		buf := bytes.NewBuffer(make([]byte, 0, 512))
		n, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
		if err != nil {
			return fmt.Errorf("reading the request body: %w", err)
		}
		if n > limit {
			rt.body, rt.replayable = nil, false
			r.Body = &prefixedBody{Reader: io.MultiReader(bytes.NewReader(buf.Bytes()), r.Body), Closer: r.Body}
			return nil
		}
		body = buf.Bytes()
	}
	r.Body.Close()
	rt.body, rt.replayable = body, true
	r.Body = rt.NewBody()
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	return nil
}

// Replayable reports whether the request can be sent again.
func (rt *Route) Replayable() bool { return rt.replayable }

// NewBody returns a fresh reader of the buffered body (http.NoBody when it
// is empty). Only for a replayable route.
func (rt *Route) NewBody() io.ReadCloser {
	if len(rt.body) == 0 {
		return http.NoBody
	}
	return io.NopCloser(bytes.NewReader(rt.body))
}

// Acquire routes the request on router and binds the ticket to rt; see
// Router.Acquire. Release gives it back.
func (rt *Route) Acquire(ctx context.Context, router *Router) error {
	t, err := router.Acquire(ctx, rt.Key)
	if err != nil {
		return err
	}
	rt.ticket = t
	return nil
}

// Ticket is the ticket the route holds (a zero Ticket before Acquire and
// after Release).
func (rt *Route) Ticket() *Ticket { return &rt.ticket }

// Release gives the route's place back; see Ticket.Release.
func (rt *Route) Release() { rt.ticket.Release() }

// prefixedBody is a streaming body of which the first bytes were read
// already.
type prefixedBody struct {
	io.Reader
	io.Closer
}
