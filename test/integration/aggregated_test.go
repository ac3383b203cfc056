package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/repute-dev/repute/pkg/auditapi"
	"github.com/repute-dev/repute/test/controlplane"
)

var apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// The audit API aggregated into the kube-apiserver: registered with the APIService
// v1.audit.repute.dev, reached through the harness's kube-apiserver (its aggregator proxies to
// the server on loopback through an ExternalName Service), it serves decisions and images to
// kubectl get as tables. An auditor with only the shipped ClusterRole repute-auditor reads them
// with an ordinary kubeconfig; without it, the kube-apiserver's identity for them is refused.
func TestAuditAPIAggregatedIntoTheAPIServer(t *testing.T) {
	kubectl := tool(t, "kubectl")
	e := newEnv(t)
	dir := t.TempDir()
	trusted, untrusted := e.node("trusted", "trusted"), e.node("untrusted", "untrusted")
	// The real scheduler serves the aggregated API, with a certificate for the Service's name,
	// as the aggregator verifies it.
	const service = "repute-audit-aggregated"
	certFile, _, err := controlplane.ServingCertificate(dir, service+".kube-system.svc")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "serving.key")
	bind := freeLoopbackAddress(t)
	cfg := e.config() // registry.internal/* trusted, docker.io/* unknown, * untrusted
	cfg.StorePath = filepath.Join(dir, "repute.db")
	cfg.Audit = controlplane.AuditArgs{BindAddress: freeLoopbackAddress(t), AggregatedBindAddress: bind, TLSCertFile: certFile, TLSKeyFile: keyFile}
	e.t.Cleanup(mustStart(t, e, cfg))
	e.create(e.pod("api", trustedImage))
	e.create(e.pod("miner", untrustedImage))
	if got := e.waitBound("api", bindTimeout); got != trusted {
		t.Fatalf("api on %s, want %s", got, trusted)
	}
	if got := e.waitBound("miner", bindTimeout); got != untrusted {
		t.Fatalf("miner on %s, want %s", got, untrusted)
	}
	e.waitPlacement("api", bindTimeout)
	e.waitPlacement("miner", bindTimeout)
	_, port, _ := strings.Cut(bind, ":")
	var portNumber int32
	fmt.Sscan(port, &portNumber)
	if _, err := cluster.Client.CoreV1().Services("kube-system").Create(e.ctx, &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: service},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "localhost", Ports: []v1.ServicePort{{Port: portNumber}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cluster.Client.CoreV1().Services("kube-system").Delete(context.Background(), service, metav1.DeleteOptions{})
	})
	ca, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	registrations := dynamic.NewForConfigOrDie(cluster.Config).Resource(apiServices)
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1." + auditapi.GroupName},
		"spec": map[string]any{"group": auditapi.GroupName, "version": "v1", "groupPriorityMinimum": int64(1000), "versionPriority": int64(100),
			"service":  map[string]any{"namespace": "kube-system", "name": service, "port": int64(portNumber)},
			"caBundle": base64.StdEncoding.EncodeToString(ca)},
	}}
	if _, err := registrations.Create(e.ctx, apiService, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = registrations.Delete(context.Background(), "v1."+auditapi.GroupName, metav1.DeleteOptions{})
	})
	var conditions string
	if err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := registrations.Get(ctx, "v1."+auditapi.GroupName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		found, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		conditions = fmt.Sprint(found)
		return strings.Contains(conditions, "type:Available") && strings.Contains(conditions, "status:True"), nil
	}); err != nil {
		t.Fatalf("APIService never Available: %v; conditions %s", err, conditions)
	}

	// An auditor with the shipped role, and someone without it, each with a plain kubeconfig.
	e.serviceAccount("auditor")
	e.serviceAccount("stranger")
	e.installShippedClusterRole("repute-auditor")
	e.bindClusterRole("repute-auditor", "auditor")
	auditor, stranger := kubeconfigFor(t, e, e.ns, "auditor"), kubeconfigFor(t, e, e.ns, "stranger")
	get := func(kubeconfig string, args ...string) (string, error) {
		cmd := exec.CommandContext(e.ctx, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	imageName := func(ref string) string { return auditapi.ImageName(ref) }
	for _, tc := range []struct {
		args []string
		want []string
		not  []string
	}{
		{[]string{"get", "decisions.audit.repute.dev", "-n", e.ns}, []string{"NAME", "POD", "ACTION", "TIER", "api", "placed", "trusted", "miner", "untrusted", trusted}, []string{"REASON"}},
		{[]string{"get", "decisions.audit.repute.dev", "-A", "-o", "wide"}, []string{"NAMESPACE", e.ns, "REASON", "POOL", "origin.rules"}, nil},
		{[]string{"get", "decisions.audit.repute.dev", "-A", "--field-selector", "tier=untrusted"}, []string{"miner"}, []string{"api."}},
		{[]string{"get", "decisions.audit.repute.dev", "-n", e.ns, "--field-selector", "image=" + untrustedImage}, []string{"miner"}, []string{"api."}},
		{[]string{"get", "decisions.audit.repute.dev", "-n", "nobody-here"}, []string{"No resources found"}, nil},
		{[]string{"get", "images.audit.repute.dev"}, []string{"NAME", "TIER", "SCORE", "DECIDED BY", imageName(trustedImage), imageName(untrustedImage), "untrusted"}, nil},
		{[]string{"get", "images.audit.repute.dev", "--field-selector", "tier=trusted", "-o", "wide"}, []string{imageName(trustedImage), "DIGEST", "POLICY"}, []string{imageName(untrustedImage)}},
		{[]string{"get", "images.audit.repute.dev", imageName(untrustedImage), "-o", "jsonpath={.ref} {.tier}"}, []string{untrustedImage + " untrusted"}, nil},
		{[]string{"get", "policies.audit.repute.dev"}, []string{"NAME", "IN FORCE SINCE", "SOURCE", "p-", "plugin args"}, nil},
		{[]string{"get", "policies.audit.repute.dev", "-o", "jsonpath={.items[0].policy.origin.rules[0].pattern}"}, []string{"registry.internal/*"}, nil},
	} {
		out, err := get(auditor, tc.args...)
		t.Logf("$ kubectl %s\n%s", strings.Join(tc.args, " "), out)
		if err != nil {
			t.Errorf("kubectl %v: %v\n%s", tc.args, err, out)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("kubectl %v lacks %q:\n%s", tc.args, w, out)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(out, w) {
				t.Errorf("kubectl %v has %q:\n%s", tc.args, w, out)
			}
		}
	}
	// reputectl without --audit-server reads the same API through the kube-apiserver, with every
	// kubectl flag: here --kubeconfig and -n.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"images"}, []string{"IMAGE", "TIER", untrustedImage, "untrusted"}},
		{[]string{"image", untrustedImage}, []string{"Image:", untrustedImage, "Tier:", "untrusted", "Evidence:", "origin", "origin.rules[2]"}},
		{[]string{"decisions", "-n", e.ns}, []string{"api", "miner", "placed", trusted}},
		{[]string{"decisions", "-A", "--tier", "untrusted", "-o", "name"}, []string{"decision/" + e.ns + "/miner\n"}},
		{[]string{"policy", "versions"}, []string{"VERSION", "p-", "plugin args"}},
	} {
		out, err := runReputectl(append([]string{"--kubeconfig", auditor}, tc.args...)...)
		t.Logf("$ reputectl %s\n%s", strings.Join(tc.args, " "), out)
		if err != nil {
			t.Errorf("reputectl %v: %v", tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("reputectl %v lacks %q", tc.args, w)
			}
		}
	}
	if _, err := runReputectl("--kubeconfig", auditor, "history", untrustedImage); err == nil || !strings.Contains(err.Error(), "--audit-server") {
		t.Errorf("history through the kube-apiserver: %v; want an error naming --audit-server", err)
	}
	if _, err := runReputectl("--kubeconfig", stranger, "decisions", "-A"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("reputectl without the role: %v; want forbidden", err)
	}

	if out, err := get(auditor, "get", "decisions.audit.repute.dev", "-A", "--field-selector", "colour=red"); err == nil || !strings.Contains(out, "colour") {
		t.Errorf("an unknown field selector: %v\n%s", err, out)
	}
	if out, err := get(stranger, "get", "decisions.audit.repute.dev", "-A"); err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("without the role: %v\n%s; want forbidden", err, out)
	}
}
