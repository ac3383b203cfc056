package reputation

import (
	"context"
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	st "k8s.io/kubernetes/pkg/scheduler/testing"

	"github.com/repute-dev/repute/pkg/apis/config"
)

// The per-call benchmarks measure the extension points as the framework calls them: state
// written by PreFilter, one node at a time. Targets: Filter and Score ≤ 30 ns, 0 allocs on the
// admitting path; PreFilter on cache hits ≤ 1 µs.

func benchSetup(b *testing.B) (*Reputation, *v1.Pod, fwk.CycleState, *framework.NodeInfo) {
	pl := newTestPlugin(b, testArgs(), trustedImage)
	pod := st.MakePod().Name("p").Container(trustedImage).Obj()
	node := st.MakeNode().Name("n").Label(poolKey, "trusted").Label("kubernetes.io/hostname", "n").
		Capacity(map[v1.ResourceName]string{"cpu": "8", "memory": "16Gi", "pods": "110"}).
		Taints([]v1.Taint{poolTaint("trusted")}).Obj()
	// The scheduler's node informer indexes every node it delivers.
	pl.nodePools.eventHandler().OnAdd(node, false)
	pl.nodePools.publish()
	cs := framework.NewCycleState()
	pl.PreFilter(context.Background(), cs, pod, nil)
	return pl, pod, cs, nodeInfo(node, st.MakePod().Req(map[v1.ResourceName]string{"cpu": "1", "memory": "2Gi"}).Obj())
}

// BenchmarkFilter is a node in the pod's pool carrying its pool taint: the common, admitting path.
func BenchmarkFilter(b *testing.B) {
	pl, pod, cs, ni := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if s := pl.Filter(ctx, cs, pod, ni); s != nil {
			b.Fatal(s)
		}
	}
}

// BenchmarkFilterRejected is a node outside the pod's pool: the status it returns is the cost.
func BenchmarkFilterRejected(b *testing.B) {
	pl, pod, cs, _ := benchSetup(b)
	otherNode := poolNode("o", "untrusted", poolTaint("untrusted"))
	pl.nodePools.eventHandler().OnAdd(otherNode, false)
	pl.nodePools.publish()
	other := nodeInfo(otherNode)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if s := pl.Filter(ctx, cs, pod, other); s.IsSuccess() {
			b.Fatal("admitted")
		}
	}
}

func BenchmarkScore(b *testing.B) {
	pl, pod, cs, ni := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, s := pl.Score(ctx, cs, pod, ni); s != nil {
			b.Fatal(s)
		}
	}
}

// BenchmarkPreFilter is PreFilter resolving the pod afresh, as the first call of an attempt
// does (without batching, SignPod is not called). Each iteration forgets the last resolution.
func BenchmarkPreFilter(b *testing.B) {
	for _, containers := range []int{1, 5, 20, 30} {
		b.Run(fmt.Sprintf("containers=%d", containers), func(b *testing.B) {
			pl, pod := manyImagePod(b, containers)
			ctx := context.Background()
			// One cycle state, as the framework creates it before PreFilter: the cost measured is
			// PreFilter's own.
			cs := framework.NewCycleState()
			b.ReportAllocs()
			for b.Loop() {
				pl.lastResolved.Store(nil)
				if _, s := pl.PreFilter(ctx, cs, pod, nil); s != nil {
					b.Fatal(s)
				}
			}
		})
	}
}

// BenchmarkSchedulingAttempt is what one attempt costs Reputation before Filter, with batching
// on: SignPod, then PreFilter. The pod's images are resolved once, by SignPod.
func BenchmarkSchedulingAttempt(b *testing.B) {
	for _, containers := range []int{1, 30} {
		b.Run(fmt.Sprintf("containers=%d", containers), func(b *testing.B) {
			pl, pod := manyImagePod(b, containers)
			ctx, cs := context.Background(), framework.NewCycleState()
			b.ReportAllocs()
			for b.Loop() {
				pl.lastResolved.Store(nil)
				if _, s := pl.SignPod(ctx, pod); s != nil {
					b.Fatal(s)
				}
				if _, s := pl.PreFilter(ctx, cs, pod, nil); s != nil {
					b.Fatal(s)
				}
			}
		})
	}
}

// manyImagePod is a plugin that knows a verdict for each of the pod's containers' images.
func manyImagePod(b *testing.B, containers int) (*Reputation, *v1.Pod) {
	images := make([]string, containers)
	for i := range images {
		images[i] = fmt.Sprintf("registry.internal/team/svc-%d:v1", i)
	}
	pl := newTestPlugin(b, testArgs(), images...)
	w := st.MakePod().Name("p")
	for _, img := range images {
		w = w.Container(img)
	}
	return pl, w.Obj()
}

// BenchmarkFilterUntrustedRules is an untrusted pod's Filter under isolation: PerNamespace and
// maxPodsPerNode, on a node running 110 pods: of its own namespace (admitted) or of another
// (rejected). Both read the node's summary, not its pods.
func BenchmarkFilterUntrustedRules(b *testing.B) {
	for _, tt := range []struct {
		name, neighbours string
		admitted         bool
	}{{"admitted", "team-a", true}, {"rejected", "team-b", false}} {
		b.Run(tt.name, func(b *testing.B) {
			args := testArgs()
			args.Untrusted = config.UntrustedPoolSpec{Isolation: config.UntrustedIsolationPerNamespace, MaxPodsPerNode: 200}
			args.Pools.Untrusted.Name = "untrusted"
			pl := newTestPlugin(b, args, untrustedImage)
			node := poolNode("u1", "untrusted", poolTaint("untrusted"))
			pl.nodePools.eventHandler().OnAdd(node, false)
			pl.nodePools.publish()
			pods := make([]*v1.Pod, 110)
			for i := range pods {
				pods[i] = st.MakePod().Name(fmt.Sprintf("n%d", i)).Namespace(tt.neighbours).UID(fmt.Sprintf("n%d", i)).Node("u1").Obj()
			}
			ni := nodeInfo(node, pods...)
			pod := restricted(st.MakePod().Name("p").Namespace("team-a").UID("p").Container(untrustedImage).Obj())
			ctx, cs := context.Background(), framework.NewCycleState()
			if _, s := pl.PreFilter(ctx, cs, pod, nil); s != nil {
				b.Fatal(s)
			}
			b.ReportAllocs()
			for b.Loop() {
				if s := pl.Filter(ctx, cs, pod, ni); s.IsSuccess() != tt.admitted {
					b.Fatal(s)
				}
			}
		})
	}
}

// BenchmarkPreFilterPodSecurity is PreFilter for a pod held to its tier's Pod Security
// Standard: the checks of k8s.io/pod-security-admission run once per scheduling attempt, on the
// pod alone (no node, no I/O); trusted pods (privileged) skip them.
func BenchmarkPreFilterPodSecurity(b *testing.B) {
	args := testArgs()
	args.Pools.Unknown.PodSecurity, args.Pools.Untrusted.PodSecurity = "baseline", "restricted" // the defaults
	pl := newTestPlugin(b, args, trustedImage, unknownImage, untrustedImage)
	for _, tt := range []struct{ tier, image string }{{"trusted", trustedImage}, {"unknown", unknownImage}, {"untrusted", untrustedImage}} {
		b.Run("tier="+tt.tier, func(b *testing.B) {
			pod := restricted(st.MakePod().Name("p").Container(tt.image).Obj())
			ctx, cs := context.Background(), framework.NewCycleState()
			b.ReportAllocs()
			for b.Loop() {
				pl.lastResolved.Store(nil)
				if _, s := pl.PreFilter(ctx, cs, pod, nil); s != nil {
					b.Fatal(s)
				}
			}
		})
	}
}

// BenchmarkVerdictCacheGetParallel reads the cache from every core while a writer publishes
// continuously, as the engine does while the scheduler runs.
func BenchmarkVerdictCacheGetParallel(b *testing.B) {
	pl := newTestPlugin(b, testArgs(), trustedImage)
	v := pl.verdicts.Get(trustedImage)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				pl.verdicts.Publish(fmt.Sprintf("registry.internal/other:%d", i%1000), v)
			}
		}
	}()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if pl.verdicts.Get(trustedImage) == nil {
				b.Fatal("missing verdict")
			}
		}
	})
	close(stop)
	<-done
}
