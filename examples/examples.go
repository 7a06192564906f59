// Package examples lists the example functions built into the CLI's dev
// mode. Each example's own package holds its handler and tests.
package examples

import (
	"fmt"
	"sort"
	"strings"

	"github.com/kstate-dev/kstate/examples/cart"
	"github.com/kstate-dev/kstate/examples/counter"
	"github.com/kstate-dev/kstate/examples/join"
	"github.com/kstate-dev/kstate/examples/visitors"
	"github.com/kstate-dev/kstate/pkg/sdk"
)

// Example is a built-in function with what dev mode needs to run it.
type Example struct {
	Name    string
	Handler func() sdk.Handler
	// Key is the example's kstate.dev/key spec; empty means the defaults.
	Key string
	// Try is a command that shows the example working against dev's address.
	Try func(addr string) string
}

var all = map[string]Example{
	"counter": {
		Name:    "counter",
		Handler: counter.Handler,
		Try: func(addr string) string {
			return fmt.Sprintf("curl -s -XPOST -H 'Kstate-Key: alice' -d '{\"by\": 5}' http://%s/", addr)
		},
	},
	// The three below take CloudEvents keyed by their partitionkey extension
	// and plain GETs keyed by the Kstate-Key header: the default key specs.
	"cart": {
		Name:    "cart",
		Handler: cart.Handler,
		Try: func(addr string) string {
			return tryEvent(addr, cart.TypeItemAdded, "cart-1", `{"sku": "apple", "quantity": 3, "price_cents": 50}`)
		},
	},
	"visitors": {
		Name:    "visitors",
		Handler: visitors.Handler,
		Try: func(addr string) string {
			return tryEvent(addr, visitors.TypeViewed, "home", `{"visitor": "ann"}`)
		},
	},
	"join": {
		Name:    "join",
		Handler: join.Handler,
		Try: func(addr string) string {
			return tryEvent(addr, join.TypeReading, "device-1", `{"sensor": "temp", "value": 21.5, "ts": "2024-05-01T12:00:00Z"}`)
		},
	},
}

// tryEvent is a curl command sending a CloudEvent in binary mode. Its id is
// the current time in nanoseconds, so that running it again sends a new
// event rather than one the agent answers as a redelivery.
func tryEvent(addr, typ, partitionKey, data string) string {
	return fmt.Sprintf("curl -s http://%s/ -H 'Ce-Specversion: 1.0' -H \"Ce-Id: $(date +%%s%%N)\" -H 'Ce-Source: demo' "+
		"-H 'Ce-Type: %s' -H 'Ce-Partitionkey: %s' -H 'Content-Type: application/json' -d '%s'",
		addr, typ, partitionKey, data)
}

// Lookup returns the named example.
func Lookup(name string) (Example, error) {
	e, ok := all[name]
	if !ok {
		return Example{}, fmt.Errorf("unknown example %q: expected one of %s", name, strings.Join(Names(), ", "))
	}
	return e, nil
}

// Names lists the built-in examples, sorted.
func Names() []string {
	out := make([]string, 0, len(all))
	for n := range all {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
