// Package cli holds the commands of kn-kstate, the kstate CLI. The binary is
// named for kn's plugin discovery, so `kn kstate …` runs it when it is on
// PATH; it also works alone. cmd/kn-kstate only wires this package.
//
// `dev` runs everything on one machine. The cluster commands (enable,
// disable, describe, owner, get, send) follow `kn service`: --namespace/-n,
// --kubeconfig and -o table|json|yaml are global flags held by Params, which
// builds the clients on first use (so `dev` never needs a cluster) and lets
// tests hand in fake clientsets. They read a revision's kstate configuration
// and its pods the way the activator plugin does (pkg/apis/kstate, the
// private Endpoints), compute placement with pkg/placement, read entities
// with statestore and place keys in CloudEvents with pkg/keyspec, so what
// they show is what the routers and agents do. docs/cli.md is the user guide.
package cli
