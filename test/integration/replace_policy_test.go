package integration

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/mover"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/evidence"
)

// moveEnv is an env with the workload controllers, a trusted and an unknown/untrusted pool,
// and a scheduler that evicts misplaced pods.
func moveEnv(t *testing.T, pools ...string) *env {
	e := newEnv(t)
	stop, err := controlplane.StartWorkloadControllers(e.ctx, cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	for _, pool := range pools {
		e.node(pool, pool)
	}
	return e
}

// runningDeployment creates a Deployment and waits until all its pods are bound, then reports
// them Running.
func (e *env) runningDeployment(name, image string, replicas int32) []v1.Pod {
	e.t.Helper()
	if _, err := e.client.AppsV1().Deployments(e.ns).Create(e.ctx, e.deployment(name, image, replicas), metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	var pods []v1.Pod
	err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, bindTimeout, true, func(context.Context) (bool, error) {
		pods = e.podsOf(name)
		if len(pods) != int(replicas) {
			return false, nil
		}
		for _, p := range pods {
			if p.Spec.NodeName == "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		e.t.Fatalf("Deployment %s not placed: %v", name, err)
	}
	for _, p := range pods {
		e.reportContainer(p.Name, nil)
	}
	return pods
}

// eventsOf lists the notes and times of events of a reason in the env's namespace.
func (e *env) eventsOf(reason string) []*metav1.MicroTime {
	e.t.Helper()
	evs, err := e.client.EventsV1().Events(e.ns).List(e.ctx, metav1.ListOptions{FieldSelector: "reason=" + reason})
	if err != nil {
		e.t.Fatal(err)
	}
	var times []*metav1.MicroTime
	for i := range evs.Items {
		times = append(times, &evs.Items[i].EventTime)
	}
	return times
}

// A PodDisruptionBudget with minAvailable equal to the replicas blocks the evictions: the pods
// stay where they are, and the refusal is reported on each pod.
func TestPodDisruptionBudgetBlocksTheMove(t *testing.T) {
	e := moveEnv(t, "trusted", "untrusted")
	falco, err := evidence.NewFalcoEndpoint(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.Falco = controlplane.FalcoArgs{BindAddress: falco.BindAddress, TokenFile: falco.TokenFile}
	cfg.ExtraArgs = "      replacement: {mode: Evict}"
	t.Cleanup(e.startFalcoScheduler(cfg, falco))
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "guarded", Namespace: e.ns},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(2)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "guarded"}}}}
	if _, err := e.client.PolicyV1().PodDisruptionBudgets(e.ns).Create(e.ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := e.runningDeployment("guarded", trustedImage, 2)
	alert := evidence.FalcoAlert(e.ns, pods[0].Name, evidence.ContainerIDOf(trustedImage)[:12], "Terminal shell in container", "Critical")
	if status, _, err := falco.Post(e.ctx, falco.Token, alert); err != nil || status != 200 {
		t.Fatalf("alert: %d %v", status, err)
	}
	for _, p := range pods {
		note := e.waitEvent(p.Name, "EvictionBlocked", bindTimeout)
		if !strings.Contains(note, "its tier is now untrusted") || !strings.Contains(note, "disruption budget") {
			t.Errorf("EvictionBlocked event %q does not say what and why", note)
		}
	}
	time.Sleep(time.Second)
	if now := e.podsOf("guarded"); len(now) != 2 || !slices.ContainsFunc(now, func(p v1.Pod) bool { return p.Name == pods[0].Name }) {
		t.Errorf("pods after the blocked evictions: %v; want the original two still there", podNames(now))
	}
	if n := len(e.eventsOf(mover.ReasonEvicted)); n != 0 {
		t.Errorf("%d pods were evicted despite the PodDisruptionBudget", n)
	}
}

// A ReputationPolicy change that lowers a registry's weight moves its running pods, one eviction
// at a time within the rate limit; evidence that oscillates around a threshold moves nothing
// until the new tier has held for settleFor.
func TestPolicyChangeMovesPodsWithinTheRateLimit(t *testing.T) {
	e := moveEnv(t, "trusted", "unknown")
	name := e.prefix + "policy"
	policy := func(weight, trustedThreshold int) string {
		return `
thresholds: {trusted: ` + itoa(trustedThreshold) + `, untrusted: 30}
origin:
  rules: [{pattern: "registry.internal/*", weight: ` + itoa(weight) + `}, {pattern: "*", tier: untrusted}]
signature: {requireForTrusted: false}`
	}
	e.createPolicy(name, policy(30, 70))
	cfg := e.config()
	cfg.PolicyName = name
	cfg.ExtraArgs = "      replacement: {mode: Evict, evictionsPerMinute: 60, settleFor: 3s}"
	t.Cleanup(mustStart(t, e, cfg))
	pods := e.runningDeployment("web", trustedImage, 3) // score 80: trusted

	// Oscillation: the trusted threshold moves just above the score (a close call: 1 point, under
	// the margin of 5) and back, four times within settleFor. Nothing moves.
	for range 4 {
		updateSpec(t, e, name, policy(30, 81))
		time.Sleep(700 * time.Millisecond)
		updateSpec(t, e, name, policy(30, 70))
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if n := len(e.eventsOf(mover.ReasonEvicted)); n != 0 {
		t.Fatalf("oscillating evidence evicted %d pods", n)
	}

	// A decided change: registry.internal weighs nothing (score 50, unknown by 19 points).
	updateSpec(t, e, name, policy(0, 70))
	e.waitReplacedOn("web", 3, e.prefix+"unknown", pods)
	times := e.eventsOf(mover.ReasonEvicted)
	if len(times) != len(pods) {
		t.Fatalf("%d evictions, want %d", len(times), len(pods))
	}
	slices.SortFunc(times, func(a, b *metav1.MicroTime) int { return a.Time.Compare(b.Time) })
	for i := 1; i < len(times); i++ {
		// 60 per minute: one a second (a little slack for clock granularity).
		if gap := times[i].Sub(times[i-1].Time); gap < 900*time.Millisecond {
			t.Errorf("evictions %d and %d %s apart, want at least 1s at 60 per minute", i-1, i, gap)
		}
	}

	// Back up: trusted again, but moving up is a separate setting (upward), None by default.
	updateSpec(t, e, name, policy(30, 70))
	time.Sleep(2 * time.Second)
	if n := len(e.eventsOf(mover.ReasonEvicted)); n != len(pods) {
		t.Errorf("%d evictions after the tier rose, want still %d: upward moves are off by default", n, len(pods))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// Moving up is allowed when replacement.upward says so: an unknown pod whose image becomes
// trusted is evicted and its replacement placed in the trusted pool.
func TestUpwardMoveWhenAllowed(t *testing.T) {
	e := moveEnv(t, "trusted", "unknown")
	name := e.prefix + "policy"
	policy := func(weight int) string {
		return `
origin:
  rules: [{pattern: "registry.internal/*", weight: ` + itoa(weight) + `}, {pattern: "*", tier: untrusted}]
signature: {requireForTrusted: false}`
	}
	e.createPolicy(name, policy(0))
	cfg := e.config()
	cfg.PolicyName = name
	cfg.ExtraArgs = "      replacement: {mode: Evict, upward: Evict}"
	t.Cleanup(mustStart(t, e, cfg))
	pods := e.runningDeployment("api", trustedImage, 1) // score 50: unknown
	if pods[0].Spec.NodeName != e.prefix+"unknown" {
		t.Fatalf("api on %s before the change, want the unknown pool", pods[0].Spec.NodeName)
	}
	updateSpec(t, e, name, policy(30)) // score 80: trusted, 10 points past the threshold
	e.waitReplacedOn("api", 1, e.prefix+"trusted", pods)
	if note := e.waitEvent(pods[0].Name, mover.ReasonEvicted, bindTimeout); !strings.Contains(note, "its tier is now trusted") {
		t.Errorf("Evicted event %q", note)
	}
}
