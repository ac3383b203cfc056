package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	certFile, _, err := controlplane.ServingCertificate(dir, controlplane.AuditService+".kube-system.svc")
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
	undo, err := cluster.RegisterAuditAPI(e.ctx, bind, certFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(undo)

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
		// An image's verdict history is its subresource, a table too.
		{[]string{"get", "images.audit.repute.dev", imageName(untrustedImage), "--subresource", "history"}, []string{"TIME", "TIER", "SCORE", "POLICY", "REASON", "untrusted", "p-"}, nil},
		{[]string{"get", "--raw", "/apis/audit.repute.dev/v1/images/" + imageName(untrustedImage) + "/history?limit=1"}, []string{`"kind":"ImageHistory"`, `"ref":"` + untrustedImage + `"`, `"tier":"untrusted"`}, nil},
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
		{[]string{"history", untrustedImage}, []string{"TIME", "TIER", "POLICY", "untrusted", "p-", "origin unpinned -10"}},
	} {
		reputectlSays(t, auditor, tc.args, tc.want...)
	}
	if _, err := runReputectl("--kubeconfig", stranger, "decisions", "-A"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("reputectl without the role: %v; want forbidden", err)
	}

	if out, err := get(auditor, "get", "decisions.audit.repute.dev", "-A", "--field-selector", "colour=red"); err == nil || !strings.Contains(out, "colour") {
		t.Errorf("an unknown field selector: %v\n%s", err, out)
	}
	for _, query := range []string{"limit=many", "from=yesterday", "continue=not-a-token"} {
		path := "/apis/audit.repute.dev/v1/images/" + imageName(untrustedImage) + "/history?" + query
		if out, err := get(auditor, "get", "--raw", path); err == nil || !strings.Contains(out, strings.Split(query, "=")[0]) {
			t.Errorf("history?%s: %v\n%s; want a refusal naming the parameter", query, err, out)
		}
	}
	if out, err := get(stranger, "get", "decisions.audit.repute.dev", "-A"); err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("without the role: %v\n%s; want forbidden", err, out)
	}

	simulations(t, e, get, dir, auditor)
}

// Simulations through the kube-apiserver: created, answered and never stored, as a
// SubjectAccessReview is; with kubectl create -f, and with reputectl policy simulate. The
// proposal moves registry.internal (trusted in force) to unknown.
func simulations(t *testing.T, e *env, kubectl func(kubeconfig string, args ...string) (string, error), dir, auditor string) {
	e.serviceAccount("operator")
	e.installShippedClusterRole("repute-policy-simulator")
	e.bindClusterRole("repute-policy-simulator", "operator")
	operator := kubeconfigFor(t, e, e.ns, "operator")
	const proposal = `apiVersion: repute.dev/v1alpha1
kind: ReputationPolicy
metadata:
  name: proposed
spec:
  origin:
    rules:
    - {pattern: "registry.internal/*", tier: unknown}
    - {pattern: "*", tier: untrusted}
  signature: {requireForTrusted: false}
`
	indented := "    " + strings.ReplaceAll(strings.TrimSpace(proposal), "\n", "\n    ")
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	simulation := write("simulation.yaml", "apiVersion: audit.repute.dev/v1\nkind: Simulation\nspec:\n  policy:\n"+indented+"\n")
	misspelled := write("misspelled.yaml", strings.Replace(mustRead(t, simulation), "requireForTrusted", "requireForTrustd", 1))
	proposed := write("proposed.yaml", proposal)

	out, err := kubectl(operator, "create", "-f", simulation, "-o", "jsonpath={range .status.pods[*]}{.name}={.beforeTier}->{.afterTier};{end}")
	t.Logf("$ kubectl create -f simulation.yaml\n%s", out)
	if err != nil || !strings.Contains(out, "api=trusted->unknown;") || strings.Contains(out, "miner") {
		t.Errorf("kubectl create simulation: %v\n%s; want api trusted → unknown, the miner unchanged", err, out)
	}
	if out, err := kubectl(operator, "create", "-f", misspelled, "-o", "yaml"); err == nil || !strings.Contains(out, "requireForTrustd") {
		t.Errorf("a misspelled proposal: %v\n%s; want it refused, naming the field", err, out)
	}
	if out, err := kubectl(auditor, "create", "-f", simulation, "-o", "yaml"); err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("a simulation without repute-policy-simulator: %v\n%s; want forbidden", err, out)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"policy", "simulate", "-f", proposed, "-n", e.ns}, []string{"Pods in namespace " + e.ns + " whose tier would change:", "api", "trusted → unknown"}},
		{[]string{"policy", "simulate", "-f", proposed, "-n", "nobody-here"}, []string{"no bound or pending pod in namespace nobody-here", "1 more pod would change tier (-A lists them)"}},
		{[]string{"policy", "simulate", "-f", proposed, "-A", "-o", "jsonpath={.pods[0].name}"}, []string{"api"}},
	} {
		reputectlSays(t, operator, tc.args, tc.want...)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// With certificateSecret and no certificate files, the scheduler keeps its serving certificate
// in a Secret and puts its CA in the APIService's caBundle: the APIService, registered as
// deploy/ ships it (no caBundle, no insecureSkipTLSVerify), becomes Available, the
// kube-apiserver verifies the scheduler, and the direct endpoint verifies by the same CA. A
// restart serves the kept certificate.
func TestAuditCertificateKeptInASecret(t *testing.T) {
	kubectl := tool(t, "kubectl")
	e := newEnv(t)
	const secret = "repute-audit-tls"
	t.Cleanup(func() {
		_ = cluster.Client.CoreV1().Secrets("kube-system").Delete(context.Background(), secret, metav1.DeleteOptions{})
	})
	bind, direct := freeLoopbackAddress(t), freeLoopbackAddress(t)
	cfg := e.config()
	cfg.Audit = controlplane.AuditArgs{BindAddress: direct, AggregatedBindAddress: bind,
		CertificateSecret: "kube-system/" + secret, ServiceName: controlplane.AuditService}
	stop := mustStart(t, e, cfg)
	undo, err := cluster.RegisterAuditAPI(e.ctx, bind, "") // as deploy/ ships it: no caBundle
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(undo)

	kept, err := cluster.Client.CoreV1().Secrets("kube-system").Get(e.ctx, secret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if kept.Type != v1.SecretTypeTLS || len(kept.Data["ca.crt"]) == 0 {
		t.Fatalf("Secret %s %s, keys %v; want kubernetes.io/tls with ca.crt", secret, kept.Type, slices.Sorted(maps.Keys(kept.Data)))
	}
	apiService, err := dynamic.NewForConfigOrDie(cluster.Config).Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}).
		Get(e.ctx, auditapi.APIServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caBundle, _, _ := unstructured.NestedString(apiService.Object, "spec", "caBundle")
	skip, _, _ := unstructured.NestedBool(apiService.Object, "spec", "insecureSkipTLSVerify")
	if caBundle != base64.StdEncoding.EncodeToString(kept.Data["ca.crt"]) || skip {
		t.Errorf("APIService caBundle %q, insecureSkipTLSVerify %v; want the Secret's ca.crt, verified", caBundle, skip)
	}
	admin := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := controlplane.WriteKubeconfig(cluster.Config, admin); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(e.ctx, kubectl, "--kubeconfig", admin, "get", "images.audit.repute.dev").CombinedOutput(); err != nil {
		t.Errorf("kubectl get through the verified APIService: %v\n%s", err, out)
	}
	verifiedBy := func(addr string) error {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(kept.Data["ca.crt"])
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := verifiedBy(direct); err != nil {
		t.Errorf("the direct endpoint does not verify by ca.crt (as reputectl --audit-ca would): %v", err)
	}

	stop()
	e.t.Cleanup(mustStart(t, e, cfg))
	if err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return verifiedBy(direct) == nil, nil
	}); err != nil {
		t.Fatalf("after a restart the direct endpoint does not verify by the kept CA: %v", verifiedBy(direct))
	}
	again, err := cluster.Client.CoreV1().Secrets("kube-system").Get(e.ctx, secret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.ResourceVersion != kept.ResourceVersion {
		t.Error("a restart rewrote a valid kept certificate")
	}
}

// reputectlSays runs reputectl with a kubeconfig and checks that its output holds each of want.
func reputectlSays(t *testing.T, kubeconfig string, args []string, want ...string) {
	t.Helper()
	out, err := runReputectl(append([]string{"--kubeconfig", kubeconfig}, args...)...)
	t.Logf("$ reputectl %s\n%s", strings.Join(args, " "), out)
	if err != nil {
		t.Errorf("reputectl %v: %v", args, err)
		return
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("reputectl %v lacks %q", args, w)
		}
	}
}
