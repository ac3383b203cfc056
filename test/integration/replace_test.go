package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/mover"
	reputationplugin "github.com/repute-dev/repute/plugins/reputation"
	"github.com/repute-dev/repute/reputation/store"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/evidence"
)

// deployment builds a Deployment of this env's scheduler running one image.
func (e *env) deployment(name, image string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       restrictedSpec(v1.PodSpec{SchedulerName: e.schedulerName, Containers: []v1.Container{{Name: "c0", Image: image}}}),
			},
		},
	}
}

// podsOf lists the pods of an app label, bound or not, leaving out terminating ones.
func (e *env) podsOf(app string) []v1.Pod {
	e.t.Helper()
	list, err := e.client.CoreV1().Pods(e.ns).List(e.ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []v1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// A trusted Deployment's image draws a Critical Falco alert: its running pods are evicted
// through the Eviction API, the real ReplicaSet controller recreates them, and Repute places the
// replacements in the untrusted pool. A bare pod with the same image is reported, not evicted.
// Both show in the store's decisions.
func TestCriticalAlertMovesADeploymentToTheUntrustedPool(t *testing.T) {
	e := newEnv(t)
	stopControllers, err := controlplane.StartWorkloadControllers(e.ctx, cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopControllers)
	trustedNode := e.node("trusted", "trusted")
	untrustedNode := e.node("untrusted", "untrusted")
	falco, err := evidence.NewFalcoEndpoint(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	storePath := filepath.Join(t.TempDir(), "repute.db")
	cfg := e.config()
	cfg.Falco = controlplane.FalcoArgs{BindAddress: falco.BindAddress, TokenFile: falco.TokenFile}
	cfg.StorePath = storePath
	cfg.ExtraArgs = "      replacement: {mode: Evict}"
	stop := e.startFalcoScheduler(cfg, falco)
	defer stop()

	if _, err := e.client.AppsV1().Deployments(e.ns).Create(e.ctx, e.deployment("shop", trustedImage, 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.create(e.pod("bare", trustedImage))
	var first []v1.Pod
	err = wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, bindTimeout, true, func(context.Context) (bool, error) {
		first = e.podsOf("shop")
		return len(first) == 2 && first[0].Spec.NodeName != "" && first[1].Spec.NodeName != "", nil
	})
	if err != nil {
		t.Fatalf("the Deployment's pods were not placed: %v", err)
	}
	for _, p := range first {
		if p.Spec.NodeName != trustedNode {
			t.Fatalf("%s on %s before the alert, want %s", p.Name, p.Spec.NodeName, trustedNode)
		}
		e.reportContainer(p.Name, nil) // Running, as the kubelet would report it
	}
	e.waitBound("bare", bindTimeout)
	e.reportContainer("bare", nil)

	alert := evidence.FalcoAlert(e.ns, first[0].Name, evidence.ContainerIDOf(trustedImage)[:12], "Terminal shell in container", "Critical")
	if status, resp, err := falco.Post(e.ctx, falco.Token, alert); err != nil || status != 200 || resp.Accepted != 1 {
		t.Fatalf("alert: %d %+v %v", status, resp, err)
	}

	// Both pods are replaced, and the replacements land in the untrusted pool.
	e.waitReplacedOn("shop", 2, untrustedNode, first)
	note := e.waitEvent(first[0].Name, mover.ReasonEvicted, bindTimeout)
	if !strings.Contains(note, "runs in pool trusted on "+trustedNode+" but its tier is now untrusted") || !strings.Contains(note, "Terminal shell in container") {
		t.Errorf("Evicted event %q does not explain the move", note)
	}
	// The bare pod is reported and left running where it is.
	note = e.waitEvent("bare", "Misplaced", bindTimeout)
	if !strings.Contains(note, "not evicted: no controller would recreate it") {
		t.Errorf("Misplaced event %q does not say why the bare pod stays", note)
	}
	if bare, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, "bare", metav1.GetOptions{}); err != nil || bare.DeletionTimestamp != nil {
		t.Errorf("the bare pod was deleted (%v)", err)
	} else if got := bare.Labels[reputationplugin.TierLabel]; got != "untrusted" {
		// Left in place, but relabelled at once, so NetworkPolicies isolate it.
		t.Errorf("the bare pod's %s = %q, want untrusted", reputationplugin.TierLabel, got)
	}

	stop()
	st, err := store.Open(storePath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	decisions, _, err := st.Decisions(store.Page{}, func(d *store.Decision) bool { return d.Namespace == e.ns && d.Action != "" })
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]string{}
	for _, d := range decisions {
		actions[d.Pod] = d.Action
	}
	if actions[first[0].Name] != mover.ActionEvicted || actions[first[1].Name] != mover.ActionEvicted || actions["bare"] != mover.ActionReported {
		t.Errorf("recorded actions %v; want both shop pods evicted and bare reported", actions)
	}
}

// waitReplacedOn waits until the app's live pods are n, all on node, none of them one of before.
func (e *env) waitReplacedOn(app string, n int, node string, before []v1.Pod) {
	e.t.Helper()
	err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		pods := e.podsOf(app)
		if len(pods) != n {
			return false, nil
		}
		for _, p := range pods {
			if p.Spec.NodeName != node || slices.ContainsFunc(before, func(b v1.Pod) bool { return b.Name == p.Name }) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		e.t.Fatalf("%s was not moved to %s: %v (pods %v)", app, node, err, podNames(e.podsOf(app)))
	}
}

func podNames(pods []v1.Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name+"@"+p.Spec.NodeName)
	}
	return names
}

// BenchmarkCriticalAlertToReplacementBound measures, per trial, the time from a Critical Falco
// alert about a running pod of a trusted Deployment to its replacement being bound in the
// untrusted pool: ingest, re-score, eviction through the Eviction API, the ReplicaSet
// controller's new pod, PreEnqueue and binding. Each trial uses a fresh image, at the default
// replacement settings (mode Evict). "spaced" leaves one eviction interval (2 s at the default
// 30 per minute) between trials, outside the timer, so each alert finds room in the rate limit;
// "back-to-back" does not, so each waits for the limit. Run with -benchtime=20x (or more); it
// reports p50 and p99.
func BenchmarkCriticalAlertToReplacementBound(b *testing.B) {
	e := newEnv(b)
	stopControllers, err := controlplane.StartWorkloadControllers(e.ctx, cluster.Config)
	if err != nil {
		b.Fatal(err)
	}
	defer stopControllers()
	e.node("trusted", "trusted", func(n *controlplane.NodeSpec) { n.Pods = 10000 })
	untrustedNode := e.node("untrusted", "untrusted", func(n *controlplane.NodeSpec) { n.Pods = 10000 })
	falco, err := evidence.NewFalcoEndpoint(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	cfg := e.config()
	cfg.Falco = controlplane.FalcoArgs{BindAddress: falco.BindAddress, TokenFile: falco.TokenFile}
	cfg.ExtraArgs = "      replacement: {mode: Evict}"
	defer e.startFalcoScheduler(cfg, falco)()

	trial := 0
	for _, bc := range []struct {
		name string
		gap  time.Duration
	}{{"spaced", 2 * time.Second}, {"back-to-back", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			var latencies []time.Duration
			for b.Loop() {
				b.StopTimer()
				trial++
				name := fmt.Sprintf("app-%d", trial)
				image := fmt.Sprintf("registry.internal/team/%s@sha256:%064x", name, trial)
				if _, err := e.client.AppsV1().Deployments(e.ns).Create(e.ctx, e.deployment(name, image, 1), metav1.CreateOptions{}); err != nil {
					b.Fatal(err)
				}
				var running v1.Pod
				if err := wait.PollUntilContextTimeout(e.ctx, 10*time.Millisecond, bindTimeout, true, func(context.Context) (bool, error) {
					pods := e.podsOf(name)
					if len(pods) == 1 && pods[0].Spec.NodeName != "" {
						running = pods[0]
						return true, nil
					}
					return false, nil
				}); err != nil {
					b.Fatalf("trial %d: not placed: %v", trial, err)
				}
				e.reportContainer(running.Name, nil)
				time.Sleep(bc.gap)
				alert := evidence.FalcoAlert(e.ns, running.Name, evidence.ContainerIDOf(image)[:12], "Terminal shell in container", "Critical")
				b.StartTimer()
				start := time.Now()
				if status, _, err := falco.Post(e.ctx, falco.Token, alert); err != nil || status != 200 {
					b.Fatalf("trial %d: alert %d %v", trial, status, err)
				}
				if err := wait.PollUntilContextTimeout(e.ctx, 5*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
					pods := e.podsOf(name)
					return len(pods) == 1 && pods[0].Name != running.Name && pods[0].Spec.NodeName == untrustedNode, nil
				}); err != nil {
					b.Fatalf("trial %d: no replacement bound in the untrusted pool: %v", trial, err)
				}
				latencies = append(latencies, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(latencies)
			b.ReportMetric(float64(latencies[len(latencies)/2].Milliseconds()), "p50-ms")
			b.ReportMetric(float64(latencies[(len(latencies)*99-1)/100].Milliseconds()), "p99-ms")
			b.ReportMetric(float64(latencies[len(latencies)-1].Milliseconds()), "max-ms")
		})
	}
}
