package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/repute-dev/repute/reputation"
)

// engineWithEvidence is an engine holding gathered evidence and verdicts for n signed images,
// as after a day of scheduling.
func engineWithEvidence(b *testing.B, n int) *Engine {
	b.Helper()
	p := keyedPolicy(&testing.T{}, 30, "aa")
	e := New(Options{Policy: p, LocalSources: []reputation.EvidenceSource{&reputation.BehaviorSource{Ledger: reputation.NewBehaviorLedger()}}})
	now := time.Now()
	for i := range n {
		image := fmt.Sprintf("registry.internal/team/app-%05d@sha256:%064x", i, i)
		ref, err := reputation.ParseImageRef(image)
		if err != nil {
			b.Fatal(err)
		}
		ev := &reputation.Evidence{Image: ref, Signature: &reputation.SignatureEvidence{State: reputation.SignatureVerified, Key: "ops"}}
		e.publish(image, ev, reputation.Evaluate(p, ev, now))
	}
	return e
}

// What a policy change costs: every image re-weighed from memory (Reweigh, on apply) or
// weighed under a proposal without publishing (Simulate, for what-if).
func BenchmarkPolicyChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		e := engineWithEvidence(b, n)
		policies := []*reputation.Policy{keyedPolicy(&testing.T{}, 5, "aa"), keyedPolicy(&testing.T{}, 30, "aa")}
		b.Run(fmt.Sprintf("Reweigh/images=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				e.SetPolicy(policies[i%2]) // alternate, so every image changes each time
				if changed := e.Reweigh(nil); changed != n {
					b.Fatalf("%d verdicts changed, want %d", changed, n)
				}
			}
		})
		b.Run(fmt.Sprintf("Simulate/images=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if sims, _ := e.Simulate(policies[0], nil); len(sims) != n {
					b.Fatalf("%d simulated, want %d", len(sims), n)
				}
			}
		})
	}
}
