package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/placement"
	"github.com/kstate-dev/kstate/statestore"
)

// Entity is what `get` prints: one entity as stored in Redis.
type Entity struct {
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
	Key       string `json:"key"`
	Space     string `json:"space"`
	Slot      uint32 `json:"slot"`
	Slots     int    `json:"slots"`
	Version   uint64 `json:"version"`
	// LastAccess is when the entity was last written (Redis clock).
	LastAccess *time.Time `json:"lastAccess,omitempty"`
	// DedupEvents is the number of processed CloudEvents remembered with
	// the state; DedupWindow is the most the Service keeps.
	DedupEvents int      `json:"dedupEvents"`
	DedupWindow int      `json:"dedupWindow"`
	State       *Payload `json:"state"`

	age time.Duration
}

// redisTimeout bounds connecting to Redis and reading the entity.
const redisTimeout = 10 * time.Second

func newGetCommand(p *Params) *cobra.Command {
	var redisURL string
	cmd := &cobra.Command{
		Use:   "get SERVICE KEY",
		Short: "Read an entity's state, version and last access straight from Redis",
		Long: "get reads one entity from the state store: the Service's entity space and slot count come from\n" +
			"its kstate annotations, the key's slot from kstate's placement, and the record from Redis. It shows\n" +
			"what has been flushed, not updates still in a pod's memory (see the flush lag in `describe`).\n" +
			"Redis is --redis, else the URL in the Service's store Secret (kstate.dev/store, else config-kstate's\n" +
			"store, default Secret kstate-store, key url), which often names a host only reachable inside the\n" +
			"cluster: then port-forward Redis and pass --redis.",
		Example: "  kn kstate get cart alice -n shop --redis redis://127.0.0.1:6379\n" +
			"  kubectl port-forward -n REDIS_NAMESPACE svc/REDIS 6379 &  # then:\n" +
			"  kn kstate get cart alice --redis redis://:PASSWORD@127.0.0.1:6379",
		Args: exactArgs("SERVICE", "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.checkOutput(); err != nil {
				return err
			}
			name, key := args[0], args[1]
			if err := keyspec.ValidateKey(key); err != nil {
				return fmt.Errorf("KEY %q: %w", key, err)
			}
			if redisURL != "" {
				if _, err := statestore.ParseURL(redisURL); err != nil {
					return fmt.Errorf("--redis: %w", err)
				}
			}
			ctx := cmd.Context()
			c, ns, svc, err := p.service(ctx, name)
			if err != nil {
				return err
			}
			spec, err := serviceSpec(svc, loadDefaults(ctx, c))
			if err != nil {
				return err
			}
			url, from := redisURL, ""
			if url == "" {
				if url, err = storeURL(ctx, c, ns, spec); err != nil {
					return err
				}
				from = fmt.Sprintf(" (the URL in Secret %s/%s, key %s; if Redis is only reachable inside the cluster, "+
					"port-forward it and pass --redis)", ns, spec.Store.SecretName, spec.Store.Key)
			}
			e, err := getEntity(ctx, url, from, spec, key)
			if err != nil {
				return err
			}
			e.Service, e.Namespace = name, ns
			if e.LastAccess != nil {
				e.age = p.now().Sub(*e.LastAccess).Truncate(time.Second)
			}
			return p.print(cmd.OutOrStdout(), e, e.table)
		},
	}
	cmd.Flags().StringVar(&redisURL, "redis", "", "Redis URL (redis://, rediss://, redis+sentinel://, redis+cluster://); default: the Service's store Secret")
	return cmd
}

// storeURL reads the store URL from the Service's store Secret.
func storeURL(ctx context.Context, c *Clients, ns string, spec *kstate.Spec) (string, error) {
	ref := spec.Store
	sec, err := c.Kube.CoreV1().Secrets(ns).Get(ctx, ref.SecretName, metav1.GetOptions{})
	switch {
	case apierrs.IsNotFound(err):
		return "", fmt.Errorf("no --redis given and the store Secret %q (%s) is not in namespace %q; pass --redis URL",
			ref.SecretName, kstate.StoreAnnotationKey, ns)
	case err != nil:
		return "", c.apiError(fmt.Sprintf("no --redis given and the store Secret %q in namespace %q cannot be read (pass --redis URL)", ref.SecretName, ns), err)
	}
	url := string(sec.Data[ref.Key])
	if url == "" {
		url = sec.StringData[ref.Key]
	}
	if url == "" {
		return "", fmt.Errorf("no --redis given and the store Secret %q in namespace %q has no key %q; pass --redis URL", ref.SecretName, ns, ref.Key)
	}
	return url, nil
}

// getEntity reads key's record from the store at url. from explains
// where url came from, for errors.
func getEntity(ctx context.Context, url, from string, spec *kstate.Spec, key string) (*Entity, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	store, err := statestore.NewRedis(ctx, url, statestore.RedisOptions{ClientName: "kn-kstate"})
	if err != nil {
		return nil, redisError(url, from, err)
	}
	defer store.Close()
	slot := placement.SlotOf(key, spec.Slots)
	recs, err := store.Load(ctx, statestore.SlotRef{Space: spec.Space, Slot: slot}, []string{key})
	if err != nil {
		return nil, redisError(url, from, err)
	}
	rec := recs[key]
	if rec == nil {
		return nil, fmt.Errorf("entity %q not found in space %q (slot %d of %d): it was never written, was deleted, or its first update is not flushed yet",
			key, spec.Space, slot, spec.Slots)
	}
	e := &Entity{
		Key: key, Space: spec.Space, Slot: slot, Slots: spec.Slots,
		Version:     rec.Version,
		DedupEvents: len(rec.Dedup),
		DedupWindow: spec.DedupWindow,
		State:       newPayload(rec.State),
	}
	if !rec.LastAccess.IsZero() {
		e.LastAccess = ptr(rec.LastAccess.UTC())
	}
	return e, nil
}

// redisError words a store error: unreachable, or anything else.
func redisError(url, from string, err error) error {
	if errors.Is(err, statestore.ErrUnavailable) {
		return fmt.Errorf("cannot reach Redis at %s%s: %w", statestore.Redacted(url), from, rootCause(err))
	}
	return fmt.Errorf("Redis at %s%s: %w", statestore.Redacted(url), from, err)
}

// rootCause peels the statestore's "%w: op: %w" wrapping down to the
// underlying error (a dial error, a Redis reply).
func rootCause(err error) error {
	for {
		m, ok := err.(interface{ Unwrap() []error })
		if !ok {
			return err
		}
		errs := m.Unwrap()
		if len(errs) == 0 {
			return err
		}
		err = errs[len(errs)-1]
	}
}

func (e *Entity) table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Key:\t%s\n", e.Key)
	fmt.Fprintf(tw, "Space:\t%s\n", e.Space)
	fmt.Fprintf(tw, "Slot:\t%d of %d\n", e.Slot, e.Slots)
	fmt.Fprintf(tw, "Version:\t%d\n", e.Version)
	if e.LastAccess != nil {
		fmt.Fprintf(tw, "Last access:\t%s (%s ago)\n", e.LastAccess.Format(time.RFC3339), e.age)
	} else {
		fmt.Fprintf(tw, "Last access:\tunknown\n")
	}
	fmt.Fprintf(tw, "Dedup:\t%d CloudEvents remembered (window %d)\n", e.DedupEvents, e.DedupWindow)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "State:\n%s\n", e.State)
	return err
}
