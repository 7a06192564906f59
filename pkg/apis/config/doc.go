// Package config holds the typed form of the config-kstate ConfigMap: the
// cluster-wide defaults for every kstate.dev/* setting a Service does not
// set itself, the agent image the webhook injects, and the value types
// (Durability, Preload, StoreRef, byte sizes) both the ConfigMap and the
// annotations are written in.
//
// It follows knative.dev/serving/pkg/apis/config: NewDefaultsConfigFromMap
// and NewDefaultsConfigFromConfigMap parse and validate, a Store built on
// configmap.UntypedStore watches the ConfigMap, and the webhook reads the
// current value with FromContextOrDefaults(ctx). config/core/configmaps/
// kstate.yaml is the ConfigMap; its _example block documents every key and
// is checked against the defaults here by a test (testdata/config-kstate.yaml
// is a symlink to it).
//
// Defaults are applied when a Service is admitted, as Knative's config-defaults
// are: changing config-kstate changes Services created or updated afterwards,
// never running revisions.
package config
