package webhook

import (
	"context"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/leaderelection"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/metrics"
	"knative.dev/pkg/webhook/configmaps"
	"knative.dev/pkg/webhook/resourcesemantics"
	"knative.dev/pkg/webhook/resourcesemantics/defaulting"
	"knative.dev/pkg/webhook/resourcesemantics/validation"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/config"
)

// Names of the webhook configurations (config/core/webhooks.yaml) and the
// paths they call. Each configuration's single webhook has the
// configuration's name, as knative.dev/pkg's reconcilers expect.
const (
	DefaultingWebhookName       = "defaulting.webhook.kstate.dev"
	ValidationWebhookName       = "validation.webhook.kstate.dev"
	ConfigValidationWebhookName = "config.webhook.kstate.dev"

	DefaultingPath       = "/defaulting"
	ValidationPath       = "/resource-validation"
	ConfigValidationPath = "/config-validation"
)

// Where cmd/controller serves the webhooks (config/core/ must agree; its
// test checks).
const (
	// ServiceName is the Kubernetes Service the webhook configurations call.
	ServiceName = "kstate-webhook"
	// Port is the webhook server's container port.
	Port = 8443
	// SecretName is the Secret in the system namespace where knative.dev/pkg's
	// certificate reconciler keeps the serving certificate and CA.
	SecretName = "kstate-webhook-certs"
)

// types are the kinds kstate's webhooks handle.
var types = map[schema.GroupVersionKind]resourcesemantics.GenericCRD{
	servingv1.SchemeGroupVersion.WithKind("Service"): &Service{},
}

// NewDefaultingAdmissionController is the mutating webhook (Inject) and the
// reconciler of its MutatingWebhookConfiguration.
func NewDefaultingAdmissionController(ctx context.Context, cmw configmap.Watcher) *controller.Impl {
	store := config.NewStore(logging.FromContext(ctx).Named("config-store"))
	store.WatchConfigs(cmw)
	return defaulting.NewAdmissionController(ctx,
		DefaultingWebhookName, DefaultingPath, types,
		store.ToContext,
		// Unknown fields are Knative's webhook's business; this one must
		// not reject a Service a newer Knative accepts.
		false,
	)
}

// NewValidationAdmissionController is the validating webhook (Validate) and
// the reconciler of its ValidatingWebhookConfiguration.
func NewValidationAdmissionController(ctx context.Context, cmw configmap.Watcher) *controller.Impl {
	store := config.NewStore(logging.FromContext(ctx).Named("config-store"))
	store.WatchConfigs(cmw)
	return validation.NewAdmissionController(ctx,
		ValidationWebhookName, ValidationPath, types,
		store.ToContext,
		false,
	)
}

// NewConfigValidationController validates kstate's ConfigMaps in the
// system namespace when they are edited.
func NewConfigValidationController(ctx context.Context, _ configmap.Watcher) *controller.Impl {
	return configmaps.NewAdmissionController(ctx,
		ConfigValidationWebhookName, ConfigValidationPath,
		configmap.Constructors{
			config.ConfigName:              config.NewDefaultsConfigFromConfigMap,
			logging.ConfigMapName():        logging.NewConfigFromConfigMap,
			metrics.ConfigMapName():        metrics.NewObservabilityConfigFromConfigMap,
			leaderelection.ConfigMapName(): leaderelection.NewConfigFromConfigMap,
		},
	)
}
