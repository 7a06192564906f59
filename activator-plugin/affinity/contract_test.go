package affinity_test

import (
	"net/http"
	"testing"

	"github.com/kstate-dev/kstate/activator-plugin/affinity"
	"github.com/kstate-dev/kstate/pkg/agent"
)

// TestAgentContract pins what the router relies on from the agent: the
// header names of its 421 answer. The plugin does not import pkg/agent (it
// would pull the agent's dependencies into the activator image), so the
// constants are repeated and checked here.
func TestAgentContract(t *testing.T) {
	for _, c := range []struct{ router, agent string }{
		{affinity.HeaderHolder, agent.HeaderHolder},
		{affinity.HeaderHolderAddr, agent.HeaderHolderAddr},
		{affinity.HeaderDraining, agent.HeaderDraining},
	} {
		if http.CanonicalHeaderKey(c.router) != http.CanonicalHeaderKey(c.agent) {
			t.Errorf("router reads header %q, agent sets %q", c.router, c.agent)
		}
	}
}
