// Package bench measures a full scheduling cycle of the real kube-scheduler framework —
// PreFilter, Filter over every node, PreScore, Score — for the default profile and for the
// default profile plus Reputation (as deploy/ configures it), in the same run, and reports the
// ratio.
package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/events"
	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/kubernetes/pkg/scheduler/apis/config/latest"
	"k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/names"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/nodevolumelimits"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	schedmetrics "k8s.io/kubernetes/pkg/scheduler/metrics"
	st "k8s.io/kubernetes/pkg/scheduler/testing"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/apis/config"
	configv1 "github.com/repute-dev/repute/pkg/apis/config/v1"
	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/engine"
	"github.com/repute-dev/repute/plugins/reputation"
	domain "github.com/repute-dev/repute/reputation"
)

const (
	poolKey      = configv1.DefaultPoolLabelKey
	trustedImage = "registry.internal/team/api@sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb"
	podsPerNode  = 10
)

// cluster builds n nodes with podsPerNode running pods each, every node in the trusted pool
// (labelled and tainted). Both profiles see the same cluster and the same pod, which tolerates
// the pool taint so that the default profile finds every node feasible too: the ratio isolates
// the cost Reputation adds.
func cluster(n int) ([]*v1.Node, []*v1.Pod) {
	var nodes []*v1.Node
	var pods []*v1.Pod
	for i := range n {
		node := st.MakeNode().Name(fmt.Sprintf("node-%d", i)).Label("kubernetes.io/hostname", fmt.Sprintf("node-%d", i)).
			Capacity(map[v1.ResourceName]string{"cpu": "32", "memory": "128Gi", "pods": "110"}).
			Label(poolKey, "trusted").Taints([]v1.Taint{{Key: poolKey, Value: "trusted", Effect: v1.TaintEffectNoSchedule}}).Obj()
		nodes = append(nodes, node)
		for j := range podsPerNode {
			pods = append(pods, st.MakePod().Name(fmt.Sprintf("p-%d-%d", i, j)).Namespace("default").UID(fmt.Sprintf("p-%d-%d", i, j)).
				Node(node.Name).Container(trustedImage).Req(map[v1.ResourceName]string{"cpu": "500m", "memory": "1Gi"}).Obj())
		}
	}
	return nodes, pods
}

// profile is the default profile, optionally with Reputation added as deploy/ configures it.
func profile(b *testing.B, withReputation bool) *schedconfig.KubeSchedulerProfile {
	cfg, err := latest.Default()
	if err != nil {
		b.Fatal(err)
	}
	p := cfg.Profiles[0]
	// Dynamic resource allocation needs a DRA manager wired to informers; the benchmark pod
	// claims no devices, so the plugin is left out of both profiles alike.
	enabled := p.Plugins.MultiPoint.Enabled[:0:0]
	for _, pl := range p.Plugins.MultiPoint.Enabled {
		if pl.Name != names.DynamicResources {
			enabled = append(enabled, pl)
		}
	}
	p.Plugins.MultiPoint.Enabled = enabled
	if withReputation {
		p.Plugins.MultiPoint.Enabled = append(p.Plugins.MultiPoint.Enabled, schedconfig.Plugin{Name: reputation.Name, Weight: 3})
		p.Plugins.Filter.Disabled = append(p.Plugins.Filter.Disabled, schedconfig.Plugin{Name: names.TaintToleration})
		v1args := &configv1.ReputationArgs{}
		configv1.SetObjectDefaults_ReputationArgs(v1args)
		v1args.Policy.Origin.Rules = []v1alpha1.OriginRule{{Pattern: "registry.internal/*", Tier: "trusted"}}
		v1args.Policy.Signature.RequireForTrusted = ptr.To(false) // the cycle reads a verdict; how it was reached does not matter
		args := &config.ReputationArgs{}
		if err := configv1.Convert_v1_ReputationArgs_To_config_ReputationArgs(v1args, args, nil); err != nil {
			panic(err)
		}
		p.PluginConfig = append(p.PluginConfig, schedconfig.PluginConfig{Name: reputation.Name, Args: args})
	}
	return &p
}

// newFramework builds the real framework over a snapshot of the cluster.
func newFramework(b *testing.B, ctx context.Context, prof *schedconfig.KubeSchedulerProfile, nodes []*v1.Node, pods []*v1.Pod) (framework.Framework, []fwk.NodeInfo) {
	// Only the Reputation profile instantiates the plugin; the default profile never reads engine.
	var eng *engine.Engine
	if a, ok := prof.PluginConfig[len(prof.PluginConfig)-1].Args.(*config.ReputationArgs); ok {
		pol, err := domain.NewPolicy(config.Policy(&a.Policy))
		if err != nil {
			b.Fatal(err)
		}
		eng = engine.New(engine.Options{Policy: pol})
		// The verdict is in the cache, as it is for every pod after its first cycle.
		eng.Cache().Publish(trustedImage, eng.Evaluate(ctx, trustedImage))
	}
	schedmetrics.Register()
	registry := plugins.NewInTreeRegistry()
	if err := registry.Register(reputation.Name, reputation.NewWithEngine(eng)); err != nil {
		b.Fatal(err)
	}
	// Nodes reach the framework through the informer, as in the scheduler, so plugins that
	// index informer objects see the same objects the snapshot holds.
	client := fake.NewClientset()
	for _, n := range nodes {
		if _, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	informerFactory := informers.NewSharedInformerFactory(client, 0)
	nodeLister := informerFactory.Core().V1().Nodes().Lister()
	snapshotHolder := &lazySnapshot{}
	f, err := frameworkruntime.NewFramework(ctx, registry, prof,
		frameworkruntime.WithClientSet(client),
		frameworkruntime.WithInformerFactory(informerFactory),
		frameworkruntime.WithSnapshotSharedLister(snapshotHolder),
		frameworkruntime.WithSharedCSIManager(nodevolumelimits.NewCSIManager(informerFactory.Storage().V1().CSINodes().Lister())),
		frameworkruntime.WithEventRecorder(&events.FakeRecorder{}),
		frameworkruntime.WithWaitingPods(frameworkruntime.NewWaitingPodsMap()),
		// As in the scheduler: plugin durations are sampled into an asynchronous recorder.
		frameworkruntime.WithMetricsRecorder(schedmetrics.NewMetricsAsyncRecorder(1000, time.Second, ctx.Done())),
	)
	if err != nil {
		b.Fatal(err)
	}
	informerFactory.Start(ctx.Done())
	informerFactory.WaitForCacheSync(ctx.Done())
	// Let indexes fed by informer events settle (Reputation publishes its node index in
	// batches), as they have in a scheduler that has been running for a while.
	time.Sleep(500 * time.Millisecond)
	informed, err := nodeLister.List(labels.Everything())
	if err != nil || len(informed) != len(nodes) {
		b.Fatalf("informer has %d of %d nodes: %v", len(informed), len(nodes), err)
	}
	snapshot := cache.NewSnapshot(pods, informed)
	snapshotHolder.Snapshot = snapshot
	infos, err := snapshot.NodeInfos().List()
	if err != nil {
		b.Fatal(err)
	}
	return f, infos
}

// lazySnapshot lets the framework be built before the informer-fed snapshot exists.
type lazySnapshot struct{ *cache.Snapshot }

// cycle runs one scheduling cycle for pod over every node, as the scheduler does when it
// evaluates all nodes, and returns how many nodes were feasible.
func cycle(ctx context.Context, b *testing.B, f framework.Framework, pod *v1.Pod, nodes []fwk.NodeInfo, feasible []fwk.NodeInfo) []fwk.NodeInfo {
	state := framework.NewCycleState()
	if _, s, _ := f.RunPreFilterPlugins(ctx, state, pod); !s.IsSuccess() {
		b.Fatalf("PreFilter: %v", s)
	}
	feasible = feasible[:0]
	for _, n := range nodes {
		if s := f.RunFilterPlugins(ctx, state, pod, n); s.IsSuccess() {
			feasible = append(feasible, n)
		}
	}
	if len(feasible) == 0 {
		b.Fatalf("no feasible node: %v", f.RunFilterPlugins(ctx, state, pod, nodes[0]))
	}
	if s := f.RunPreScorePlugins(ctx, state, pod, feasible); !s.IsSuccess() {
		b.Fatalf("PreScore: %v", s)
	}
	if _, s := f.RunScorePlugins(ctx, state, pod, feasible); !s.IsSuccess() {
		b.Fatalf("Score: %v", s)
	}
	return feasible
}

// BenchmarkSchedulingCycle measures one scheduling cycle per profile at each cluster size. It
// is paired: every iteration runs the default profile's cycle and the Reputation profile's on
// the same cluster and pod, in alternating order, timing each, so drift on a shared machine
// hits both alike. It
// reports default-ns/cycle, reputation-ns/cycle and their ratio (x-default); ns/op, B/op and
// allocs/op cover both cycles together.
func BenchmarkSchedulingCycle(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			nodes, pods := cluster(n)
			defaultFw, defaultNodes := newFramework(b, ctx, profile(b, false), nodes, pods)
			reputeFw, reputeNodes := newFramework(b, ctx, profile(b, true), nodes, pods)
			pod := st.MakePod().Name("incoming").Namespace("default").UID("incoming").SchedulerName("repute-scheduler").
				Containers([]v1.Container{st.MakeContainer().Name("api").Image(trustedImage).
					Resources(map[v1.ResourceName]string{"cpu": "500m", "memory": "1Gi"}).Obj()}).
				Toleration(poolKey).Obj()
			feasible := make([]fwk.NodeInfo, 0, n)
			for _, c := range []struct {
				f     framework.Framework
				nodes []fwk.NodeInfo
			}{{defaultFw, defaultNodes}, {reputeFw, reputeNodes}} {
				if got := len(cycle(ctx, b, c.f, pod, c.nodes, feasible)); got != n {
					b.Fatalf("%d of %d nodes feasible; the comparison needs all", got, n)
				}
			}
			var defaultTime, reputeTime time.Duration
			timed := func(f framework.Framework, nodes []fwk.NodeInfo) time.Duration {
				start := time.Now()
				feasible = cycle(ctx, b, f, pod, nodes, feasible)
				return time.Since(start)
			}
			i := 0
			for b.Loop() {
				// Alternate which profile goes first, so neither always inherits a warm cache.
				if i%2 == 0 {
					defaultTime += timed(defaultFw, defaultNodes)
					reputeTime += timed(reputeFw, reputeNodes)
				} else {
					reputeTime += timed(reputeFw, reputeNodes)
					defaultTime += timed(defaultFw, defaultNodes)
				}
				i++
			}
			b.ReportMetric(float64(defaultTime.Nanoseconds())/float64(b.N), "default-ns/cycle")
			b.ReportMetric(float64(reputeTime.Nanoseconds())/float64(b.N), "reputation-ns/cycle")
			b.ReportMetric(float64(reputeTime)/float64(defaultTime), "x-default")
		})
	}
}
