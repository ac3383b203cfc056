// Package bench measures a scheduling cycle of the real kube-scheduler framework — PreFilter,
// Filter until kube-scheduler's numFeasibleNodesToFind feasible nodes, PreScore, Score — for the
// default profile and for the default profile plus Reputation (as deploy/ configures it), in the
// same run, over a cluster of three pools and a mix of trusted, unknown and untrusted pods, and
// reports the ratio, in wall time and in the thread's CPU time. Scheduler throughput, with
// binding and the API server, is measured by scheduler_perf (test/perf, make perf).
package bench

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	"github.com/repute-dev/repute/test/podsecurity"
)

const (
	poolKey        = configv1.DefaultPoolLabelKey
	trustedImage   = "registry.internal/team/api@sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb"
	unknownImage   = "docker.io/bitnami/redis@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	untrustedImage = "quay.io/tenant/miner@sha256:2222222222222222222222222222222222222222222222222222222222222222"
	podsPerNode    = 10
)

// poolOf is node i's pool: 60% trusted, 20% unknown, 20% untrusted, interleaved as nodes join.
func poolOf(i int) string {
	switch i % 5 {
	case 3:
		return "unknown"
	case 4:
		return "untrusted"
	default:
		return "trusted"
	}
}

// cluster builds n nodes in three pools (labelled and tainted), with podsPerNode running pods
// each.
func cluster(n int) ([]*v1.Node, []*v1.Pod) {
	var nodes []*v1.Node
	var pods []*v1.Pod
	for i := range n {
		pool := poolOf(i)
		node := st.MakeNode().Name(fmt.Sprintf("node-%d", i)).Label("kubernetes.io/hostname", fmt.Sprintf("node-%d", i)).
			Capacity(map[v1.ResourceName]string{"cpu": "32", "memory": "128Gi", "pods": "110"}).
			Label(poolKey, pool).Taints([]v1.Taint{{Key: poolKey, Value: pool, Effect: v1.TaintEffectNoSchedule}}).Obj()
		nodes = append(nodes, node)
		for j := range podsPerNode {
			pods = append(pods, st.MakePod().Name(fmt.Sprintf("p-%d-%d", i, j)).Namespace("default").UID(fmt.Sprintf("p-%d-%d", i, j)).
				Node(node.Name).Container(trustedImage).Req(map[v1.ResourceName]string{"cpu": "500m", "memory": "1Gi"}).Obj())
		}
	}
	return nodes, pods
}

// incoming is the mix of pods the benchmark schedules in turn: for each tier, the pod Repute
// places (its image alone decides) and the pod the default profile needs to land in the same
// pool (a nodeSelector for the pool and a toleration of its taint).
type incoming struct {
	tier             string
	repute, byLabels *v1.Pod
}

func incomingPods() []incoming {
	var out []incoming
	for _, t := range []struct{ tier, image string }{{"trusted", trustedImage}, {"unknown", unknownImage}, {"untrusted", untrustedImage}} {
		base := st.MakePod().Name("incoming-" + t.tier).Namespace("default").UID("incoming-" + t.tier).
			Containers([]v1.Container{st.MakeContainer().Name("app").Image(t.image).
				Resources(map[v1.ResourceName]string{"cpu": "500m", "memory": "1Gi"}).Obj()}).Obj()
		podsecurity.Restricted(&base.Spec) // untrusted pods must meet the restricted standard
		byLabels := base.DeepCopy()
		byLabels.Spec.NodeSelector = map[string]string{poolKey: t.tier}
		byLabels.Spec.Tolerations = []v1.Toleration{{Key: poolKey, Operator: v1.TolerationOpEqual, Value: t.tier, Effect: v1.TaintEffectNoSchedule}}
		out = append(out, incoming{tier: t.tier, repute: base, byLabels: byLabels})
	}
	return out
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
		v1args.Policy.Origin.Rules = []v1alpha1.OriginRule{{Pattern: "registry.internal/*", Tier: "trusted"},
			{Pattern: "docker.io/*", Tier: "unknown"}, {Pattern: "*", Tier: "untrusted"}}
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
		// The verdicts are in the cache, as they are for every pod after its first cycle.
		for _, image := range []string{trustedImage, unknownImage, untrustedImage} {
			eng.Cache().Publish(image, eng.Evaluate(ctx, image))
		}
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

// numFeasibleNodesToFind is kube-scheduler's own bound (pkg/scheduler/schedule_one.go, with
// the default adaptive percentageOfNodesToScore): past 100 nodes the cycle stops filtering once
// it has found this many feasible nodes.
func numFeasibleNodesToFind(numAllNodes int) int {
	const minFeasibleNodesToFind, minFeasibleNodesPercentageToFind = 100, 5
	if numAllNodes < minFeasibleNodesToFind {
		return numAllNodes
	}
	percentage := max(50-numAllNodes/125, minFeasibleNodesPercentageToFind)
	return max(numAllNodes*percentage/100, minFeasibleNodesToFind)
}

// scheduler is one profile's framework over its snapshot, with the rotating start index
// kube-scheduler keeps between cycles.
type scheduler struct {
	f     framework.Framework
	nodes []fwk.NodeInfo
	next  int
}

// cycle runs one scheduling cycle as kube-scheduler does: Filter from where the last cycle
// stopped, until numFeasibleNodesToFind nodes pass or every node was tried, then PreScore and
// Score over those. It returns the feasible nodes.
func (s *scheduler) cycle(ctx context.Context, b *testing.B, pod *v1.Pod, feasible []fwk.NodeInfo) []fwk.NodeInfo {
	state := framework.NewCycleState()
	if _, status, _ := s.f.RunPreFilterPlugins(ctx, state, pod); !status.IsSuccess() {
		b.Fatalf("PreFilter %s: %v", pod.Name, status)
	}
	want := numFeasibleNodesToFind(len(s.nodes))
	feasible = feasible[:0]
	visited := 0
	for ; visited < len(s.nodes) && len(feasible) < want; visited++ {
		n := s.nodes[(s.next+visited)%len(s.nodes)]
		if status := s.f.RunFilterPlugins(ctx, state, pod, n); status.IsSuccess() {
			feasible = append(feasible, n)
		}
	}
	s.next = (s.next + visited) % len(s.nodes)
	if len(feasible) == 0 {
		b.Fatalf("no feasible node for %s: %v", pod.Name, s.f.RunFilterPlugins(ctx, state, pod, s.nodes[0]))
	}
	if status := s.f.RunPreScorePlugins(ctx, state, pod, feasible); !status.IsSuccess() {
		b.Fatalf("PreScore: %v", status)
	}
	if _, status := s.f.RunScorePlugins(ctx, state, pod, feasible); !status.IsSuccess() {
		b.Fatalf("Score: %v", status)
	}
	return feasible
}

// cpuTime is the CPU time used so far by the calling OS thread (unix.RUSAGE_THREAD) or by the
// whole process (unix.RUSAGE_SELF).
func cpuTime(who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSchedulingCycle measures one scheduling cycle per profile at each cluster size, over
// the mix of incoming pods in turn. It is paired: every iteration runs the default profile's
// cycle and the Reputation profile's for the same tier, in alternating order, timing each, so
// drift on a shared machine hits both alike. Beside the wall time it reads CPU time, which other
// work on the machine does not inflate: the locked OS thread's own (PreFilter, the Filter loop,
// orchestration) and the process's (that plus the framework's parallel Score workers and GC).
// It reports default-ns/cycle and reputation-ns/cycle and their ratio (x-default), the same in
// process CPU time (…-cpu-ns/cycle, x-default-cpu) and in the thread's (…-thread-cpu-ns/cycle,
// x-default-thread-cpu); ns/op, B/op and allocs/op cover both cycles together.
func BenchmarkSchedulingCycle(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			nodes, pods := cluster(n)
			defaultFw, defaultNodes := newFramework(b, ctx, profile(b, false), nodes, pods)
			reputeFw, reputeNodes := newFramework(b, ctx, profile(b, true), nodes, pods)
			byLabels, repute := &scheduler{f: defaultFw, nodes: defaultNodes}, &scheduler{f: reputeFw, nodes: reputeNodes}
			mix := incomingPods()
			feasible := make([]fwk.NodeInfo, 0, n)
			// Both profiles place each tier's pod in the same pool.
			for _, in := range mix {
				for _, c := range []struct {
					s   *scheduler
					pod *v1.Pod
				}{{byLabels, in.byLabels}, {repute, in.repute}} {
					for _, node := range c.s.cycle(ctx, b, c.pod, feasible) {
						if got := node.Node().Labels[poolKey]; got != in.tier {
							b.Fatalf("%s pod found node %s of pool %s feasible", in.tier, node.Node().Name, got)
						}
					}
				}
			}
			type spent struct{ wall, cpu, threadCPU time.Duration }
			var byLabelsSpent, reputeSpent spent
			timed := func(s *scheduler, pod *v1.Pod, into *spent) {
				start, startCPU, startThread := time.Now(), cpuTime(unix.RUSAGE_SELF), cpuTime(unix.RUSAGE_THREAD)
				feasible = s.cycle(ctx, b, pod, feasible)
				into.threadCPU += cpuTime(unix.RUSAGE_THREAD) - startThread
				into.cpu += cpuTime(unix.RUSAGE_SELF) - startCPU
				into.wall += time.Since(start)
			}
			i := 0
			for b.Loop() {
				in := mix[i%len(mix)]
				// Alternate which profile goes first, so neither always inherits a warm cache.
				if i%2 == 0 {
					timed(byLabels, in.byLabels, &byLabelsSpent)
					timed(repute, in.repute, &reputeSpent)
				} else {
					timed(repute, in.repute, &reputeSpent)
					timed(byLabels, in.byLabels, &byLabelsSpent)
				}
				i++
			}
			perCycle := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
			for _, m := range []struct {
				unit             string
				byLabels, repute time.Duration
			}{{"", byLabelsSpent.wall, reputeSpent.wall}, {"-cpu", byLabelsSpent.cpu, reputeSpent.cpu}, {"-thread-cpu", byLabelsSpent.threadCPU, reputeSpent.threadCPU}} {
				b.ReportMetric(perCycle(m.byLabels), "default"+m.unit+"-ns/cycle")
				b.ReportMetric(perCycle(m.repute), "reputation"+m.unit+"-ns/cycle")
				b.ReportMetric(float64(m.repute)/float64(m.byLabels), "x-default"+m.unit)
			}
		})
	}
}
