package plugin

import (
	"fmt"

	"knative.dev/serving/pkg/apis/serving"
	v1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/keyspec"
)

// Revision annotations the plugin reads. The controller copies them from the
// Service's template, so they are the user's kstate.dev/* annotations;
// pkg/apis/kstate defines and parses them.
const (
	// AnnotationEnabled turns key routing on for a revision when "true".
	AnnotationEnabled = kstate.EnabledAnnotationKey
	// AnnotationKey is the key spec (pkg/keyspec); unset means the defaults
	// keyspec.Resolve picks.
	AnnotationKey = kstate.KeyAnnotationKey
	// AnnotationSlots is the slot count of the entity space; unset means
	// placement.DefaultSlots.
	AnnotationSlots = kstate.SlotsAnnotationKey
	// AnnotationSpace names the entity space; unset means
	// "<namespace>/<service>" from the serving.knative.dev/service label.
	AnnotationSpace = kstate.SpaceAnnotationKey
)

// RevisionConfig is what the plugin needs to route one kstate revision.
type RevisionConfig struct {
	// Key is the configured key spec; the zero Spec means the defaults.
	Key keyspec.Spec
	// Slots is the slot count of the entity space.
	Slots int
	// Space names the entity space (for logs; agents key Redis by it).
	Space string
	// ContainerConcurrency is the per-pod limit, 0 for unlimited.
	ContainerConcurrency int
	// PortName is the name of the private service port requests go to
	// (http or http2, from the revision's protocol), as Knative's throttler
	// picks it.
	PortName string
}

// Enabled reports whether rev asks for key routing.
func Enabled(rev *v1.Revision) bool {
	return rev != nil && kstate.Enabled(rev.Annotations)
}

// enabled reports whether an AnnotationEnabled value turns routing on.
func enabled(value string) bool {
	return kstate.EnabledValue(value)
}

// ConfigFromRevision reads the kstate configuration of a revision that is
// Enabled. Errors name the annotation and say what is expected; the webhook
// rejects such revisions, so an error here means the webhook was bypassed.
func ConfigFromRevision(rev *v1.Revision) (*RevisionConfig, error) {
	r, err := kstate.ParseRouting(rev.Namespace, rev.Labels[serving.ServiceLabelKey], rev.Annotations)
	if err != nil {
		return nil, err
	}
	if r.Space == "" {
		return nil, fmt.Errorf("annotation %s is not set and the revision has no %s label to name the entity space after",
			AnnotationSpace, serving.ServiceLabelKey)
	}
	return &RevisionConfig{
		Key:                  r.Key,
		Slots:                r.Slots,
		Space:                r.Space,
		ContainerConcurrency: int(rev.Spec.GetContainerConcurrency()),
		PortName:             portName(rev),
	}, nil
}
