// Package resources builds what the kstate webhook injects into a Service's
// revision template: the agent container (MakeAgentContainer) and its
// KSTATE_* environment (MakeAgentEnv), as pure functions of the parsed
// annotations (kstate.Spec) and config-kstate (config.Defaults), in the
// style of knative.dev/serving/pkg/reconciler/revision/resources.
//
// The ports, paths and addresses here are fixed by the agent
// (pkg/agent/config.go, cmd/kstate-agent) and by Knative's runtime contract:
// the agent is the revision's serving container (the only one with a
// port), and it must not listen on a port Knative reserves for the
// queue-proxy (8012, 8013, 8022, 9090, 9091, 8008).
package resources
