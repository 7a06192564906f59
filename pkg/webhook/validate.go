package webhook

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/system"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/webhook/resources"
)

// templateAnnotations is the path of the annotations kstate reads.
var templateAnnotations = []string{"spec", "template", "metadata", "annotations"}

// Validate checks the kstate side of a Service. Every error has its field
// path and says what was expected:
//   - kstate.dev/* annotations on the Service's own metadata (they belong on
//     spec.template.metadata, which its revisions get);
//   - a kstate.dev/enabled that is neither "true" nor "false";
//   - on a kstate Service, every bad or unknown kstate.dev/* annotation
//     (kstate.ParseSpec), a Service without a name to name its space after,
//     a target-burst-capacity other than "-1", a timeoutSeconds too short
//     for the final flush, a function container that cannot be told or
//     listens on a reserved port, a missing agent (the mutating webhook did
//     not run) and a config-kstate without agent-image;
//   - on an update, a change of kstate.dev/slots or kstate.dev/space of a
//     Service that has them.
func Validate(ctx context.Context, svc *servingv1.Service) *apis.FieldError {
	if apis.IsInStatusUpdate(ctx) || apis.IsInDelete(ctx) {
		return nil
	}
	var errs *apis.FieldError

	var onService []string
	for k := range svc.Annotations {
		if kstate.IsKstateAnnotation(k) {
			onService = append(onService, k)
		}
	}
	sort.Strings(onService)
	for _, k := range onService {
		errs = errs.Also((&apis.FieldError{
			Message: "kstate annotations belong on the revision template",
			Paths:   []string{k},
			Details: "move it to spec.template.metadata.annotations, which every revision of the Service gets",
		}).ViaField("metadata", "annotations"))
	}

	tmpl := &svc.Spec.Template
	ann := tmpl.Annotations

	if apis.IsInUpdate(ctx) {
		if old := baseline(ctx); old != nil {
			errs = errs.Also(validateImmutable(old, svc))
		}
	}

	if !kstate.Enabled(ann) {
		if v, set := value(ann, kstate.EnabledAnnotationKey); set && !strings.EqualFold(v, "false") {
			errs = errs.Also((&kstate.AnnotationError{
				Annotation: kstate.EnabledAnnotationKey, Value: v,
				Message: fmt.Sprintf(`%q is not a switch: want "true" or "false"`, v),
			}).FieldError().ViaField(templateAnnotations...))
		}
		return errs
	}

	d := config.FromContextOrDefaults(ctx).Defaults
	if d.AgentImage == "" {
		errs = errs.Also((&apis.FieldError{
			Message: "kstate cannot be enabled: the kstate installation has no agent image",
			Paths:   []string{kstate.EnabledAnnotationKey},
			Details: fmt.Sprintf("set %s in the ConfigMap %s/%s", config.AgentImageKey, system.Namespace(), config.ConfigName),
		}).ViaField(templateAnnotations...))
	}

	_, perrs := kstate.ParseSpec(svc.Namespace, svc.Name, ann, d)
	errs = errs.Also(perrs.ViaField(templateAnnotations...))
	noSpace := false
	if _, set := value(ann, kstate.SpaceAnnotationKey); !set && (svc.Name == "" || svc.GenerateName != "") {
		// With generateName the name is made after the mutating webhook ran.
		noSpace = true
		errs = errs.Also(&apis.FieldError{
			Message: "a kstate Service created without a name needs " + kstate.SpaceAnnotationKey,
			Paths:   []string{"metadata.generateName"},
			Details: "the entity space is named after the Service, whose name is not known yet; set metadata.name or " + kstate.SpaceAnnotationKey,
		})
	}
	containers := tmpl.Spec.Containers
	fn := functionIndex(containers)
	if fn < 0 {
		errs = errs.Also(&apis.FieldError{
			Message: "cannot tell which container is the kstate function",
			Paths:   []string{"spec.template.spec.containers"},
			Details: "use one container besides sidecars that have no port, give the function's container the port, " +
				"or set " + resources.EnvFunctionAddr + "=127.0.0.1:PORT on exactly one container",
		})
	}
	if d.AgentImage == "" || perrs != nil || noSpace || fn < 0 {
		// The mutating webhook left the Service alone for the reasons
		// above; what it would have set is not checked.
		return errs
	}

	if key, v, _ := autoscaling.TargetBurstCapacityAnnotation.Get(ann); v != ActivatorInPath {
		if key == "" {
			key = autoscaling.TargetBurstCapacityKey
		}
		errs = errs.Also((&apis.FieldError{
			Message: fmt.Sprintf("invalid value %q for a kstate Service: want %q", v, ActivatorInPath),
			Paths:   []string{key},
			Details: "kstate routes requests by key in Knative's activator, so the activator must stay in the request path",
		}).ViaField(templateAnnotations...))
	}

	if ts := tmpl.Spec.TimeoutSeconds; ts != nil && *ts != 0 {
		if min := config.MinRevisionTimeoutSeconds(d.DrainTimeout); *ts < min {
			errs = errs.Also(&apis.FieldError{
				Message: fmt.Sprintf("timeoutSeconds %d is too short for a kstate Service: want at least %d", *ts, min),
				Paths:   []string{"spec.template.spec.timeoutSeconds"},
				Details: fmt.Sprintf("Knative makes it the pods' grace period, which must hold the queue-proxy drain (%ds), "+
					"the agent's final flush (%s drain-timeout %v) and a 5s margin", config.QueueProxyDrainSeconds, config.ConfigName, d.DrainTimeout),
			})
		}
	}

	if p, ok := addrPort(envValue(&containers[fn], resources.EnvFunctionAddr)); ok && reservedPorts.Has(p) {
		errs = errs.Also((&apis.FieldError{
			Message: fmt.Sprintf("the function may not listen on port %d", p),
			Paths:   []string{"env"},
			Details: fmt.Sprintf("the pod's agent and queue-proxy use ports %v; pick another in %s",
				sets.List(reservedPorts), resources.EnvFunctionAddr),
		}).ViaFieldIndex("containers", fn).ViaField("spec", "template", "spec"))
	}
	if agentIndex(containers) < 0 {
		errs = errs.Also(&apis.FieldError{
			Message: "the kstate agent is not injected",
			Paths:   []string{"spec.template.spec.containers"},
			Details: fmt.Sprintf("the mutating webhook %s should have added the %s container; is it installed and reachable?",
				DefaultingWebhookName, resources.AgentContainerName),
		})
	}
	return errs
}

// validateImmutable refuses to change kstate.dev/slots or kstate.dev/space
// of a Service that has them (set, or implied by kstate being on).
func validateImmutable(old, svc *servingv1.Service) *apis.FieldError {
	var errs *apis.FieldError
	for _, c := range []struct {
		key, why string
	}{{
		key: kstate.SlotsAnnotationKey,
		why: "every key would map to another slot and the state stored under the old slot count would be orphaned",
	}, {
		key: kstate.SpaceAnnotationKey,
		why: "the Service would start from an empty entity space and the state stored in the old one would be orphaned",
	}} {
		ov, oldHas := effective(old, c.key)
		nv, newHas := effective(svc, c.key)
		if !oldHas || !newHas || ov == nv {
			continue
		}
		errs = errs.Also((&apis.FieldError{
			Message: fmt.Sprintf("%s cannot change from %q to %q: %s", c.key, ov, nv, c.why),
			Paths:   []string{c.key},
			Details: "to change it, create a new Service with the new value and copy the entities over " +
				"(docs/annotations.md, \"Changing slots or space\")",
		}).ViaField(templateAnnotations...))
	}
	return errs
}
