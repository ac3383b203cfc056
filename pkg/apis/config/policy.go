package config

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/repute-dev/repute/reputation"
)

// Policy is the domain policy these args describe, before validation.
func Policy(spec *PolicySpec) reputation.Policy {
	p := reputation.Policy{
		BaseScore:        int(spec.BaseScore),
		TrustedAtOrAbove: int(spec.Thresholds.Trusted),
		UntrustedBelow:   int(spec.Thresholds.Untrusted),
		Origin:           reputation.OriginPolicy{MutableTagPenalty: int(spec.Origin.MutableTagPenalty)},
		Signature: reputation.SignaturePolicy{
			VerifiedWeight:    int(spec.Signature.VerifiedWeight),
			UnverifiedWeight:  int(spec.Signature.UnverifiedWeight),
			AbsentWeight:      int(spec.Signature.AbsentWeight),
			RequireForTrusted: spec.Signature.RequireForTrusted,
		},
		Dependencies: reputation.DependencyPolicy{
			CriticalWeight:      int(spec.Dependencies.CriticalWeight),
			HighWeight:          int(spec.Dependencies.HighWeight),
			MaxCritical:         int(spec.Dependencies.MaxCritical),
			DenyVulnerabilities: spec.Dependencies.DenyVulnerabilities,
			DenyPackages:        spec.Dependencies.DenyPackages,
			StaleAfter:          spec.Dependencies.StaleAfter.Duration,
		},
		Behavior: reputation.BehaviorPolicy{
			HalfLife:          spec.Behavior.HalfLife.Duration,
			PriorityWeights:   map[string]int{},
			UntrustedPriority: spec.Behavior.UntrustedPriority,
			CrashLoopWeight:   int(spec.Behavior.CrashLoopWeight),
			OOMKillWeight:     int(spec.Behavior.OOMKillWeight),
			RestartWeight:     int(spec.Behavior.RestartWeight),

			MaxPodStatusPenaltyPerNamespace: int(spec.Behavior.MaxPodStatusPenaltyPerNamespace),
		},
	}
	for _, k := range spec.Signature.Keys {
		sum := sha256.Sum256([]byte(strings.TrimSpace(k.PublicKey)))
		p.Signature.Keys = append(p.Signature.Keys, reputation.KeyIdentity{Name: k.Name,
			Fingerprint: hex.EncodeToString(sum[:8]), Repositories: k.Repositories})
	}
	for prio, w := range spec.Behavior.PriorityWeights {
		p.Behavior.PriorityWeights[prio] = int(w)
	}
	for _, r := range spec.Origin.Rules {
		p.Origin.Rules = append(p.Origin.Rules, reputation.OriginRule{Pattern: r.Pattern, Weight: int(r.Weight), Tier: reputation.Tier(r.Tier)})
	}
	return p
}

// PoolFor returns the pool spec of a tier.
func (p *TierPools) PoolFor(t reputation.Tier) *PoolSpec {
	switch t {
	case reputation.TierTrusted:
		return &p.Trusted
	case reputation.TierUnknown:
		return &p.Unknown
	default:
		return &p.Untrusted
	}
}
