package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/repute-dev/repute/pkg/mirror"
	"github.com/repute-dev/repute/pkg/placement"
	reputeruntime "github.com/repute-dev/repute/pkg/runtime"
	"github.com/repute-dev/repute/reputation/store"
	"github.com/repute-dev/repute/test/controlplane"
)

// Two replicas of the real binary, as deploy/ runs them: one lease, the shipped RBAC, each its
// own store, and the verdict snapshot in kube-system. The standby follows the leader's snapshot;
// when the leader is killed (SIGKILL: no goodbye, no flush), the standby takes the lease and
// places the next pod by the verdict it followed, while the registry is too slow for any new
// evaluation to finish within verdictWait. Only the leader records: the standby's store holds no
// decision from before the failover.
func TestStandbyTakesOverWithTheLeadersVerdicts(t *testing.T) {
	bin := schedulerBinary(t)
	image, pem, slow := signedImageOnSlowRegistry(t)

	e := newEnv(t)
	applyDeployBase(t, e, false, "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
	t.Cleanup(func() { deleteSnapshot(e) })
	poolOf := map[string]string{}
	for _, pool := range []string{"trusted", "unknown", "untrusted"} {
		poolOf[e.node(pool, pool)] = pool
	}
	cfg := e.config()
	cfg.Kubeconfig = kubeconfigFor(t, e, "kube-system", "repute-scheduler")
	cfg.LeaderElect, cfg.LeaseName, cfg.LeaseDuration = true, "repute-scheduler", 3*time.Second
	cfg.MirrorNamespace, cfg.MirrorKeySecret = "kube-system", "repute-mirror-key" // signed, as deploy/ runs it
	cfg = signedByOps(cfg, pem)
	cfg.VerdictWait = "1s"

	start := func(name string) (func(syscall.Signal), string) { return startReplica(t, e, bin, cfg, name) }
	stopA, _ := start("replica-a")
	e.waitLeader("replica-a", 30*time.Second)
	stopB, storeB := start("replica-b")

	e.create(e.pod("before", image.String()))
	if got := poolOf[e.waitBound("before", bindTimeout)]; got != "trusted" {
		t.Fatalf("the signed image landed in pool %q, want trusted", got)
	}
	e.waitSnapshot(image.String(), "trusted", 10*time.Second)
	// Signed with the key the scheduler made and keeps in its Secret: the standby reads only
	// shards that check, so the failover below proves it found the same key.
	shards, err := e.client.CoreV1().ConfigMaps("kube-system").List(e.ctx, metav1.ListOptions{LabelSelector: mirror.ComponentLabel})
	if err != nil || len(shards.Items) == 0 {
		t.Fatalf("snapshot shards: %v", err)
	}
	for _, cm := range shards.Items {
		if strings.HasPrefix(cm.Name, "repute-verdicts-") && len(cm.BinaryData[mirror.MACKey]) == 0 {
			t.Errorf("shard %s carries no HMAC", cm.Name)
		}
	}
	if e.isLeader("replica-b") {
		t.Fatal("replica-b is labelled leader while replica-a holds the lease")
	}

	slow.Store(true) // every registry answer now takes 3 s, longer than verdictWait
	stopA(syscall.SIGKILL)
	killed := time.Now()
	e.create(e.pod("after", image.String()))
	e.waitLeader("replica-b", 30*time.Second)
	elected := time.Since(killed)
	if got := poolOf[e.waitBound("after", 30*time.Second)]; got != "trusted" {
		t.Errorf("after the failover the signed image landed in pool %q, want trusted by the followed verdict", got)
	}
	t.Logf("leader killed → standby elected in %s, pod bound %s after the kill (lease 3 s)", elected.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if note := e.waitPlacement("after", bindTimeout); !strings.Contains(note, "signature verified +30") {
		t.Errorf("explanation %q does not carry the leader's explanation", note)
	}
	stopB(syscall.SIGTERM)
	slow.Store(false)

	// What replica-b recorded: only its own placements, and the verdict it adopted, recorded
	// when it took over.
	st, err := store.Open(storeB, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Its own placement of after; and, filed at takeover, a "recovered" record for before,
	// whose placement is in replica-a's store, not this one (it may still have been queued).
	ds, _, err := st.Decisions(store.Page{}, func(d *store.Decision) bool { return d.Namespace == e.ns })
	actions := map[string][]string{}
	for _, d := range ds {
		actions[d.Pod] = append(actions[d.Pod], d.Action)
		if d.Pod == "after" && d.Tier != "trusted" {
			t.Errorf("replica-b placed after as %s, want trusted", d.Tier)
		}
	}
	after, before := actions["after"], actions["before"]
	if err != nil || len(actions) > 2 || len(after) != 1 || after[0] != "" ||
		len(before) > 1 || len(before) == 1 && before[0] != reputeruntime.ActionRecovered {
		t.Errorf("replica-b's decisions = %+v (%v), want its own placement of after, and at most a recovered record for before", ds, err)
	}
	if h, _, err := st.History(image.String(), store.Page{}); err != nil || len(h) == 0 || h[0].Verdict.Tier != "trusted" {
		t.Errorf("replica-b's history of the image = %+v (%v), want the trusted verdict it adopted", h, err)
	}
}

// startReplica runs one replica of the real binary with its own store, as the StatefulSet does.
// Each replica knows its pod, as the downward API tells it; the pod stands in for the replica's
// own and is never scheduled. stop sends a signal and waits for the exit.
func startReplica(t *testing.T, e *env, bin string, cfg controlplane.SchedulerConfig, name string) (stop func(syscall.Signal), storePath string) {
	t.Helper()
	e.create(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: v1.PodSpec{SchedulerName: "nobody", Containers: []v1.Container{{Name: "scheduler", Image: "repute-scheduler"}}}})
	cfg.StorePath = filepath.Join(t.TempDir(), "repute.db")
	cmd, stderr, exited := startBinaryWithEnv(t, bin, cfg.Render(), []string{"POD_NAME=" + name, "POD_NAMESPACE=" + e.ns}, "--secure-port=0")
	return func(sig syscall.Signal) {
		_ = cmd.Process.Signal(sig)
		<-exited
		if t.Failed() {
			t.Logf("%s's log, tail:\n%s", name, tail(stderr.String(), 20))
		}
	}, cfg.StorePath
}

// Two replicas; the leader is SIGKILLed halfway through a burst of pods (1000 under make soak,
// 200 in make test). Every pod is bound, in the pool of its tier and labelled with it: half run
// an image the policy trusts by origin, half one it distrusts, so a pod placed on anything the
// standby had not assessed would show in the wrong pool. The failover gap is reported.
func TestLeaderKilledDuringBurst(t *testing.T) {
	pods := 200
	if os.Getenv("REPUTE_SOAK") != "" {
		pods = 1000
	}
	bin := schedulerBinary(t)
	e := newEnv(t)
	applyDeployBase(t, e, false, "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
	poolOf := map[string]string{}
	for i := range pods/200 + 1 { // 110 pods fit a node
		for _, pool := range []string{"trusted", "untrusted"} {
			poolOf[e.node(fmt.Sprintf("%s-%d", pool, i), pool)] = pool
		}
	}
	cfg := e.config()
	cfg.Kubeconfig = kubeconfigFor(t, e, "kube-system", "repute-scheduler")
	cfg.LeaderElect, cfg.LeaseName, cfg.LeaseDuration = true, "repute-scheduler", 3*time.Second
	// As deploy/ runs it: the standby follows the leader's verdicts, so it takes over warm.
	cfg.MirrorNamespace = "kube-system"
	t.Cleanup(func() { deleteSnapshot(e) })
	stopA, _ := startReplica(t, e, bin, cfg, "replica-a")
	e.waitLeader("replica-a", 30*time.Second)
	stopB, _ := startReplica(t, e, bin, cfg, "replica-b")
	defer stopB(syscall.SIGTERM)

	names, tierOf := make([]string, pods), map[string]string{}
	for i := range names {
		names[i] = fmt.Sprintf("burst-%d", i)
		image, tier := trustedImage, "trusted"
		if i%2 == 1 {
			image, tier = untrustedImage, "untrusted"
		}
		tierOf[names[i]] = tier
		e.create(e.pod(names[i], image))
	}
	e.waitBoundCount(names, pods/2, bindTimeout)
	stopA(syscall.SIGKILL)
	killed := time.Now()
	e.waitLeader("replica-b", 30*time.Second)
	elected := time.Since(killed)
	e.waitBoundCount(names, pods, 60*time.Second)
	allBound := time.Since(killed)

	e.checkPlaced(tierOf, poolOf)
	t.Logf("%d pods: leader killed once %d were bound; standby elected %s after the kill (lease 3 s), every pod bound %s after it, each in its tier's pool",
		pods, pods/2, elected.Round(time.Millisecond), allBound.Round(time.Millisecond))
}

// checkPlaced checks that every named pod (tierOf: name → tier) is bound in its tier's pool
// (poolOf: node → pool) and labelled with its tier.
func (e *env) checkPlaced(tierOf, poolOf map[string]string) {
	e.t.Helper()
	list, err := e.client.CoreV1().Pods(e.ns).List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	checked := 0
	for _, p := range list.Items {
		want, ours := tierOf[p.Name]
		if !ours {
			continue
		}
		checked++
		if got := poolOf[p.Spec.NodeName]; got != want || p.Labels[placement.TierLabel] != want {
			e.t.Errorf("%s (%s) is on %s in pool %q labelled %q", p.Name, want, p.Spec.NodeName, got, p.Labels[placement.TierLabel])
		}
	}
	if checked != len(tierOf) {
		e.t.Fatalf("checked %d pods, want %d", checked, len(tierOf))
	}
}

// waitLeader waits until a replica's pod carries the leader label.
func (e *env) waitLeader(pod string, timeout time.Duration) {
	e.t.Helper()
	if err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return e.isLeader(pod), nil
	}); err != nil {
		e.t.Fatalf("%s never labelled %s=true: %v", pod, reputeruntime.LeaderLabel, err)
	}
}

func (e *env) isLeader(pod string) bool {
	p, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, pod, metav1.GetOptions{})
	return err == nil && p.Labels[reputeruntime.LeaderLabel] == "true"
}

// waitSnapshot waits until the snapshot in kube-system holds the image's verdict with the tier.
func (e *env) waitSnapshot(image, tier string, timeout time.Duration) {
	e.t.Helper()
	name := mirror.ShardName(mirror.ShardOf(image))
	var last string
	err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		cm, err := e.client.CoreV1().ConfigMaps("kube-system").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		s, err := mirror.Decode(cm.BinaryData[mirror.DataKey])
		if err != nil {
			return false, err
		}
		v := s.Verdicts[image]
		return v != nil && string(v.Tier) == tier, nil
	})
	if err != nil {
		e.t.Fatalf("ConfigMap kube-system/%s never held a %s verdict for %s: %v %s", name, tier, image, err, last)
	}
}

func deleteSnapshot(e *env) {
	err := e.client.CoreV1().Secrets("kube-system").Delete(context.Background(), "repute-mirror-key", metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Errorf("deleting the snapshot's key: %v", err)
	}
	for i := range mirror.Shards {
		err := e.client.CoreV1().ConfigMaps("kube-system").Delete(context.Background(), mirror.ShardName(i), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			e.t.Errorf("deleting the snapshot: %v", err)
		}
	}
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}
