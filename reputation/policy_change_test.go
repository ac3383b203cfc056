package reputation

import (
	"context"
	"sort"
	"testing"
)

// keyedPolicy trusts the key "ops" (with the given fingerprint) for registry.internal.
func keyedPolicy(t *testing.T, verifiedWeight int, fingerprint string) *Policy {
	p := *signedPolicy(t)
	p.Signature.VerifiedWeight = verifiedWeight
	if fingerprint != "" {
		p.Signature.Keys = []KeyIdentity{{Name: "ops", Fingerprint: fingerprint, Repositories: []string{"registry.internal/*"}}}
	}
	return mustPolicy(t, p)
}

// evaluated runs an engine over the images until each has a verdict built from evidence.
func evaluated(t *testing.T, p *Policy, images ...string) *Engine {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := NewEngine(EngineOptions{Policy: p, Sources: []EvidenceSource{&flakySource{}}, Workers: 2, ReverifyAfter: -1})
	go e.Run(ctx)
	for _, img := range images {
		e.Request(img)
	}
	waitFor(t, "verdicts", func() bool {
		for _, img := range images {
			if v := e.Cache().Get(img); v == nil || v.DecidedBy == "" {
				return false
			}
		}
		return true
	})
	return e
}

func TestSetPolicyAndReweighRescoreFromMemory(t *testing.T) {
	api := "registry.internal/team/api@" + testDigest
	e := evaluated(t, keyedPolicy(t, 30, "aa"), api)
	if v := e.Cache().Get(api); v.Tier != TierTrusted || v.Score != 90 {
		t.Fatalf("before: %+v, want trusted 90", v)
	}
	tests := []struct {
		name        string
		policy      *Policy
		wantTier    Tier
		wantScore   int
		wantChanged int
	}{
		{"a lower signature weight drops below the trusted threshold", keyedPolicy(t, 5, "aa"), TierUnknown, 65, 1},
		{"the same policy again changes nothing", keyedPolicy(t, 5, "aa"), TierUnknown, 65, 0},
		{"weight restored", keyedPolicy(t, 30, "aa"), TierTrusted, 90, 1},
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
		next        *Policy
		wantRevoked []string
		wantTier    Tier
	}{
		{"same key", keyedPolicy(t, 30, "aa"), nil, TierTrusted},
		{"key material replaced under the same name", keyedPolicy(t, 30, "bb"), []string{"ops"}, TierUnknown},
		{"key removed", keyedPolicy(t, 30, ""), []string{"ops"}, TierUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			revoked := RevokedKeys(old, tt.next)
			var names []string
			for n := range revoked {
				names = append(names, n)
			}
			sort.Strings(names)
			if len(names) != len(tt.wantRevoked) || (len(names) > 0 && names[0] != tt.wantRevoked[0]) {
				t.Errorf("revoked %v, want %v", names, tt.wantRevoked)
			}
			sims, notGathered := e.Simulate(tt.next, WithdrawSignatures(revoked))
			if len(sims) != 1 || len(notGathered) != 0 {
				t.Fatalf("simulated %d, not gathered %v", len(sims), notGathered)
			}
			if got := sims[0].After.Tier; got != tt.wantTier {
				t.Errorf("simulated tier %s, want %s (%s)", got, tt.wantTier, sims[0].After.Reason())
			}
			if e.Cache().Get(api).Tier != TierTrusted {
				t.Error("Simulate changed the cache")
			}
		})
	}
}

// Verdicts warmed from the store have no evidence in memory yet: a simulation says so instead
// of guessing.
func TestSimulateReportsImagesWithoutEvidence(t *testing.T) {
	e := NewEngine(EngineOptions{Policy: signedPolicy(t)})
	e.Cache().Publish("docker.io/library/nginx:1", &Verdict{Image: "docker.io/library/nginx:1", Tier: TierUnknown})
	sims, notGathered := e.Simulate(signedPolicy(t), nil)
	if len(sims) != 0 || len(notGathered) != 1 || notGathered[0] != "docker.io/library/nginx:1" {
		t.Errorf("simulations %v, not gathered %v", sims, notGathered)
	}
}
