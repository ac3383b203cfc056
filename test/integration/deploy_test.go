package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/apis/config/validation"
	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	rpolicy "github.com/repute-dev/repute/pkg/policy"
)

// renderDeployBase renders deploy/base the way `kubectl kustomize` does.
func renderDeployBase(t *testing.T) []map[string]interface{} { return renderDeploy(t, "base") }

// renderDeploy renders a kustomization under deploy/.
func renderDeploy(t *testing.T, dir string) []map[string]interface{} {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), "../../deploy/"+dir)
	if err != nil {
		t.Fatalf("rendering deploy/%s: %v", dir, err)
	}
	var out []map[string]interface{}
	for _, r := range resMap.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// The kustomize base renders and the apiserver accepts every object (server-side dry-run).
func TestDeployBaseAppliesWithServerSideDryRun(t *testing.T) {
	e := newEnv(t)
	kinds := map[string]bool{}
	for _, obj := range renderDeployBase(t) {
		u := unstructuredOf(obj)
		kinds[u.GetKind()] = true
		if u.GetNamespace() != "kube-system" && u.GetNamespace() != "" {
			t.Errorf("%s %s is in namespace %q, want kube-system", u.GetKind(), u.GetName(), u.GetNamespace())
		}
	}
	applyDeployBase(t, e, true)
	for _, want := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "StatefulSet", "PodDisruptionBudget", "Service", "ReputationPolicy"} {
		if !kinds[want] {
			t.Errorf("deploy/base renders no %s", want)
		}
	}
}

// deploy/monitoring renders; the apiserver accepts its Service, RBAC and dashboard ConfigMap
// (server-side dry-run; the ServiceMonitor and PrometheusRule need the Prometheus Operator's
// CRDs, which this cluster lacks: promtool checks the rules), and its Service selects the
// scheduler's pods on the port the StatefulSet names.
func TestMonitoringAppliesWithServerSideDryRun(t *testing.T) {
	e := newEnv(t)
	kinds := map[string]bool{}
	var service *v1.Service
	for _, obj := range renderDeploy(t, "monitoring") {
		u := unstructuredOf(obj)
		kinds[u.GetKind()] = true
		if u.GetKind() == "Service" {
			service = &v1.Service{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, service); err != nil {
				t.Fatal(err)
			}
		}
	}
	var sts appsv1.StatefulSet
	for _, obj := range renderDeployBase(t) {
		if unstructuredOf(obj).GetKind() == "StatefulSet" {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &sts); err != nil {
				t.Fatal(err)
			}
		}
	}
	if service == nil || !labels.SelectorFromSet(service.Spec.Selector).Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Fatalf("the metrics Service %+v does not select the StatefulSet's pods %v", service, sts.Spec.Template.Labels)
	}
	port := service.Spec.Ports[0].TargetPort.StrVal
	if !slices.ContainsFunc(sts.Spec.Template.Spec.Containers[0].Ports, func(p v1.ContainerPort) bool { return p.Name == port }) {
		t.Errorf("the metrics Service targets port %q, which the scheduler container does not name", port)
	}
	for _, want := range []string{"Service", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "ServiceMonitor", "PrometheusRule"} {
		if !kinds[want] {
			t.Errorf("deploy/monitoring renders no %s", want)
		}
	}
	applyDeploy(t, e, "monitoring", true, "Service", "ClusterRole", "ClusterRoleBinding", "ConfigMap")
}

// applyDeployBase applies the rendered deploy/base objects of the given kinds (all when none
// are named) with server-side apply, or only dry-runs them.
func applyDeployBase(t *testing.T, e *env, dryRun bool, onlyKinds ...string) {
	t.Helper()
	applyDeploy(t, e, "base", dryRun, onlyKinds...)
}

// applyDeploy is applyDeployBase for any kustomization under deploy/.
func applyDeploy(t *testing.T, e *env, dir string, dryRun bool, onlyKinds ...string) {
	t.Helper()
	var objs []*unstructured.Unstructured
	for _, obj := range renderDeploy(t, dir) {
		if u := unstructuredOf(obj); len(onlyKinds) == 0 || slices.Contains(onlyKinds, u.GetKind()) {
			objs = append(objs, u)
		}
	}
	applyObjects(t, e, dryRun, objs)
}

// applyObjects applies objects in order with server-side apply, as kubectl apply
// --server-side does, or only dry-runs them.
func applyObjects(t *testing.T, e *env, dryRun bool, objs []*unstructured.Unstructured) {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(cluster.Config)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(e.client.Discovery()))
	opts := metav1.ApplyOptions{FieldManager: "repute-test", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
		}
		if _, err := ri.Apply(e.ctx, u.GetName(), u, opts); err != nil {
			t.Errorf("server-side apply (dry-run %v) of %s %s: %v", dryRun, gvk.Kind, u.GetName(), err)
		}
	}
}

// The shipped KubeSchedulerConfiguration loads through kube-scheduler's strict decoder, and
// its Reputation args pass validation.
func TestDeployBaseSchedulerConfigIsValid(t *testing.T) {
	var configYAML string
	for _, obj := range renderDeployBase(t) {
		u := unstructuredOf(obj)
		if u.GetKind() == "ConfigMap" {
			data, _, _ := unstructured.NestedString(obj, "data", "scheduler-config.yaml")
			configYAML = data
		}
	}
	if configYAML == "" {
		t.Fatal("no scheduler-config.yaml in the rendered ConfigMap")
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := options.LoadConfigFromFile(klog.Background(), path)
	if err != nil {
		t.Fatalf("kube-scheduler cannot load the shipped config: %v", err)
	}
	if len(cfg.Profiles) != 1 || cfg.Profiles[0].SchedulerName != "repute-scheduler" {
		t.Fatalf("profiles = %+v, want one named repute-scheduler", cfg.Profiles)
	}
	if !cfg.LeaderElection.LeaderElect || cfg.LeaderElection.ResourceName != "repute-scheduler" {
		t.Errorf("leader election = %+v, want its own lease repute-scheduler", cfg.LeaderElection)
	}
	var found bool
	for _, pc := range cfg.Profiles[0].PluginConfig {
		if pc.Name != "Reputation" {
			continue
		}
		args, ok := pc.Args.(*config.ReputationArgs)
		if !ok {
			t.Fatalf("Reputation args decoded as %T, want typed ReputationArgs", pc.Args)
		}
		if errs := validation.ValidateReputationArgs(nil, args); len(errs) > 0 {
			t.Errorf("shipped args are invalid: %v", errs.ToAggregate())
		}
		if args.PolicyName == "" {
			t.Fatal("the shipped config follows no ReputationPolicy (policyName)")
		}
		shipped := shippedPolicy(t, args.PolicyName)
		compiled, errs := rpolicy.Compile(&shipped.Spec)
		if len(errs) > 0 {
			t.Fatalf("the shipped ReputationPolicy %s fails the scheduler's checks: %v", args.PolicyName, errs.ToAggregate())
		}
		if rules := compiled.Spec.Origin.Rules; len(rules) == 0 || !strings.Contains(rules[0].Pattern, "/") {
			t.Errorf("origin rules = %+v", rules)
		}
		if args.Falco.BindAddress == "" {
			t.Error("the shipped config opens no Falco endpoint")
		} else if secret := mountedSecret(t, filepath.Dir(args.Falco.TokenFile)); secret != "repute-falco" {
			t.Errorf("falco.tokenFile %s is not in the mounted Secret repute-falco (found %q)", args.Falco.TokenFile, secret)
		}
		found = true
	}
	if !found {
		t.Error("no Reputation pluginConfig in the shipped config")
	}
}

// shippedPolicy is the ReputationPolicy deploy/base ships under that name.
func shippedPolicy(t *testing.T, name string) *v1alpha1.ReputationPolicy {
	t.Helper()
	for _, obj := range renderDeployBase(t) {
		u := unstructuredOf(obj)
		if u.GetKind() != v1alpha1.Kind || u.GetName() != name {
			continue
		}
		var rp v1alpha1.ReputationPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj, &rp, true); err != nil {
			t.Fatalf("the shipped ReputationPolicy %s does not decode strictly: %v", name, err)
		}
		return &rp
	}
	t.Fatalf("deploy/base ships no ReputationPolicy %s", name)
	return nil
}

// mountedSecret names the Secret the shipped StatefulSet mounts at dir, if any.
func mountedSecret(t *testing.T, dir string) string {
	t.Helper()
	list := func(obj map[string]any, fields ...string) []any {
		v, _, _ := unstructured.NestedFieldNoCopy(obj, fields...)
		l, _ := v.([]any)
		return l
	}
	for _, obj := range renderDeployBase(t) {
		if unstructuredOf(obj).GetKind() != "StatefulSet" {
			continue
		}
		volumes := list(obj, "spec", "template", "spec", "volumes")
		for _, c := range list(obj, "spec", "template", "spec", "containers") {
			for _, m := range list(c.(map[string]any), "volumeMounts") {
				mount := m.(map[string]any)
				if mount["mountPath"] != dir {
					continue
				}
				for _, v := range volumes {
					if vol := v.(map[string]any); vol["name"] == mount["name"] {
						name, _, _ := unstructured.NestedString(vol, "secret", "secretName")
						return name
					}
				}
			}
		}
	}
	return ""
}

func unstructuredOf(m map[string]interface{}) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: m}
}
