// Package config holds kstate's install manifests, not Go code: core/ is
// the control plane (namespace kstate-system, RBAC, the controller and its
// webhooks, the ConfigMaps), knative/ the changes to Knative Serving (the
// activator image, the config-features kstate needs), demo/ a Redis for
// demos. Its test parses every YAML file here and checks that names,
// namespaces and references agree with each other, with the Go code that
// reads them, and with the Knative release the patches target.
package config
