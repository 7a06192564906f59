package cli

import (
	"github.com/spf13/cobra"
)

// NewRootCommand builds the kn-kstate command tree.
func NewRootCommand() *cobra.Command {
	return newRootCommand(&Params{})
}

// newRootCommand builds the command tree on p, which tests give fake
// clients.
func newRootCommand(p *Params) *cobra.Command {
	root := &cobra.Command{
		Use:   "kstate",
		Short: "Stateful, key-affine Knative Services",
		Long: "kstate makes a Knative Service stateful: every request or CloudEvent for one entity key\n" +
			"reaches the same pod, which keeps the entity in memory and writes it back to Redis.\n" +
			"Run as `kn kstate …` (kn plugin) or as `kn-kstate …`.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	p.addGlobalFlags(root)
	root.AddCommand(newDevCommand())
	root.AddCommand(
		newEnableCommand(p),
		newDisableCommand(p),
		newDescribeCommand(p),
		newOwnerCommand(p),
		newGetCommand(p),
		newSendCommand(p),
	)
	return root
}
