package integration

import (
	"context"
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
	cfg.MirrorNamespace = "kube-system"
	cfg.OriginRules = []controlplane.OriginRule{{Pattern: "127.0.0.1:*/*", Weight: 10}}
	cfg.RequireSignature = true
	cfg.SigningKeys = []controlplane.SigningKey{{Name: "ops", PEM: pem}}
	cfg.VerdictWait = "1s"

	// Each replica knows its pod, as the Deployment's downward API tells it; the pods stand in
	// for the replicas' own and are never scheduled.
	start := func(name string) (stop func(syscall.Signal), storePath string) {
		e.create(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
			Spec: v1.PodSpec{SchedulerName: "nobody", Containers: []v1.Container{{Name: "scheduler", Image: "repute-scheduler"}}}})
		c := cfg
		c.StorePath = filepath.Join(t.TempDir(), "repute.db")
		cmd, stderr, exited := startBinaryWithEnv(t, bin, c.Render(), []string{"POD_NAME=" + name, "POD_NAMESPACE=" + e.ns}, "--secure-port=0")
		return func(sig syscall.Signal) {
			_ = cmd.Process.Signal(sig)
			<-exited
			if t.Failed() {
				t.Logf("%s's log, tail:\n%s", name, tail(stderr.String(), 20))
			}
		}, c.StorePath
	}
	stopA, _ := start("replica-a")
	e.waitLeader("replica-a", 30*time.Second)
	stopB, storeB := start("replica-b")

	e.create(e.pod("before", image.String()))
	if got := poolOf[e.waitBound("before", bindTimeout)]; got != "trusted" {
		t.Fatalf("the signed image landed in pool %q, want trusted", got)
	}
	e.waitSnapshot(image.String(), "trusted", 10*time.Second)
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
