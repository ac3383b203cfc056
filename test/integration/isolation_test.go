package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	reputationplugin "github.com/repute-dev/repute/plugins/reputation"
	"github.com/repute-dev/repute/test/controlplane"
)

// shipped decodes the documents of a deploy/ file strictly, in order.
func shipped(t testing.TB, file string, into ...any) {
	t.Helper()
	docs, err := controlplane.ShippedDocuments(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != len(into) {
		t.Fatalf("%s holds %d documents, want %d", file, len(docs), len(into))
	}
	for i, doc := range docs {
		if err := yaml.UnmarshalStrict(doc, into[i]); err != nil {
			t.Fatalf("%s document %d: %v", file, i, err)
		}
	}
}

// The shipped ValidatingAdmissionPolicy, applied to the real apiserver: in a namespace that
// opts in, every way around Repute is refused with a message naming the rule; pods that go
// through Repute, and pods of other namespaces, are admitted, and Repute still binds them.
// installAdmissionPolicy creates a shipped ValidatingAdmissionPolicy and its binding, deleted at
// cleanup, after which afterCleanup (if set) runs.
func (e *env) installAdmissionPolicy(file string, afterCleanup func()) {
	e.t.Helper()
	var policy admissionv1.ValidatingAdmissionPolicy
	var binding admissionv1.ValidatingAdmissionPolicyBinding
	shipped(e.t, file, &policy, &binding)
	admission := e.client.AdmissionregistrationV1()
	if _, err := admission.ValidatingAdmissionPolicies().Create(e.ctx, &policy, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := admission.ValidatingAdmissionPolicyBindings().Create(e.ctx, &binding, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = admission.ValidatingAdmissionPolicyBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
		_ = admission.ValidatingAdmissionPolicies().Delete(context.Background(), policy.Name, metav1.DeleteOptions{})
		if afterCleanup != nil {
			afterCleanup()
		}
	})
}

func TestAdmissionPolicyKeepsPodsOnRepute(t *testing.T) {
	e := newEnv(t)
	// The policy's schedulerName and pool key are the shipped ones; this env's scheduler and
	// pool key are its own, so the test's pods use the shipped names where the policy looks.
	e.installAdmissionPolicy("isolation/admission-policy.yaml", nil)
	var runtimeClass nodev1.RuntimeClass
	shipped(t, "isolation/runtimeclass.yaml", &runtimeClass)
	if _, err := e.client.NodeV1().RuntimeClasses().Create(e.ctx, &runtimeClass, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.client.NodeV1().RuntimeClasses().Delete(context.Background(), runtimeClass.Name, metav1.DeleteOptions{})
	})
	// A pod from before the namespace opted in: another scheduler, a pool toleration, a finalizer.
	legacy := e.pod("legacy", trustedImage)
	legacy.Spec.SchedulerName = "default-scheduler"
	legacy.Finalizers = []string{"example.com/hold"}
	legacy.Spec.Tolerations = []v1.Toleration{{Key: "node-restriction.kubernetes.io/repute-pool", Operator: v1.TolerationOpEqual, Value: "trusted", Effect: v1.TaintEffectNoSchedule}}
	e.create(legacy)
	ns, err := e.client.CoreV1().Namespaces().Get(e.ctx, e.ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels["repute.dev/enforce"] = "true"
	if _, err := e.client.CoreV1().Namespaces().Update(e.ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	pod := func(name string, mutate func(*v1.Pod)) *v1.Pod {
		p := e.pod(name, trustedImage)
		p.Spec.SchedulerName = "repute-scheduler"
		if mutate != nil {
			mutate(p)
		}
		return p
	}
	poolToleration := func(pool string) v1.Toleration {
		return v1.Toleration{Key: "node-restriction.kubernetes.io/repute-pool", Operator: v1.TolerationOpEqual, Value: pool, Effect: v1.TaintEffectNoSchedule}
	}
	// The policy takes effect a moment after it is created: wait for the first refusal.
	err = wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p := pod("probe", func(p *v1.Pod) { p.Spec.SchedulerName = "default-scheduler" })
		_, err := e.client.CoreV1().Pods(e.ns).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err != nil, nil
	})
	if err != nil {
		t.Fatal("the admission policy never took effect")
	}

	tests := []struct {
		name     string
		pod      *v1.Pod
		wantRule string // empty: admitted
	}{
		{"another scheduler", pod("other-scheduler", func(p *v1.Pod) { p.Spec.SchedulerName = "default-scheduler" }), "repute.dev rule schedulerName"},
		{"no scheduler named (the default one)", pod("no-scheduler", func(p *v1.Pod) { p.Spec.SchedulerName = "" }), "repute.dev rule schedulerName"},
		{"node preset", pod("preset-node", func(p *v1.Pod) { p.Spec.NodeName = "any-node" }), "repute.dev rule nodeName"},
		{"tolerates the trusted pool", pod("tolerates-trusted", func(p *v1.Pod) { p.Spec.Tolerations = []v1.Toleration{poolToleration("trusted")} }), "repute.dev rule tolerations"},
		{"tolerates the untrusted pool without the sandbox", pod("tolerates-untrusted", func(p *v1.Pod) { p.Spec.Tolerations = []v1.Toleration{poolToleration("untrusted")} }), "repute.dev rule tolerations"},
		{"tolerates every taint", pod("tolerates-all", func(p *v1.Pod) { p.Spec.Tolerations = []v1.Toleration{{Operator: v1.TolerationOpExists}} }), "repute.dev rule tolerations"},
		{"sandboxed: the RuntimeClass adds the untrusted pool's toleration", pod("sandboxed", func(p *v1.Pod) { p.Spec.RuntimeClassName = &runtimeClass.Name }), ""},
		{"other tolerations are fine", pod("tolerates-other", func(p *v1.Pod) {
			p.Spec.Tolerations = []v1.Toleration{{Key: "gpu", Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoSchedule}}
		}), ""},
		{"through Repute", pod("through-repute", nil), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			created, err := e.client.CoreV1().Pods(e.ns).Create(e.ctx, tt.pod, metav1.CreateOptions{})
			if tt.wantRule == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tt.pod.Spec.RuntimeClassName != nil && (created.Spec.NodeSelector["node-restriction.kubernetes.io/repute-pool"] != "untrusted" || len(created.Spec.Tolerations) == 0) {
					t.Errorf("the RuntimeClass did not send the pod to the untrusted pool: %v %v", created.Spec.NodeSelector, created.Spec.Tolerations)
				}
				return
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || err == nil || !strings.Contains(err.Error(), tt.wantRule) {
				t.Fatalf("create: %v; want a refusal naming %q", err, tt.wantRule)
			}
		})
	}

	// Repute (under the shipped scheduler name) binds the admitted pod, and the bound pod can
	// still be updated: only a preset node is refused, not the one the binding set.
	cfg := e.config()
	cfg.SchedulerName = "repute-scheduler"
	e.t.Cleanup(mustStart(t, e, cfg))
	trustedNode := e.node("trusted", "trusted")
	if got := e.waitBound("through-repute", bindTimeout); got != trustedNode {
		t.Fatalf("through-repute bound to %s, want %s", got, trustedNode)
	}
	bound, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, "through-repute", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if bound.Labels[reputationplugin.TierLabel] != "trusted" {
		t.Errorf("bound pod labels %v, want %s=trusted", bound.Labels, reputationplugin.TierLabel)
	}

	// A namespace editor (no cluster-admin) may update the pod but not its tier label, and
	// may not bring a tier label of its own.
	e.serviceAccount("editor")
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "pod-editor", Namespace: e.ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "create", "update"}}}}
	if _, err := e.client.RbacV1().Roles(e.ns).Create(e.ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "pod-editor", Namespace: e.ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "editor", Namespace: e.ns}}}
	if _, err := e.client.RbacV1().RoleBindings(e.ns).Create(e.ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	editorConfig := rest.AnonymousClientConfig(cluster.Config)
	editorConfig.BearerToken = e.token("editor")
	editor := kubernetes.NewForConfigOrDie(editorConfig)
	// The RBAC authorizer learns of a new RoleBinding through its informer: wait for it.
	if err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := editor.CoreV1().Pods(e.ns).Get(ctx, "through-repute", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("the editor's Role never took effect: %v", err)
	}
	bound.Labels["updated"] = "yes"
	if _, err := editor.CoreV1().Pods(e.ns).Update(e.ctx, bound, metav1.UpdateOptions{}); err != nil {
		t.Errorf("updating a pod Repute bound (tier label kept) was refused: %v", err)
	}
	if bound, err = editor.CoreV1().Pods(e.ns).Get(e.ctx, "through-repute", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	bound.Labels[reputationplugin.TierLabel] = "untrusted"
	if _, err := editor.CoreV1().Pods(e.ns).Update(e.ctx, bound, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "repute.dev rule tierLabel") {
		t.Errorf("an editor changed the tier label: %v; want a refusal naming repute.dev rule tierLabel", err)
	}
	claiming := pod("claims-trust", func(p *v1.Pod) { p.Labels = map[string]string{reputationplugin.TierLabel: "trusted"} })
	if _, err := editor.CoreV1().Pods(e.ns).Create(e.ctx, claiming, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "repute.dev rule tierLabel") {
		t.Errorf("an editor created a pod with its own tier label: %v; want a refusal naming repute.dev rule tierLabel", err)
	}

	// Nor may anyone with the pod verbs change what a placed pod runs: its images, or an
	// ephemeral container added to it.
	if bound, err = e.client.CoreV1().Pods(e.ns).Get(e.ctx, "through-repute", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	swapped := bound.DeepCopy()
	swapped.Spec.Containers[0].Image = "registry.internal/team/never-seen:v1"
	if _, err := editor.CoreV1().Pods(e.ns).Update(e.ctx, swapped, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "repute.dev rule images") {
		t.Errorf("an editor swapped a placed pod's image: %v; want a refusal naming repute.dev rule images", err)
	}
	if bound, err = e.client.CoreV1().Pods(e.ns).Get(e.ctx, "through-repute", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	debugged := bound.DeepCopy()
	debugged.Spec.EphemeralContainers = []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{
		Name: "debugger", Image: "registry.internal/team/never-seen:v1", TerminationMessagePolicy: v1.TerminationMessageReadFile}}}
	if _, err := e.client.CoreV1().Pods(e.ns).UpdateEphemeralContainers(e.ctx, bound.Name, debugged, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "repute.dev rule images") {
		t.Errorf("an ephemeral container was added to a placed pod: %v; want a refusal naming repute.dev rule images", err)
	}

	// The pod from before the opt-in can still have its finalizer removed, and so be deleted.
	old, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, "legacy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old.Finalizers = nil
	if _, err := e.client.CoreV1().Pods(e.ns).Update(e.ctx, old, metav1.UpdateOptions{}); err != nil {
		t.Errorf("removing the finalizer of a pod that predates the opt-in was refused: %v", err)
	}

	// A pod of a namespace that did not opt in is left alone.
	other := newEnv(t)
	free := other.pod("free", trustedImage)
	free.Spec.SchedulerName = "default-scheduler"
	if _, err := other.client.CoreV1().Pods(other.ns).Create(e.ctx, free, metav1.CreateOptions{}); err != nil {
		t.Errorf("a pod outside the enforcing namespaces was refused: %v", err)
	}

	// The RuntimeClass targets the untrusted pool exactly as the shipped scheduler configures it.
	if runtimeClass.Scheduling.NodeSelector["node-restriction.kubernetes.io/repute-pool"] != "untrusted" {
		t.Errorf("RuntimeClass nodeSelector %v, want node-restriction.kubernetes.io/repute-pool=untrusted", runtimeClass.Scheduling.NodeSelector)
	}
}

// The shipped NetworkPolicies are accepted by the apiserver and select pods by the tier label
// Repute sets.
func TestNetworkPoliciesApply(t *testing.T) {
	e := newEnv(t)
	var untrusted, trusted, unknown networkingv1.NetworkPolicy
	shipped(t, "isolation/networkpolicies.yaml", &untrusted, &trusted, &unknown)
	for tier, np := range map[string]*networkingv1.NetworkPolicy{"untrusted": &untrusted, "trusted": &trusted, "unknown": &unknown} {
		if got := np.Spec.PodSelector.MatchLabels["repute.dev/tier"]; got != tier {
			t.Errorf("%s selects repute.dev/tier=%q, want %q", np.Name, got, tier)
		}
		if _, err := e.client.NetworkingV1().NetworkPolicies(e.ns).Create(e.ctx, np, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}); err != nil {
			t.Errorf("%s: %v", np.Name, err)
		}
	}
	// Who reaches a trusted pod, by the peers of repute-trusted (no CNI runs here, so the rule is
	// checked on the selectors the CNI would apply): trusted pods from anywhere, and pods of
	// namespaces the operator lists; never unknown, untrusted or unlabelled pods.
	admitted := func(podLabels, namespaceLabels map[string]string) bool {
		for _, rule := range trusted.Spec.Ingress {
			for _, peer := range rule.From {
				nsOK, podOK := peer.NamespaceSelector == nil, peer.PodSelector == nil
				if peer.NamespaceSelector != nil {
					sel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
					if err != nil {
						t.Fatal(err)
					}
					nsOK = sel.Matches(labels.Set(namespaceLabels))
				}
				if peer.PodSelector != nil {
					sel, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
					if err != nil {
						t.Fatal(err)
					}
					podOK = sel.Matches(labels.Set(podLabels))
				}
				if nsOK && podOK {
					return true
				}
			}
		}
		return false
	}
	tier := func(t string) map[string]string { return map[string]string{"repute.dev/tier": t} }
	listed := map[string]string{"repute.dev/trusted-clients": "true"}
	for _, tt := range []struct {
		name           string
		pod, namespace map[string]string
		wantAdmitted   bool
	}{
		{"a trusted pod of another namespace", tier("trusted"), nil, true},
		{"an unknown pod", tier("unknown"), nil, false},
		{"an untrusted pod", tier("untrusted"), nil, false},
		{"a pod Repute never placed", nil, nil, false},
		{"any pod of a listed namespace", nil, listed, true},
	} {
		if got := admitted(tt.pod, tt.namespace); got != tt.wantAdmitted {
			t.Errorf("repute-trusted admits %s: %v, want %v", tt.name, got, tt.wantAdmitted)
		}
	}
}

// Pool nodes are reachable only through Repute in every namespace, opted in or not: a preset
// node or a pool toleration is refused, except in system namespaces, namespaces the operator
// exempts, and for static pods.
func TestPoolsAreReachableOnlyThroughReputeClusterWide(t *testing.T) {
	e := newEnv(t)
	e.installAdmissionPolicy("isolation/pool-admission-policy.yaml", func() {
		// Later tests create pods with a preset node: wait until the binding is gone for them.
		_ = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			p := e.pod("after-cleanup", trustedImage)
			p.Spec.NodeName = "any-node"
			_, err := e.client.CoreV1().Pods(e.ns).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err == nil, nil
		})
	})
	exempt := newEnv(t)
	ns, err := exempt.client.CoreV1().Namespaces().Get(e.ctx, exempt.ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels["repute.dev/pools-exempt"] = "true"
	if _, err := exempt.client.CoreV1().Namespaces().Update(e.ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	presetNode := func(p *v1.Pod) { p.Spec.NodeName = "pool-node" }
	tolerates := func(p *v1.Pod) {
		p.Spec.Tolerations = []v1.Toleration{{Key: "node-restriction.kubernetes.io/repute-pool", Operator: v1.TolerationOpEqual, Value: "trusted", Effect: v1.TaintEffectNoSchedule}}
	}
	static := func(p *v1.Pod) {
		p.Annotations = map[string]string{v1.MirrorPodAnnotationKey: "x"}
		p.Spec.NodeName = "pool-node"
	}
	dryRun := func(env *env, name string, mutate func(*v1.Pod)) error {
		p := env.pod(name, trustedImage)
		p.Spec.SchedulerName = "default-scheduler"
		mutate(p)
		_, err := env.client.CoreV1().Pods(env.ns).Create(env.ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	// The policy takes effect a moment after it is created.
	if err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return dryRun(e, "probe", presetNode) != nil, nil
	}); err != nil {
		t.Fatal("the pool admission policy never took effect")
	}
	tests := []struct {
		name     string
		env      *env
		mutate   func(*v1.Pod)
		wantRule string // empty: admitted
	}{
		{"a preset node, in a namespace that never opted in", e, presetNode, "repute.dev rule nodeName"},
		{"a pool toleration, in a namespace that never opted in", e, tolerates, "repute.dev rule tolerations"},
		{"a static pod", e, static, ""},
		{"an exempt namespace", exempt, presetNode, ""},
		{"an ordinary pod", e, func(*v1.Pod) {}, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := dryRun(tt.env, fmt.Sprintf("case-%d", i), tt.mutate)
			switch {
			case tt.wantRule == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.wantRule != "" && (err == nil || !strings.Contains(err.Error(), tt.wantRule)):
				t.Errorf("create: %v; want a refusal naming %q", err, tt.wantRule)
			}
		})
	}
}
