// Command coredns is the cluster DNS of the e2e test cluster built by
// hack/cluster/up.sh. It is TEST INFRASTRUCTURE, not part of kstate.
//
// It is CoreDNS with only the plugins the test cluster needs. There is no
// forward plugin on purpose: names outside cluster.local are not resolved, so
// nothing in the cluster can send DNS queries off this machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// directives is the plugin chain order; it follows CoreDNS's plugin.cfg.
var directives = []string{
	"bind",
	"ready",
	"health",
	"errors",
	"log",
	"cache",
	"kubernetes",
}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
