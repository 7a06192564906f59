package autoscaler

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
)

type preparingAgent struct {
	adminv1.UnimplementedAdminServer
}

func (preparingAgent) Prepare(_ context.Context, req *adminv1.PrepareRequest) (*adminv1.PrepareResponse, error) {
	return &adminv1.PrepareResponse{EntitiesLoaded: int64(len(req.GetSlots()))}, nil
}

// A Prepare sent before the joining pod's agent listens reaches the agent
// once it does, instead of failing into the workqueue's backoff. The pod's
// address first answers with a listener that drops every connection (the
// agent not up yet), so the first attempt surely fails; only then does the
// agent's admin server take the address over.
func TestPrepareWaitsForTheAgentToListen(t *testing.T) {
	early, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := early.Addr().String()
	attempted := make(chan struct{})
	go func() {
		for first := true; ; first = false {
			c, err := early.Accept()
			if err != nil {
				return
			}
			c.Close()
			if first {
				close(attempted)
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		resp *adminv1.PrepareResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := NewAdminClient().Prepare(ctx, addr, &adminv1.PrepareRequest{Slots: []uint32{1, 2, 3}})
		done <- result{resp, err}
	}()

	select {
	case <-attempted:
	case r := <-done:
		t.Fatalf("Prepare returned before the agent listened: %v, %v", r.resp, r.err)
	}
	early.Close()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("taking over %s: %v", addr, err)
	}
	srv := grpc.NewServer()
	adminv1.RegisterAdminServer(srv, preparingAgent{})
	go srv.Serve(lis)
	defer srv.Stop()

	r := <-done
	if r.err != nil {
		t.Fatalf("Prepare: %v, want it to wait for the agent", r.err)
	}
	if got := r.resp.GetEntitiesLoaded(); got != 3 {
		t.Errorf("EntitiesLoaded = %d, want 3 (the agent's answer)", got)
	}
}

// A pod whose agent never listens gives up at the caller's deadline with
// an error that says so, not a hang.
func TestPrepareGivesUpOnAnAgentThatNeverListens(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = NewAdminClient().Prepare(ctx, addr, &adminv1.PrepareRequest{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Prepare to a closed port = %v, want a deadline error", err)
	}
}
