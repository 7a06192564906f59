package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kstate-dev/kstate/pkg/sdk"
	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
	"github.com/kstate-dev/kstate/statestore"
)

// Server runs an Agent with its listeners: the serving port, the admin gRPC
// port, and the connection to the function. cmd/kstate-agent and the CLI's
// dev mode both run agents through it.
type Server struct {
	Agent *Agent
	cfg   Config
	log   *zap.SugaredLogger

	store    statestore.Store
	fnConn   *grpc.ClientConn
	fnReady  atomic.Bool
	httpLn   net.Listener
	adminLn  net.Listener
	httpSrv  *http.Server
	adminSrv *grpc.Server
}

// NewServer connects to the store and the function and binds both ports.
// Nothing is served until Run.
func NewServer(ctx context.Context, cfg Config, log *zap.SugaredLogger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log}
	var err error
	if s.httpLn, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("KSTATE_ADDR=%q: %w", cfg.Addr, err)
	}
	if s.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		s.httpLn.Close()
		return nil, fmt.Errorf("KSTATE_ADMIN_ADDR=%q: %w", cfg.AdminAddr, err)
	}
	if s.cfg.AdvertiseAddr == "" {
		s.cfg.AdvertiseAddr = s.httpLn.Addr().String()
	}
	// Assign only on success: a nil *Redis in the interface is not a nil Store.
	store, err := statestore.NewRedis(ctx, cfg.StoreURL, statestore.RedisOptions{ClientName: cfg.Pod, Lazy: true, MinIdleConns: storeIdleConns})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("KSTATE_STORE_URL=%q: %w", statestore.Redacted(cfg.StoreURL), err)
	}
	s.store = store
	s.fnConn, err = grpc.NewClient(cfg.FunctionAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// States travel whole in every call; match the SDK's limit, not gRPC's 4 MiB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(sdk.MaxMessageBytes), grpc.MaxCallSendMsgSize(sdk.MaxMessageBytes)))
	if err != nil {
		s.close()
		return nil, fmt.Errorf("KSTATE_FUNCTION_ADDR=%q: %w", cfg.FunctionAddr, err)
	}
	s.Agent, err = New(s.cfg, s.store, grpcFunction{functionv1.NewFunctionClient(s.fnConn)}, WithLogger(log))
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// storeIdleConns is how many store connections an agent keeps ready. A pod
// that just started and takes slots over gets a burst of concurrent store
// calls (an acquisition, a handoff request, a flush per slot) before its
// pool has grown; each call that finds no idle connection first dials one
// and pays two round trips of connection setup.
const storeIdleConns = 8

// Addr is the bound serving address; AdminAddr the admin one.
func (s *Server) Addr() string      { return s.httpLn.Addr().String() }
func (s *Server) AdminAddr() string { return s.adminLn.Addr().String() }

// Run serves until ctx ends, then drains: it refuses new work, flushes
// everything, releases its leases and logs one summary line.
func (s *Server) Run(ctx context.Context) (DrainSummary, error) {
	handler, err := s.Agent.Handler(s.fnReady.Load)
	if err != nil {
		s.close()
		return DrainSummary{}, err
	}
	s.Agent.Start(ctx)
	go s.watchFunction(ctx)

	s.httpSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	s.adminSrv = grpc.NewServer()
	adminv1.RegisterAdminServer(s.adminSrv, NewAdminServer(s.Agent))
	errs := make(chan error, 2)
	go func() { errs <- s.httpSrv.Serve(s.httpLn) }()
	go func() { errs <- s.adminSrv.Serve(s.adminLn) }()
	s.log.Infow("kstate agent serving", zap.String("addr", s.Addr()), zap.String("admin", s.AdminAddr()),
		zap.String("pod", s.cfg.Pod), zap.String("space", s.cfg.Space), zap.Int("slots", s.cfg.Slots),
		zap.String("durability", string(s.cfg.Durability)), zap.String("store", statestore.Redacted(s.cfg.StoreURL)))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errs:
	}
	dctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	sum, err := s.Agent.Drain(dctx)
	if err != nil {
		s.log.Errorw("drain incomplete", zap.Int("flushed", sum.Flushed), zap.Duration("took", sum.Took), zap.Error(err))
	} else {
		s.log.Infof("kstate agent drained: %d entities flushed, %d slots released in %s", sum.Flushed, sum.Released, sum.Took.Round(time.Millisecond))
	}
	s.httpSrv.Shutdown(dctx)
	s.adminSrv.GracefulStop()
	s.Agent.Stop()
	s.close()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return sum, serveErr
	}
	return sum, err
}

func (s *Server) close() {
	if s.fnConn != nil {
		s.fnConn.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.httpLn != nil {
		s.httpLn.Close()
	}
	if s.adminLn != nil {
		s.adminLn.Close()
	}
}

// watchFunction follows the function's gRPC health, which gates readiness.
func (s *Server) watchFunction(ctx context.Context) {
	hc := healthpb.NewHealthClient(s.fnConn)
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		ok := err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
		if s.fnReady.Swap(ok) != ok {
			s.log.Infow("function health changed", zap.Bool("serving", ok), zap.Error(err))
		}
		wait := time.Second
		if !ok {
			wait = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// grpcFunction adapts the generated client to Function.
type grpcFunction struct{ c functionv1.FunctionClient }

func (f grpcFunction) Handle(ctx context.Context, req *functionv1.HandleRequest) (*functionv1.HandleResponse, error) {
	return f.c.Handle(ctx, req)
}
