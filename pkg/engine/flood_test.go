package engine

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/repute-dev/repute/reputation"
)

// registryLatency stands in for a registry: every evaluation takes as long as its answer.
type registryLatency time.Duration

func (registryLatency) Name() string { return "registry latency" }

func (d registryLatency) Collect(context.Context, *reputation.Evidence) error {
	time.Sleep(time.Duration(d))
	return nil
}

// One namespace floods unique images; a well-behaved namespace asks for one image every few
// milliseconds meanwhile. Its time to verdict stays within verdictWait because each namespace
// has its own lane. The control run queues everyone in one lane, first come first served, as
// the engine did before: there the same images wait behind the flood, beyond verdictWait, which
// shows the measurement can fail. Real time, real sleeps: make soak runs 10,000 images.
func TestFloodDoesNotStarveOtherNamespaces(t *testing.T) {
	flood, latency, verdictWait := 2000, time.Millisecond, 250*time.Millisecond
	if os.Getenv("REPUTE_SOAK") != "" {
		flood, latency, verdictWait = 10000, 2*time.Millisecond, 5*time.Second // the default verdictWait
	}
	const workers, wellBehaved = 4, 40
	run := func(fair bool) (p50, p99 time.Duration) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		e := New(Options{Policy: examplePolicy(t), Sources: []reputation.EvidenceSource{registryLatency(latency)}, Workers: workers})
		var mu sync.Mutex
		asked, took := map[string]time.Time{}, []time.Duration{}
		done := make(chan struct{})
		e.Cache().Subscribe(func(image string, _, _ *reputation.Verdict) {
			mu.Lock()
			defer mu.Unlock()
			if at, ok := asked[image]; ok {
				took = append(took, time.Since(at))
				if len(took) == wellBehaved {
					close(done)
				}
			}
		})
		namespace := func(ns string) string {
			if fair {
				return ns
			}
			return ""
		}
		for i := range flood {
			e.RequestFor(fmt.Sprintf("quay.io/flood/junk-%d:v1", i), namespace("flood"))
		}
		go e.Run(ctx)
		for i := range wellBehaved {
			image := fmt.Sprintf("registry.internal/team/app-%d@%s", i, testDigest)
			mu.Lock()
			asked[image] = time.Now()
			mu.Unlock()
			e.RequestFor(image, namespace("team"))
			time.Sleep(5 * time.Millisecond)
		}
		select {
		case <-done:
		case <-time.After(time.Duration(flood)*latency + 30*time.Second):
			t.Fatalf("fair=%v: the well-behaved namespace's verdicts never all came", fair)
		}
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(took)
		return took[len(took)/2], took[len(took)*99/100]
	}
	fairP50, fairP99 := run(true)
	fifoP50, fifoP99 := run(false)
	t.Logf("time to verdict of a well-behaved namespace during a %d-image flood (%v per evaluation, %d workers): fair lanes p50 %v p99 %v; one FIFO lane p50 %v p99 %v; verdictWait %v",
		flood, latency, workers, fairP50.Round(time.Microsecond), fairP99.Round(time.Microsecond), fifoP50.Round(time.Millisecond), fifoP99.Round(time.Millisecond), verdictWait)
	if fairP99 > verdictWait {
		t.Errorf("fair lanes: p99 time to verdict %v, want within verdictWait %v", fairP99, verdictWait)
	}
	if fifoP99 <= verdictWait {
		t.Errorf("control: one FIFO lane gave p99 %v, within verdictWait %v: the flood is too small to show anything", fifoP99, verdictWait)
	}
}
