package agent

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
)

// AdminServer serves the admin gRPC API (prepare, stats, flush) for the
// controller and the CLI.
type AdminServer struct {
	adminv1.UnimplementedAdminServer
	a *Agent
}

// NewAdminServer returns the admin API of a.
func NewAdminServer(a *Agent) *AdminServer { return &AdminServer{a: a} }

// Prepare preloads hot entities; see Agent.Prepare.
func (s *AdminServer) Prepare(ctx context.Context, req *adminv1.PrepareRequest) (*adminv1.PrepareResponse, error) {
	for _, n := range req.GetSlots() {
		if int(n) >= s.a.cfg.Slots {
			return nil, status.Errorf(codes.InvalidArgument, "slots: %d is out of range; the space has %d slots (0..%d)", n, s.a.cfg.Slots, s.a.cfg.Slots-1)
		}
	}
	if req.GetMaxEntities() < 0 || req.GetMaxBytes() < 0 {
		return nil, status.Error(codes.InvalidArgument, "max_entities and max_bytes: expected 0 (the agent's default) or more")
	}
	resp, err := s.a.Prepare(ctx, req.GetSlots(), req.GetMaxEntities(), req.GetMaxBytes())
	if err != nil {
		return resp, status.Errorf(codes.Unavailable, "prepare: %v", err)
	}
	return resp, nil
}

// Stats reports the agent's counters.
func (s *AdminServer) Stats(context.Context, *adminv1.StatsRequest) (*adminv1.StatsResponse, error) {
	return s.a.Stats(), nil
}

// Flush writes every dirty entity and returns when they landed.
func (s *AdminServer) Flush(ctx context.Context, _ *adminv1.FlushRequest) (*adminv1.FlushResponse, error) {
	start := time.Now()
	n, err := s.a.Flush(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "flush: %v", err)
	}
	return &adminv1.FlushResponse{EntitiesFlushed: int64(n), DurationMs: time.Since(start).Milliseconds()}, nil
}
