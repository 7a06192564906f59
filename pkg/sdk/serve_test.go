package sdk

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

func withStopGrace(d time.Duration) Option { return func(o *options) { o.stopGrace = d } }

var nopLogger = WithLogger(zap.NewNop().Sugar())

var echo = HandlerFunc(func(_ context.Context, req Request) (Result, error) {
	return ReplyJSON(req.Key), nil
})

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:9081", true},
		{"127.8.9.10:1", true},
		{"[::1]:9081", true},
		{"localhost:9081", true},
		{":9081", false},
		{"0.0.0.0:9081", false},
		{"[::]:9081", false},
		{"10.1.2.3:9081", false},
		{"example.com:9081", false},
	}
	for _, tc := range tests {
		err := checkLoopback(tc.addr)
		if got := err == nil; got != tc.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrNotLoopback) {
			t.Errorf("checkLoopback(%q) = %v, want ErrNotLoopback", tc.addr, err)
		}
	}
	if err := checkLoopback("127.0.0.1"); err == nil || errors.Is(err, ErrNotLoopback) {
		t.Errorf("checkLoopback without a port = %v, want a parse error", err)
	}
}

func TestAddress(t *testing.T) {
	tests := []struct {
		name string
		env  string
		opts []Option
		want string
	}{
		{name: "default", want: DefaultAddress},
		{name: "environment", env: "127.0.0.1:7000", want: "127.0.0.1:7000"},
		{name: "option wins", env: "127.0.0.1:7000", opts: []Option{WithAddress("127.0.0.1:7001")}, want: "127.0.0.1:7001"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(AddressEnv, tc.env)
			if got := newOptions(append(tc.opts, nopLogger)).address(); got != tc.want {
				t.Errorf("address() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestServeRefusesNonLoopback(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	t.Setenv(AddressEnv, "0.0.0.0:9081")
	err := Serve(ctx, echo, nopLogger)
	if !errors.Is(err, ErrNotLoopback) || !strings.Contains(err.Error(), `"0.0.0.0:9081"`) {
		t.Errorf("Serve on $%s=0.0.0.0:9081 = %v, want ErrNotLoopback naming the address", AddressEnv, err)
	}
	if err := Serve(ctx, echo, nopLogger, WithAddress(":0")); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("Serve on :0 = %v, want ErrNotLoopback", err)
	}
	if err := Serve(ctx, echo, nopLogger, WithAddress("0.0.0.0:0"), AllowNonLoopback()); err != nil {
		t.Errorf("Serve on 0.0.0.0:0 with AllowNonLoopback = %v, want nil", err)
	}
}

func TestServeListenerRefusesNonLoopback(t *testing.T) {
	lis, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if err := ServeListener(context.Background(), lis, echo, nopLogger); !errors.Is(err, ErrNotLoopback) {
		t.Fatalf("ServeListener on %s = %v, want ErrNotLoopback", lis.Addr(), err)
	}
	if _, err := lis.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after refusal = %v, want the listener closed", err)
	}
}

func TestServeAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	err = Serve(context.Background(), echo, nopLogger, WithAddress(taken.Addr().String()))
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Serve on a taken address = %v, want EADDRINUSE", err)
	}
}

// dial connects to addr and waits until the health service reports SERVING.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, svc := range []string{"", functionv1.Function_ServiceDesc.ServiceName} {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("health check %q: %v", svc, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %q = %v, want SERVING", svc, resp.GetStatus())
		}
	}
	return conn
}

func call(ctx context.Context, conn *grpc.ClientConn, key string) (string, error) {
	resp, err := functionv1.NewFunctionClient(conn).Handle(ctx, testRequest(key, "t", nil))
	return string(resp.GetReplyHttp().GetBody()), err
}

func TestServeOnEnvironmentAddress(t *testing.T) {
	// Reserve a free port, then give it to Serve through the environment.
	// Nothing else on the machine should pick this just-freed port in the
	// instant between; if it does, Serve fails with EADDRINUSE, not a hang.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	t.Setenv(AddressEnv, addr)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, echo, nopLogger) }()

	conn := dial(t, addr)
	got, err := call(ctx, conn, "k1")
	if err != nil || got != `"k1"` {
		t.Errorf("Handle = %q, %v, want %q", got, err, `"k1"`)
	}
	conn.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v, want nil after its context ended", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return after its context ended")
	}
}

// startServe runs ServeListener on a loopback port and returns its address
// and the channel its result arrives on.
func startServe(t *testing.T, ctx context.Context, h Handler, opts ...Option) (string, <-chan error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, lis, h, opts...) }()
	return lis.Addr().String(), done
}

func waitReturn(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeListener = %v, want nil", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("ServeListener did not return")
	}
}

func TestServeDrainsUntilTheAgentDisconnects(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, done := startServe(t, ctx, echo, nopLogger, WithDrainTimeout(time.Hour))
	conn := dial(t, addr)

	watch, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health watch: %v", err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first health status = %v, %v, want SERVING", resp.GetStatus(), err)
	}

	cancel()
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health status after the context ended = %v, %v, want NOT_SERVING", resp.GetStatus(), err)
	}
	// Draining: the agent may still call, and gets answers.
	got, err := call(context.Background(), conn, "late")
	if err != nil || got != `"late"` {
		t.Errorf("Handle while draining = %q, %v, want %q", got, err, `"late"`)
	}
	select {
	case err := <-done:
		t.Fatalf("ServeListener returned %v while a client was still connected", err)
	default:
	}

	conn.Close()
	waitReturn(t, done)
}

func TestServeStopsAtOnceWithoutClients(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	// A drain timeout far beyond the test's guard: returning at all proves
	// the server did not wait for it.
	_, done := startServe(t, ctx, echo, nopLogger, WithDrainTimeout(time.Hour))
	cancel()
	waitReturn(t, done)
}

func TestServeStopsAtTheDrainTimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addr, done := startServe(t, ctx, echo, nopLogger, WithDrainTimeout(50*time.Millisecond))
	dial(t, addr) // stays connected until the test ends
	cancel()
	waitReturn(t, done)
}

func TestServeCancelsCallsStuckPastTheStopGrace(t *testing.T) {
	started := make(chan struct{})
	stuck := HandlerFunc(func(ctx context.Context, _ Request) (Result, error) {
		close(started)
		<-ctx.Done() // only the forced stop ends this call
		return Result{}, ctx.Err()
	})
	core, logs := observer.New(zapcore.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	addr, done := startServe(t, ctx, stuck, WithLogger(zap.New(core).Sugar()), WithDrainTimeout(0), withStopGrace(50*time.Millisecond))
	conn := dial(t, addr)

	callErr := make(chan error, 1)
	go func() {
		_, err := call(context.Background(), conn, "k")
		callErr <- err
	}()
	<-started
	cancel()
	waitReturn(t, done)
	if err := <-callErr; status.Code(err) != codes.Unavailable {
		t.Errorf("stuck call = %v, want Unavailable", err)
	}
	var msgs []string
	for _, e := range logs.All() {
		msgs = append(msgs, e.Message)
	}
	want := []string{"kstate function: calls still running after the stop grace period, cancelling them"}
	if diff := cmp.Diff(want, msgs); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

func TestServeLetsCallsInFlightFinish(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	slow := HandlerFunc(func(ctx context.Context, req Request) (Result, error) {
		close(started)
		<-release
		return ReplyJSON(req.Key), nil
	})
	draining := make(chan struct{})
	// Hooks run only for entries the core logs, hence an Info core.
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.InfoLevel), zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "kstate function draining" {
			close(draining)
		}
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	addr, done := startServe(t, ctx, slow, WithLogger(logger.Sugar()), WithDrainTimeout(0))
	conn := dial(t, addr)

	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		body, err := call(context.Background(), conn, "k")
		res <- result{body, err}
	}()
	<-started
	cancel()
	<-draining
	select {
	case err := <-done:
		t.Fatalf("ServeListener returned %v while a call was in flight", err)
	default:
	}
	close(release)
	if r := <-res; r.err != nil || r.body != `"k"` {
		t.Errorf("call in flight at stop = %q, %v, want %q", r.body, r.err, `"k"`)
	}
	waitReturn(t, done)
}

func TestNewServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(echo, nopLogger)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn := dial(t, lis.Addr().String())
	got, err := call(context.Background(), conn, "embedded")
	if err != nil || got != `"embedded"` {
		t.Errorf("Handle = %q, %v, want %q", got, err, `"embedded"`)
	}
	srv.Stop()
	if err := <-served; err != nil {
		t.Errorf("Serve = %v, want nil after Stop", err)
	}
}
