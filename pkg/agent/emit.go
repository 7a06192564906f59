package agent

import (
	"context"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/zap"

	"github.com/kstate-dev/kstate/pkg/sdk"
	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

// sinkEmitter posts emitted events to K_SINK in binary mode. Delivery is at
// most once per applied event: emits are not stored with the state (see
// docs/protocol.md), so a crash between apply and send drops them.
type sinkEmitter struct {
	sink   string
	client cloudevents.Client
	logger *zap.SugaredLogger
}

func newSinkEmitter(sink string, logger *zap.SugaredLogger) Emitter {
	if sink == "" {
		return noSink{logger}
	}
	c, err := cloudevents.NewClientHTTP()
	if err != nil {
		logger.Errorw("cannot build the K_SINK client; emitted events will be dropped", zap.Error(err))
		return noSink{logger}
	}
	return &sinkEmitter{sink: sink, client: c, logger: logger}
}

func (s *sinkEmitter) Emit(ctx context.Context, events []*functionv1.CloudEvent) {
	for _, pe := range events {
		ev, err := sdk.FromProto(pe)
		if err != nil {
			s.logger.Errorw("function emitted an invalid event; dropped", zap.Error(err))
			continue
		}
		go func() {
			sctx := cloudevents.ContextWithTarget(ctx, s.sink)
			sctx = cloudevents.ContextWithRetriesExponentialBackoff(sctx, emitBackoff, emitRetries)
			if res := s.client.Send(sctx, ev); cloudevents.IsUndelivered(res) || !cloudevents.IsACK(res) {
				s.logger.Errorw("emitted event not delivered", zap.String("sink", s.sink), zap.String("id", ev.ID()), zap.Error(res))
			}
		}()
	}
}

const (
	emitRetries = 5
	emitBackoff = 100 * time.Millisecond
)

type noSink struct{ logger *zap.SugaredLogger }

func (n noSink) Emit(_ context.Context, events []*functionv1.CloudEvent) {
	n.logger.Debugw("no K_SINK set; emitted events dropped", zap.Int("count", len(events)))
}
