package plugin

import (
	"net/http"

	"go.uber.org/zap"
	"knative.dev/pkg/logging/logkey"
	activatorhandler "knative.dev/serving/pkg/activator/handler"

	"github.com/kstate-dev/kstate/activator-plugin/affinity"
)

// Handler is the key-extraction middleware. It goes right before the
// activation handler (inside the context handler, which puts the revision in
// the request context, and inside the concurrency reporter, so that
// requests buffered for a kstate revision count as concurrency exactly like
// stock requests waiting in Knative's throttler).
//
// For a revision with kstate.dev/enabled: "true" it keeps the body for a
// re-send, reads the entity key with the revision's key spec and puts an
// affinity.Route in the request context, which makes Try route the request
// by key. A request without a usable key is answered here, with
// keyspec.HTTPStatus's status (400, or 413 for a structured CloudEvent over
// the body limit) and {"error": "<keyspec's message>"}, as the agent
// answers. Other revisions pass through untouched.
func (p *Plugin) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		// RevAnnotation, unlike RevisionFrom, is safe without a revision
		// in the context.
		if !enabled(activatorhandler.RevAnnotation(ctx, AnnotationEnabled)) {
			next.ServeHTTP(w, r)
			return
		}
		revID := activatorhandler.RevIDFrom(ctx)
		st, err := p.state(revID)
		if err != nil {
			p.logger.Errorw("Cannot route a kstate revision", zap.String(logkey.Key, revID.String()), zap.Error(err))
			affinity.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
		rt, status, err := affinity.Extract(r, &st.cfg.Key, p.opts.MaxBodyBytes)
		if err != nil {
			affinity.WriteError(w, status, err.Error())
			return
		}
		next.ServeHTTP(w, r.WithContext(affinity.NewContext(ctx, rt)))
	})
}
