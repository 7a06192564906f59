package config

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/leaderelection"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/metrics"
	apisconfig "knative.dev/serving/pkg/apis/config"
	"sigs.k8s.io/yaml"

	kconfig "github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/webhook"
)

const systemNamespace = "kstate-system"

// doc is one YAML document of a file.
type doc struct {
	file string
	raw  []byte
	meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
	}
}

func (d *doc) id() string {
	return fmt.Sprintf("%s %s/%s (%s)", d.meta.Kind, d.meta.Metadata.Namespace, d.meta.Metadata.Name, d.file)
}

// into decodes the document into a typed object.
func (d *doc) into(t *testing.T, obj any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(d.raw, obj); err != nil {
		t.Fatalf("%s: %v", d.id(), err)
	}
}

// load parses every YAML file under dir (relative to config/).
func load(t *testing.T, dir string) []*doc {
	t.Helper()
	var docs []*doc
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() || (!strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".yml")) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, part := range bytes.Split(b, []byte("\n---\n")) {
			if len(bytes.TrimSpace(stripComments(part))) == 0 {
				continue
			}
			d := &doc{file: fmt.Sprintf("%s#%d", path, i), raw: part}
			if err := yaml.Unmarshal(part, &d.meta); err != nil {
				return fmt.Errorf("%s: %w", d.file, err)
			}
			if d.meta.Kind == "" || d.meta.APIVersion == "" {
				return fmt.Errorf("%s: no kind or apiVersion", d.file)
			}
			docs = append(docs, d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatalf("no YAML under %s", dir)
	}
	return docs
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// find returns the one document of kind, namespace and name, or fails.
func find(t *testing.T, docs []*doc, kind, namespace, name string) *doc {
	t.Helper()
	var found []*doc
	for _, d := range docs {
		if d.meta.Kind == kind && d.meta.Metadata.Namespace == namespace && d.meta.Metadata.Name == name {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d documents of %s %s/%s, want 1", len(found), kind, namespace, name)
	}
	return found[0]
}

func TestEveryFileParses(t *testing.T) {
	for _, d := range load(t, ".") {
		if d.meta.Kind != "Kustomization" && d.meta.Metadata.Name == "" {
			t.Errorf("%s: no metadata.name", d.file)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(d.raw, &obj); err != nil {
			t.Errorf("%s: %v", d.file, err)
		}
	}
}

func TestCore(t *testing.T) {
	docs := load(t, "core")
	clusterScoped := sets.New("Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
	seen := map[string]string{}
	for _, d := range docs {
		if clusterScoped.Has(d.meta.Kind) {
			if d.meta.Metadata.Namespace != "" {
				t.Errorf("%s: a cluster-scoped object with a namespace", d.id())
			}
		} else if d.meta.Metadata.Namespace != systemNamespace {
			t.Errorf("%s: namespace %q, want %s", d.id(), d.meta.Metadata.Namespace, systemNamespace)
		}
		if d.meta.Metadata.Labels["app.kubernetes.io/part-of"] != "kstate" {
			t.Errorf("%s: no app.kubernetes.io/part-of: kstate label", d.id())
		}
		key := d.meta.Kind + " " + d.meta.Metadata.Namespace + "/" + d.meta.Metadata.Name
		if prev, dup := seen[key]; dup {
			t.Errorf("%s defined in %s and %s", key, prev, d.file)
		}
		seen[key] = d.file
	}
	find(t, docs, "Namespace", "", systemNamespace)

	// The controller Deployment and the webhook Service.
	var dep appsv1.Deployment
	find(t, docs, "Deployment", systemNamespace, "kstate-controller").into(t, &dep)
	pod := dep.Spec.Template
	if !matches(dep.Spec.Selector.MatchLabels, pod.Labels) {
		t.Errorf("the Deployment's selector %v does not select its pods %v", dep.Spec.Selector.MatchLabels, pod.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers in the controller", len(pod.Spec.Containers))
	}
	ctr := pod.Spec.Containers[0]
	checkKoImage(t, ctr.Image)
	env := map[string]corev1.EnvVar{}
	for _, e := range ctr.Env {
		env[e.Name] = e
	}
	if e := env["SYSTEM_NAMESPACE"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Error("SYSTEM_NAMESPACE is not the pod's namespace")
	}
	if env["METRICS_DOMAIN"].Value == "" {
		t.Error("METRICS_DOMAIN is not set")
	}
	for _, name := range []string{"CONFIG_LOGGING_NAME", "CONFIG_OBSERVABILITY_NAME", "CONFIG_LEADERELECTION_NAME"} {
		find(t, docs, "ConfigMap", systemNamespace, env[name].Value)
	}
	find(t, docs, "ServiceAccount", systemNamespace, pod.Spec.ServiceAccountName)

	webhookPort := int32(0)
	for _, p := range ctr.Ports {
		if p.Name == "https-webhook" {
			webhookPort = p.ContainerPort
		}
	}
	if fmt.Sprint(webhookPort) != env["WEBHOOK_PORT"].Value || webhookPort != webhook.Port {
		t.Errorf("WEBHOOK_PORT %q, container port %d, the controller's default %d", env["WEBHOOK_PORT"].Value, webhookPort, webhook.Port)
	}
	if env["WEBHOOK_NAME"].Value != webhook.ServiceName {
		t.Errorf("WEBHOOK_NAME %q, the controller's default %q", env["WEBHOOK_NAME"].Value, webhook.ServiceName)
	}
	var svc corev1.Service
	find(t, docs, "Service", systemNamespace, env["WEBHOOK_NAME"].Value).into(t, &svc)
	if !matches(svc.Spec.Selector, pod.Labels) {
		t.Errorf("the webhook Service's selector %v does not select the controller's pods %v", svc.Spec.Selector, pod.Labels)
	}
	servicePort := map[int32]int32{}
	for _, p := range svc.Spec.Ports {
		servicePort[p.Port] = p.TargetPort.IntVal
	}

	// The webhook configurations: names and paths as pkg/webhook serves
	// them, calling the Service above on a port that reaches the webhook.
	type hook struct {
		name, path string
		cc         admissionregistrationv1.WebhookClientConfig
		rules      []admissionregistrationv1.RuleWithOperations
	}
	var hooks []hook
	var mwh admissionregistrationv1.MutatingWebhookConfiguration
	find(t, docs, "MutatingWebhookConfiguration", "", webhook.DefaultingWebhookName).into(t, &mwh)
	for _, w := range mwh.Webhooks {
		hooks = append(hooks, hook{mwh.Name, webhook.DefaultingPath, w.ClientConfig, w.Rules})
		if w.Name != mwh.Name {
			t.Errorf("webhook %q in configuration %q: knative.dev/pkg reconciles only the one named like its configuration", w.Name, mwh.Name)
		}
		if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
			t.Error("the mutating webhook must be reinvoked if needed: Knative's defaulting may run after it")
		}
	}
	for name, path := range map[string]string{
		webhook.ValidationWebhookName:       webhook.ValidationPath,
		webhook.ConfigValidationWebhookName: webhook.ConfigValidationPath,
	} {
		var vwh admissionregistrationv1.ValidatingWebhookConfiguration
		find(t, docs, "ValidatingWebhookConfiguration", "", name).into(t, &vwh)
		for _, w := range vwh.Webhooks {
			hooks = append(hooks, hook{vwh.Name, path, w.ClientConfig, w.Rules})
			if w.Name != vwh.Name {
				t.Errorf("webhook %q in configuration %q: knative.dev/pkg reconciles only the one named like its configuration", w.Name, vwh.Name)
			}
		}
	}
	for _, h := range hooks {
		s := h.cc.Service
		if s == nil {
			t.Errorf("%s: no service", h.name)
			continue
		}
		if s.Name != svc.Name || s.Namespace != svc.Namespace {
			t.Errorf("%s calls Service %s/%s, which is not the webhook Service %s/%s", h.name, s.Namespace, s.Name, svc.Namespace, svc.Name)
		}
		port := int32(443)
		if s.Port != nil {
			port = *s.Port
		}
		if servicePort[port] != webhookPort {
			t.Errorf("%s calls port %d, which does not reach the webhook port %d", h.name, port, webhookPort)
		}
		if s.Path == nil || *s.Path != h.path {
			got := "none"
			if s.Path != nil {
				got = *s.Path
			}
			t.Errorf("%s: path %s, want %s", h.name, got, h.path)
		}
	}
	wantRules := map[string][]string{
		webhook.DefaultingWebhookName: {"serving.knative.dev/v1 services,services/status CREATE,UPDATE"},
		webhook.ValidationWebhookName: {"serving.knative.dev/v1 services CREATE,UPDATE"},
		// What knative.dev/pkg's configmaps reconciler writes.
		webhook.ConfigValidationWebhookName: {"/v1 configmaps/* CREATE,UPDATE"},
	}
	for _, h := range hooks {
		var got []string
		for _, r := range h.rules {
			var ops []string
			for _, o := range r.Operations {
				ops = append(ops, string(o))
			}
			got = append(got, fmt.Sprintf("%s/%s %s %s", strings.Join(r.APIGroups, ","), strings.Join(r.APIVersions, ","),
				strings.Join(r.Resources, ","), strings.Join(ops, ",")))
		}
		if diff := cmp.Diff(wantRules[h.name], got); diff != "" {
			t.Errorf("%s rules (-want,+got):\n%s", h.name, diff)
		}
	}

	checkRBAC(t, docs, dep.Spec.Template.Spec.ServiceAccountName)
}

func checkRBAC(t *testing.T, docs []*doc, sa string) {
	var cr rbacv1.ClusterRole
	find(t, docs, "ClusterRole", "", "kstate-controller").into(t, &cr)
	var role rbacv1.Role
	find(t, docs, "Role", systemNamespace, "kstate-controller").into(t, &role)

	for _, d := range docs {
		var subjects []rbacv1.Subject
		var ref rbacv1.RoleRef
		switch d.meta.Kind {
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			d.into(t, &b)
			subjects, ref = b.Subjects, b.RoleRef
			find(t, docs, ref.Kind, "", ref.Name)
		case "RoleBinding":
			var b rbacv1.RoleBinding
			d.into(t, &b)
			subjects, ref = b.Subjects, b.RoleRef
			find(t, docs, ref.Kind, d.meta.Metadata.Namespace, ref.Name)
		default:
			continue
		}
		for _, s := range subjects {
			if s.Kind != "ServiceAccount" || s.Name != sa || s.Namespace != systemNamespace {
				t.Errorf("%s: subject %+v is not the controller's ServiceAccount", d.id(), s)
			}
		}
	}

	// Least privilege: nothing cluster-wide beyond reading webhook
	// configurations and what the autoscaler plugin needs; writes only to
	// kstate's own objects and pod annotations.
	names := func(rules []rbacv1.PolicyRule, resource, verb string) (all bool, some sets.Set[string]) {
		some = sets.New[string]()
		for _, r := range rules {
			if !sets.New(r.Resources...).Has(resource) || !sets.New(r.Verbs...).Has(verb) {
				continue
			}
			if len(r.ResourceNames) == 0 {
				all = true
			}
			some.Insert(r.ResourceNames...)
		}
		return all, some
	}
	for _, c := range []struct {
		rules    []rbacv1.PolicyRule
		resource string
		verb     string
		want     []string
	}{
		{cr.Rules, "mutatingwebhookconfigurations", "update", []string{webhook.DefaultingWebhookName}},
		{cr.Rules, "validatingwebhookconfigurations", "update", []string{webhook.ValidationWebhookName, webhook.ConfigValidationWebhookName}},
		{cr.Rules, "namespaces", "get", []string{systemNamespace}},
		{role.Rules, "secrets", "update", []string{webhook.SecretName}},
	} {
		all, got := names(c.rules, c.resource, c.verb)
		if all || !got.Equal(sets.New(c.want...)) {
			t.Errorf("%s %s allowed for all=%v names=%v, want exactly %v", c.verb, c.resource, all, sets.List(got), c.want)
		}
	}
	// The autoscaler plugin patches pods (two annotations) and reads
	// revisions, pods and endpoints; it never updates pods or writes
	// anything else of users'.
	for _, c := range []struct{ resource, verb string }{
		{"pods", "patch"}, {"pods", "watch"}, {"endpoints", "watch"}, {"revisions", "watch"},
	} {
		if all, _ := names(cr.Rules, c.resource, c.verb); !all {
			t.Errorf("the ClusterRole does not grant %s on %s, which the autoscaler plugin needs", c.verb, c.resource)
		}
	}
	for _, c := range []struct{ resource, verb string }{
		{"pods", "update"}, {"endpoints", "patch"}, {"endpoints", "update"}, {"revisions", "patch"}, {"revisions", "update"},
	} {
		if all, some := names(cr.Rules, c.resource, c.verb); all || some.Len() > 0 {
			t.Errorf("the ClusterRole grants %s on %s", c.verb, c.resource)
		}
	}
	for _, r := range cr.Rules {
		for _, res := range r.Resources {
			if res == "secrets" || res == "configmaps" || res == "*" {
				t.Errorf("the ClusterRole grants %v on %s cluster-wide", r.Verbs, res)
			}
		}
		for _, v := range r.Verbs {
			if v == "*" || v == "create" || v == "delete" {
				t.Errorf("the ClusterRole grants %s on %v", v, r.Resources)
			}
		}
	}
	find(t, docs, "Secret", systemNamespace, webhook.SecretName)
}

// TestConfigMaps: every ConfigMap's _example has the checksum in its
// annotation and parses, as does its data, with the constructor the
// controller uses for it.
func TestConfigMaps(t *testing.T) {
	constructors := map[string]func(*corev1.ConfigMap) error{
		kconfig.ConfigName: func(cm *corev1.ConfigMap) error { _, err := kconfig.NewDefaultsConfigFromConfigMap(cm); return err },
		"config-logging":   func(cm *corev1.ConfigMap) error { _, err := logging.NewConfigFromConfigMap(cm); return err },
		"config-observability": func(cm *corev1.ConfigMap) error {
			_, err := metrics.NewObservabilityConfigFromConfigMap(cm)
			return err
		},
		"config-leader-election": func(cm *corev1.ConfigMap) error { _, err := leaderelection.NewConfigFromConfigMap(cm); return err },
	}
	found := sets.New[string]()
	for _, d := range load(t, "core") {
		if d.meta.Kind != "ConfigMap" {
			continue
		}
		var cm corev1.ConfigMap
		d.into(t, &cm)
		found.Insert(cm.Name)
		parse, ok := constructors[cm.Name]
		if !ok {
			t.Errorf("%s: no constructor known for it", d.id())
			continue
		}
		example, ok := cm.Data[configmap.ExampleKey]
		if !ok {
			t.Errorf("%s: no %s", d.id(), configmap.ExampleKey)
			continue
		}
		if got, want := cm.Annotations[configmap.ExampleChecksumAnnotation], configmap.Checksum(example); got != want {
			t.Errorf("%s: example checksum %q, want %q (go run knative.dev/pkg/configmap/hash-gen config/%s)", d.id(), got, want, strings.SplitN(d.file, "#", 2)[0])
		}
		if err := parse(&cm); err != nil {
			t.Errorf("%s: data: %v", d.id(), err)
		}
		ex := cm.DeepCopy()
		if err := yaml.Unmarshal([]byte(example), &ex.Data); err != nil {
			t.Fatalf("%s: example: %v", d.id(), err)
		}
		for k, v := range cm.Data {
			if _, set := ex.Data[k]; !set {
				ex.Data[k] = v
			}
		}
		if err := parse(ex); err != nil {
			t.Errorf("%s: example: %v", d.id(), err)
		}
	}
	if want := sets.KeySet(constructors); !found.Equal(want) {
		t.Errorf("ConfigMaps %v, want %v", sets.List(found), sets.List(want))
	}
}

// TestKustomizations: every local path a kustomization names exists, and
// config/kustomization.yaml installs everything in core/.
func TestKustomizations(t *testing.T) {
	var top []string
	for _, d := range load(t, ".") {
		if d.meta.Kind != "Kustomization" {
			continue
		}
		var k struct {
			APIVersion string   `json:"apiVersion"`
			Kind       string   `json:"kind"`
			Resources  []string `json:"resources"`
			Patches    []struct {
				Path string `json:"path"`
			} `json:"patches"`
		}
		d.into(t, &k)
		dir := filepath.Dir(strings.SplitN(d.file, "#", 2)[0])
		paths := k.Resources
		for _, p := range k.Patches {
			paths = append(paths, p.Path)
		}
		for _, p := range paths {
			if strings.Contains(p, "://") {
				continue
			}
			if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
				t.Errorf("%s: %v", d.file, err)
			}
		}
		if dir == "." {
			top = k.Resources
		}
	}
	var core []string
	if err := filepath.WalkDir("core", func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasSuffix(path, ".yaml") {
			core = append(core, path)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(core)
	sort.Strings(top)
	if diff := cmp.Diff(core, top); diff != "" {
		t.Errorf("config/kustomization.yaml resources (-core/,+listed):\n%s", diff)
	}
}

// TestKnativePatches: the patches target objects of the Knative release
// kstate builds against, and do what they say.
func TestKnativePatches(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "knative.dev/serving").Output()
	if err != nil {
		t.Fatalf("locating knative.dev/serving: %v", err)
	}
	serving := load(t, filepath.Join(strings.TrimSpace(string(out)), "config", "core"))
	docs := load(t, "knative")

	var patch appsv1.Deployment
	find(t, docs, "Deployment", "knative-serving", "activator").into(t, &patch)
	var stock appsv1.Deployment
	find(t, serving, "Deployment", "knative-serving", "activator").into(t, &stock)
	if len(patch.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("the activator patch must change exactly one container")
	}
	pc := patch.Spec.Template.Spec.Containers[0]
	if c := stock.Spec.Template.Spec.Containers; len(c) != 1 || c[0].Name != pc.Name {
		var names []string
		for _, ct := range c {
			names = append(names, ct.Name)
		}
		t.Errorf("the activator patch names container %q; Knative's activator has %v", pc.Name, names)
	}
	if pc.Image != "ko://github.com/kstate-dev/kstate/cmd/activator" {
		t.Errorf("activator image %q", pc.Image)
	}
	checkKoImage(t, pc.Image)

	var features corev1.ConfigMap
	find(t, docs, "ConfigMap", "knative-serving", apisconfig.FeaturesConfigName).into(t, &features)
	find(t, serving, "ConfigMap", "knative-serving", apisconfig.FeaturesConfigName)
	f, err := apisconfig.NewFeaturesConfigFromConfigMap(&features)
	if err != nil {
		t.Fatal(err)
	}
	if f.PodSpecFieldRef != apisconfig.Enabled || f.MultiContainer != apisconfig.Enabled {
		t.Errorf("features: podspec-fieldref %v, multi-container %v; kstate needs both", f.PodSpecFieldRef, f.MultiContainer)
	}
}

// TestDemoRedis: the demo Redis persists (AOF), its Service reaches it, and
// its Secret is what config-kstate's default store points at.
func TestDemoRedis(t *testing.T) {
	docs := load(t, "demo")
	var dep appsv1.Deployment
	find(t, docs, "Deployment", "default", "kstate-redis").into(t, &dep)
	pod := dep.Spec.Template
	if !matches(dep.Spec.Selector.MatchLabels, pod.Labels) {
		t.Error("the Redis Deployment does not select its pods")
	}
	args := strings.Join(pod.Spec.Containers[0].Args, " ")
	if !strings.Contains(args, "--appendonly yes") {
		t.Errorf("Redis args %q: AOF is not on", args)
	}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			find(t, docs, "PersistentVolumeClaim", "default", v.PersistentVolumeClaim.ClaimName)
		}
	}
	var svc corev1.Service
	find(t, docs, "Service", "default", "kstate-redis").into(t, &svc)
	if !matches(svc.Spec.Selector, pod.Labels) {
		t.Error("the Redis Service does not select the Redis pods")
	}

	d, err := kconfig.NewDefaultsConfigFromMap(map[string]string{kconfig.AgentImageKey: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var secret corev1.Secret
	find(t, docs, "Secret", "default", d.Store.SecretName).into(t, &secret)
	url := secret.StringData[d.Store.Key]
	if !strings.HasPrefix(url, "redis://") || !strings.Contains(url, svc.Name+".default.svc") {
		t.Errorf("store URL %q does not point at the Redis Service", url)
	}
	if p := secret.StringData["password"]; p == "" || !strings.Contains(url, ":"+p+"@") {
		t.Errorf("store URL %q does not carry the Redis password", url)
	}
}

// checkKoImage: a ko:// image names a main package of this module.
func checkKoImage(t *testing.T, image string) {
	t.Helper()
	const prefix = "ko://github.com/kstate-dev/kstate/"
	if !strings.HasPrefix(image, prefix) {
		t.Errorf("image %q is not a ko:// image of this module", image)
		return
	}
	dir := filepath.Join("..", strings.TrimPrefix(image, prefix))
	b, err := os.ReadFile(filepath.Join(dir, "main.go"))
	if err != nil || !bytes.Contains(b, []byte("package main")) {
		t.Errorf("image %q: %s is not a main package", image, dir)
	}
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
