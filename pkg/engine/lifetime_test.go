package engine

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/repute-dev/repute/reputation"
)

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A flood of one-off images leaves nothing behind. 10,000 unique references (100,000 under make
// soak) are requested and evaluated; then their pods are gone. After the forget period the
// engine holds nothing of them (verdict, evidence, indexes, queue, timers), the registry is
// asked about none of them again, and the heap returns to within 10% of the growth the flood
// took (the log reports how close).
func TestForgottenFloodCostsNothing(t *testing.T) {
	images := 10000
	if os.Getenv("REPUTE_SOAK") != "" {
		images = 100000
	}
	src := &countingSource{}
	var inUse atomic.Bool
	inUse.Store(true)
	clk := testingclock.NewFakeClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	// Counted once an evaluation's next one is scheduled: a clock step before that would leave
	// the image to a later one.
	var evaluated atomic.Int64
	e := New(Options{Policy: examplePolicy(t), Sources: []reputation.EvidenceSource{src}, Clock: clk,
		ReverifyAfter: time.Hour, InUse: func(string) bool { return inUse.Load() },
		OnEvaluated: func(*reputation.Evidence, *reputation.Verdict, time.Duration, bool) { evaluated.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, time.Millisecond, time.Minute, true, func(context.Context) (bool, error) { return cond(), nil }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	evaluations := func(n int) func() bool { return func() bool { return int(evaluated.Load()) >= n } }
	baseline := heapInUse()

	for i := range images {
		e.RequestFor(fmt.Sprintf("registry.internal/flood/image-%d:v1", i), "flood")
	}
	waitFor("every image evaluated", evaluations(images))
	held := heapInUse()

	inUse.Store(false) // the pods are deleted
	clk.Step(time.Hour)
	waitFor("re-verification finds them unused, and evaluates them once more", evaluations(2*images))
	clk.Step(time.Hour)
	waitFor("the next one forgets them", func() bool { return e.Cache().Len() == 0 })
	waitFor("the queue is empty and nothing is scheduled", func() bool { return e.queue.Len() == 0 && e.queue.Scheduled() == 0 })
	asked := src.calls.Load()
	for range 3 {
		clk.Step(time.Hour)
	}
	time.Sleep(100 * time.Millisecond) // a worker woken by the steps would have asked by now
	if got := src.calls.Load(); got != asked {
		t.Errorf("the registry was asked %d more times about forgotten images", got-asked)
	}
	e.publishMu.Lock()
	left := len(e.evidence) + len(e.byKey) + len(e.withBehavior) + len(e.checked) + len(e.failingSince) + len(e.unusedSince)
	e.publishMu.Unlock()
	if left != 0 {
		t.Errorf("the engine still holds %d entries about forgotten images", left)
	}
	after := heapInUse()
	grown, kept := int64(held)-int64(baseline), int64(after)-int64(baseline)
	t.Logf("%d images: heap %.1f MB before, %.1f MB with their verdicts (%d bytes per image), %.1f MB after they were forgotten (%.1f%% of the growth kept)",
		images, float64(baseline)/1e6, float64(held)/1e6, grown/int64(images), float64(after)/1e6, 100*float64(kept)/float64(grown))
	if kept > grown/10 {
		t.Errorf("after forgetting, the heap keeps %d of the %d bytes the flood took: more than 10%%", kept, grown)
	}
}

// BenchmarkRescoreKeys is what one runtime event costs the engine with 100,000 images known:
// the images it concerns are found through the index, not by a pass over every image.
func BenchmarkRescoreKeys(b *testing.B) {
	e := New(Options{Policy: examplePolicy(b)})
	for i := range 100000 {
		image := fmt.Sprintf("registry.internal/team/app-%d@sha256:%064x", i, i)
		ev, v, _ := e.evaluate(context.Background(), image)
		e.publish(image, ev, v)
	}
	key := fmt.Sprintf("sha256:%064x", 4242)
	b.ReportAllocs()
	for b.Loop() {
		e.RescoreKeys([]string{key})
	}
}
