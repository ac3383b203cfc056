package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/reputation"
)

// Defaults for the policy, one function per type, called by the generated
// SetObjectDefaults_ReputationPolicy (and, for the scheduler args' policy block, by the args'
// generated defaulter). The values are the domain's.

// SetDefaults_PolicySpec defaults the starting score.
func SetDefaults_PolicySpec(obj *PolicySpec) {
	if obj.BaseScore == nil {
		obj.BaseScore = ptr.To[int32](reputation.DefaultBaseScore)
	}
}

// SetDefaults_Thresholds defaults the tier thresholds.
func SetDefaults_Thresholds(obj *Thresholds) {
	if obj.Trusted == nil {
		obj.Trusted = ptr.To[int32](reputation.DefaultTrustedAtOrAbove)
	}
	if obj.Untrusted == nil {
		obj.Untrusted = ptr.To[int32](reputation.DefaultUntrustedBelow)
	}
}

// SetDefaults_OriginPolicy defaults the penalty of a mutable tag.
func SetDefaults_OriginPolicy(obj *OriginPolicy) {
	if obj.MutableTagPenalty == nil {
		obj.MutableTagPenalty = ptr.To[int32](reputation.DefaultMutableTagPenalty)
	}
}

// SetDefaults_SignaturePolicy defaults the signature weights; a verified signature is required
// for trust unless the operator says otherwise.
func SetDefaults_SignaturePolicy(obj *SignaturePolicy) {
	if obj.VerifiedWeight == nil {
		obj.VerifiedWeight = ptr.To[int32](reputation.DefaultVerifiedWeight)
	}
	if obj.UnverifiedWeight == nil {
		obj.UnverifiedWeight = ptr.To[int32](reputation.DefaultUnverifiedWeight)
	}
	if obj.AbsentWeight == nil {
		obj.AbsentWeight = ptr.To[int32](reputation.DefaultAbsentWeight)
	}
	if obj.RequireForTrusted == nil {
		obj.RequireForTrusted = ptr.To(true)
	}
	if obj.CheckIdentity == nil {
		obj.CheckIdentity = ptr.To(false)
	}
}

// SetDefaults_DependencyPolicy defaults the vulnerability weights.
func SetDefaults_DependencyPolicy(obj *DependencyPolicy) {
	if obj.CriticalWeight == nil {
		obj.CriticalWeight = ptr.To[int32](reputation.DefaultCriticalWeight)
	}
	if obj.HighWeight == nil {
		obj.HighWeight = ptr.To[int32](reputation.DefaultHighWeight)
	}
	if obj.MaxCritical == nil {
		obj.MaxCritical = ptr.To[int32](reputation.DefaultMaxCritical)
	}
	if obj.StaleAfter == nil {
		obj.StaleAfter = &metav1.Duration{Duration: reputation.DefaultStaleAfter}
	}
}

// SetDefaults_BehaviorPolicy defaults the behavior weights; priorities left out of
// priorityWeights keep theirs.
func SetDefaults_BehaviorPolicy(obj *BehaviorPolicy) {
	if obj.HalfLife == nil {
		obj.HalfLife = &metav1.Duration{Duration: reputation.DefaultBehaviorHalfLife}
	}
	for prio, w := range reputation.DefaultPriorityWeights() {
		if _, set := obj.PriorityWeights[prio]; !set {
			if obj.PriorityWeights == nil {
				obj.PriorityWeights = map[string]PriorityWeight{}
			}
			obj.PriorityWeights[prio] = PriorityWeight(w)
		}
	}
	if obj.UntrustedPriority == nil {
		obj.UntrustedPriority = ptr.To(reputation.DefaultUntrustedPriority)
	}
	if obj.CrashLoopWeight == nil {
		obj.CrashLoopWeight = ptr.To[int32](reputation.DefaultCrashLoopWeight)
	}
	if obj.OOMKillWeight == nil {
		obj.OOMKillWeight = ptr.To[int32](reputation.DefaultOOMKillWeight)
	}
	if obj.RestartWeight == nil {
		obj.RestartWeight = ptr.To[int32](reputation.DefaultRestartWeight)
	}
	if obj.MaxPodStatusPenaltyPerNamespace == nil {
		obj.MaxPodStatusPenaltyPerNamespace = ptr.To[int32](reputation.DefaultMaxPodStatusPenaltyPerNamespace)
	}
}
