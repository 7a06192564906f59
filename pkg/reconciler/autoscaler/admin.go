package autoscaler

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
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

func (grpcAdmin) call(addr string, f func(adminv1.AdminClient) error) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
	})
	return resp, err
}

func (g grpcAdmin) Stats(ctx context.Context, addr string) (resp *adminv1.StatsResponse, err error) {
	err = g.call(addr, func(c adminv1.AdminClient) error {
		resp, err = c.Stats(ctx, &adminv1.StatsRequest{})
		return err
	})
	return resp, err
}
