package webhook

import (
	"context"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/webhook/resourcesemantics"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/config"
)

// Service is a serving.knative.dev/v1 Service as kstate's webhook sees it:
// the same JSON, but SetDefaults and Validate are kstate's (Inject and
// Validate), not Knative's. It is the handler type given to
// knative.dev/pkg's resourcesemantics admission controllers.
type Service struct {
	servingv1.Service
}

var (
	_ resourcesemantics.GenericCRD         = (*Service)(nil)
	_ resourcesemantics.VerbLimited        = (*Service)(nil)
	_ resourcesemantics.SubResourceLimited = (*Service)(nil)
)

// DeepCopyObject implements runtime.Object; it must return a *Service (the
// embedded one would return a *servingv1.Service, whose SetDefaults is
// Knative's).
func (s *Service) DeepCopyObject() runtime.Object {
	if s == nil {
		return nil
	}
	return &Service{Service: *s.Service.DeepCopy()}
}

// SetDefaults implements apis.Defaultable with Inject.
func (s *Service) SetDefaults(ctx context.Context) {
	if apis.IsInStatusUpdate(ctx) || apis.IsInDelete(ctx) {
		return
	}
	var old *servingv1.Service
	if apis.IsInUpdate(ctx) {
		old = baseline(ctx)
	}
	Inject(&s.Service, old, config.FromContextOrDefaults(ctx).Defaults)
}

// Validate implements apis.Validatable with Validate.
func (s *Service) Validate(ctx context.Context) *apis.FieldError {
	return Validate(ctx, &s.Service)
}

// SupportedVerbs implements resourcesemantics.VerbLimited: the validating
// webhook has nothing to say about a deletion.
func (s *Service) SupportedVerbs() []admissionregistrationv1.OperationType {
	return []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}
}

// SupportedSubResources implements resourcesemantics.SubResourceLimited:
// status updates (Knative's controller) are none of kstate's business.
func (s *Service) SupportedSubResources() []string {
	return []string{""}
}

// baseline is the Service an update replaces, from the admission context.
func baseline(ctx context.Context) *servingv1.Service {
	switch b := apis.GetBaseline(ctx).(type) {
	case *Service:
		return &b.Service
	case *servingv1.Service:
		return b
	}
	return nil
}
