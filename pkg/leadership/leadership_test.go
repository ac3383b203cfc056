package leadership

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/component-base/configz"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/component-base/metrics/testutil"
	configv1 "k8s.io/kube-scheduler/config/v1"
	"k8s.io/utils/ptr"
)

// publish does what app.Run does first: it publishes the scheduler's configuration.
func publish(t *testing.T, leaderElect bool) {
	t.Helper()
	cz, err := configz.New("componentconfig")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { configz.Delete("componentconfig") })
	cfg := &configv1.KubeSchedulerConfiguration{TypeMeta: metav1.TypeMeta{APIVersion: "kubescheduler.config.k8s.io/v1", Kind: "KubeSchedulerConfiguration"}}
	cfg.LeaderElection.LeaderElect = ptr.To(leaderElect)
	cfg.LeaderElection.ResourceName = "repute-scheduler"
	if err := cz.Set(cfg); err != nil {
		t.Fatal(err)
	}
}

func closedWithin(c <-chan struct{}, d time.Duration) bool {
	select {
	case <-c:
		return true
	case <-time.After(d):
		return false
	}
}

// Without leader election the replica schedules as soon as kube-scheduler runs: Elected waits
// for the configuration, not for a lease.
func TestElectedWithoutLeaderElection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	elected := Elected(ctx)
	if closedWithin(elected, 100*time.Millisecond) {
		t.Fatal("elected before kube-scheduler published whether election is on")
	}
	publish(t, false)
	if !closedWithin(elected, 5*time.Second) {
		t.Fatal("not elected although leader election is off")
	}
}

// Built by scheduler.New, with no app.Run to publish the configuration and no elector in the
// process, the plugin's process is the only scheduler: it is elected once embeddedAfter passes,
// rather than standing by forever. An elector in the process keeps it a standby.
func TestElectedWhenEmbeddedWithoutApp(t *testing.T) {
	saved := embeddedAfter
	embeddedAfter = 200 * time.Millisecond
	t.Cleanup(func() { embeddedAfter = saved })
	var electors int
	update(func() { electors, elections.electors = elections.electors, 0 })
	t.Cleanup(func() { update(func() { elections.electors = electors }) })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	elected := Elected(ctx)
	if closedWithin(elected, 100*time.Millisecond) {
		t.Fatal("elected before embeddedAfter passed")
	}
	if !closedWithin(elected, 2*time.Second) {
		t.Fatal("an embedded scheduler with no elector never schedules")
	}

	update(func() { elections.electors = 1 })
	withElector := Elected(ctx)
	if closedWithin(withElector, time.Second) {
		t.Fatal("elected without configuration while an elector runs in the process")
	}
}

// With leader election on, the replica stands by until client-go's real elector acquires the
// lease and reports it to the installed provider; the gauge kube-scheduler exports says so too.
func TestElectedWhenTheElectorAcquiresTheLease(t *testing.T) {
	Install()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	publish(t, true)
	elected := Elected(ctx)

	client := fake.NewClientset()
	// Another holder, whose lease has not expired, keeps this replica a standby at first.
	other, err := client.CoordinationV1().Leases("kube-system").Create(ctx, lease("other", time.Now(), 2), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "repute-scheduler"},
			Client: client.CoordinationV1(), LockConfig: resourcelock.ResourceLockConfig{Identity: "this-replica"}},
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond,
		Callbacks: leaderelection.LeaderCallbacks{OnStartedLeading: func(context.Context) {}, OnStoppedLeading: func() {}},
		Name:      "kube-scheduler", // as kube-scheduler names its elector, whatever the lease
	})
	if err != nil {
		t.Fatal(err)
	}
	go le.Run(ctx)
	if closedWithin(elected, 500*time.Millisecond) {
		t.Fatalf("elected while %s holds the lease", *other.Spec.HolderIdentity)
	}
	if !closedWithin(elected, 10*time.Second) {
		t.Fatal("not elected after the other holder's lease expired")
	}
	if err := testutil.GatherAndCompare(legacyregistry.DefaultGatherer, strings.NewReader(`
# HELP leader_election_master_status [ALPHA] Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.
# TYPE leader_election_master_status gauge
leader_election_master_status{name="kube-scheduler"} 1
`), "leader_election_master_status"); err != nil {
		t.Error(err)
	}
}

// lease is a lease held by holder, renewed at renewed, for seconds.
func lease(holder string, renewed time.Time, seconds int32) *coordinationv1.Lease {
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "repute-scheduler"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To(seconds),
			AcquireTime: &metav1.MicroTime{Time: renewed}, RenewTime: &metav1.MicroTime{Time: renewed}}}
}
