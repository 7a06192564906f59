package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/keyspec"
	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
)

// statsParallelism bounds the concurrent /.kstate/stats calls of describe.
const statsParallelism = 8

// Description is what `describe` prints.
type Description struct {
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
	URL       string `json:"url,omitempty"`
	// Enabled is kstate.dev/enabled of the revision template.
	Enabled bool `json:"enabled"`
	// Config is the template's kstate configuration, defaults filled in
	// from config-kstate (or the built-in defaults when it cannot be read).
	Config *KstateConfig `json:"config,omitempty"`
	// ConfigError says why Config is missing.
	ConfigError string         `json:"configError,omitempty"`
	Revisions   []RevisionInfo `json:"revisions"`
}

// KstateConfig is a Service's kstate configuration.
type KstateConfig struct {
	Space string `json:"space"`
	Slots int    `json:"slots"`
	// Key is the key spec; "" means keyspec's defaults.
	Key           string `json:"key,omitempty"`
	Durability    string `json:"durability"`
	FlushInterval string `json:"flushInterval"`
	// Store is the Secret (SECRET:KEY) that holds the Redis URL.
	Store       string `json:"store"`
	DedupWindow int    `json:"dedupWindow"`
}

// RevisionInfo is one revision: the ones with traffic, the latest created
// and the latest ready.
type RevisionInfo struct {
	Name           string   `json:"name"`
	TrafficPercent int64    `json:"trafficPercent"`
	Tags           []string `json:"tags,omitempty"`
	// Ready is the Ready condition's status: True, False or Unknown.
	Ready  string `json:"ready"`
	Kstate bool   `json:"kstate"`
	// Space and Slots are the revision's routing (kstate revisions only).
	Space string `json:"space,omitempty"`
	Slots int    `json:"slots,omitempty"`
	// Error says why the revision or its pods could not be read.
	Error string    `json:"error,omitempty"`
	Pods  []PodInfo `json:"pods,omitempty"`
}

// PodInfo is one pod of a kstate revision.
type PodInfo struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
	// Ready: the pod is among the ready endpoints, so routers place slots
	// on it.
	Ready bool `json:"ready"`
	// SlotsOwned is the number of slots placement gives the pod.
	SlotsOwned int `json:"slotsOwned"`
	// Stats is the pod's /.kstate/stats; nil when it could not be read
	// (StatsError says why).
	Stats      *PodStats `json:"stats,omitempty"`
	StatsError string    `json:"statsError,omitempty"`
}

// PodStats is the part of an agent's stats describe shows.
type PodStats struct {
	// SlotsHeld is the number of slot leases the pod holds.
	SlotsHeld      int   `json:"slotsHeld"`
	Entities       int64 `json:"entities"`
	DirtyEntities  int64 `json:"dirtyEntities"`
	DirtyBytes     int64 `json:"dirtyBytes"`
	FlushLagMs     int64 `json:"flushLagMs"`
	HandoffsIn     int64 `json:"handoffsIn"`
	HandoffsOut    int64 `json:"handoffsOut"`
	RejectedWrites int64 `json:"rejectedWrites"`
	Requests       int64 `json:"requests"`
	// Ready is the agent's own readiness (store reachable, function
	// serving, not draining).
	Ready bool `json:"ready"`
}

func newDescribeCommand(p *Params) *cobra.Command {
	return &cobra.Command{
		Use:   "describe SERVICE",
		Short: "Show a Service's kstate configuration, revisions and pods with their slots and state",
		Long: "describe shows the Service's kstate configuration (space, slots, key spec, durability, store),\n" +
			"its revisions (traffic, readiness, whether kstate is on) and, for each kstate revision, its pods:\n" +
			"the slots placement gives each ready pod, and what each pod reports on /.kstate/stats (read\n" +
			"through the API server's pod proxy): slots held, entities, dirty entities, flush lag,\n" +
			"handoffs in and out, rejected writes, readiness. Pods that cannot be reached are listed as such.",
		Example: "  kn kstate describe cart -n shop\n  kn kstate describe cart -o yaml",
		Args:    exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.checkOutput(); err != nil {
				return err
			}
			c, err := p.Clients()
			if err != nil {
				return err
			}
			d, err := describe(cmd.Context(), c, p.namespace(c), args[0])
			if err != nil {
				return err
			}
			return p.print(cmd.OutOrStdout(), d, d.table)
		},
	}
}

func describe(ctx context.Context, c *Clients, ns, name string) (*Description, error) {
	svc, err := getService(ctx, c, ns, name)
	if err != nil {
		return nil, err
	}
	d := &Description{
		Service:   name,
		Namespace: ns,
		Enabled:   kstate.Enabled(svc.Spec.Template.Annotations),
		Revisions: []RevisionInfo{},
	}
	if svc.Status.URL != nil {
		d.URL = svc.Status.URL.String()
	}
	if spec, err := serviceSpec(svc, loadDefaults(ctx, c)); err != nil {
		d.ConfigError = err.Error()
	} else {
		d.Config = &KstateConfig{
			Space:         spec.Space,
			Slots:         spec.Slots,
			Key:           spec.Key.String(),
			Durability:    string(spec.Durability),
			FlushInterval: spec.FlushInterval.String(),
			Store:         spec.Store.String(),
			DedupWindow:   spec.DedupWindow,
		}
	}

	var stats []func()
	for _, ri := range revisionsOf(svc) {
		info := RevisionInfo{Name: ri.name, TrafficPercent: ri.percent, Tags: ri.tags, Ready: "Unknown"}
		rev, err := getRevision(ctx, c, svc, ri.name)
		if err != nil {
			info.Error = err.Error()
			d.Revisions = append(d.Revisions, info)
			continue
		}
		if cond := rev.Status.GetCondition(apis.ConditionReady); cond != nil {
			info.Ready = string(cond.Status)
		}
		routing, err := revisionRouting(rev)
		switch {
		case err == errNotKstate:
			d.Revisions = append(d.Revisions, info)
			continue
		case err != nil:
			info.Kstate = true
			info.Error = err.Error()
			d.Revisions = append(d.Revisions, info)
			continue
		}
		info.Kstate, info.Space, info.Slots = true, routing.Space, routing.Slots
		pods, fetch, err := podsOf(ctx, c, rev, routing.Slots)
		if err != nil {
			info.Error = err.Error()
		}
		info.Pods = pods
		stats = append(stats, fetch...)
		d.Revisions = append(d.Revisions, info)
	}
	// Every Pods slice is final now; the calls fill in their own element.
	runBounded(stats, statsParallelism)
	return d, nil
}

// podsOf lists the pods of a kstate revision with the slots placement
// gives each, and returns the calls that fill in their stats.
func podsOf(ctx context.Context, c *Clients, rev *servingv1.Revision, slots int) ([]PodInfo, []func(), error) {
	ready, notReady, err := revisionPods(ctx, c, rev)
	if err != nil {
		return nil, nil, err
	}
	table, err := placementOf(ready, slots)
	if err != nil {
		return nil, nil, err
	}
	byName := func(a, b endpointPod) int { return strings.Compare(a.Name, b.Name) }
	slices.SortFunc(ready, byName)
	slices.SortFunc(notReady, byName)
	pods := make([]PodInfo, 0, len(ready)+len(notReady))
	for _, ep := range ready {
		pods = append(pods, PodInfo{Name: ep.Name, IP: ep.IP, Ready: true, SlotsOwned: len(table.SlotsOf(ep.Name))})
	}
	for _, ep := range notReady {
		pods = append(pods, PodInfo{Name: ep.Name, IP: ep.IP})
	}
	var fetch []func()
	for i, ep := range append(ready, notReady...) {
		pi := &pods[i]
		if !ep.Pod {
			pi.StatsError = "the endpoint has no pod behind it (no targetRef)"
			continue
		}
		fetch = append(fetch, func() {
			st, err := podStats(ctx, c, rev.Namespace, ep.Name)
			if err != nil {
				pi.StatsError = err.Error()
				return
			}
			pi.Stats = podStatsOf(st)
		})
	}
	return pods, fetch, nil
}

// revisionRef is a revision describe shows, with its traffic.
type revisionRef struct {
	name    string
	percent int64
	tags    []string
}

// revisionsOf lists the revisions with a traffic target (percent summed
// over targets), then the latest created and latest ready ones if not
// listed yet.
func revisionsOf(svc *servingv1.Service) []revisionRef {
	var refs []revisionRef
	index := map[string]int{}
	add := func(name string) int {
		if i, ok := index[name]; ok {
			return i
		}
		index[name] = len(refs)
		refs = append(refs, revisionRef{name: name})
		return len(refs) - 1
	}
	for _, t := range svc.Status.Traffic {
		if t.RevisionName == "" {
			continue
		}
		i := add(t.RevisionName)
		if t.Percent != nil {
			refs[i].percent += *t.Percent
		}
		if t.Tag != "" {
			refs[i].tags = append(refs[i].tags, t.Tag)
		}
	}
	for _, name := range []string{svc.Status.LatestCreatedRevisionName, svc.Status.LatestReadyRevisionName} {
		if name != "" {
			add(name)
		}
	}
	return refs
}

func podStatsOf(st *adminv1.StatsResponse) *PodStats {
	return &PodStats{
		SlotsHeld:      len(st.GetSlots()),
		Entities:       st.GetEntities(),
		DirtyEntities:  st.GetDirtyEntities(),
		DirtyBytes:     st.GetDirtyBytes(),
		FlushLagMs:     st.GetFlushLagMs(),
		HandoffsIn:     st.GetHandoffsIn(),
		HandoffsOut:    st.GetHandoffsOut(),
		RejectedWrites: st.GetRejectedWrites(),
		Requests:       st.GetRequests(),
		Ready:          st.GetReady(),
	}
}

// runBounded runs fns with at most n at a time and waits for all.
func runBounded(fns []func(), n int) {
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn()
		}()
	}
	wg.Wait()
}

func (d *Description) table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", d.Service)
	fmt.Fprintf(tw, "Namespace:\t%s\n", d.Namespace)
	if d.URL != "" {
		fmt.Fprintf(tw, "URL:\t%s\n", d.URL)
	}
	state := "disabled"
	if d.Enabled {
		state = "enabled"
	}
	fmt.Fprintf(tw, "kstate:\t%s\n", state)
	if c := d.Config; c != nil {
		fmt.Fprintf(tw, "Space:\t%s\n", c.Space)
		fmt.Fprintf(tw, "Slots:\t%d\n", c.Slots)
		key := c.Key
		if key == "" {
			key = fmt.Sprintf("(default) %s for CloudEvents, %s otherwise", keyspec.DefaultCloudEventSpec, keyspec.DefaultHTTPSpec)
		}
		fmt.Fprintf(tw, "Key:\t%s\n", key)
		fmt.Fprintf(tw, "Durability:\t%s, flush every %s\n", c.Durability, c.FlushInterval)
		secret, skey, _ := strings.Cut(c.Store, ":")
		fmt.Fprintf(tw, "Store:\tSecret %s, key %s\n", secret, skey)
		fmt.Fprintf(tw, "Dedup:\t%d CloudEvents per entity\n", c.DedupWindow)
	} else {
		fmt.Fprintf(tw, "Config:\t%s\n", d.ConfigError)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nRevisions:\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  TRAFFIC\tNAME\tREADY\tKSTATE\tREADY-PODS\n")
	for _, r := range d.Revisions {
		name := r.Name
		if len(r.Tags) > 0 {
			name += " #" + strings.Join(r.Tags, " #")
		}
		pods := "-"
		if r.Kstate && r.Error == "" {
			ready := 0
			for _, pi := range r.Pods {
				if pi.Ready {
					ready++
				}
			}
			pods = fmt.Sprintf("%d/%d", ready, len(r.Pods))
		}
		fmt.Fprintf(tw, "  %d%%\t%s\t%s\t%s\t%s\n", r.TrafficPercent, name, r.Ready, yesNo(r.Kstate), pods)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	for _, r := range d.Revisions {
		switch {
		case r.Error != "":
			fmt.Fprintf(w, "\nRevision %s: %s\n", r.Name, r.Error)
			continue
		case !r.Kstate:
			continue
		case len(r.Pods) == 0:
			fmt.Fprintf(w, "\nPods of %s: none (scaled to zero)\n", r.Name)
			continue
		}
		readyPods := 0
		for _, pi := range r.Pods {
			if pi.Ready {
				readyPods++
			}
		}
		fmt.Fprintf(w, "\nPods of %s (%d slots placed over %s):\n", r.Name, r.Slots, plural(readyPods, "ready pod"))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  NAME\tIP\tREADY\tSLOTS\tHELD\tENTITIES\tDIRTY\tFLUSH-LAG\tHANDOFFS-IN\tHANDOFFS-OUT\tREJECTED\tAGENT\n")
		var unreachable []string
		for _, pi := range r.Pods {
			if s := pi.Stats; s != nil {
				agentState := "ready"
				if !s.Ready {
					agentState = "not ready"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%s\n", pi.Name, pi.IP, yesNo(pi.Ready), pi.SlotsOwned,
					s.SlotsHeld, s.Entities, s.DirtyEntities, time.Duration(s.FlushLagMs)*time.Millisecond, s.HandoffsIn, s.HandoffsOut, s.RejectedWrites, agentState)
				continue
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t-\t-\t-\t-\t-\t-\t-\tunreachable\n", pi.Name, pi.IP, yesNo(pi.Ready), pi.SlotsOwned)
			unreachable = append(unreachable, fmt.Sprintf("  %s: %s\n", pi.Name, pi.StatsError))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(unreachable) > 0 {
			fmt.Fprintf(w, "Stats not read:\n%s", strings.Join(unreachable, ""))
		}
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
