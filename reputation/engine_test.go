package reputation

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingSource counts collections and can hold them until released.
type countingSource struct {
	calls   atomic.Int32
	release chan struct{}
}

func (s *countingSource) Name() string { return "counting" }
func (s *countingSource) Collect(ctx context.Context, _ *Evidence) error {
	s.calls.Add(1)
	if s.release != nil {
		select {
		case <-s.release:
		case <-ctx.Done():
		}
	}
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestEngineEvaluatesEachImageOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &countingSource{}
	e := NewEngine(EngineOptions{Policy: examplePolicy(t), Sources: []EvidenceSource{src}, Workers: 3})
	var published atomic.Int32
	e.Cache().Subscribe(func(string, *Verdict, *Verdict) { published.Add(1) })
	go e.Run(ctx)

	images := []string{"registry.internal/a@" + testDigest, "nginx:1.27", "quay.io/x/y:1", "registry.internal/b:v1", "bitnami/redis:7"}
	var wg sync.WaitGroup
	for range 40 { // 40 pods sharing 5 images, requested concurrently
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, img := range images {
				e.Request(img)
			}
		}()
	}
	wg.Wait()
	waitFor(t, "all verdicts", func() bool { return e.Cache().Len() == len(images) })
	// Requests after publication are answered from the cache.
	for _, img := range images {
		e.Request(img)
	}
	time.Sleep(20 * time.Millisecond)
	if got := src.calls.Load(); got != int32(len(images)) {
		t.Errorf("evidence collected %d times for %d images, want once each", got, len(images))
	}
	if got := published.Load(); got != int32(len(images)) {
		t.Errorf("%d publications, want %d", got, len(images))
	}
	if v := e.Cache().Get("quay.io/x/y:1"); v == nil || v.Tier != TierUntrusted {
		t.Errorf("quay.io verdict = %+v, want untrusted", v)
	}
}

func TestEnginePublishesUnknownWhenEvaluationIsSlow(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &countingSource{release: make(chan struct{})}
	e := NewEngine(EngineOptions{Policy: examplePolicy(t), Sources: []EvidenceSource{src}, Wait: 30 * time.Millisecond})
	go e.Run(ctx)

	const image = "registry.internal/app@" + testDigest // trusted once assessed
	e.Request(image)
	waitFor(t, "the provisional verdict", func() bool { return e.Cache().Get(image) != nil })
	v := e.Cache().Get(image)
	if v.Tier != TierUnknown || !strings.Contains(v.DecidedBy, "not finished") {
		t.Fatalf("provisional verdict = %s %q, want unknown, not finished", v.Tier, v.DecidedBy)
	}
	close(src.release)
	waitFor(t, "the real verdict", func() bool { return e.Cache().Get(image).Tier == TierTrusted })
}

func TestEngineRealVerdictIsNotOverwrittenByLateTimer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := NewEngine(EngineOptions{Policy: examplePolicy(t), Wait: 20 * time.Millisecond})
	go e.Run(ctx)
	const image = "registry.internal/app@" + testDigest
	e.Request(image)
	waitFor(t, "the verdict", func() bool { return e.Cache().Get(image) != nil })
	time.Sleep(60 * time.Millisecond) // past the wait bound
	if v := e.Cache().Get(image); v.Tier != TierTrusted {
		t.Errorf("verdict after the wait bound = %s (%s), want the real trusted one", v.Tier, v.DecidedBy)
	}
}

func TestEngineUnparsableImageIsUntrusted(t *testing.T) {
	e := NewEngine(EngineOptions{Policy: examplePolicy(t)})
	v := e.Evaluate(context.Background(), "Not/A:Valid:Ref")
	if v.Tier != TierUntrusted || !strings.Contains(v.DecidedBy, "cannot be assessed") {
		t.Errorf("verdict = %s %q", v.Tier, v.DecidedBy)
	}
}

// flakySource fails its first n collections, like a registry that is down for a while.
type flakySource struct {
	failures atomic.Int32
	calls    atomic.Int32
}

func (s *flakySource) Name() string { return "flaky" }
func (s *flakySource) Collect(_ context.Context, ev *Evidence) error {
	s.calls.Add(1)
	if s.failures.Add(-1) >= 0 {
		ev.Signature = &SignatureEvidence{State: SignatureError, Detail: "registry unreachable"}
		return errors.New("registry unreachable")
	}
	ev.Signature = &SignatureEvidence{State: SignatureVerified, Key: "ops"}
	return nil
}

func signedPolicy(t *testing.T) *Policy {
	return mustPolicy(t, Policy{BaseScore: 50, TrustedAtOrAbove: 70, UntrustedBelow: 30,
		Origin:    OriginPolicy{Rules: []OriginRule{{Pattern: "registry.internal/*", Weight: 10}}},
		Signature: SignaturePolicy{VerifiedWeight: 30, RequireForTrusted: true}})
}

func TestEngineRetriesIncompleteEvidenceWithBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &flakySource{}
	src.failures.Store(2)
	e := NewEngine(EngineOptions{Policy: signedPolicy(t), Sources: []EvidenceSource{src}, RetryAfter: 10 * time.Millisecond})
	var tiers []Tier
	var mu sync.Mutex
	e.Cache().Subscribe(func(_ string, _, v *Verdict) { mu.Lock(); tiers = append(tiers, v.Tier); mu.Unlock() })
	go e.Run(ctx)
	const image = "registry.internal/app@" + testDigest
	e.Request(image)
	waitFor(t, "the verdict after the registry came back", func() bool {
		v := e.Cache().Get(image)
		return v != nil && v.Tier == TierTrusted
	})
	if got := src.calls.Load(); got != 3 {
		t.Errorf("evidence gathered %d times, want 3 (two failures, then success)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tiers) != 3 || tiers[0] != TierUnknown || tiers[1] != TierUnknown || tiers[2] != TierTrusted {
		t.Errorf("published tiers %v, want unknown, unknown, trusted", tiers)
	}
}

func TestEngineReverifiesCompleteVerdicts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &countingSource{}
	e := NewEngine(EngineOptions{Policy: examplePolicy(t), Sources: []EvidenceSource{src}, ReverifyAfter: 20 * time.Millisecond})
	go e.Run(ctx)
	e.Request("registry.internal/app@" + testDigest)
	waitFor(t, "re-verification", func() bool { return src.calls.Load() >= 3 })
	cancel()
	time.Sleep(50 * time.Millisecond)
	after := src.calls.Load()
	time.Sleep(60 * time.Millisecond)
	if src.calls.Load() != after {
		t.Error("re-verification went on after the engine stopped")
	}
}
