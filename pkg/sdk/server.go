package sdk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

const (
	// AddressEnv names the environment variable Serve listens on; the
	// agent reads the same variable to find the function.
	AddressEnv = "KSTATE_FUNCTION_ADDR"
	// DefaultAddress is used when AddressEnv is unset or empty.
	DefaultAddress = "127.0.0.1:9081"
	// DefaultDrainTimeout bounds how long Serve keeps answering after its
	// context ends while the agent is still connected. In a Knative pod the
	// function gets SIGTERM at once, but the agent (the serving container)
	// only after queue-proxy's drain (30s), and then drains for up to 25s:
	// the function has to outlast both. Serve stops as soon as the agent
	// disconnects, so a long bound costs nothing.
	DefaultDrainTimeout = 90 * time.Second
	// MaxMessageBytes is the largest request the server accepts: a request
	// carries the whole state, which may be larger than gRPC's 4 MiB
	// default.
	MaxMessageBytes = 64 << 20

	// stopGrace is how long calls still in flight get to finish once
	// Serve stops, before they are cancelled.
	stopGrace = 5 * time.Second
)

// ErrNotLoopback is returned by Serve and ServeListener for an address
// other than loopback, unless AllowNonLoopback is given.
var ErrNotLoopback = errors.New("not a loopback address")

// Option configures NewServer, Serve and ServeListener.
type Option func(*options)

type options struct {
	addr             string
	allowNonLoopback bool
	logger           *zap.SugaredLogger
	drainTimeout     time.Duration
	stopGrace        time.Duration
	serverOpts       []grpc.ServerOption
}

// WithAddress makes Serve listen on addr (host:port) instead of
// $KSTATE_FUNCTION_ADDR.
func WithAddress(addr string) Option { return func(o *options) { o.addr = addr } }

// AllowNonLoopback lets Serve and ServeListener listen on an address other
// than loopback. Without it they refuse: only the agent in the same pod may
// call the function, and nothing else checks who calls.
func AllowNonLoopback() Option { return func(o *options) { o.allowNonLoopback = true } }

// WithLogger sets the logger for failed and panicking calls and for the
// server's life cycle. The default is a zap production logger.
func WithLogger(l *zap.SugaredLogger) Option { return func(o *options) { o.logger = l } }

// WithDrainTimeout sets how long Serve keeps answering after its context
// ends while a client is still connected (DefaultDrainTimeout). 0 stops at
// once: only calls already in flight finish.
func WithDrainTimeout(d time.Duration) Option { return func(o *options) { o.drainTimeout = d } }

// WithServerOptions adds gRPC server options, applied after the SDK's own
// (so they win, e.g. grpc.MaxRecvMsgSize).
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.serverOpts = append(o.serverOpts, opts...) }
}

func newOptions(opts []Option) *options {
	o := &options{drainTimeout: DefaultDrainTimeout, stopGrace: stopGrace}
	for _, opt := range opts {
		opt(o)
	}
	if o.logger == nil {
		l, err := zap.NewProduction()
		if err != nil {
			l = zap.NewNop()
		}
		o.logger = l.Sugar()
	}
	return o
}

// address is the listen address: WithAddress, else $KSTATE_FUNCTION_ADDR,
// else DefaultAddress.
func (o *options) address() string {
	if o.addr != "" {
		return o.addr
	}
	if a := os.Getenv(AddressEnv); a != "" {
		return a
	}
	return DefaultAddress
}

// checkLoopback accepts a host:port whose host is a loopback IP or
// "localhost". An empty host would listen on every interface.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("function address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("function address %q: %w: the function must only be reachable by the agent in its pod "+
		"(use 127.0.0.1:PORT, or sdk.AllowNonLoopback() to override)", addr, ErrNotLoopback)
}

// NewServer returns a gRPC server with the function service for h and the
// health service (reporting SERVING) registered, for callers that run the
// server themselves, e.g. in process on a loopback listener. The caller
// serves it and stops it; the address options do not apply.
func NewServer(h Handler, opts ...Option) *grpc.Server {
	srv, _, _ := newOptions(opts).build(h)
	return srv
}

func (o *options) build(h Handler) (*grpc.Server, *health.Server, *connTracker) {
	conns := newConnTracker()
	sopts := append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.StatsHandler(conns),
	}, o.serverOpts...)
	srv := grpc.NewServer(sopts...)
	functionv1.RegisterFunctionServer(srv, &functionServer{h: h, log: o.logger})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(functionv1.Function_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	return srv, hs, conns
}

// Serve serves h on $KSTATE_FUNCTION_ADDR (default 127.0.0.1:9081, see
// WithAddress) until ctx ends, then stops as described in the package
// documentation. It returns nil after a stop caused by ctx, and an error if
// the address is refused (ErrNotLoopback), cannot be listened on, or serving
// fails.
func Serve(ctx context.Context, h Handler, opts ...Option) error {
	o := newOptions(opts)
	addr := o.address()
	if !o.allowNonLoopback {
		if err := checkLoopback(addr); err != nil {
			return err
		}
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on the function address %s: %w", addr, err)
	}
	return o.serve(ctx, lis, h)
}

// ServeListener is Serve on a listener the caller opened, e.g. on
// 127.0.0.1:0 to get a free port. The listener must be loopback (or a Unix
// socket) unless AllowNonLoopback is given. ServeListener closes lis.
func ServeListener(ctx context.Context, lis net.Listener, h Handler, opts ...Option) error {
	o := newOptions(opts)
	if !o.allowNonLoopback {
		switch a := lis.Addr().(type) {
		case *net.UnixAddr:
		case *net.TCPAddr:
			if !a.IP.IsLoopback() {
				lis.Close()
				return fmt.Errorf("function listener %s: %w", a, ErrNotLoopback)
			}
		default:
			lis.Close()
			return fmt.Errorf("function listener %s (%s): %w", a, a.Network(), ErrNotLoopback)
		}
	}
	return o.serve(ctx, lis, h)
}

func (o *options) serve(ctx context.Context, lis net.Listener, h Handler) error {
	srv, hs, conns := o.build(h)
	addr := lis.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	o.logger.Infow("kstate function serving", "address", addr)

	select {
	case err := <-served:
		srv.Stop()
		return fmt.Errorf("serving the function on %s: %w", addr, err)
	case <-ctx.Done():
	}

	// The agent gets SIGTERM with us and may still call while it drains its
	// queues; refusing now would fail those calls. It closes its connection
	// when it exits, which is our cue.
	hs.Shutdown()
	o.logger.Infow("kstate function draining", "address", addr, "drainTimeout", o.drainTimeout.String())
	var serveErr error
	serveDone := false
	if o.drainTimeout > 0 {
		serveErr, serveDone = conns.waitNone(o.drainTimeout, served)
	}

	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	grace := time.NewTimer(o.stopGrace)
	defer grace.Stop()
	select {
	case <-stopped:
	case <-grace.C:
		o.logger.Warnw("kstate function: calls still running after the stop grace period, cancelling them", "grace", o.stopGrace.String())
		srv.Stop()
		<-stopped
	}
	if !serveDone {
		serveErr = <-served
	}
	if serveErr != nil && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return fmt.Errorf("serving the function on %s: %w", addr, serveErr)
	}
	o.logger.Infow("kstate function stopped", "address", addr)
	return nil
}

// connTracker counts open client connections, so that a draining server can
// stop as soon as the agent has gone.
type connTracker struct {
	mu   sync.Mutex
	open int
	// changed is closed and replaced whenever open changes.
	changed chan struct{}
}

var _ stats.Handler = (*connTracker)(nil)

func newConnTracker() *connTracker {
	return &connTracker{changed: make(chan struct{})}
}

func (c *connTracker) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c *connTracker) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (c *connTracker) HandleRPC(context.Context, stats.RPCStats)                         {}

func (c *connTracker) HandleConn(_ context.Context, s stats.ConnStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s.(type) {
	case *stats.ConnBegin:
		c.open++
	case *stats.ConnEnd:
		c.open--
	default:
		return
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitNone waits until no connection is open or timeout passes. If served
// delivers first (the server failed), it returns that error and true.
func (c *connTracker) waitNone(timeout time.Duration, served <-chan error) (error, bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		c.mu.Lock()
		open, changed := c.open, c.changed
		c.mu.Unlock()
		if open == 0 {
			return nil, false
		}
		select {
		case <-changed:
		case <-t.C:
			return nil, false
		case err := <-served:
			return err, true
		}
	}
}

// functionServer adapts a Handler to the generated service.
type functionServer struct {
	functionv1.UnimplementedFunctionServer
	h   Handler
	log *zap.SugaredLogger
}

// errPanic marks a recovered panic; the panic value is in the message.
var errPanic = errors.New("handler panicked")

func (s *functionServer) Handle(ctx context.Context, in *functionv1.HandleRequest) (*functionv1.HandleResponse, error) {
	if in.GetEvent() == nil {
		return nil, status.Error(codes.InvalidArgument, "the request has no event")
	}
	ce, err := FromProto(in.GetEvent())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the request's event: %v", err)
	}
	req := Request{
		Key:     in.GetKey(),
		Exists:  in.GetExists(),
		Version: in.GetVersion(),
		Event:   Event{Event: ce},
	}
	if req.Exists {
		req.State = in.GetState()
	}
	if hr := in.GetHttp(); hr != nil {
		req.Event.HTTP = &HTTPRequest{
			Method:   hr.GetMethod(),
			Path:     hr.GetPath(),
			RawQuery: hr.GetRawQuery(),
			Header:   protoHeaders(hr.GetHeaders()),
		}
	}
	ctx = withEntity(ctx, Entity{Key: req.Key, Exists: req.Exists, Version: req.Version})

	res, err := s.call(ctx, req)
	if err == nil {
		var resp *functionv1.HandleResponse
		if resp, err = response(req, res); err == nil {
			return resp, nil
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
		// The agent gave up on this call; it gets no reply to map.
		return nil, status.FromContextError(ctxErr).Err()
	}
	return s.errorResponse(req, err), nil
}

// call runs the handler, turning a panic into an error.
func (s *functionServer) call(ctx context.Context, req Request) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Errorw("kstate function: handler panicked; replying 500 and keeping the state",
				"key", req.Key, "event.type", req.Event.Type(), "event.id", req.Event.ID(),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			res, err = Result{}, fmt.Errorf("%w: %v", errPanic, r)
		}
	}()
	return s.h.Handle(ctx, req)
}

// errorResponse maps a failed call to its reply. The state is kept and
// nothing is emitted, whatever the handler returned with the error.
func (s *functionServer) errorResponse(req Request, err error) *functionv1.HandleResponse {
	code := http.StatusInternalServerError
	msg := err.Error()
	var se *StatusError
	if errors.As(err, &se) {
		msg = se.Message
		if se.Code >= 400 && se.Code <= 599 {
			code = se.Code
		} else {
			s.log.Warnw("kstate function: status error with a status that is not an error status; replying 500",
				"key", req.Key, "status", se.Code)
		}
	}
	if code == http.StatusInternalServerError && !errors.Is(err, errPanic) {
		s.log.Errorw("kstate function: handler failed; replying 500 and keeping the state",
			"key", req.Key, "event.type", req.Event.Type(), "event.id", req.Event.ID(), zap.Error(err))
	}
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	return &functionv1.HandleResponse{
		Action: functionv1.HandleResponse_KEEP,
		Reply: &functionv1.HandleResponse_ReplyHttp{ReplyHttp: &functionv1.HttpReply{
			Status:      int32(code),
			ContentType: "application/json",
			Body:        body,
		}},
	}
}

// response maps a successful call's Result to the wire form.
func response(req Request, res Result) (*functionv1.HandleResponse, error) {
	if res.err != nil {
		return nil, res.err
	}
	resp := &functionv1.HandleResponse{}
	switch res.action {
	case keepState:
		resp.Action = functionv1.HandleResponse_KEEP
	case setState:
		resp.Action = functionv1.HandleResponse_SET
		resp.State = res.state
	case deleteState:
		resp.Action = functionv1.HandleResponse_DELETE
	case saveState:
		return nil, errors.New("the handler returned Save, which needs a typed handler (sdk.JSON); a raw Handler stores bytes with SetState")
	}
	switch res.reply {
	case httpReply:
		if res.status < 100 || res.status > 599 {
			return nil, fmt.Errorf("the reply status %d is not an HTTP status", res.status)
		}
		resp.Reply = &functionv1.HandleResponse_ReplyHttp{ReplyHttp: &functionv1.HttpReply{
			Status:      int32(res.status),
			ContentType: res.contentType,
			Headers:     headerMap(res.header),
			Body:        res.body,
		}}
	case eventReply:
		pb, err := outputEvent(req.Event.Event, res.event, "reply")
		if err != nil {
			return nil, fmt.Errorf("the reply event: %w", err)
		}
		resp.Reply = &functionv1.HandleResponse_ReplyEvent{ReplyEvent: pb}
	}
	for i, e := range res.emit {
		pb, err := outputEvent(req.Event.Event, e, "emit-"+strconv.Itoa(i))
		if err != nil {
			return nil, fmt.Errorf("emitted event %d: %w", i, err)
		}
		resp.Emit = append(resp.Emit, pb)
	}
	return resp, nil
}

// outputEvent converts an event the handler produced, filling in an empty ID
// with one derived from the input event and the output's role, so that the
// same input produces the same IDs when it runs again.
func outputEvent(in, out event.Event, role string) (*functionv1.CloudEvent, error) {
	if out.Context != nil && out.ID() == "" {
		// Clone: the context is shared with the handler's copy.
		out = out.Clone()
		out.SetID(derivedID(in, role))
	}
	return ToProto(out)
}

func derivedID(in event.Event, role string) string {
	h := sha256.New()
	for _, s := range []string{in.Source(), in.ID(), role} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
