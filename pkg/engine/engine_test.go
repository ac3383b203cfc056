package engine

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/repute-dev/repute/reputation"
)

const (
	testDigest  = "sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb"
	testDigest2 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
)

func mustPolicy(t testing.TB, p reputation.Policy) *reputation.Policy {
	t.Helper()
	pol, err := reputation.NewPolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// examplePolicy trusts an internal registry by rule, leaves Docker Hub unknown, and distrusts
// anything else.
func examplePolicy(t testing.TB) *reputation.Policy {
	return mustPolicy(t, reputation.Policy{
		BaseScore: 50, TrustedAtOrAbove: 70, UntrustedBelow: 30,
		Origin: reputation.OriginPolicy{MutableTagPenalty: 10, Rules: []reputation.OriginRule{
			{Pattern: "registry.internal/*", Tier: reputation.TierTrusted, Weight: 40},
			{Pattern: "docker.io/*", Tier: reputation.TierUnknown},
			{Pattern: "*", Tier: reputation.TierUntrusted, Weight: -40},
		}},
	})
}

// signedPolicy trusts registry.internal only with a verified signature.
func signedPolicy(t testing.TB) *reputation.Policy {
	return mustPolicy(t, reputation.Policy{BaseScore: 50, TrustedAtOrAbove: 70, UntrustedBelow: 30,
		Origin:    reputation.OriginPolicy{Rules: []reputation.OriginRule{{Pattern: "registry.internal/*", Weight: 10}}},
		Signature: reputation.SignaturePolicy{VerifiedWeight: 30, RequireForTrusted: true}})
}

// keyedPolicy trusts the key "ops" (with the given fingerprint) for registry.internal.
func keyedPolicy(t testing.TB, verifiedWeight int, fingerprint string) *reputation.Policy {
	p := *signedPolicy(t)
	p.Signature.VerifiedWeight = verifiedWeight
	if fingerprint != "" {
		p.Signature.Keys = []reputation.KeyIdentity{{Name: "ops", Fingerprint: fingerprint, Repositories: []string{"registry.internal/*"}}}
	}
	return mustPolicy(t, p)
}

// countingSource counts collections and can hold them until released.
type countingSource struct {
	calls   atomic.Int32
	release chan struct{}
}

func (s *countingSource) Name() string { return "counting" }
func (s *countingSource) Collect(ctx context.Context, _ *reputation.Evidence) error {
	s.calls.Add(1)
	if s.release != nil {
		select {
		case <-s.release:
		case <-ctx.Done():
		}
	}
	return nil
}

// flakySource fails its first n collections, like a registry that is down for a while.
type flakySource struct {
	failures atomic.Int32
	calls    atomic.Int32
}

func (s *flakySource) Name() string { return "flaky" }
func (s *flakySource) Collect(_ context.Context, ev *reputation.Evidence) error {
	s.calls.Add(1)
	if s.failures.Add(-1) >= 0 {
		ev.Signature = &reputation.SignatureEvidence{State: reputation.SignatureError, Detail: "registry unreachable"}
		return errors.New("registry unreachable")
	}
	ev.Signature = &reputation.SignatureEvidence{State: reputation.SignatureVerified, Key: "ops"}
	return nil
}

// running is an engine on a fake clock whose publications arrive on a channel.
type running struct {
	*Engine
	clock     *testingclock.FakeClock
	published chan *reputation.Verdict
}

func start(t *testing.T, opts Options) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	clk := testingclock.NewFakeClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	opts.Clock = clk
	r := &running{Engine: New(opts), clock: clk, published: make(chan *reputation.Verdict, 1000)}
	r.Cache().Subscribe(func(_ string, _, v *reputation.Verdict) { r.published <- v })
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// next waits for the next publication; the bound only keeps a broken engine from hanging.
func (r *running) next(t *testing.T, what string) *reputation.Verdict {
	t.Helper()
	select {
	case v := <-r.published:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no publication: %s", what)
		return nil
	}
}

func TestEngineEvaluatesEachImageOnce(t *testing.T) {
	src := &countingSource{}
	e := start(t, Options{Policy: examplePolicy(t), Sources: []reputation.EvidenceSource{src}, Workers: 3})
	images := []string{"registry.internal/a@" + testDigest, "nginx:1.27", "quay.io/x/y:1", "registry.internal/b:v1", "bitnami/redis:7"}
	var wg sync.WaitGroup
	for range 40 { // 40 pods sharing 5 images, requested concurrently
		wg.Go(func() {
			for _, img := range images {
				e.Request(img)
			}
		})
	}
	wg.Wait()
	for range images {
		e.next(t, "a verdict per image")
	}
	// Requests after publication are answered from the cache: nothing is queued.
	for _, img := range images {
		e.Request(img)
	}
	if n := e.queue.Len(); n != 0 {
		t.Errorf("%d images queued after every verdict was published", n)
	}
	if got := src.calls.Load(); got != int32(len(images)) {
		t.Errorf("evidence collected %d times for %d images, want once each", got, len(images))
	}
	if len(e.published) != 0 {
		t.Errorf("%d extra publications", len(e.published))
	}
	if v := e.Cache().Get("quay.io/x/y:1"); v == nil || v.Tier != reputation.TierUntrusted {
		t.Errorf("quay.io verdict = %+v, want untrusted", v)
	}
}

func TestEnginePublishesUnknownWhenEvaluationIsSlow(t *testing.T) {
	src := &countingSource{release: make(chan struct{})}
	e := start(t, Options{Policy: examplePolicy(t), Sources: []reputation.EvidenceSource{src}, Wait: 5 * time.Second})
	const image = "registry.internal/app@" + testDigest // trusted once assessed
	e.Request(image)
	e.clock.Step(5 * time.Second)
	v := e.next(t, "the provisional verdict")
	if v.Tier != reputation.TierUnknown || !v.Provisional || v.Decision != reputation.DecidedProvisionally {
		t.Fatalf("provisional verdict = %s %q, want unknown, provisional", v.Tier, v.DecidedBy)
	}
	close(src.release)
	if v := e.next(t, "the real verdict"); v.Tier != reputation.TierTrusted {
		t.Errorf("real verdict = %s, want trusted", v.Tier)
	}
}

func TestEngineRealVerdictIsNotOverwrittenByLateTimer(t *testing.T) {
	e := start(t, Options{Policy: examplePolicy(t), Wait: 5 * time.Second})
	const image = "registry.internal/app@" + testDigest
	e.Request(image)
	e.next(t, "the verdict")
	e.clock.Step(5 * time.Second) // the timer runs inside Step
	if v := e.Cache().Get(image); v.Tier != reputation.TierTrusted || v.Provisional {
		t.Errorf("verdict after the wait bound = %s (%s), want the real trusted one", v.Tier, v.DecidedBy)
	}
	if len(e.published) != 0 {
		t.Errorf("the late timer published %d verdicts", len(e.published))
	}
}

func TestEngineUnparsableImageIsUntrusted(t *testing.T) {
	e := New(Options{Policy: examplePolicy(t)})
	v := e.Evaluate(context.Background(), "Not/A:Valid:Ref")
	if v.Tier != reputation.TierUntrusted || v.Decision != reputation.DecidedUnassessable {
		t.Errorf("verdict = %s %q", v.Tier, v.DecidedBy)
	}
}

// A registry down twice: retried after RetryAfter, then twice that, then the verdict is
// complete and the backoff forgotten.
func TestEngineRetriesIncompleteEvidenceWithBackoff(t *testing.T) {
	src := &flakySource{}
	src.failures.Store(2)
	e := start(t, Options{Policy: signedPolicy(t), Sources: []reputation.EvidenceSource{src}, RetryAfter: 10 * time.Second, MaxRetryAfter: time.Minute})
	const image = "registry.internal/app@" + testDigest
	e.Request(image)
	var tiers []reputation.Tier
	tiers = append(tiers, e.next(t, "first, incomplete").Tier)
	e.clock.Step(9 * time.Second)
	if len(e.published) != 0 || src.calls.Load() != 1 {
		t.Fatalf("retried before RetryAfter: %d calls", src.calls.Load())
	}
	e.clock.Step(time.Second)
	tiers = append(tiers, e.next(t, "second, after 10s").Tier)
	e.clock.Step(19 * time.Second)
	if src.calls.Load() != 2 {
		t.Fatalf("second retry before 20s: %d calls", src.calls.Load())
	}
	e.clock.Step(time.Second)
	tiers = append(tiers, e.next(t, "third, after 20s more").Tier)
	if got := src.calls.Load(); got != 3 {
		t.Errorf("evidence gathered %d times, want 3 (two failures, then success)", got)
	}
	if tiers[0] != reputation.TierUnknown || tiers[1] != reputation.TierUnknown || tiers[2] != reputation.TierTrusted {
		t.Errorf("published tiers %v, want unknown, unknown, trusted", tiers)
	}
	if n := e.queue.Failures(image); n != 0 {
		t.Errorf("backoff not forgotten after a complete verdict: %d requeues", n)
	}
}

func TestEngineReverifiesCompleteVerdicts(t *testing.T) {
	src := &countingSource{}
	e := start(t, Options{Policy: examplePolicy(t), Sources: []reputation.EvidenceSource{src}, ReverifyAfter: time.Hour})
	e.Request("registry.internal/app@" + testDigest)
	e.next(t, "the verdict")
	for i := range 2 {
		e.clock.Step(time.Hour)
		// The outcome is the same, but the cache still republishes what a worker evaluated.
		e.next(t, "a re-verification")
		if got := src.calls.Load(); got != int32(i+2) {
			t.Fatalf("after %d hours: %d evaluations", i+1, got)
		}
	}
}

func TestEngineStopsReverifyingWhenStopped(t *testing.T) {
	src := &countingSource{}
	clk := testingclock.NewFakeClock(time.Now())
	e := New(Options{Policy: examplePolicy(t), Sources: []reputation.EvidenceSource{src}, ReverifyAfter: time.Hour, Clock: clk})
	published := make(chan struct{}, 10)
	e.Cache().Subscribe(func(string, *reputation.Verdict, *reputation.Verdict) { published <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	e.Request("registry.internal/app@" + testDigest)
	<-published
	cancel()
	<-done
	clk.Step(2 * time.Hour)
	if !e.queue.ShuttingDown() || e.queue.Len() != 0 || src.calls.Load() != 1 {
		t.Errorf("after stopping: shut down %v, queued %d, evaluations %d", e.queue.ShuttingDown(), e.queue.Len(), src.calls.Load())
	}
}

func TestEngineRescoresFromMemoryWithoutIO(t *testing.T) {
	registry := &countingSource{}
	ledger := reputation.NewBehaviorLedger()
	p := *examplePolicy(t)
	p.Behavior = reputation.DefaultBehaviorPolicy()
	e := start(t, Options{Policy: mustPolicy(t, p), Sources: []reputation.EvidenceSource{registry},
		LocalSources: []reputation.EvidenceSource{&reputation.BehaviorSource{Ledger: ledger}}})
	image := "registry.internal/team/app@" + testDigest
	other := "registry.internal/team/other@" + testDigest2
	e.Request(image)
	e.Request(other)
	e.next(t, "first verdict")
	e.next(t, "second verdict")
	if got := e.Cache().Get(image).Tier; got != reputation.TierTrusted {
		t.Fatalf("before the alert: %s, want trusted", got)
	}
	calls := registry.calls.Load()

	ledger.Record(reputation.BehaviorEvent{Kind: reputation.BehaviorFalcoAlert, Rule: "Terminal shell in container", Priority: "Critical", At: e.clock.Now()}, testDigest)
	if n := e.RescoreKeys([]string{testDigest}); n != 1 {
		t.Fatalf("rescore changed %d verdicts, want 1", n)
	}
	if v := e.Cache().Get(image); v.Tier != reputation.TierUntrusted || !strings.Contains(v.DecidedBy, "Terminal shell in container") {
		t.Fatalf("after the alert: %s %q, want untrusted naming the rule", v.Tier, v.DecidedBy)
	}
	if v := e.Cache().Get(other); v.Tier != reputation.TierTrusted {
		t.Fatalf("another digest was hit: %s", v.Tier)
	}
	if n := e.RescoreKeys([]string{testDigest}); n != 0 {
		t.Fatalf("a second rescore with nothing new changed %d verdicts, want 0 (no needless pod retries)", n)
	}
	if got := registry.calls.Load(); got != calls {
		t.Fatalf("rescoring gathered remote evidence %d times; it must work from memory", got-calls)
	}
}

// evaluated runs an engine over the images until each has a verdict built from evidence.
func evaluated(t *testing.T, p *reputation.Policy, images ...string) *running {
	t.Helper()
	e := start(t, Options{Policy: p, Sources: []reputation.EvidenceSource{&flakySource{}}, Workers: 2})
	for _, img := range images {
		e.Request(img)
	}
	for range images {
		e.next(t, "verdicts")
	}
	return e
}

func TestSetPolicyAndReweighRescoreFromMemory(t *testing.T) {
	api := "registry.internal/team/api@" + testDigest
	e := evaluated(t, keyedPolicy(t, 30, "aa"), api)
	if v := e.Cache().Get(api); v.Tier != reputation.TierTrusted || v.Score != 90 {
		t.Fatalf("before: %+v, want trusted 90", v)
	}
	tests := []struct {
		name        string
		policy      *reputation.Policy
		wantTier    reputation.Tier
		wantScore   int
		wantChanged int
	}{
		{"a lower signature weight drops below the trusted threshold", keyedPolicy(t, 5, "aa"), reputation.TierUnknown, 65, 1},
		{"the same policy again changes nothing", keyedPolicy(t, 5, "aa"), reputation.TierUnknown, 65, 0},
		{"weight restored", keyedPolicy(t, 30, "aa"), reputation.TierTrusted, 90, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.SetPolicy(tt.policy)
			if n := e.Reweigh(nil); n != tt.wantChanged {
				t.Errorf("Reweigh changed %d verdicts, want %d", n, tt.wantChanged)
			}
			v := e.Cache().Get(api)
			if v.Tier != tt.wantTier || v.Score != tt.wantScore || v.PolicyVersion != tt.policy.Version() {
				t.Errorf("after: %s %d under %s, want %s %d under %s", v.Tier, v.Score, v.PolicyVersion, tt.wantTier, tt.wantScore, tt.policy.Version())
			}
		})
	}
}

func TestRevokingAKeyWithdrawsItsSignaturesAtOnce(t *testing.T) {
	api := "registry.internal/team/api@" + testDigest
	old := keyedPolicy(t, 30, "aa")
	e := evaluated(t, old, api)
	tests := []struct {
		name        string
		next        *reputation.Policy
		wantRevoked []string
		wantTier    reputation.Tier
	}{
		{"same key", keyedPolicy(t, 30, "aa"), nil, reputation.TierTrusted},
		{"key material replaced under the same name", keyedPolicy(t, 30, "bb"), []string{"ops"}, reputation.TierUnknown},
		{"key removed", keyedPolicy(t, 30, ""), []string{"ops"}, reputation.TierUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			revoked := reputation.RevokedKeys(old, tt.next)
			var names []string
			for n := range revoked {
				names = append(names, n)
			}
			sort.Strings(names)
			if len(names) != len(tt.wantRevoked) || (len(names) > 0 && names[0] != tt.wantRevoked[0]) {
				t.Errorf("revoked %v, want %v", names, tt.wantRevoked)
			}
			sims, notGathered := e.Simulate(tt.next, reputation.WithdrawSignatures(revoked))
			if len(sims) != 1 || len(notGathered) != 0 {
				t.Fatalf("simulated %d, not gathered %v", len(sims), notGathered)
			}
			if got := sims[0].After.Tier; got != tt.wantTier {
				t.Errorf("simulated tier %s, want %s (%s)", got, tt.wantTier, sims[0].After.Reason())
			}
			if e.Cache().Get(api).Tier != reputation.TierTrusted {
				t.Error("Simulate changed the cache")
			}
		})
	}
}

// Verdicts warmed from the store have no evidence in memory yet: a simulation says so instead
// of guessing.
func TestSimulateReportsImagesWithoutEvidence(t *testing.T) {
	e := New(Options{Policy: signedPolicy(t)})
	e.Cache().Publish("docker.io/library/nginx:1", &reputation.Verdict{Image: "docker.io/library/nginx:1", Tier: reputation.TierUnknown})
	sims, notGathered := e.Simulate(signedPolicy(t), nil)
	if len(sims) != 0 || len(notGathered) != 1 || notGathered[0] != "docker.io/library/nginx:1" {
		t.Errorf("simulations %v, not gathered %v", sims, notGathered)
	}
}

// outageSource verifies the signature unless its registry is down.
type outageSource struct{ down atomic.Bool }

func (s *outageSource) Name() string { return "registry" }
func (s *outageSource) Collect(_ context.Context, ev *reputation.Evidence) error {
	if s.down.Load() {
		ev.Signature = &reputation.SignatureEvidence{State: reputation.SignatureError, Detail: "dial tcp: connection refused"}
		return errors.New("registry unreachable")
	}
	ev.Signature = &reputation.SignatureEvidence{State: reputation.SignatureVerified, Key: "ops", Detail: "signed by ops"}
	return nil
}

// Stale-while-error: a registry outage keeps the last verified signature for MaxStaleness, says
// so, and marks the verdict incomplete; past the window the image is unknown, never invalid;
// when the registry answers again the verdict is whole again.
func TestRegistryOutageKeepsTheLastVerifiedSignatureForAWhile(t *testing.T) {
	src := &outageSource{}
	e := start(t, Options{Policy: signedPolicy(t), Sources: []reputation.EvidenceSource{src},
		ReverifyAfter: time.Hour, RetryAfter: time.Minute, MaxRetryAfter: time.Minute, MaxStaleness: 3 * time.Hour})
	const image = "registry.internal/app@" + testDigest
	e.Request(image)
	if v := e.next(t, "the verified verdict"); v.Tier != reputation.TierTrusted || v.Incomplete {
		t.Fatalf("first verdict %s incomplete=%v, want trusted and complete", v.Tier, v.Incomplete)
	}
	src.down.Store(true)
	e.clock.Step(time.Hour) // the re-verification finds the registry down
	v := e.next(t, "the re-verification during the outage")
	if v.Tier != reputation.TierTrusted || !v.Incomplete || !strings.Contains(v.Reason(), "verified") {
		t.Fatalf("during the outage: %s incomplete=%v (%s), want the last verified signature to stand", v.Tier, v.Incomplete, v.Reason())
	}
	var detail string
	for _, c := range v.Contributions {
		if c.Signal == reputation.SignalSignature {
			detail = c.Observed
		}
	}
	if !strings.Contains(detail, "checked 1h0m0s ago; registry unreachable since") {
		t.Errorf("the explanation %q does not say the signature is an hour old and the registry down", detail)
	}
	// Retried every minute; past three hours since the last check, the outage counts.
	var after *reputation.Verdict
	for range 3 * 60 {
		e.clock.Step(time.Minute)
		after = e.next(t, "a retry")
		if after.Tier != reputation.TierTrusted {
			break
		}
	}
	if after.Tier != reputation.TierUnknown || !after.Incomplete {
		t.Fatalf("past the window: %s incomplete=%v (%s), want unknown (never untrusted), incomplete", after.Tier, after.Incomplete, after.Reason())
	}
	src.down.Store(false)
	e.clock.Step(time.Minute)
	if v := e.next(t, "the verdict once the registry answers"); v.Tier != reputation.TierTrusted || v.Incomplete {
		t.Errorf("after the outage: %s incomplete=%v, want trusted and complete", v.Tier, v.Incomplete)
	}
}

// An image no pod has used for ForgetUnusedAfter (default an hour) is forgotten when it comes up
// for re-verification, with no registry work and nothing kept; an image still in use is verified
// again as before. A pod that
// uses the forgotten image later asks for it, and it is evaluated afresh.
func TestEngineForgetsImagesNoPodUses(t *testing.T) {
	src := &countingSource{}
	used, gone := "registry.internal/app@"+testDigest, "registry.internal/oneoff@"+testDigest2
	var goneInUse atomic.Bool
	var forgotten atomic.Int32 // the metrics hook's calls
	goneInUse.Store(true)
	e := start(t, Options{Policy: examplePolicy(t), Sources: []reputation.EvidenceSource{src}, ReverifyAfter: time.Hour,
		InUse:       func(image string) bool { return image == used || goneInUse.Load() },
		OnForgotten: func(string, *reputation.Verdict) { forgotten.Add(1) }})
	e.Request(used)
	e.next(t, "the used image's verdict")
	e.Request(gone)
	e.next(t, "the one-off image's verdict")

	goneInUse.Store(false) // its last pod was deleted
	e.clock.Step(time.Hour)
	e.next(t, "the used image's re-verification")
	e.next(t, "the unused image's re-verification: found unused for the first time, it is evaluated as usual")
	if e.Cache().Get(gone) == nil {
		t.Fatal("an image found unused for the first time was forgotten at once")
	}
	e.clock.Step(time.Hour)
	e.next(t, "the used image's second re-verification")
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return e.Cache().Get(gone) == nil, nil
	}); err != nil {
		t.Fatalf("the unused image's verdict is still cached: %+v", e.Cache().Get(gone))
	}
	if got := src.calls.Load(); got != 5 {
		t.Errorf("%d evaluations, want 5: both images twice, then only the used one", got)
	}
	e.publishMu.Lock()
	_, kept := e.evidence[gone]
	e.publishMu.Unlock()
	if n := forgotten.Load(); n != 1 {
		t.Errorf("OnForgotten called %d times, want once", n)
	}
	if kept || e.Cache().Get(used) == nil {
		t.Errorf("evidence of the unused image kept: %v; used image's verdict: %+v", kept, e.Cache().Get(used))
	}
	e.clock.Step(time.Hour)
	e.next(t, "the used image's third re-verification")
	if got := src.calls.Load(); got != 6 {
		t.Errorf("%d evaluations, want 6: the forgotten image is not re-verified", got)
	}

	goneInUse.Store(true) // a new pod uses it
	e.Request(gone)
	if v := e.next(t, "the returning image's verdict"); v == nil || e.Cache().Get(gone) == nil {
		t.Error("the returning image was not evaluated afresh")
	}
}
