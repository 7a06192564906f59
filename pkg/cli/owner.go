package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kstate-dev/kstate/pkg/keyspec"
)

// Owner is what `owner` prints: where a key goes and whether the pod it
// goes to holds the key's slot right now.
type Owner struct {
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
	Revision  string `json:"revision"`
	Key       string `json:"key"`
	Space     string `json:"space"`
	Slot      uint32 `json:"slot"`
	Slots     int    `json:"slots"`
	// ReadyPods is the number of ready pods the placement is over.
	ReadyPods int `json:"readyPods"`
	// Pod owns the slot by placement; "" when the revision has no ready pod
	// (scaled to zero): the activator buffers the request and the first pod
	// takes every slot.
	Pod   string `json:"pod,omitempty"`
	PodIP string `json:"podIP,omitempty"`
	// Live is the pod's own view, from its /.kstate/stats; nil without a pod.
	Live *LiveCheck `json:"live,omitempty"`
}

// LiveCheck is a pod's answer about one slot.
type LiveCheck struct {
	// Reachable is false when the stats could not be read; Error says why.
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// Holds says whether the pod holds the slot's lease now, at Epoch.
	Holds bool   `json:"holds"`
	Epoch uint64 `json:"epoch,omitempty"`
}

func newOwnerCommand(p *Params) *cobra.Command {
	return &cobra.Command{
		Use:   "owner SERVICE KEY",
		Short: "Show the slot of an entity key and the pod that owns it, checked against the pod",
		Long: "owner computes the key's slot and the pod that owns the slot by kstate's placement over the\n" +
			"ready endpoints of the Service's latest ready revision, as the activator does. It then asks that\n" +
			"pod (GET /.kstate/stats through the API server's pod proxy) whether it holds the slot's lease now.\n" +
			"A pod that does not hold it yet takes it on the slot's next request (by a handoff if another pod\n" +
			"holds it). A pod that cannot be reached is reported, not an error.",
		Example: "  kn kstate owner cart alice -n shop\n  kn kstate owner cart alice -o json",
		Args:    exactArgs("SERVICE", "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.checkOutput(); err != nil {
				return err
			}
			name, key := args[0], args[1]
			if err := keyspec.ValidateKey(key); err != nil {
				return fmt.Errorf("KEY %q: %w", key, err)
			}
			ctx := cmd.Context()
			c, ns, svc, err := p.service(ctx, name)
			if err != nil {
				return err
			}
			rev, err := latestReadyRevision(ctx, c, svc)
			if err != nil {
				return err
			}
			routing, err := revisionRouting(rev)
			if err == errNotKstate {
				return notKstateError(svc, rev)
			} else if err != nil {
				return err
			}
			ready, _, err := revisionPods(ctx, c, rev)
			if err != nil {
				return err
			}
			table, err := placementOf(ready, routing.Slots)
			if err != nil {
				return err
			}
			slot, pod := table.OwnerOfKey(key)
			o := Owner{
				Service: name, Namespace: ns, Revision: rev.Name, Key: key,
				Space: routing.Space, Slot: slot, Slots: routing.Slots, ReadyPods: len(ready), Pod: pod,
			}
			if pod != "" {
				live := &LiveCheck{}
				for _, ep := range ready {
					if ep.Name != pod {
						continue
					}
					o.PodIP = ep.IP
					if !ep.Pod {
						live.Error = "the endpoint has no pod behind it (no targetRef), so its stats cannot be read"
						break
					}
					st, err := podStats(ctx, c, ns, pod)
					if err != nil {
						live.Error = err.Error()
						break
					}
					live.Reachable = true
					live.Epoch, live.Holds = heldEpoch(st, slot)
				}
				o.Live = live
			}
			return p.print(cmd.OutOrStdout(), o, o.table)
		},
	}
}

func (o Owner) table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Service:\t%s/%s\n", o.Namespace, o.Service)
	fmt.Fprintf(tw, "Revision:\t%s (%s)\n", o.Revision, plural(o.ReadyPods, "ready pod"))
	fmt.Fprintf(tw, "Key:\t%s\n", o.Key)
	fmt.Fprintf(tw, "Space:\t%s\n", o.Space)
	fmt.Fprintf(tw, "Slot:\t%d of %d\n", o.Slot, o.Slots)
	switch {
	case o.Pod == "":
		fmt.Fprintf(tw, "Owner:\tnone: the revision has no ready pod (scaled to zero); the activator buffers the request and the first pod takes every slot\n")
	default:
		fmt.Fprintf(tw, "Owner:\t%s (%s)\n", o.Pod, o.PodIP)
		fmt.Fprintf(tw, "Live:\t%s\n", o.Live.describe(o.Slot))
	}
	return tw.Flush()
}

func (l *LiveCheck) describe(slot uint32) string {
	switch {
	case l == nil:
		return "not checked"
	case !l.Reachable:
		return "could not ask the pod: " + l.Error
	case l.Holds:
		return fmt.Sprintf("holds slot %d at epoch %d", slot, l.Epoch)
	default:
		return fmt.Sprintf("does not hold slot %d now (it takes the lease on the slot's next request, by a handoff if another pod holds it)", slot)
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", what)
	}
	return fmt.Sprintf("%d %ss", n, what)
}
