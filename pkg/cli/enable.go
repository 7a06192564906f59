package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/webhook/resources"
)

// Change is one annotation of the revision template that an update changed.
type Change struct {
	Annotation string `json:"annotation"`
	// Old is the value before, nil when it was not set.
	Old *string `json:"old"`
	// New is the value after, nil when it was removed.
	New *string `json:"new"`
}

// UpdateResult is what enable and disable print.
type UpdateResult struct {
	Service   string   `json:"service"`
	Namespace string   `json:"namespace"`
	Changes   []Change `json:"changes"`
	// Warnings are printed to stderr too.
	Warnings []string `json:"warnings,omitempty"`
}

// wanted is one annotation value enable or disable asks for.
type wanted struct {
	key, value string
	// same reports whether an existing value means the same.
	same func(old string) bool
}

func newEnableCommand(p *Params) *cobra.Command {
	var key, durability, slots, flushInterval, space, store string
	cmd := &cobra.Command{
		Use:   "enable SERVICE",
		Short: "Make a Knative Service stateful: set kstate.dev/enabled and the given kstate annotations",
		Long: "enable sets kstate.dev/enabled: \"true\" on the Service's revision template, plus the kstate\n" +
			"annotations given as flags, with a merge patch. The kstate webhook then injects the agent and\n" +
			"Knative rolls out a new revision. It prints every annotation it changed (old → new), or \"no change\".\n" +
			"Flags that are left out leave their annotation as it is (unset means config-kstate's default).",
		Example: "  kn kstate enable cart --key path:/carts/{key}\n" +
			"  kn kstate enable counter -n demo --durability sync --flush-interval 50ms",
		Args: exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.checkOutput(); err != nil {
				return err
			}
			f := cmd.Flags()
			want := []wanted{{key: kstate.EnabledAnnotationKey, value: "true", same: kstate.EnabledValue}}
			if f.Changed("key") {
				spec, err := keyspec.Parse(key)
				if err != nil {
					return fmt.Errorf("--key: %w", err)
				}
				want = append(want, wanted{key: kstate.KeyAnnotationKey, value: spec.String(), same: func(old string) bool {
					o, err := keyspec.Parse(old)
					return err == nil && o == spec
				}})
			}
			if f.Changed("space") {
				// Checked against the namespace below, once it is known.
				want = append(want, wanted{key: kstate.SpaceAnnotationKey, value: strings.TrimSpace(space), same: func(old string) bool {
					return strings.TrimSpace(old) == strings.TrimSpace(space)
				}})
			}
			if f.Changed("slots") {
				n, err := kstate.ParseSlots(slots)
				if err != nil {
					return fmt.Errorf("--slots: %w", err)
				}
				want = append(want, wanted{key: kstate.SlotsAnnotationKey, value: strconv.Itoa(n), same: func(old string) bool {
					o, err := kstate.ParseSlots(old)
					return err == nil && o == n
				}})
			}
			if f.Changed("durability") {
				d, err := config.ParseDurability(durability)
				if err != nil {
					return fmt.Errorf("--durability: %w", err)
				}
				want = append(want, wanted{key: kstate.DurabilityAnnotationKey, value: string(d), same: func(old string) bool {
					o, err := config.ParseDurability(old)
					return err == nil && o == d
				}})
			}
			if f.Changed("flush-interval") {
				d, err := config.ParseFlushInterval(flushInterval)
				if err != nil {
					return fmt.Errorf("--flush-interval: %w", err)
				}
				want = append(want, wanted{key: kstate.FlushIntervalAnnotationKey, value: strings.TrimSpace(flushInterval), same: func(old string) bool {
					o, err := config.ParseFlushInterval(old)
					return err == nil && o == d
				}})
			}
			if f.Changed("store") {
				ref, err := config.ParseStoreRef(store)
				if err != nil {
					return fmt.Errorf("--store: %w", err)
				}
				want = append(want, wanted{key: kstate.StoreAnnotationKey, value: strings.TrimSpace(store), same: func(old string) bool {
					o, err := config.ParseStoreRef(old)
					return err == nil && o == ref
				}})
			}

			c, err := p.Clients()
			if err != nil {
				return err
			}
			ns := p.namespace(c)
			if f.Changed("space") {
				if err := kstate.ValidateSpace(ns, strings.TrimSpace(space)); err != nil {
					return fmt.Errorf("--space: %w", err)
				}
			}
			return p.update(cmd, c, ns, args[0], want, true)
		},
	}
	f := cmd.Flags()
	f.StringVar(&key, "key", "", "key spec (kstate.dev/key): header:NAME, ce:ATTRIBUTE, path:/prefix/{key} or query:NAME")
	f.StringVar(&durability, "durability", "", "kstate.dev/durability: async (write-behind) or sync (reply after the write lands)")
	f.StringVar(&slots, "slots", "", "kstate.dev/slots: slot count of the entity space, 1 to 65536 (cannot change once set)")
	f.StringVar(&flushInterval, "flush-interval", "", "kstate.dev/flush-interval: write-behind interval, 1ms to 1m (e.g. 100ms)")
	f.StringVar(&space, "space", "", "kstate.dev/space: entity space NAMESPACE/NAME in the Service's namespace (cannot change once set)")
	f.StringVar(&store, "store", "", "kstate.dev/store: the Secret with the Redis URL, SECRET or SECRET:KEY")
	return cmd
}

func newDisableCommand(p *Params) *cobra.Command {
	return &cobra.Command{
		Use:   "disable SERVICE",
		Short: "Turn kstate off for a Knative Service: set kstate.dev/enabled to \"false\"",
		Long: "disable sets kstate.dev/enabled: \"false\" on the Service's revision template with a merge patch;\n" +
			"the webhook then removes the agent and Knative rolls out a new revision. The other kstate\n" +
			"annotations stay, so the pinned space and slot count still describe the state kept in Redis,\n" +
			"and `kn kstate enable` brings the Service back to it. Nothing is deleted from Redis.",
		Example: "  kn kstate disable cart -n shop",
		Args:    exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.checkOutput(); err != nil {
				return err
			}
			c, err := p.Clients()
			if err != nil {
				return err
			}
			want := []wanted{{key: kstate.EnabledAnnotationKey, value: "false", same: func(old string) bool { return !kstate.EnabledValue(old) }}}
			return p.update(cmd, c, p.namespace(c), args[0], want, false)
		},
	}
}

// update merge-patches the wanted annotations into the Service's revision
// template and prints what changed. The patch is guarded by the
// resourceVersion read; on a conflict (most often Knative's own status
// update of the Service) it reads the Service again and recomputes the
// changes, a few times, before giving up.
func (p *Params) update(cmd *cobra.Command, c *Clients, ns, name string, want []wanted, enabling bool) error {
	ctx := cmd.Context()
	var res UpdateResult
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc, err := getService(ctx, c, ns, name)
		if err != nil {
			return err
		}
		res = UpdateResult{Service: name, Namespace: ns, Changes: []Change{}}
		current := svc.Spec.Template.Annotations
		for _, w := range want {
			old, set := current[w.key]
			if set && w.same(old) {
				continue
			}
			if !set && w.key == kstate.EnabledAnnotationKey && !enabling {
				continue // unset already means off
			}
			ch := Change{Annotation: w.key, New: ptr(w.value)}
			if set {
				ch.Old = ptr(old)
			}
			res.Changes = append(res.Changes, ch)
		}
		if len(res.Changes) == 0 {
			return nil
		}
		updated, err := patchAnnotations(ctx, c, svc, res.Changes)
		if err != nil {
			return err
		}
		if enabling && !hasAgent(updated) {
			res.Warnings = append(res.Warnings, fmt.Sprintf(
				"the kstate webhook did not add the %s container to service %q: is kstate installed? (kubectl get pods -n %s)",
				resources.AgentContainerName, name, systemNamespace))
		}
		return nil
	})
	if apierrs.IsConflict(err) {
		return fmt.Errorf("service %q in namespace %q kept changing while it was being updated; run the command again", name, ns)
	}
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), "Warning:", w)
	}
	return p.print(cmd.OutOrStdout(), res, func(w io.Writer) error {
		if len(res.Changes) == 0 {
			_, err := fmt.Fprintf(w, "Service %q in namespace %q: no change\n", name, ns)
			return err
		}
		fmt.Fprintf(w, "Service %q in namespace %q updated:\n", name, ns)
		for _, ch := range res.Changes {
			fmt.Fprintf(w, "  %s: %s → %s\n", ch.Annotation, quoteOr(ch.Old, "(unset)"), quoteOr(ch.New, "(removed)"))
		}
		return nil
	})
}

// patchAnnotations sends the changes as one JSON merge patch of
// spec.template.metadata.annotations, guarded by the resourceVersion that
// was read, so a concurrent edit is not overwritten silently.
func patchAnnotations(ctx context.Context, c *Clients, svc *servingv1.Service, changes []Change) (*servingv1.Service, error) {
	ann := map[string]*string{}
	for _, ch := range changes {
		ann[ch.Annotation] = ch.New
	}
	patch := map[string]any{
		"metadata": map[string]any{"resourceVersion": svc.ResourceVersion},
		"spec":     map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": ann}}},
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return nil, err
	}
	updated, err := c.Serving.ServingV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, body, metav1.PatchOptions{})
	switch {
	case apierrs.IsConflict(err):
		return nil, err // update reads the Service again and retries
	case apierrs.IsNotFound(err):
		return nil, fmt.Errorf("service %q not found in namespace %q", svc.Name, svc.Namespace)
	case err != nil:
		return nil, c.apiError(fmt.Sprintf("updating service %q in namespace %q", svc.Name, svc.Namespace), err)
	}
	return updated, nil
}

func hasAgent(svc *servingv1.Service) bool {
	for _, ctr := range svc.Spec.Template.Spec.Containers {
		if ctr.Name == resources.AgentContainerName {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

func quoteOr(s *string, none string) string {
	if s == nil {
		return none
	}
	return strconv.Quote(*s)
}

// exactArgs is cobra.ExactArgs with a message that names the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return fmt.Errorf("%s: expected %s, got %d argument(s); see `%s --help`",
				cmd.Name(), strings.Join(names, " "), len(args), cmd.CommandPath())
		}
		return nil
	}
}
