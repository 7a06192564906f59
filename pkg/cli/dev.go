package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

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
	f.StringVar(&o.Function, "function", "", "run this command as the function, one per replica; it must serve gRPC on $KSTATE_FUNCTION_ADDR (replaces --example)")
	f.StringVar(&o.Addr, "addr", "127.0.0.1:8080", "address to serve HTTP and CloudEvents on")
	f.StringVar(&o.Key, "key", "", "key spec: header:NAME, ce:ATTRIBUTE, path:/prefix/{key} or query:NAME (default: ce:partitionkey for CloudEvents, the Kstate-Key header otherwise)")
	f.StringVar(&o.Redis, "redis", "", "Redis URL (redis://, rediss://, redis+sentinel://, redis+cluster://); default: an embedded store")
	f.IntVar(&o.Slots, "slots", 0, "slot count of the entity space (default 4096)")
	f.IntVar(&o.Replicas, "replicas", 1, "agent+function replicas to start behind the key-affine router (0: start at zero)")
	f.DurationVar(&o.ScaleToZeroAfter, "scale-to-zero-after", 0, "scale to zero after this long without requests, e.g. 30s (0: never); the next request scales back from zero with preload")
	f.DurationVar(&o.MinHold, "min-hold", time.Second, "how long a replica keeps a slot it just took before handing it on")
	f.DurationVar(&o.StatusEvery, "status-every", 5*time.Second, "print a status line this often when something changed (0: never)")
	f.StringVar(&durability, "durability", "async", "async (write-behind) or sync (reply after the write lands)")
	f.DurationVar(&o.FlushInterval, "flush-interval", 0, "write-behind flush interval (default 100ms)")
	f.StringVar(&logLevel, "log-level", "warn", "agent log level (debug, info, warn, error)")
	cmd.AddCommand(newDevScaleCommand())
	return cmd
}

func newDevScaleCommand() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:     "scale REPLICAS",
		Short:   "Scale a running `dev` to REPLICAS (0 scales to zero)",
		Example: "  kn kstate dev scale 3\n  kn kstate dev scale 0 --addr 127.0.0.1:9000",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return fmt.Errorf("REPLICAS %q: expected a whole number, 0 or more", args[0])
			}
			resp, err := http.Post(fmt.Sprintf("http://%s%s?replicas=%d", addr, dev.ScalePath, n), "", nil)
			if err != nil {
				return fmt.Errorf("no kstate dev answers on %s (start one with `kn kstate dev`, or pass --addr): %w", addr, err)
			}
			defer resp.Body.Close()
			var body struct {
				Error    string   `json:"error"`
				Replicas []string `json:"replicas"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				return fmt.Errorf("%s answered %s, not kstate dev's status: %w", addr, resp.Status, err)
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("scale: %s", body.Error)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "scaled to %d replicas: %s\n", len(body.Replicas), strings.Join(body.Replicas, ", "))
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "address of the running dev")
	return cmd
}
