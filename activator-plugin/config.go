package plugin

import (
	"fmt"
	"strconv"
	"strings"

	"knative.dev/serving/pkg/apis/serving"
	v1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/placement"
)

// Revision annotations the plugin reads. The controller copies them from the
// Service's template, so they are the user's kstate.dev/* annotations.
const (
	// AnnotationEnabled turns key routing on for a revision when "true".
	AnnotationEnabled = "kstate.dev/enabled"
	// AnnotationKey is the key spec (pkg/keyspec); unset means the defaults
	// keyspec.Resolve picks.
	AnnotationKey = "kstate.dev/key"
	// AnnotationSlots is the slot count of the entity space; unset means
	// placement.DefaultSlots.
	AnnotationSlots = "kstate.dev/slots"
	// AnnotationSpace names the entity space; unset means
	// "<namespace>/<service>" from the serving.knative.dev/service label.
	AnnotationSpace = "kstate.dev/space"
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
	return rev != nil && enabled(rev.Annotations[AnnotationEnabled])
}

// enabled reports whether an AnnotationEnabled value turns routing on.
func enabled(value string) bool {
	return strings.EqualFold(strings.TrimSpace(value), "true")
}

// ConfigFromRevision reads the kstate configuration of a revision that is
// Enabled. Errors name the annotation and say what is expected; the webhook
// rejects such revisions, so an error here means the webhook was bypassed.
func ConfigFromRevision(rev *v1.Revision) (*RevisionConfig, error) {
	cfg := &RevisionConfig{
		Slots:                placement.DefaultSlots,
		ContainerConcurrency: int(rev.Spec.GetContainerConcurrency()),
		PortName:             portName(rev),
	}
	if s := rev.Annotations[AnnotationKey]; strings.TrimSpace(s) != "" {
		spec, err := keyspec.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", AnnotationKey, err)
		}
		cfg.Key = spec
	}
	if s := rev.Annotations[AnnotationSlots]; strings.TrimSpace(s) != "" {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > placement.MaxSlots {
			return nil, fmt.Errorf("annotation %s: %q is not a slot count: want an integer from 1 to %d (default %d)",
				AnnotationSlots, s, placement.MaxSlots, placement.DefaultSlots)
		}
		cfg.Slots = n
	}
	cfg.Space = strings.TrimSpace(rev.Annotations[AnnotationSpace])
	if cfg.Space == "" {
		svc := rev.Labels[serving.ServiceLabelKey]
		if svc == "" {
			return nil, fmt.Errorf("annotation %s is not set and the revision has no %s label to name the entity space after",
				AnnotationSpace, serving.ServiceLabelKey)
		}
		cfg.Space = rev.Namespace + "/" + svc
	}
	return cfg, nil
}
