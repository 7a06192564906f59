// Command controller is kstate's control plane in one binary: the
// admission webhooks for Knative Services (pkg/webhook: agent injection and
// kstate.dev/* validation), the validation of kstate's ConfigMaps, and the
// webhook certificate reconciler of knative.dev/pkg, which keeps the
// serving certificate in the kstate-webhook-certs Secret and the CA bundle
// of the webhook configurations. It starts through sharedmain: logging
// from config-logging, metrics from config-observability and leader
// election from config-leader-election, all in its system namespace
// (SYSTEM_NAMESPACE, kstate-system).
//
// The autoscaler plugin (preload on scale-up, pod-deletion-cost) is not
// part of it yet.
package main
