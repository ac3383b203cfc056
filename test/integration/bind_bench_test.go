package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

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
