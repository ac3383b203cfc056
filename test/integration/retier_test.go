package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/mover"
	"github.com/repute-dev/repute/reputation/store"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/evidence"
)

// A ReputationPolicy change re-tiers every running pod of ten Deployments (1000 pods under make
// soak, 100 in make test) from trusted to unknown, under replacement mode Evict. Each Deployment
// has a PodDisruptionBudget of maxUnavailable 10%, and a stand-in for the kubelets reports each
// bound pod Ready, so the budget is live: an eviction frees room only once a replacement is Ready
// in the unknown pool. Throughout, no Deployment has fewer Ready pods than its budget allows; the
// evictions never outrun the rate limit's token bucket; each original pod is evicted exactly
// once, no replacement at all; and every replacement lands in the unknown pool.
func TestPolicyChangeReTiersRunningPodsUnderEvict(t *testing.T) {
	const deployments = 10
	replicas, perMinute := 10, 600
	if os.Getenv("REPUTE_SOAK") != "" {
		replicas, perMinute = 100, 1200
	}
	pods := deployments * replicas
	maxUnavailable := max(1, replicas/10)

	e := newEnv(t)
	stopControllers, err := controlplane.StartWorkloadControllers(e.ctx, cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopControllers)
	t.Cleanup(evidence.StartReadyReporter(e.ctx, e.client, e.ns))
	poolOf := map[string]string{}
	for i := range pods/100 + 1 { // 110 pods fit a node; evicted pods keep their room (no kubelet)
		for _, pool := range []string{"trusted", "unknown"} {
			poolOf[e.node(fmt.Sprintf("%s-%d", pool, i), pool)] = pool
		}
	}
	name := e.prefix + "policy"
	policy := func(weight int) string {
		return `
thresholds: {trusted: 70, untrusted: 30}
origin:
  rules: [{pattern: "registry.internal/*", weight: ` + itoa(weight) + `}, {pattern: "*", tier: untrusted}]
signature: {requireForTrusted: false}`
	}
	e.createPolicy(name, policy(30)) // score 80: trusted
	cfg := e.config()
	cfg.PolicyName = name
	cfg.StorePath = filepath.Join(t.TempDir(), "repute.db")
	cfg.ExtraArgs = fmt.Sprintf("      replacement: {mode: Evict, evictionsPerMinute: %d, settleFor: 1s}", perMinute)
	stopScheduler := mustStart(t, e, cfg)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stopScheduler()
		}
	})

	apps := make([]string, deployments)
	for i := range apps {
		apps[i] = fmt.Sprintf("app-%d", i)
		if _, err := e.client.AppsV1().Deployments(e.ns).Create(e.ctx, e.deployment(apps[i], trustedImage, int32(replicas)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: apps[i], Namespace: e.ns},
			Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromString("10%")),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": apps[i]}}}}
		if _, err := e.client.PolicyV1().PodDisruptionBudgets(e.ns).Create(e.ctx, pdb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// All Ready in the trusted pool, and every budget allowing its disruptions.
	e.waitApps(apps, replicas, 2*time.Minute, func(ready int, pools map[string]int) bool {
		return ready == replicas && pools["trusted"] == replicas
	}, poolOf)
	err = wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := e.client.PolicyV1().PodDisruptionBudgets(e.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, pdb := range list.Items {
			if pdb.Status.DisruptionsAllowed != int32(maxUnavailable) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("the budgets never allowed %d disruptions each", maxUnavailable)
	}
	before := map[string]bool{}
	for _, app := range apps {
		for _, p := range e.podsOf(app) {
			before[string(p.UID)] = true
		}
	}

	// Watch the budgets hold while the pods move: the fewest Ready pods each app had.
	var fewest sync.Map
	watching, stopWatching := context.WithCancel(e.ctx)
	var watched sync.WaitGroup
	watched.Go(func() {
		_ = wait.PollUntilContextCancel(watching, 50*time.Millisecond, true, func(context.Context) (bool, error) {
			for app, ready := range e.readyByApp() {
				if old, ok := fewest.Load(app); !ok || ready < old.(int) {
					fewest.Store(app, ready)
				}
			}
			return false, nil
		})
	})

	started := time.Now()
	updateSpec(t, e, name, policy(0)) // score 50: unknown
	e.waitApps(apps, replicas, 5*time.Minute, func(ready int, pools map[string]int) bool {
		return ready == replicas && pools["unknown"] == replicas
	}, poolOf)
	moved := time.Since(started)
	stopWatching()
	watched.Wait()

	fewestReady := replicas
	for _, app := range apps {
		f, _ := fewest.Load(app)
		if f == nil || f.(int) < replicas-maxUnavailable {
			t.Errorf("%s had %v Ready pods at one point, below its budget's %d", app, f, replicas-maxUnavailable)
		} else {
			fewestReady = min(fewestReady, f.(int))
		}
	}
	stopScheduler()
	stopped = true
	st, err := store.Open(cfg.StorePath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evictions, blocked := map[string]int{}, 0
	var times []time.Time
	if _, _, err := st.Decisions(store.Page{}, func(d *store.Decision) bool {
		if d.Namespace == e.ns && d.Action == mover.ActionEvicted {
			evictions[d.UID]++
			times = append(times, d.Time)
		}
		if d.Namespace == e.ns && d.Action == mover.ActionBlocked {
			blocked++
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	for uid, n := range evictions {
		if !before[uid] {
			t.Errorf("pod %s, a replacement in the right pool, was evicted %d times", uid, n)
		} else if n != 1 {
			t.Errorf("pod %s was evicted %d times", uid, n)
		}
	}
	if len(evictions) != pods {
		t.Errorf("%d pods evicted, want all %d", len(evictions), pods)
	}
	// The limiter is a token bucket of perMinute/60 per second, with as many in the bucket: no
	// run of evictions may beat it (one of slack for the records' clock).
	slices.SortFunc(times, time.Time.Compare)
	rate, burst := float64(perMinute)/60, max(1, perMinute/60)
	for i := range times {
		for j := i + 1; j < len(times); j++ {
			if allowed := float64(burst) + rate*times[j].Sub(times[i]).Seconds() + 1; float64(j-i+1) > allowed {
				t.Fatalf("evictions %d..%d: %d in %s, more than the limit allows (%.1f)", i, j, j-i+1, times[j].Sub(times[i]), allowed)
			}
		}
	}
	t.Logf("%d running pods in %d Deployments re-tiered trusted → unknown in %s at %d evictions/min, each evicted once; %d evictions refused by a budget and retried; fewest Ready in a Deployment %d of %d (budget %d)",
		pods, deployments, moved.Round(100*time.Millisecond), perMinute, blocked, fewestReady, replicas, replicas-maxUnavailable)
}

// waitApps waits until every app's pods that are not terminating satisfy done, given how many
// are Ready and how many are bound in each pool.
func (e *env) waitApps(apps []string, replicas int, timeout time.Duration, done func(ready int, pools map[string]int) bool, poolOf map[string]string) {
	e.t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		for _, app := range apps {
			ready, pools := 0, map[string]int{}
			for _, p := range e.podsOf(app) {
				pools[poolOf[p.Spec.NodeName]]++
				if isPodReady(p.Status.Conditions) {
					ready++
				}
			}
			if !done(ready, pools) {
				last = fmt.Sprintf("%s: %d Ready, pools %v", app, ready, pools)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		e.t.Fatalf("Deployments not settled within %s: %s", timeout, last)
	}
}

// readyByApp counts the Ready pods of each app label that are not terminating; it lists
// quietly, for a watcher that samples it off the test's goroutine.
func (e *env) readyByApp() map[string]int {
	list, err := e.client.CoreV1().Pods(e.ns).List(e.ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	ready := map[string]int{}
	for _, p := range list.Items {
		if app := p.Labels["app"]; app != "" && p.DeletionTimestamp == nil {
			ready[app] += 0
			if isPodReady(p.Status.Conditions) {
				ready[app]++
			}
		}
	}
	return ready
}

func isPodReady(conds []v1.PodCondition) bool {
	return slices.ContainsFunc(conds, func(c v1.PodCondition) bool { return c.Type == v1.PodReady && c.Status == v1.ConditionTrue })
}
