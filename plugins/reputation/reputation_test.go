package reputation

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/defaultbinder"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/queuesort"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	schedmetrics "k8s.io/kubernetes/pkg/scheduler/metrics"
	st "k8s.io/kubernetes/pkg/scheduler/testing"
	tf "k8s.io/kubernetes/pkg/scheduler/testing/framework"

	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/apis/config"
	configv1 "github.com/repute-dev/repute/pkg/apis/config/v1"
	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/engine"
	reputeruntime "github.com/repute-dev/repute/pkg/runtime"
	"github.com/repute-dev/repute/reputation"
)

const (
	poolKey        = configv1.DefaultPoolLabelKey
	trustedImage   = "registry.internal/team/app@sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb"
	unknownImage   = "docker.io/bitnami/redis:7"
	untrustedImage = "quay.io/evil/miner:latest"
)

// testArgs are defaulted args with the example origin rules.
func testArgs() *config.ReputationArgs {
	v1args := &configv1.ReputationArgs{}
	configv1.SetObjectDefaults_ReputationArgs(v1args)
	v1args.Policy.Origin.Rules = []v1alpha1.OriginRule{
		{Pattern: "registry.internal/*", Tier: "trusted"},
		{Pattern: "docker.io/*", Tier: "unknown"},
		{Pattern: "*", Tier: "untrusted"},
	}
	// These tests are about placement; origin alone decides the tier here, and no tier asks
	// for a Pod Security level (TestPodSecurityPerTier restores the defaults).
	v1args.Policy.Signature.RequireForTrusted = ptr.To(false)
	v1args.Pools.Unknown.PodSecurity, v1args.Pools.Untrusted.PodSecurity = "privileged", "privileged"
	var args config.ReputationArgs
	if err := configv1.Convert_v1_ReputationArgs_To_config_ReputationArgs(v1args, &args, nil); err != nil {
		panic(err)
	}
	return &args
}

// newTestPlugin builds the plugin around a cache filled synchronously by the real evaluation:
// for unit tests of the extension points. The engine does not run.
func newTestPlugin(t testing.TB, args *config.ReputationArgs, images ...string) *Reputation {
	t.Helper()
	return newPluginWith(t, args, testEngine(t, args, images...), reputeruntime.Options{Elected: make(chan struct{})}, nil)
}

// testEngine is an engine with no evidence sources whose cache holds the images' verdicts.
func testEngine(t testing.TB, args *config.ReputationArgs, images ...string) *engine.Engine {
	t.Helper()
	policy, err := reputation.NewPolicy(config.Policy(&args.Policy))
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Options{Policy: policy})
	for _, img := range images {
		eng.Cache().Publish(img, eng.Evaluate(context.Background(), img))
	}
	return eng
}

// newPluginWith builds the plugin through its real factory (New's), in a framework over a fake
// clientset; activator, when set, receives the pods the plugin activates.
func newPluginWith(t testing.TB, args *config.ReputationArgs, eng *engine.Engine, opts reputeruntime.Options, activator fwk.PodActivator) *Reputation {
	t.Helper()
	schedmetrics.Register() // the framework records into kube-scheduler's metrics
	client := fake.NewClientset()
	frameworkOpts := []frameworkruntime.Option{
		frameworkruntime.WithClientSet(client),
		frameworkruntime.WithInformerFactory(informers.NewSharedInformerFactory(client, 0)),
	}
	if activator != nil {
		frameworkOpts = append(frameworkOpts, frameworkruntime.WithPodActivator(activator))
	}
	opts.Engine = eng
	var pl *Reputation
	factory := func(ctx context.Context, _ runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
		p, err := NewFactory(opts)(ctx, args, h)
		if err == nil {
			pl = p.(*Reputation)
		}
		return p, err
	}
	_, err := tf.NewFramework(t.Context(), []tf.RegisterPluginFunc{
		tf.RegisterQueueSortPlugin(queuesort.Name, queuesort.New),
		tf.RegisterBindPlugin(defaultbinder.Name, defaultbinder.New),
		tf.RegisterPluginAsExtensions(Name, factory, "PreEnqueue", "PreFilter", "Filter", "Score"),
	}, "repute-scheduler", frameworkOpts...)
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

func poolTaint(pool string) v1.Taint {
	return v1.Taint{Key: poolKey, Value: pool, Effect: v1.TaintEffectNoSchedule}
}

func poolNode(name, pool string, taints ...v1.Taint) *v1.Node {
	w := st.MakeNode().Name(name)
	if pool != "" {
		w = w.Label(poolKey, pool)
	}
	return w.Taints(taints).Obj()
}

func nodeInfo(n *v1.Node, pods ...*v1.Pod) *framework.NodeInfo {
	ni := framework.NewNodeInfo(pods...)
	ni.SetNode(n)
	return ni
}

func TestPreFilterWorstTierWins(t *testing.T) {
	pl := newTestPlugin(t, testArgs(), trustedImage, unknownImage, untrustedImage)
	imageVolume := v1.Volume{Name: "data", VolumeSource: v1.VolumeSource{Image: &v1.ImageVolumeSource{Reference: untrustedImage}}}
	tests := []struct {
		name      string
		pod       *v1.Pod
		wantTier  reputation.Tier
		wantImage string
		wantScore int
	}{
		{"one trusted container", st.MakePod().Container(trustedImage).Obj(), reputation.TierTrusted, trustedImage, 50},
		{"trusted and unknown", st.MakePod().Container(trustedImage).Container(unknownImage).Obj(), reputation.TierUnknown, unknownImage, 40},
		{"untrusted init container", withInit(st.MakePod().Container(trustedImage).Obj(), untrustedImage), reputation.TierUntrusted, untrustedImage, 40},
		{"untrusted ephemeral container", withEphemeral(st.MakePod().Container(trustedImage).Obj(), untrustedImage), reputation.TierUntrusted, untrustedImage, 40},
		{"untrusted image volume", st.MakePod().Container(trustedImage).Volume(imageVolume).Obj(), reputation.TierUntrusted, untrustedImage, 40},
		{"labels and annotations do not raise trust", st.MakePod().Container(untrustedImage).Label("repute.dev/tier", "trusted").Annotation("repute.dev/tier", "trusted").Obj(), reputation.TierUntrusted, untrustedImage, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := framework.NewCycleState()
			if _, st := pl.PreFilter(context.Background(), cs, tt.pod, nil); !st.IsSuccess() {
				t.Fatalf("PreFilter: %v", st)
			}
			s := pl.readState(cs, tt.pod)
			if s.Tier != tt.wantTier || s.Image != tt.wantImage || s.Score != tt.wantScore {
				t.Errorf("state = tier %s image %s score %d, want %s %s %d", s.Tier, s.Image, s.Score, tt.wantTier, tt.wantImage, tt.wantScore)
			}
			if s.pool.Name != string(tt.wantTier) {
				t.Errorf("pool = %s, want %s", s.pool.Name, tt.wantTier)
			}
		})
	}
}

// A pod that reaches PreFilter with an image that has no verdict waits there for it; should a
// caller skip PreFilter, the recomputed state treats that image as unknown, never trusted.
func TestPreFilterWaitsForMissingVerdicts(t *testing.T) {
	pl := newTestPlugin(t, testArgs(), trustedImage)
	pod := st.MakePod().Namespace("ns").Name("p").Container(trustedImage).Container("registry.internal/new:1").Obj()
	cs := framework.NewCycleState()
	_, s := pl.PreFilter(context.Background(), cs, pod, nil)
	if s.Code() != fwk.UnschedulableAndUnresolvable || s.Message() != ErrReasonWaitingForVerdict {
		t.Fatalf("PreFilter = %v, want to wait for the verdict", s)
	}
	if waiting := pl.waiting.take("registry.internal/new:1"); len(waiting) != 1 {
		t.Errorf("pod not recorded as waiting for the missing verdict: %v", waiting)
	}
	if st := pl.readState(cs, pod); st.Tier != reputation.TierUnknown || st.Missing != 1 {
		t.Errorf("recomputed state = tier %s, missing %d; want unknown, 1", st.Tier, st.Missing)
	}
}

func withInit(pod *v1.Pod, image string) *v1.Pod {
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, v1.Container{Name: "init", Image: image})
	return pod
}

func withEphemeral(pod *v1.Pod, image string) *v1.Pod {
	pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, v1.EphemeralContainer{EphemeralContainerCommon: v1.EphemeralContainerCommon{Name: "debug", Image: image}})
	return pod
}

func TestFilter(t *testing.T) {
	unpooledArgs := testArgs()
	unpooledArgs.Pools.Trusted.AllowUnpooledNodes = true
	otherTaint := v1.Taint{Key: "gpu", Value: "true", Effect: v1.TaintEffectNoSchedule}
	preferTaint := v1.Taint{Key: "spot", Effect: v1.TaintEffectPreferNoSchedule}
	tests := []struct {
		name string
		args *config.ReputationArgs
		pod  *v1.Pod
		node *v1.Node
		want *fwk.Status
	}{
		{"trusted pod, trusted pool", nil, st.MakePod().Container(trustedImage).Obj(), poolNode("n", "trusted"), nil},
		{"trusted pod, untrusted pool", nil, st.MakePod().Container(trustedImage).Obj(), poolNode("n", "untrusted"), fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonNotInPool)},
		{"untrusted pod, trusted pool", nil, st.MakePod().Container(untrustedImage).Obj(), poolNode("n", "trusted"), fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonNotInPool)},
		{"untrusted pod tolerates its own pool taint implicitly", nil, st.MakePod().Container(untrustedImage).Obj(), poolNode("n", "untrusted", poolTaint("untrusted")), nil},
		{"unknown pod, unknown pool with NoExecute pool taint", nil, st.MakePod().Container(unknownImage).Obj(), poolNode("n", "unknown", v1.Taint{Key: poolKey, Value: "unknown", Effect: v1.TaintEffectNoExecute}), nil},
		{"a foreign pool taint is not tolerated", nil, st.MakePod().Container(untrustedImage).Obj(), poolNode("n", "untrusted", poolTaint("unknown")), fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonUntoleratedTaint)},
		{"other taints still apply", nil, st.MakePod().Container(untrustedImage).Obj(), poolNode("n", "untrusted", poolTaint("untrusted"), otherTaint), fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonUntoleratedTaint)},
		{"other taints can be tolerated as usual", nil, st.MakePod().Container(untrustedImage).Toleration("gpu").Obj(), poolNode("n", "untrusted", poolTaint("untrusted"), otherTaint), nil},
		{"PreferNoSchedule taints do not filter", nil, st.MakePod().Container(trustedImage).Obj(), poolNode("n", "trusted", preferTaint), nil},
		{"unpooled node refused by default", nil, st.MakePod().Container(trustedImage).Obj(), poolNode("n", ""), fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonNotInPool)},
		{"unpooled node allowed when the tier allows it", unpooledArgs, st.MakePod().Container(trustedImage).Obj(), poolNode("n", ""), nil},
		{"unpooled allowance is per tier", unpooledArgs, st.MakePod().Container(untrustedImage).Obj(), poolNode("n", ""), fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonNotInPool)},
		{"a pool label on the pod does not move it", nil, st.MakePod().Container(untrustedImage).Label(poolKey, "trusted").Obj(), poolNode("n", "trusted"), fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonNotInPool)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if args == nil {
				args = testArgs()
			}
			pl := newTestPlugin(t, args, trustedImage, unknownImage, untrustedImage)
			for _, withPreFilter := range []bool{true, false} {
				cs := framework.NewCycleState()
				if withPreFilter {
					pl.PreFilter(context.Background(), cs, tt.pod, nil)
				}
				got := pl.Filter(context.Background(), cs, tt.pod, nodeInfo(tt.node))
				if diff := cmp.Diff(tt.want.Code(), got.Code()); diff != "" {
					t.Errorf("Filter (prefilter run: %v) code (-want,+got):\n%s", withPreFilter, diff)
				}
				if diff := cmp.Diff(reasons(tt.want), reasons(got)); diff != "" {
					t.Errorf("Filter (prefilter run: %v) reasons (-want,+got):\n%s", withPreFilter, diff)
				}
			}
		})
	}
}

func reasons(s *fwk.Status) []string {
	if s == nil {
		return nil
	}
	return s.Reasons()
}

func TestScore(t *testing.T) {
	pl := newTestPlugin(t, testArgs(), trustedImage, untrustedImage)
	node := func(name, pool string) *v1.Node {
		return st.MakeNode().Name(name).Label(poolKey, pool).Capacity(map[v1.ResourceName]string{"cpu": "4", "memory": "8Gi", "pods": "10"}).Obj()
	}
	busy := st.MakePod().Req(map[v1.ResourceName]string{"cpu": "2", "memory": "1Gi"}).Obj()
	tests := []struct {
		name      string
		pod       *v1.Pod
		node      *framework.NodeInfo
		wantScore int64
	}{
		{"trusted packs: empty node scores low", st.MakePod().Container(trustedImage).Obj(), nodeInfo(node("a", "trusted")), 0},
		{"trusted packs: half-full node scores 50", st.MakePod().Container(trustedImage).Obj(), nodeInfo(node("a", "trusted"), busy), 50},
		{"untrusted spreads: empty node scores 100", st.MakePod().Container(untrustedImage).Obj(), nodeInfo(node("a", "untrusted")), 100},
		{"untrusted spreads: half-full node scores 50", st.MakePod().Container(untrustedImage).Obj(), nodeInfo(node("a", "untrusted"), busy), 50},
		{"pod count counts when requests are empty", st.MakePod().Container(untrustedImage).Obj(), nodeInfo(node("a", "untrusted"), st.MakePod().Obj(), st.MakePod().Obj()), 80},
		{"a node without allocatable scores in range", st.MakePod().Container(untrustedImage).Obj(), nodeInfo(st.MakeNode().Name("z").Obj()), 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := framework.NewCycleState()
			pl.PreFilter(context.Background(), cs, tt.pod, nil)
			got, status := pl.Score(context.Background(), cs, tt.pod, tt.node)
			if !status.IsSuccess() {
				t.Fatal(status)
			}
			if got != tt.wantScore {
				t.Errorf("Score = %d, want %d", got, tt.wantScore)
			}
		})
	}
}

func TestNodeChangeQueueingHint(t *testing.T) {
	pl := newTestPlugin(t, testArgs(), untrustedImage)
	pod := st.MakePod().Name("p").Container(untrustedImage).Obj()
	tests := []struct {
		name     string
		old, new *v1.Node
		want     fwk.QueueingHint
	}{
		{"node added to the pod's pool", nil, poolNode("n", "untrusted", poolTaint("untrusted")), fwk.Queue},
		{"node added to another pool", nil, poolNode("n", "trusted"), fwk.QueueSkip},
		{"node labelled into the pod's pool", poolNode("n", ""), poolNode("n", "untrusted"), fwk.Queue},
		{"node relabelled out of the pod's pool", poolNode("n", "untrusted"), poolNode("n", "trusted"), fwk.QueueSkip},
		{"unrelated change on a node that already admitted it", poolNode("n", "untrusted"), poolNode("n", "untrusted"), fwk.QueueSkip},
		{"foreign taint removed in the pod's pool", poolNode("n", "untrusted", v1.Taint{Key: "x", Effect: v1.TaintEffectNoSchedule}), poolNode("n", "untrusted"), fwk.Queue},
	}
	// A pod with an image that has no verdict is requeued (PreEnqueue then holds it), and the
	// verdict is requested.
	withNew := withEphemeral(pod.DeepCopy(), "registry.internal/new:1")
	if got, _ := pl.isSchedulableAfterNodeChange(klog.Background(), withNew, nil, poolNode("n", "trusted")); got != fwk.Queue {
		t.Errorf("hint for a pod with an unassessed image = %v, want Queue", got)
	}
	if pods := pl.waiting.take("registry.internal/new:1"); len(pods) != 1 {
		t.Errorf("pod not recorded as waiting for its unassessed image: %v", pods)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var oldObj interface{}
			if tt.old != nil {
				oldObj = tt.old
			}
			got, err := pl.isSchedulableAfterNodeChange(klog.Background(), pod, oldObj, tt.new)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("hint = %v, want %v", got, tt.want)
			}
		})
	}
}

// fakeActivator records activations.
type fakeActivator struct {
	mu        sync.Mutex
	activated map[string]*v1.Pod
}

func (f *fakeActivator) Activate(_ klog.Logger, pods map[string]*v1.Pod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, p := range pods {
		f.activated[k] = p
	}
}

func (f *fakeActivator) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return keys(f.activated)
}

// heldRegistry answers once released: the verdict cannot arrive before the test has looked.
type heldRegistry chan struct{}

func (heldRegistry) Name() string { return "held registry" }
func (h heldRegistry) Collect(ctx context.Context, _ *reputation.Evidence) error {
	select {
	case <-h:
	case <-ctx.Done():
	}
	return nil
}

func TestPreEnqueueGatesUntilVerdictThenActivates(t *testing.T) {
	act := &fakeActivator{activated: map[string]*v1.Pod{}}
	// The engine runs (this replica leads), so the missing verdict arrives by itself, once the
	// registry answers.
	registry := make(heldRegistry)
	known := testEngine(t, testArgs(), trustedImage)
	eng := engine.New(engine.Options{Policy: known.Policy(), Sources: []reputation.EvidenceSource{registry}})
	eng.Cache().Publish(trustedImage, known.Cache().Get(trustedImage))
	pl := newPluginWith(t, testArgs(), eng, reputeruntime.Options{}, act)

	ready := st.MakePod().Namespace("ns").Name("ready").Container(trustedImage).Obj()
	if s := pl.PreEnqueue(context.Background(), ready); !s.IsSuccess() {
		t.Fatalf("pod whose images have verdicts was gated: %v", s)
	}
	newImage := "registry.internal/team/new@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	waiting := withInit(st.MakePod().Namespace("ns").Name("waiting").Container(trustedImage).Obj(), newImage)
	s := pl.PreEnqueue(context.Background(), waiting)
	if s.Code() != fwk.UnschedulableAndUnresolvable || s.Message() != ErrReasonWaitingForVerdict {
		t.Fatalf("PreEnqueue = %v, want gated waiting for verdict", s)
	}
	close(registry)
	deadline := time.Now().Add(5 * time.Second)
	for len(act.names()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := act.names(); len(got) != 1 || got[0] != "ns/waiting" {
		t.Fatalf("activated = %v, want exactly ns/waiting", got)
	}
	if s := pl.PreEnqueue(context.Background(), waiting); !s.IsSuccess() {
		t.Errorf("after the verdict, PreEnqueue = %v", s)
	}
}

func keys(m map[string]*v1.Pod) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestSignPodSeparatesTiers(t *testing.T) {
	pl := newTestPlugin(t, testArgs(), trustedImage, untrustedImage)
	sign := func(p *v1.Pod) []fwk.SignFragment {
		f, s := pl.SignPod(context.Background(), p)
		if !s.IsSuccess() {
			t.Fatal(s)
		}
		return f
	}
	a := sign(st.MakePod().Name("a").Container(trustedImage).Obj())
	b := sign(st.MakePod().Name("b").Container(trustedImage).Obj())
	c := sign(st.MakePod().Name("c").Container(untrustedImage).Obj())
	if !cmp.Equal(a, b) {
		t.Errorf("two trusted pods sign differently: %v vs %v", a, b)
	}
	if cmp.Equal(a, c) {
		t.Errorf("a trusted and an untrusted pod sign the same: %v", a)
	}
}

// A pod's images are resolved once per scheduling attempt: PreFilter reuses SignPod's answer
// for the same pod object while no verdict changes, and resolves again when one does, or for
// an updated pod object.
func TestImagesResolvedOncePerAttempt(t *testing.T) {
	args := testArgs()
	pl := newTestPlugin(t, args, trustedImage)
	pod := st.MakePod().Name("p").UID("p").Container(trustedImage).Obj()
	ctx := context.Background()

	if _, s := pl.SignPod(ctx, pod); !s.IsSuccess() {
		t.Fatal(s)
	}
	signed := pl.lastResolved.Load()
	cs := framework.NewCycleState()
	if _, s := pl.PreFilter(ctx, cs, pod, nil); !s.IsSuccess() {
		t.Fatal(s)
	}
	if got := pl.readState(cs, pod); got != signed {
		t.Fatalf("PreFilter resolved the pod again: state %p, SignPod's %p", got, signed)
	}

	// A verdict published between the two calls is seen: the untrusted verdict now applies.
	pl.verdicts.Publish(trustedImage, &reputation.Verdict{Image: trustedImage, Tier: reputation.TierUntrusted, Score: 10, DecidedBy: "test"})
	cs = framework.NewCycleState()
	if _, s := pl.PreFilter(ctx, cs, pod, nil); !s.IsSuccess() {
		t.Fatal(s)
	}
	if got := pl.readState(cs, pod).Tier; got != reputation.TierUntrusted {
		t.Fatalf("after a new verdict PreFilter placed the pod %s, want untrusted", got)
	}

	// An updated pod object (another image) is resolved afresh.
	updated := pod.DeepCopy()
	updated.Spec.Containers[0].Image = unknownImage
	pl.verdicts.Publish(unknownImage, &reputation.Verdict{Image: unknownImage, Tier: reputation.TierUnknown, Score: 40, DecidedBy: "test"})
	if _, s := pl.SignPod(ctx, pod); !s.IsSuccess() { // the old object resolved last
		t.Fatal(s)
	}
	cs = framework.NewCycleState()
	if _, s := pl.PreFilter(ctx, cs, updated, nil); !s.IsSuccess() {
		t.Fatal(s)
	}
	if got := pl.readState(cs, updated).Tier; got != reputation.TierUnknown {
		t.Fatalf("the updated pod was placed %s, want unknown (its new image)", got)
	}
}
