package integration

import (
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/repute-dev/repute/test/podsecurity"
)

// Under untrusted.isolation PerNamespace, untrusted pods of different namespaces never share a
// node; a pod that finds every node taken waits, and is placed as soon as a node frees up.
func TestUntrustedPodsOfTwoNamespacesNeverShareANode(t *testing.T) {
	e := newEnv(t)
	other := newEnv(t)
	e.node("untrusted-1", "untrusted")
	e.node("untrusted-2", "untrusted")
	cfg := e.config()
	cfg.ExtraArgs = "      untrusted: {isolation: PerNamespace}"
	e.t.Cleanup(mustStart(t, e, cfg))
	inNamespace := func(env *env, name string) *v1.Pod {
		p := e.pod(name, untrustedImage) // this env's scheduler
		p.Namespace = env.ns
		return p
	}
	create := func(p *v1.Pod) {
		podsecurity.Restricted(&p.Spec) // untrusted pods must meet "restricted" to be placed
		if _, err := e.client.CoreV1().Pods(p.Namespace).Create(e.ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create(inNamespace(e, "a-1"))
	first := e.waitBound("a-1", bindTimeout)
	create(inNamespace(other, "b-1"))
	second := waitBoundIn(t, e, other.ns, "b-1")
	if first == second {
		t.Fatalf("a-1 (%s) and b-1 (%s) share node %s", e.ns, other.ns, first)
	}
	// More of a's pods join a's node; a third namespace finds no node and waits.
	create(inNamespace(e, "a-2"))
	if got := e.waitBound("a-2", bindTimeout); got != first {
		t.Errorf("a-2 on %s, want %s (its namespace's node)", got, first)
	}
	third := newEnv(t)
	create(inNamespace(third, "c-1"))
	time.Sleep(time.Second)
	if p, _ := e.client.CoreV1().Pods(third.ns).Get(e.ctx, "c-1", metav1.GetOptions{}); p.Spec.NodeName != "" {
		t.Fatalf("c-1 placed on %s, which runs pods of another namespace", p.Spec.NodeName)
	}
	// b's node frees up: c-1 is retried and placed there.
	if err := e.client.CoreV1().Pods(other.ns).Delete(e.ctx, "b-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	if got := waitBoundIn(t, e, third.ns, "c-1"); got != second {
		t.Errorf("c-1 on %s, want the freed node %s", got, second)
	}
}

// Under untrusted.requireLimits, an untrusted pod without limits is unschedulable and the event
// says why; with limits it is placed. Trusted pods are not concerned.
func TestUntrustedPodsWithoutLimitsAreRefused(t *testing.T) {
	e := newEnv(t)
	untrustedNode := e.node("untrusted", "untrusted")
	trustedNode := e.node("trusted", "trusted")
	cfg := e.config()
	cfg.ExtraArgs = "      untrusted: {requireLimits: true}"
	e.t.Cleanup(mustStart(t, e, cfg))

	e.create(e.pod("no-limits", untrustedImage))
	note := e.waitFailedScheduling("no-limits", bindTimeout)
	if !strings.Contains(note, "untrusted pods must declare CPU and memory limits (untrusted.requireLimits); containers without them: c0") {
		t.Errorf("FailedScheduling %q does not say which limits are missing", note)
	}
	limited := e.pod("limited", untrustedImage)
	limited.Spec.Containers[0].Resources.Limits = v1.ResourceList{v1.ResourceCPU: resource.MustParse("100m"), v1.ResourceMemory: resource.MustParse("64Mi")}
	e.create(limited)
	if got := e.waitBound("limited", bindTimeout); got != untrustedNode {
		t.Errorf("limited on %s, want %s", got, untrustedNode)
	}
	e.create(e.pod("trusted", trustedImage))
	if got := e.waitBound("trusted", bindTimeout); got != trustedNode {
		t.Errorf("a trusted pod without limits on %s, want %s", got, trustedNode)
	}
}

// waitBoundIn waits for a pod of another namespace than the env's.
func waitBoundIn(t *testing.T, e *env, ns, name string) string {
	t.Helper()
	in := *e
	in.ns = ns
	return in.waitBound(name, bindTimeout)
}
