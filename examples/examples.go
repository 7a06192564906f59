// Package examples lists the example functions built into the CLI's dev
// mode. Each example's own package holds its handler and tests.
package examples

import (
	"fmt"
	"sort"
	"strings"

	"github.com/kstate-dev/kstate/examples/counter"
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
