package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/oci"
)

// BenchmarkFirstSeenSignedImageToBinding measures, per pod, the time from creation to binding
// when the pod's image is one the scheduler has never seen and is signed: PreEnqueue gating,
// registry round trips, signature verification, scheduling and binding. Each iteration uses a
// fresh image signed by the real cosign CLI (signing is outside the timer). Run with
// -benchtime=100x (or more); it reports p50 and p99.
func BenchmarkFirstSeenSignedImageToBinding(b *testing.B) {
	cosign := &oci.Cosign{Bin: oci.CosignForTest(b), Dir: b.TempDir()}
	reg, stopRegistry, err := oci.StartRegistry()
	if err != nil {
		b.Fatal(err)
	}
	defer stopRegistry()
	pem, err := cosign.GenerateKeyPair("ops")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := envSeq.Add(1)
	ns, schedulerName, poolKey := fmt.Sprintf("b%d", n), fmt.Sprintf("repute-b%d", n), fmt.Sprintf("b%d.repute.dev/pool", n)
	client := cluster.Client
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := controlplane.CreateNode(ctx, client, controlplane.NodeSpec{Name: ns + "-trusted", PoolKey: poolKey, Pool: "trusted", Pods: 100000}); err != nil {
		b.Fatal(err)
	}
	defer client.CoreV1().Nodes().Delete(context.Background(), ns+"-trusted", metav1.DeleteOptions{})
	cfg := controlplane.SchedulerConfig{
		Kubeconfig: cluster.Kubeconfig, SchedulerName: schedulerName, PoolLabelKey: poolKey,
		OriginRules:      []controlplane.OriginRule{{Pattern: "127.0.0.1:*/*", Weight: 10}},
		RequireSignature: true,
		SigningKeys:      []controlplane.SigningKey{{Name: "ops", PEM: pem}},
	}
	stop, err := controlplane.StartReputeScheduler(ctx, cfg.Render())
	if err != nil {
		b.Fatal(err)
	}
	defer stop()

	var latencies []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		d, err := oci.PushRandomImage(fmt.Sprintf("%s/bench/app-%d:v1", reg, i))
		if err != nil {
			b.Fatal(err)
		}
		if err := cosign.Sign("ops", d, false); err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("p-%d", i)
		w, err := client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
		if err != nil {
			b.Fatal(err)
		}
		pod := (&env{ns: ns, schedulerName: schedulerName}).pod(name, d.String())
		b.StartTimer()
		start := time.Now()
		if _, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		waitBoundWatch(b, w)
		latencies = append(latencies, time.Since(start))
		w.Stop()
		i++
	}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	if os.Getenv("REPUTE_BENCH_VERBOSE") == "1" {
		b.Logf("n=%d p50=%s p99=%s max=%s", len(latencies), pct(0.5), pct(0.99), latencies[len(latencies)-1])
	}
}

// waitBoundWatch returns when the watched pod is bound.
func waitBoundWatch(b *testing.B, w watch.Interface) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				b.Fatal("watch closed")
			}
			if p, isPod := ev.Object.(*v1.Pod); isPod && p.Spec.NodeName != "" {
				return
			}
		case <-timeout:
			b.Fatal("pod not bound within 30s")
		}
	}
}

var bindingWriteRounds atomic.Int64

// BenchmarkBindingWrite times the one API call each binder makes per pod, against the harness's
// real kube-apiserver: DefaultBinder's plain Binding, and Repute's, which carries the tier label
// and the placement explanation that the apiserver copies onto the pod in the same write. Run
// the two interleaved (-count), on a quiet machine:
//
//	go test -run '^$' -bench BindingWrite -benchmem -count 6 ./test/integration/
//
// Binding concurrency matches kube-scheduler's, which binds each pod in its own goroutine:
// Parallel runs 16 binds at a time.
func BenchmarkBindingWrite(b *testing.B) {
	ctx := context.Background()
	// Unthrottled: the harness client's 500 QPS would time the rate limiter, not the binds.
	unthrottled := rest.CopyConfig(cluster.Config)
	unthrottled.QPS, unthrottled.Burst = -1, 0
	client, err := kubernetes.NewForConfig(unthrottled)
	if err != nil {
		b.Fatal(err)
	}
	ns := fmt.Sprintf("bind%d", envSeq.Add(1))
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	node := ns + "-node"
	if _, err := controlplane.CreateNode(ctx, client, controlplane.NodeSpec{Name: node, PoolKey: ns + ".repute.dev/pool", Pool: "trusted", Pods: 1 << 20}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{})
		_ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	// A typical explanation: one image, its origin rule and its verified signature.
	explanation := "pool trusted: tier trusted, score 80; registry.internal/team/api@sha256:" + strings.Repeat("a", 64) +
		" is trusted (score 80): origin registry.internal/* +30; signature verified by key ops +50"
	binders := []struct {
		name    string
		binding func(pod *v1.Pod) *v1.Binding
	}{
		{"DefaultBinder", func(pod *v1.Pod) *v1.Binding {
			return &v1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
				Target: v1.ObjectReference{Kind: "Node", Name: node}}
		}},
		{"TierLabelOnly", func(pod *v1.Pod) *v1.Binding {
			return &v1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
				Labels: map[string]string{placement.TierLabel: "trusted"}},
				Target: v1.ObjectReference{Kind: "Node", Name: node}}
		}},
		{"Repute", func(pod *v1.Pod) *v1.Binding {
			return &v1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
				Labels:      map[string]string{placement.TierLabel: "trusted"},
				Annotations: map[string]string{placement.ExplanationAnnotation: explanation}},
				Target: v1.ObjectReference{Kind: "Node", Name: node}}
		}},
	}
	// Every other -count round runs them in reverse, so that neither always runs on the bigger
	// etcd the other's pods leave.
	if bindingWriteRounds.Add(1)%2 == 0 {
		slices.Reverse(binders)
	}
	var seq atomic.Int64
	newPod := func(b *testing.B) *v1.Pod {
		pod := (&env{ns: ns, schedulerName: "nobody"}).pod(fmt.Sprintf("p-%d", seq.Add(1)), "registry.internal/team/api:v1")
		created, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return created
	}
	for _, binder := range binders {
		b.Run(binder.name+"/Sequential", func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				pod := newPod(b)
				b.StartTimer()
				if err := client.CoreV1().Pods(ns).Bind(ctx, binder.binding(pod), metav1.CreateOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(binder.name+"/Parallel", func(b *testing.B) {
			// Pods are made first: the timer then covers binds only, 16 at a time.
			pods := make(chan *v1.Pod, b.N)
			for range b.N {
				pods <- newPod(b)
			}
			close(pods)
			b.SetParallelism(8) // × GOMAXPROCS 2 = 16 goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					pod := <-pods
					if err := client.CoreV1().Pods(ns).Bind(ctx, binder.binding(pod), metav1.CreateOptions{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
