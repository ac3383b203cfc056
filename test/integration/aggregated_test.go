package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
		out, err := runReputectl(append([]string{"--kubeconfig", operator}, tc.args...)...)
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
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
