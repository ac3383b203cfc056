package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation/store"
	"github.com/repute-dev/repute/test/controlplane"
)

// policyObject builds a ReputationPolicy from the YAML of its spec.
func policyObject(t testing.TB, name, specYAML string) *unstructured.Unstructured {
	t.Helper()
	var spec map[string]any
	if err := yaml.Unmarshal([]byte(specYAML), &spec); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": v1alpha1.Group + "/" + v1alpha1.Version, "kind": v1alpha1.Kind, "spec": spec}}
	u.SetName(name)
	return u
}

// createPolicy creates a ReputationPolicy from the YAML of its spec, deleted when the test ends.
func (e *env) createPolicy(name, specYAML string) *unstructured.Unstructured {
	e.t.Helper()
	created, err := policies(e.t).Create(e.ctx, policyObject(e.t, name, specYAML), metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = policies(e.t).Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return created
}

func policies(t testing.TB) dynamic.ResourceInterface {
	return dynamic.NewForConfigOrDie(cluster.Config).Resource(v1alpha1.Resource)
}

// The apiserver itself refuses a malformed policy, naming the field: the CRD's OpenAPI schema
// and CEL rules, before the scheduler ever sees it.
func TestReputationPolicySchemaRefusesMistakes(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, spec, wantField string
	}{
		{"weight out of range", "baseScore: 150", "spec.baseScore"},
		{"thresholds crossed", "thresholds: {trusted: 40, untrusted: 60}", "spec.thresholds.untrusted"},
		{"unknown tier", `origin: {rules: [{pattern: "*", tier: sometimes}]}`, "spec.origin.rules[0].tier"},
		{"pattern without a repository", `origin: {rules: [{pattern: "docker.io"}]}`, "spec.origin.rules[0].pattern"},
		{"not a key", `signature: {keys: [{name: ops, publicKey: "ssh-ed25519 AAAA"}]}`, "spec.signature.keys[0].publicKey"},
		{"duplicate key names", `signature: {keys: [{name: ops, publicKey: "-----BEGIN PUBLIC KEY-----"}, {name: ops, publicKey: "-----BEGIN PUBLIC KEY-----"}]}`, "spec.signature.keys[1]"},
		{"misspelled priority", "behavior: {priorityWeights: {Critcal: -60}}", "spec.behavior.priorityWeights"},
		{"negative half-life", "behavior: {halfLife: -1h}", "spec.behavior.halfLife"},
		{"not a duration", "dependencies: {staleAfter: a week}", "spec.dependencies.staleAfter: Invalid value: \"a week\": must be a duration"},
		{"a duration Go does not know", "behavior: {halfLife: 1d}", "spec.behavior.halfLife"},
		{"positive penalty", "behavior: {crashLoopWeight: 15}", "spec.behavior.crashLoopWeight"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := policyObject(t, e.prefix+"bad-"+string(rune('a'+i)), tt.spec)
			_, err := policies(t).Create(e.ctx, obj, metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("create: %v; want Invalid naming %s", err, tt.wantField)
			}
		})
	}
	// A misspelled field is dropped by the schema, and a strict client is told so.
	obj := policyObject(t, e.prefix+"typo", "baseScroe: 60")
	_, err := policies(t).Create(e.ctx, obj, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
	if err == nil || !strings.Contains(err.Error(), `unknown field "spec.baseScroe"`) {
		t.Errorf("strict create with a typo: %v, want unknown field spec.baseScroe", err)
	}
}

// Every field of the ReputationPolicy schema the apiserver serves (OpenAPI v3, what kubectl
// explain reads) has a description: the CRD is generated from the API's doc comments.
func TestServedReputationPolicySchemaDescribesEveryField(t *testing.T) {
	root := servedSchema(t, "apis/"+v1alpha1.Group+"/"+v1alpha1.Version, "dev.repute.v1alpha1.ReputationPolicy")
	var undescribed []string
	fields := 0
	var walk func(path string, schema map[string]any)
	walk = func(path string, schema map[string]any) {
		props, _ := schema["properties"].(map[string]any)
		for name, p := range props {
			prop, _ := p.(map[string]any)
			fieldPath := path + "." + name
			if path == "" && name == "metadata" {
				continue // ObjectMeta, described by Kubernetes
			}
			fields++
			if d, _ := prop["description"].(string); strings.TrimSpace(d) == "" {
				undescribed = append(undescribed, fieldPath)
			}
			walk(fieldPath, prop)
		}
		if items, ok := schema["items"].(map[string]any); ok {
			walk(path+"[]", items)
		}
		if values, ok := schema["additionalProperties"].(map[string]any); ok {
			walk(path+"{}", values)
		}
	}
	walk("", root)
	if fields < 40 {
		t.Fatalf("walked %d fields; the served schema is not the policy's", fields)
	}
	if len(undescribed) > 0 {
		sort.Strings(undescribed)
		t.Errorf("%d of %d fields have no description:\n%s", len(undescribed), fields, strings.Join(undescribed, "\n"))
	}
}

// servedSchema reads one component schema from the apiserver's OpenAPI v3 document for a group
// version, waiting for the CRD's to be published.
func servedSchema(t *testing.T, groupVersionPath, component string) map[string]any {
	t.Helper()
	var schema map[string]any
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		paths, err := cluster.Client.Discovery().OpenAPIV3().Paths()
		if err != nil {
			return false, nil
		}
		gv, ok := paths[groupVersionPath]
		if !ok {
			return false, nil
		}
		data, err := gv.Schema("application/json")
		if err != nil {
			return false, nil
		}
		var doc struct {
			Components struct {
				Schemas map[string]map[string]any `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			return false, err
		}
		schema = doc.Components.Schemas[component]
		return schema != nil, nil
	})
	if err != nil {
		t.Fatalf("OpenAPI v3 schema %s of %s not served: %v", component, groupVersionPath, err)
	}
	return schema
}

// Editing the ReputationPolicy the scheduler follows takes effect without a restart: images
// are re-scored, a pending pod that now fits a pool is placed, the status reports the generation
// and version, and the store's history records the new version. A policy that passes the schema
// but not the scheduler's checks is refused in status and the previous one stays in force.
func TestReputationPolicyHotReload(t *testing.T) {
	e := newEnv(t)
	name := e.prefix + "policy"
	initial := `
origin:
  rules:
  - {pattern: "registry.internal/*", weight: 30}
  - {pattern: "docker.io/*", tier: unknown}
  - {pattern: "*", tier: untrusted}
signature: {requireForTrusted: false}`
	created := e.createPolicy(name, initial)

	trustedNode := e.node("trusted", "trusted")
	unknownNode := e.node("unknown", "unknown") // no untrusted pool: untrusted pods wait
	storePath := filepath.Join(t.TempDir(), "repute.db")
	cfg := e.config()
	cfg.OriginRules = []controlplane.OriginRule{{Pattern: "*", Tier: "untrusted"}} // the args' policy, overridden by the object
	cfg.PolicyName, cfg.StorePath = name, storePath
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfg.Render())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	e.create(e.pod("api", trustedImage))
	if got := e.waitBound("api", bindTimeout); got != trustedNode {
		t.Fatalf("api on %s, want %s: the object's policy (registry.internal +30) must be in force from the first pod", got, trustedNode)
	}
	first := waitPolicyStatus(t, e, name, created.GetGeneration(), metav1.ConditionTrue)
	e.create(e.pod("miner", untrustedImage))
	e.assertPending("miner", 2*time.Second)

	// Generation 2: quay.io is merely unknown now, and registry.internal weighs nothing.
	updated := updateSpec(t, e, name, `
origin:
  rules:
  - {pattern: "registry.internal/*", weight: 0}
  - {pattern: "docker.io/*", tier: unknown}
  - {pattern: "quay.io/*", tier: unknown}
  - {pattern: "*", tier: untrusted}
signature: {requireForTrusted: false}`)
	second := waitPolicyStatus(t, e, name, updated.GetGeneration(), metav1.ConditionTrue)
	if second.PolicyVersion == first.PolicyVersion || second.TierChanges < 2 {
		t.Errorf("status after the edit: %+v; want a new version and at least 2 tier changes (api, miner)", second)
	}
	if got := e.waitBound("miner", bindTimeout); got != unknownNode {
		t.Errorf("the pending miner pod went to %s, want the unknown pool's %s once the policy made it unknown", got, unknownNode)
	}
	e.create(e.pod("api-2", trustedImage))
	if got := e.waitBound("api-2", bindTimeout); got != unknownNode {
		t.Errorf("api-2 on %s, want %s: registry.internal no longer weighs +30", got, unknownNode)
	}

	// Generation 3 passes the schema (the key has the PEM header) but not the scheduler's
	// checks (it does not parse): refused, and generation 2 stays in force.
	refused := updateSpec(t, e, name, `
origin:
  rules: [{pattern: "*", tier: trusted}]
signature:
  requireForTrusted: false
  keys: [{name: ops, publicKey: "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----"}]`)
	third := waitPolicyStatus(t, e, name, refused.GetGeneration(), metav1.ConditionFalse)
	cond := meta.FindStatusCondition(third.Conditions, v1alpha1.ConditionApplied)
	if cond.Reason != v1alpha1.ReasonInvalid || !strings.Contains(cond.Message, "spec.signature.keys[0].publicKey") ||
		third.PolicyVersion != second.PolicyVersion {
		t.Errorf("refused generation: %+v, %+v; want Invalid naming spec.signature.keys[0].publicKey and version %s still in force", cond, third, second.PolicyVersion)
	}
	// kubectl describe shows why: a Warning Event for the refused generation, Normal ones for
	// those applied.
	waitPolicyEvent(t, e, name, v1.EventTypeWarning, "Refused", "spec.signature.keys[0].publicKey")
	waitPolicyEvent(t, e, name, v1.EventTypeNormal, "Applied", "")
	e.create(e.pod("miner-2", untrustedImage))
	if got := e.waitBound("miner-2", bindTimeout); got != unknownNode {
		t.Errorf("miner-2 on %s, want %s: the refused policy (everything trusted) must not be in force", got, unknownNode)
	}

	// The store kept both versions and a history entry under each for the re-tiered image.
	stop()
	st, err := store.Open(storePath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recorded, err := st.Policies()
	if err != nil {
		t.Fatal(err)
	}
	var sources []string
	for _, p := range recorded {
		sources = append(sources, p.Version+" "+p.Source)
	}
	if len(recorded) != 2 || recorded[0].Version != first.PolicyVersion || recorded[1].Version != second.PolicyVersion ||
		!strings.Contains(recorded[1].Source, "ReputationPolicy/"+name+" generation 2") {
		t.Errorf("stored policies %v; want %s then %s from generation 2", sources, first.PolicyVersion, second.PolicyVersion)
	}
	history, _, err := st.History(trustedImage, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{}
	for _, h := range history {
		versions[h.Verdict.PolicyVersion] = string(h.Verdict.Tier)
	}
	if versions[first.PolicyVersion] != "trusted" || versions[second.PolicyVersion] != "unknown" {
		t.Errorf("history of %s by policy version: %v; want trusted under %s, unknown under %s", trustedImage, versions, first.PolicyVersion, second.PolicyVersion)
	}
}

// updateSpec replaces the object's spec and returns the updated object.
func updateSpec(t *testing.T, e *env, name, specYAML string) *unstructured.Unstructured {
	t.Helper()
	var spec map[string]any
	if err := yaml.Unmarshal([]byte(specYAML), &spec); err != nil {
		t.Fatal(err)
	}
	obj, err := policies(t).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj.Object["spec"] = spec
	updated, err := policies(t).Update(e.ctx, obj, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return updated
}

// waitPolicyStatus waits until the status reports the generation with the Applied condition.
func waitPolicyStatus(t *testing.T, e *env, name string, generation int64, applied metav1.ConditionStatus) v1alpha1.ReputationPolicyStatus {
	t.Helper()
	status, _, err := controlplane.WaitPolicyStatus(e.ctx, cluster.Config, name, generation, applied, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return status
}

// reputectl policy simulate against the live scheduler: the images and the running and pending
// pods whose tier a proposed policy would change, with before and after; nothing is applied.
// Creating a simulation needs the shipped repute-policy-simulator role.
func TestPolicySimulate(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	certFile, keyFile, err := controlplane.ServingCertificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	bind := freeLoopbackAddress(t)
	cfg := e.config() // registry.internal/* trusted, docker.io/* unknown, * untrusted
	cfg.Audit = controlplane.AuditArgs{BindAddress: bind, TLSCertFile: certFile, TLSKeyFile: keyFile}
	e.t.Cleanup(mustStart(t, e, cfg))
	trustedNode := e.node("trusted", "trusted")
	e.node("unknown", "unknown") // no untrusted pool: the miner waits
	e.create(e.pod("api", trustedImage))
	e.create(e.pod("miner", untrustedImage))
	e.create(e.pod("cache", unknownImage))
	if got := e.waitBound("api", bindTimeout); got != trustedNode {
		t.Fatalf("api on %s", got)
	}
	e.waitBound("cache", bindTimeout)
	e.assertPending("miner", time.Second)

	e.installShippedClusterRole("repute-policy-simulator")
	e.serviceAccount("operator")
	e.serviceAccount("auditor")
	e.bindClusterRole("repute-policy-simulator", "operator")
	live := []string{"--audit-server", "https://" + bind, "--audit-ca", certFile}

	// The proposal: registry.internal only weighs, quay.io becomes unknown.
	proposed := filepath.Join(dir, "proposed.yaml")
	if err := os.WriteFile(proposed, []byte(`apiVersion: repute.dev/v1alpha1
kind: ReputationPolicy
metadata:
  name: default
spec:
  origin:
    rules:
    - {pattern: "registry.internal/*", weight: 10}
    - {pattern: "docker.io/*", tier: unknown}
    - {pattern: "quay.io/*", tier: unknown}
    - {pattern: "*", tier: untrusted}
  signature: {requireForTrusted: false}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	operator := []string{"--audit-token-file", e.auditTokenFile("operator")}
	out := reputectl(t, append(append(live, operator...), "policy", "simulate", "-f", proposed, "-A", "-o", "json")...)
	var sim audit.Simulation
	if err := json.Unmarshal([]byte(out), &sim); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	images := map[string]audit.ImageChange{}
	for _, c := range sim.Images {
		images[c.Ref] = c
	}
	if c := images[trustedImage]; c.Before.Tier != "trusted" || c.After.Tier != "unknown" || c.After.Score != 60 {
		t.Errorf("%s: %+v; want trusted → unknown, score 60", trustedImage, c)
	}
	if c := images[untrustedImage]; c.Before.Tier != "untrusted" || c.After.Tier != "unknown" {
		t.Errorf("%s: %+v; want untrusted → unknown", untrustedImage, c)
	}
	if _, changed := images[unknownImage]; changed || sim.Unchanged != 1 {
		t.Errorf("%s should not change (unchanged %d): %+v", unknownImage, sim.Unchanged, sim.Images)
	}
	pods := map[string]audit.PodChange{}
	for _, p := range sim.Pods {
		pods[p.Name] = p
	}
	// Bound, but no kubelet runs it: its phase is the pod's own, Pending, not "Running".
	if p := pods["api"]; p.Phase != "Pending" || p.Node != trustedNode || p.Before != "trusted" || p.After != "unknown" {
		t.Errorf("api: %+v; want Pending on %s, trusted → unknown", p, trustedNode)
	}
	if p := pods["miner"]; p.Phase != "Pending" || p.Before != "untrusted" || p.After != "unknown" || p.Image != untrustedImage {
		t.Errorf("miner: %+v; want Pending, untrusted → unknown because of %s", p, untrustedImage)
	}
	if _, ok := pods["cache"]; ok || len(sim.Pods) != 2 {
		t.Errorf("pods %+v; want only api and miner", sim.Pods)
	}

	// The table, as an operator reads it.
	table := reputectl(t, append(append(live, operator...), "policy", "simulate", "-f", proposed, "-A")...)
	for _, want := range []string{"Images whose tier or score would change:", "trusted → unknown", "50 → 60",
		"Pods whose tier would change:", "api", trustedNode, "miner", "Pending", "untrusted → unknown"} {
		if !strings.Contains(table, want) {
			t.Errorf("simulate table lacks %q:\n%s", want, table)
		}
	}
	// Nothing was applied: the miner still waits and a new api pod is still trusted.
	e.assertPending("miner", time.Second)
	e.create(e.pod("api-2", trustedImage))
	if got := e.waitBound("api-2", bindTimeout); got != trustedNode {
		t.Errorf("after the simulation api-2 went to %s: the simulation must not change the policy", got)
	}
	// Without the role, 403.
	if _, err := runReputectl(append(live, "--audit-token-file", e.auditTokenFile("auditor"), "policy", "simulate", "-f", proposed)...); !apierrors.IsForbidden(err) {
		t.Errorf("simulate without repute-policy-simulator: %v, want 403", err)
	}
}

func mustStart(t *testing.T, e *env, cfg controlplane.SchedulerConfig) func() {
	t.Helper()
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfg.Render())
	if err != nil {
		t.Fatal(err)
	}
	return stop
}

// A ReputationPolicy that is already invalid when the scheduler starts is refused in status,
// naming the args' policy that stays in force, and pods are placed by that policy.
func TestInvalidReputationPolicyAtStart(t *testing.T) {
	e := newEnv(t)
	name := e.prefix + "policy"
	created := e.createPolicy(name, `
origin: {rules: [{pattern: "*", tier: trusted}]}
signature: {keys: [{name: ops, publicKey: "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----"}]}`)
	e.node("trusted", "trusted")
	untrustedNode := e.node("untrusted", "untrusted")
	cfg := e.config() // the args' policy: quay.io is untrusted
	cfg.PolicyName = name
	e.t.Cleanup(mustStart(t, e, cfg))
	status := waitPolicyStatus(t, e, name, created.GetGeneration(), metav1.ConditionFalse)
	cond := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionApplied)
	if cond.Reason != v1alpha1.ReasonInvalid || status.PolicyVersion == "" || !strings.Contains(cond.Message, "policy "+status.PolicyVersion+" stays in force") {
		t.Errorf("status %+v: want Invalid naming the args' policy version as in force", status)
	}
	e.create(e.pod("miner", untrustedImage))
	if got := e.waitBound("miner", bindTimeout); got != untrustedNode {
		t.Errorf("miner on %s, want %s: the invalid policy (everything trusted) must not be in force", got, untrustedNode)
	}
}

// waitPolicyEvent waits for an Event about the ReputationPolicy of the type and reason, whose
// note says what it should.
func waitPolicyEvent(t *testing.T, e *env, name, eventType, reason, says string) {
	t.Helper()
	if _, err := controlplane.WaitPolicyEvent(e.ctx, e.client, name, eventType, reason, says, 30*time.Second); err != nil {
		t.Error(err)
	}
}
