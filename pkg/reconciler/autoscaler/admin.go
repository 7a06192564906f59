package autoscaler

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
)

// AdminClient is what the reconciler needs of an agent's admin API. addr
// is the agent's admin address, "<podIP>:9181". Tests use a fake.
type AdminClient interface {
	Prepare(ctx context.Context, addr string, req *adminv1.PrepareRequest) (*adminv1.PrepareResponse, error)
	Stats(ctx context.Context, addr string) (*adminv1.StatsResponse, error)
}

// grpcAdmin dials the agent for each call. Calls are rare (once per joining
// pod, once per refresh interval per Ready pod), so a connection cache
// would only add pods' lifetimes to track.
type grpcAdmin struct{}

// NewAdminClient returns the AdminClient that speaks gRPC (plaintext: the
// admin API has no TLS; see docs/operations.md).
func NewAdminClient() AdminClient { return grpcAdmin{} }

// listenWait bounds how long Prepare waits for a joining pod's agent to
// accept a connection. A Prepare can reach a pod whose agent is not
// listening yet (a slow agent start). Failing at once would leave the retry
// to the workqueue's backoff, and gRPC's own reconnect backoff starts at a
// second: either would hold the pod unready for longer than its agent
// needs. Waiting, with reconnects every 20 ms or so, lands the call within
// tens of milliseconds of the agent listening. (On the e2e cluster the
// first Prepare came after the agent listened, because the kubelet reports
// a pod running only after its containers started; that lag is why a pod
// from zero now preloads without waiting for Prepare at all.) The bound
// keeps a pod whose agent never listens from holding its revision's
// reconcile for the whole prepare timeout.
const listenWait = 10 * time.Second

var joiningPodBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.3, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
	MinConnectTimeout: time.Second,
})

func (grpcAdmin) call(addr string, f func(adminv1.AdminClient) error, opts ...grpc.DialOption) error {
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		return fmt.Errorf("admin client for %s: %w", addr, err)
	}
	defer conn.Close()
	return f(adminv1.NewAdminClient(conn))
}

func (g grpcAdmin) Prepare(ctx context.Context, addr string, req *adminv1.PrepareRequest) (resp *adminv1.PrepareResponse, err error) {
	err = g.call(addr, func(c adminv1.AdminClient) error {
		resp, err = c.Prepare(ctx, req)
		return err
	}, joiningPodBackoff, grpc.WithUnaryInterceptor(waitForListener))
	return resp, err
}

// waitForListener makes a call wait, up to listenWait, until the
// connection is up, then runs it under the caller's own deadline.
func waitForListener(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	wctx, cancel := context.WithTimeout(ctx, listenWait)
	defer cancel()
	cc.Connect()
	for state := cc.GetState(); state != connectivity.Ready; state = cc.GetState() {
		if !cc.WaitForStateChange(wctx, state) {
			return fmt.Errorf("agent at %s not accepting connections (last state %s): %w", cc.Target(), state, wctx.Err())
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (g grpcAdmin) Stats(ctx context.Context, addr string) (resp *adminv1.StatsResponse, err error) {
	err = g.call(addr, func(c adminv1.AdminClient) error {
		resp, err = c.Stats(ctx, &adminv1.StatsRequest{})
		return err
	})
	return resp, err
}
