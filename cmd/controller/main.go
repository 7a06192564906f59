package main

import (
	"os"

	filteredinformerfactory "knative.dev/pkg/client/injection/kube/informers/factory/filtered"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/signals"
	"knative.dev/pkg/webhook"
	"knative.dev/pkg/webhook/certificates"

	"github.com/kstate-dev/kstate/pkg/reconciler/autoscaler"
	kstatewebhook "github.com/kstate-dev/kstate/pkg/webhook"
)

// component names the binary in logs, metrics and config-logging's
// loglevel.kstate-controller.
const component = "kstate-controller"

func main() {
	ctx := webhook.WithOptions(signals.NewContext(), webhook.Options{
		ServiceName: serviceName(),
		Port:        webhook.PortFromEnv(kstatewebhook.Port),
		SecretName:  kstatewebhook.SecretName,
	})
	// The webhook server answers the kubelet's probes itself (and fails
	// readiness while it lame-ducks); sharedmain's probe server is not needed.
	ctx = sharedmain.WithHealthProbesDisabled(ctx)
	// The autoscaler plugin caches only the pods of Knative revisions.
	ctx = filteredinformerfactory.WithSelectors(ctx, autoscaler.PodSelector)
	sharedmain.WebhookMainWithContext(ctx, component,
		certificates.NewController,
		kstatewebhook.NewDefaultingAdmissionController,
		kstatewebhook.NewValidationAdmissionController,
		kstatewebhook.NewConfigValidationController,
		// The autoscaler plugin: preload on scale-up, pod-deletion-cost.
		autoscaler.NewController,
	)
}

// serviceName is WEBHOOK_NAME, as in Knative, or the Service config/core/
// defines (webhook.NameFromEnv would exit when the variable is unset).
func serviceName() string {
	if name := os.Getenv("WEBHOOK_NAME"); name != "" {
		return name
	}
	return kstatewebhook.ServiceName
}
