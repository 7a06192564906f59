package cli

import (
	"fmt"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"knative.dev/pkg/logging"

	"github.com/kstate-dev/kstate/examples"
	"github.com/kstate-dev/kstate/pkg/agent"
	"github.com/kstate-dev/kstate/pkg/dev"
)

func newDevCommand() *cobra.Command {
	var (
		o          dev.Options
		durability string
		logLevel   string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run kstate locally: an example function, the agent and an embedded store",
		Long: "dev runs a kstate example on this machine with zero setup: the function, the kstate agent\n" +
			"and an embedded Redis-compatible store (or a real Redis with --redis). Ctrl-C flushes every\n" +
			"entity to the store and stops.",
		Example: "  kn kstate dev --example counter\n" +
			"  kn kstate dev --example counter --addr 127.0.0.1:9000 --redis redis://127.0.0.1:6379",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch agent.Durability(durability) {
			case agent.DurabilityAsync, agent.DurabilitySync:
				o.Durability = agent.Durability(durability)
			default:
				return fmt.Errorf("--durability %q: expected async or sync", durability)
			}
			log, _ := logging.NewLogger("", logLevel)
			defer log.Sync()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return dev.Run(ctx, o, cmd.OutOrStdout(), log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Example, "example", "counter", "built-in example to run: "+strings.Join(examples.Names(), ", "))
	f.StringVar(&o.Addr, "addr", "127.0.0.1:8080", "address to serve HTTP and CloudEvents on")
	f.StringVar(&o.Key, "key", "", "key spec: header:NAME, ce:ATTRIBUTE, path:/prefix/{key} or query:NAME (default: ce:partitionkey for CloudEvents, the Kstate-Key header otherwise)")
	f.StringVar(&o.Redis, "redis", "", "Redis URL (redis://, rediss://, redis+sentinel://, redis+cluster://); default: an embedded store")
	f.IntVar(&o.Slots, "slots", 0, "slot count of the entity space (default 4096)")
	f.StringVar(&durability, "durability", "async", "async (write-behind) or sync (reply after the write lands)")
	f.DurationVar(&o.FlushInterval, "flush-interval", 0, "write-behind flush interval (default 100ms)")
	f.StringVar(&logLevel, "log-level", "warn", "agent log level (debug, info, warn, error)")
	return cmd
}
