package runtime

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/repute-dev/repute/pkg/apis/config"
	configv1 "github.com/repute-dev/repute/pkg/apis/config/v1"
	"github.com/repute-dev/repute/pkg/engine"
	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/reputation"
)

// handle is what a scheduler gives a profile: its clientset and its informer factory.
type handle struct {
	client    kubernetes.Interface
	informers informers.SharedInformerFactory
}

func (h handle) ClientSet() kubernetes.Interface                        { return h.client }
func (h handle) KubeConfig() *rest.Config                               { return nil }
func (h handle) SharedInformerFactory() informers.SharedInformerFactory { return h.informers }

func newHandle() handle {
	client := fake.NewClientset()
	return handle{client: client, informers: informers.NewSharedInformerFactory(client, 0)}
}

func defaultedArgs(t *testing.T) *config.ReputationArgs {
	t.Helper()
	v1args := &configv1.ReputationArgs{}
	configv1.SetObjectDefaults_ReputationArgs(v1args)
	var args config.ReputationArgs
	if err := configv1.Convert_v1_ReputationArgs_To_config_ReputationArgs(v1args, &args, nil); err != nil {
		t.Fatal(err)
	}
	return &args
}

// Profiles of one scheduler (one informer factory) share a runtime, and may differ only in
// their pools; another scheduler in the process gets its own.
func TestOneRuntimePerScheduler(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := Options{Engine: engine.New(engine.Options{}), Elected: make(chan struct{})}
	scheduler := newHandle()
	first, err := For(ctx, scheduler, defaultedArgs(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mutate  func(*config.ReputationArgs)
		wantErr bool
	}{
		{"same args", func(*config.ReputationArgs) {}, false},
		{"its own pools", func(a *config.ReputationArgs) {
			a.PoolLabelKey, a.Pools.Trusted.Name = "example.com/pool", "gold"
			a.Untrusted.MaxPodsPerNode = 3
		}, false},
		{"another store", func(a *config.ReputationArgs) { a.Store.Path = "/var/lib/other.db" }, true},
		{"another policy", func(a *config.ReputationArgs) { a.Policy.BaseScore = 40 }, true},
		{"another Falco endpoint", func(a *config.ReputationArgs) { a.Falco.BindAddress = ":9443" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := defaultedArgs(t)
			tt.mutate(args)
			rt, err := For(ctx, scheduler, args, opts)
			switch {
			case tt.wantErr && (err == nil || !strings.Contains(err.Error(), "may differ only in poolLabelKey, pools and untrusted")):
				t.Errorf("For = %v, want the profiles' disagreement named", err)
			case !tt.wantErr && (err != nil || rt != first):
				t.Errorf("For = %p, %v; want the scheduler's runtime %p", rt, err, first)
			}
		})
	}
	other, err := For(ctx, newHandle(), defaultedArgs(t), opts)
	if err != nil || other == first {
		t.Errorf("another scheduler got %p, %v; want a runtime of its own", other, err)
	}
	if !first.Ready() || first.Leading() {
		t.Errorf("ready %v, leading %v; an engine brought by the caller is ready at once, and this one is not elected", first.Ready(), first.Leading())
	}
}

func TestAProfileEnablesReputationOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt, err := For(ctx, newHandle(), defaultedArgs(t), Options{Engine: engine.New(engine.Options{}), Elected: make(chan struct{})})
	if err != nil {
		t.Fatal(err)
	}
	p := placementProfile("repute-scheduler")
	if err := rt.AddProfile(p); err != nil {
		t.Fatal(err)
	}
	if err := rt.AddProfile(placementProfile("repute-scheduler")); err == nil {
		t.Error("the same profile registered twice")
	}
	if rt.Profile("repute-scheduler") != p || rt.Profile("default-scheduler") != nil {
		t.Error("profiles are not told apart by schedulerName")
	}
}

func placementProfile(name string) *placement.Profile { return &placement.Profile{Name: name} }

// A remembered verdict is placed by only while it was decided under the policy in force and
// within the re-verification period; otherwise it is at most unknown. It never raises trust.
func TestWarmVerdicts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt, err := For(ctx, newHandle(), defaultedArgs(t), Options{Engine: engine.New(engine.Options{}), Elected: make(chan struct{})})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	current := rt.Policy().Version()
	verdict := func(tier reputation.Tier, policy string, age time.Duration) *reputation.Verdict {
		return &reputation.Verdict{Image: "reg/app:v1", Tier: tier, Score: 90, PolicyVersion: policy, EvaluatedAt: now.Add(-age), DecidedBy: "score 90"}
	}
	tests := []struct {
		name     string
		in       *reputation.Verdict
		wantTier reputation.Tier
	}{
		{"current policy, recent", verdict(reputation.TierTrusted, current, time.Minute), reputation.TierTrusted},
		{"another policy (or key set)", verdict(reputation.TierTrusted, "p-older", time.Minute), reputation.TierUnknown},
		{"older than the re-verification period", verdict(reputation.TierTrusted, current, 30*24*time.Hour), reputation.TierUnknown},
		{"untrusted stays untrusted", verdict(reputation.TierUntrusted, "p-older", 30*24*time.Hour), reputation.TierUntrusted},
	}
	for _, tt := range tests {
		got := rt.warm(tt.in, now)
		if got.Tier != tt.wantTier {
			t.Errorf("%s: warmed as %s (%s), want %s", tt.name, got.Tier, got.DecidedBy, tt.wantTier)
		}
		if got.Tier != tt.in.Tier && (!got.Provisional || !strings.Contains(got.DecidedBy, "remembered verdict")) {
			t.Errorf("%s: a capped verdict must be provisional and say why: %+v", tt.name, got)
		}
	}
}

// The engine forgets images no pod uses: a pod uses the images its spec names and the digests
// its kubelet pulled for tags, for as long as the pod exists.
func TestImagesInUseFollowPods(t *testing.T) {
	h := newHandle()
	rt := &Runtime{informers: h.informers}
	inUse, err := rt.imagesInUse()
	if err != nil {
		t.Fatal(err)
	}
	const pulled = "sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb"
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "api"},
		Spec:   v1.PodSpec{Containers: []v1.Container{{Name: "app", Image: "registry.internal/team/api:v1"}}},
		Status: v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{{Name: "app", ImageID: "registry.internal/team/api@" + pulled}}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := h.client.CoreV1().Pods("team").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.informers.Start(ctx.Done())
	h.informers.WaitForCacheSync(ctx.Done())
	tests := []struct {
		image string
		want  bool
	}{
		{"registry.internal/team/api:v1", true},
		{"registry.internal/team/api@" + pulled, true},
		{"registry.internal/team/other:v1", false},
	}
	for _, tt := range tests {
		if got := inUse(tt.image); got != tt.want {
			t.Errorf("inUse(%q) = %v, want %v", tt.image, got, tt.want)
		}
	}
	if err := h.client.CoreV1().Pods("team").Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return !inUse("registry.internal/team/api:v1"), nil
	}); err != nil {
		t.Error("the image is still in use after its only pod was deleted")
	}
}
