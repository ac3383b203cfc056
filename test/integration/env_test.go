// Package integration runs the real Repute scheduler against a real kube-apiserver and etcd
// started in this process. Each test gets its own scheduler name and pool label key, so tests
// never see each other's nodes as pools and never schedule each other's pods.
package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/podsecurity"
)

var cluster *controlplane.ControlPlane

func TestMain(m *testing.M) {
	controlplane.QuietLogs()
	tb := controlplane.NewProcessTB("integration")
	var err error
	cluster, err = controlplane.Start(tb, controlplane.Options{RBAC: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the control plane:", err)
		os.Exit(1)
	}
	if err := controlplane.InstallReputeCRDs(context.Background(), cluster.Config); err != nil {
		fmt.Fprintln(os.Stderr, "installing Repute's CRDs:", err)
		os.Exit(1)
	}
	code := m.Run()
	if builtBinary != "" {
		os.RemoveAll(filepath.Dir(builtBinary))
	}
	cluster.Stop()
	tb.RunCleanups()
	os.Exit(code)
}

// Images whose origin the test policy decides; digests are syntactically real.
const (
	trustedImage   = "registry.internal/team/api@sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb"
	unknownImage   = "docker.io/bitnami/redis:7.2"
	untrustedImage = "quay.io/evil/miner:latest"
)

// testOriginRules is the example policy.
var testOriginRules = []controlplane.OriginRule{
	{Pattern: "registry.internal/*", Tier: "trusted"},
	{Pattern: "docker.io/*", Tier: "unknown"},
	{Pattern: "*", Tier: "untrusted"},
}

var envSeq atomic.Int32

// env is one test's slice of the cluster: a namespace, a scheduler name and a pool key.
type env struct {
	t             testing.TB
	ctx           context.Context
	client        kubernetes.Interface
	kubeconfig    string
	ns            string
	schedulerName string
	poolKey       string
	prefix        string
}

// newEnv prepares a namespace and names; startScheduler runs the Repute scheduler for it.
func newEnv(t testing.TB) *env { return newEnvOn(t, cluster) }

// newEnvOn is newEnv on another control plane than the suite's.
func newEnvOn(t testing.TB, cp *controlplane.ControlPlane) *env {
	n := envSeq.Add(1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{
		t: t, ctx: ctx, client: cp.Client, kubeconfig: cp.Kubeconfig,
		ns:            fmt.Sprintf("t%d", n),
		schedulerName: fmt.Sprintf("repute-t%d", n),
		poolKey:       fmt.Sprintf("t%d.repute.dev/pool", n),
		prefix:        fmt.Sprintf("t%d-", n),
	}
	if _, err := e.client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.deleteNodes)
	return e
}

func (e *env) config() controlplane.SchedulerConfig {
	return controlplane.SchedulerConfig{Kubeconfig: e.kubeconfig, SchedulerName: e.schedulerName, PoolLabelKey: e.poolKey, OriginRules: testOriginRules}
}

func (e *env) startScheduler() {
	e.t.Helper()
	stop, err := controlplane.StartReputeScheduler(e.ctx, e.config().Render())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(stop)
}

func (e *env) node(name, pool string, mutate ...func(*controlplane.NodeSpec)) string {
	e.t.Helper()
	spec := controlplane.NodeSpec{Name: e.prefix + name, PoolKey: e.poolKey, Pool: pool}
	for _, m := range mutate {
		m(&spec)
	}
	if _, err := controlplane.CreateNode(e.ctx, e.client, spec); err != nil {
		e.t.Fatal(err)
	}
	return spec.Name
}

func (e *env) deleteNodes() {
	nodes, err := e.client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, n := range nodes.Items {
		if strings.HasPrefix(n.Name, e.prefix) {
			_ = e.client.CoreV1().Nodes().Delete(context.Background(), n.Name, metav1.DeleteOptions{})
		}
	}
}

// pod builds a pod for this env's scheduler with one container per image.
func (e *env) pod(name string, images ...string) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec:       v1.PodSpec{SchedulerName: e.schedulerName},
	}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, v1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	return p
}

func (e *env) create(p *v1.Pod) *v1.Pod {
	e.t.Helper()
	podsecurity.Restricted(&p.Spec) // untrusted pods must meet "restricted" to be placed
	created, err := e.client.CoreV1().Pods(p.Namespace).Create(e.ctx, p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating pod %s: %v", p.Name, err)
	}
	return created
}

// waitBound waits for a pod to be bound and returns its node.
func (e *env) waitBound(name string, timeout time.Duration) string {
	e.t.Helper()
	return e.waitBoundPod(name, timeout).Spec.NodeName
}

// waitPlacement waits for the pod to be bound and returns the explanation Repute bound it with.
func (e *env) waitPlacement(name string, timeout time.Duration) string {
	e.t.Helper()
	p := e.waitBoundPod(name, timeout)
	note, ok := p.Annotations[placement.ExplanationAnnotation]
	if !ok {
		e.t.Fatalf("pod %s/%s was bound without the %s annotation: not by Repute?", e.ns, name, placement.ExplanationAnnotation)
	}
	return note
}

func (e *env) waitBoundPod(name string, timeout time.Duration) *v1.Pod {
	e.t.Helper()
	var pod *v1.Pod
	err := wait.PollUntilContextTimeout(e.ctx, 20*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := e.client.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pod = p
		return p.Spec.NodeName != "", nil
	})
	if err != nil {
		e.t.Fatalf("pod %s/%s not bound within %s: %v", e.ns, name, timeout, err)
	}
	return pod
}

// assertPending checks that a pod stays unbound for the whole period.
func (e *env) assertPending(name string, period time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(period)
	for time.Now().Before(deadline) {
		p, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		if p.Spec.NodeName != "" {
			e.t.Fatalf("pod %s was bound to %s, want it pending", name, p.Spec.NodeName)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFailedScheduling returns the note of the pod's FailedScheduling event.
func (e *env) waitFailedScheduling(name string, timeout time.Duration) string {
	e.t.Helper()
	return e.waitEvent(name, "FailedScheduling", timeout)
}

// waitEvent returns the note of the first event with the given reason about a pod.
func (e *env) waitEvent(name, reason string, timeout time.Duration) string {
	e.t.Helper()
	return e.waitEventSaying(name, reason, "", timeout)
}

// waitEventSaying returns the note of the first event with the reason whose note contains
// saying.
func (e *env) waitEventSaying(name, reason, saying string, timeout time.Duration) string {
	e.t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		evs, err := e.client.EventsV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: "regarding.name=" + name})
		if err != nil {
			// The shared client's rate limit, under a busy suite: look again.
			return false, nil
		}
		for _, ev := range evs.Items {
			if ev.Reason == reason && strings.Contains(ev.Note, saying) {
				msg = ev.Note
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		e.t.Fatalf("no %s event saying %q for %s within %s: %v", reason, saying, name, timeout, err)
	}
	return msg
}

// restrictedSpec is a pod spec made to meet the Pod Security Standard "restricted".
func restrictedSpec(spec v1.PodSpec) v1.PodSpec {
	podsecurity.Restricted(&spec)
	return spec
}
