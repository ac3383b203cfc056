package integration

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/deploy"
)

// clusterScoped are the kinds the chart and deploy/ ship without a namespace.
var clusterScoped = map[string]bool{"ClusterRole": true, "ClusterRoleBinding": true, "ReputationPolicy": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true, "RuntimeClass": true, "CustomResourceDefinition": true, "APIService": true}

// kustomizeHash is the suffix kustomize's configMapGenerator gives a ConfigMap's name.
var kustomizeHash = regexp.MustCompile(`^(repute-scheduler-config)-[a-z0-9]{10}$`)

// comparable puts an object in the form both renderings share: kustomize names its generated
// ConfigMap with a content hash, where the chart rolls the pods with a checksum annotation
// instead; a cluster-scoped object's namespace means nothing. Nothing else is touched.
func comparable(t *testing.T, obj map[string]any) (string, map[string]any) {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	if clusterScoped[u.GetKind()] {
		u.SetNamespace("")
	}
	if kustomizeHash.MatchString(u.GetName()) {
		u.SetName(kustomizeHash.ReplaceAllString(u.GetName(), "$1"))
	}
	if u.GetKind() == "StatefulSet" {
		unstructured.RemoveNestedField(m, "spec", "template", "metadata", "annotations", "checksum/config")
		if a, _, _ := unstructured.NestedMap(m, "spec", "template", "metadata", "annotations"); len(a) == 0 {
			unstructured.RemoveNestedField(m, "spec", "template", "metadata", "annotations")
		}
		volumes, _, _ := unstructured.NestedSlice(m, "spec", "template", "spec", "volumes")
		for _, v := range volumes {
			if name, ok, _ := unstructured.NestedString(v.(map[string]any), "configMap", "name"); ok {
				_ = unstructured.SetNestedField(v.(map[string]any), kustomizeHash.ReplaceAllString(name, "$1"), "configMap", "name")
			}
		}
		_ = unstructured.SetNestedSlice(m, volumes, "spec", "template", "spec", "volumes")
	}
	return u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName(), m
}

// chartObjects renders the chart and parses every manifest, CRDs included.
func chartObjects(t *testing.T, values map[string]any) map[string]map[string]any {
	t.Helper()
	docs, err := deploy.RenderChart("kube-system", values)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, doc := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("chart renders unparsable YAML: %v\n%s", err, doc)
		}
		key, m := comparable(t, obj)
		out[key] = m
	}
	return out
}

func kustomizeObjects(t *testing.T, dirs ...string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, dir := range dirs {
		for _, obj := range renderDeploy(t, dir) {
			key, m := comparable(t, obj)
			out[key] = m
		}
	}
	return out
}

// The Helm chart installs what deploy/ installs: with default values, exactly the CRDs and
// deploy/base; with isolation and monitoring enabled, deploy/isolation and deploy/monitoring
// besides. Every field of every object is compared.
func TestHelmChartInstallsWhatKustomizeDoes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		dirs   []string
	}{
		{"defaults", nil, []string{"crds", "base"}},
		{"isolation and monitoring", map[string]any{"isolation": map[string]any{"enabled": true}, "monitoring": map[string]any{"enabled": true}},
			[]string{"crds", "base", "isolation", "monitoring"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chart, kustomize := chartObjects(t, tc.values), kustomizeObjects(t, tc.dirs...)
			for key, want := range kustomize {
				got, ok := chart[key]
				if !ok {
					t.Errorf("the chart renders no %s", key)
					continue
				}
				if !reflect.DeepEqual(got, want) {
					g, _ := yaml.Marshal(got)
					w, _ := yaml.Marshal(want)
					t.Errorf("%s differs.\nchart:\n%s\nkustomize:\n%s", key, g, w)
				}
			}
			for key := range chart {
				if _, ok := kustomize[key]; !ok {
					t.Errorf("the chart renders %s, which deploy/ does not", key)
				}
			}
		})
	}
}

// The chart's values are checked against values.schema.json before anything renders: a
// mistake is refused with the field named.
func TestHelmChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		field  string
	}{
		{"no replicas", map[string]any{"replicas": 0}, "replicas"},
		{"a tag with a space", map[string]any{"image": map[string]any{"tag": "v1 latest"}}, "image.tag"},
		{"a misspelt key", map[string]any{"replicaz": 3}, "replicaz"},
		{"a size that is not a quantity", map[string]any{"store": map[string]any{"size": "lots"}}, "store.size"},
		{"a pull policy Kubernetes lacks", map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}, "image.pullPolicy"},
	} {
		_, err := deploy.RenderChart("kube-system", tc.values)
		if err == nil || !strings.Contains(err.Error(), strings.Split(tc.field, ".")[len(strings.Split(tc.field, "."))-1]) {
			t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.field)
		}
	}
}

// The chart, everything enabled, installed into another namespace, is accepted by the
// apiserver (server-side dry-run; the ServiceMonitor and PrometheusRule need the Prometheus
// Operator's CRDs, which this cluster lacks: promtool checks the rules).
func TestHelmChartAppliesWithServerSideDryRun(t *testing.T) {
	e := newEnv(t)
	docs, err := deploy.RenderChart(e.ns, map[string]any{"isolation": map[string]any{"enabled": true}, "monitoring": map[string]any{"enabled": true}})
	if err != nil {
		t.Fatal(err)
	}
	var objs []*unstructured.Unstructured
	for _, doc := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "ServiceMonitor" || u.GetKind() == "PrometheusRule" {
			continue
		}
		if u.GetKind() != "CustomResourceDefinition" && !clusterScoped[u.GetKind()] && u.GetNamespace() != e.ns && u.GetName() != "repute-scheduler-authentication-reader" {
			t.Errorf("%s %s is in namespace %q, want the release's %s", u.GetKind(), u.GetName(), u.GetNamespace(), e.ns)
		}
		if ns, _, _ := unstructured.NestedString(u.Object, "spec", "service", "namespace"); u.GetKind() == "APIService" && ns != e.ns {
			t.Errorf("APIService %s points at a Service in namespace %q, want the release's %s", u.GetName(), ns, e.ns)
		}
		objs = append(objs, u)
	}
	applyObjects(t, e, true, objs)
	applied := len(objs)
	if applied < 20 {
		t.Errorf("dry-ran %d objects, want the whole chart", applied)
	}
}

// deploy/repute.yaml, the one-file bundle, is the chart rendered with its defaults for
// kube-system, CRDs first: make bundle writes it, and it must be current.
func TestBundleIsCurrent(t *testing.T) {
	want, err := deploy.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../deploy/repute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("deploy/repute.yaml is stale: run make bundle")
	}
}
