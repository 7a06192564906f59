// kn-kstate is the kstate CLI, named for kn's plugin discovery: `kn kstate …`.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/kstate-dev/kstate/pkg/cli"
)

func main() {
	if err := cli.NewRootCommand().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
