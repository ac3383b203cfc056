package v1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/reputation"
)

// Defaults an operator gets by saying nothing.
const (
	DefaultPoolLabelKey = "repute.dev/pool"
	DefaultVerdictWait  = 5 * time.Second
	// DefaultFalcoMaxBodyBytes caps an alert request body: 1 MiB holds hundreds of alerts.
	DefaultFalcoMaxBodyBytes = 1 << 20
	// DefaultReverifyAfter is how long a complete verdict stands before its evidence is
	// gathered again; DefaultRetryAfter the first delay before missing evidence is sought
	// again, doubling up to DefaultMaxRetryAfter.
	DefaultReverifyAfter = time.Hour
	DefaultRetryAfter    = 30 * time.Second
	DefaultMaxRetryAfter = 10 * time.Minute
	// DefaultProtectedPriority is Kubernetes' SystemCriticalPriority: the priority of
	// system-cluster-critical, below system-node-critical.
	DefaultProtectedPriority = 2000000000

	DefaultStoreMaxAge        = 90 * 24 * time.Hour
	DefaultMaxHistoryPerImage = 1000
	DefaultMaxDecisions       = 1000000
	DefaultWorkers            = 4
	DefaultRegistryTimeout    = 5 * time.Second
	DefaultRegistryBackoff    = 5 * time.Second
	DefaultMaxRegistryBackoff = 5 * time.Minute
)

// SetDefaults_ReputationArgs fills every field the operator left unset. This is the only place
// defaults live.
func SetDefaults_ReputationArgs(obj *ReputationArgs) {
	if obj.PoolLabelKey == nil {
		obj.PoolLabelKey = ptr.To(DefaultPoolLabelKey)
	}
	if obj.VerdictWait == nil {
		obj.VerdictWait = &metav1.Duration{Duration: DefaultVerdictWait}
	}
	if obj.Pools == nil {
		obj.Pools = &TierPools{}
	}
	obj.Pools.Trusted = defaultPool(obj.Pools.Trusted, reputation.TierTrusted, "Pack")
	obj.Pools.Unknown = defaultPool(obj.Pools.Unknown, reputation.TierUnknown, "Spread")
	obj.Pools.Untrusted = defaultPool(obj.Pools.Untrusted, reputation.TierUntrusted, "Spread")

	if obj.Replacement == nil {
		obj.Replacement = &ReplacementSpec{}
	}
	r := obj.Replacement
	if r.Mode == "" {
		r.Mode = "Report"
	}
	if r.Upward == "" {
		r.Upward = "None"
	}
	if r.EvictionsPerMinute == nil {
		r.EvictionsPerMinute = ptr.To[int32](30)
	}
	if r.MaxConcurrentEvictions == nil {
		r.MaxConcurrentEvictions = ptr.To[int32](5)
	}
	if r.Margin == nil {
		r.Margin = ptr.To[int32](5)
	}
	if r.SettleFor == nil {
		r.SettleFor = &metav1.Duration{Duration: 2 * time.Minute}
	}
	if r.ProtectedPriority == nil {
		r.ProtectedPriority = ptr.To[int32](DefaultProtectedPriority)
	}
	if obj.Untrusted == nil {
		obj.Untrusted = &UntrustedPoolSpec{}
	}
	if obj.Untrusted.Isolation == "" {
		obj.Untrusted.Isolation = "None"
	}
	if obj.Policy == nil {
		obj.Policy = &PolicySpec{}
	}
	p := obj.Policy
	if p.BaseScore == nil {
		p.BaseScore = ptr.To[int32](reputation.DefaultBaseScore)
	}
	if p.Thresholds == nil {
		p.Thresholds = &Thresholds{}
	}
	if p.Thresholds.Trusted == nil {
		p.Thresholds.Trusted = ptr.To[int32](reputation.DefaultTrustedAtOrAbove)
	}
	if p.Thresholds.Untrusted == nil {
		p.Thresholds.Untrusted = ptr.To[int32](reputation.DefaultUntrustedBelow)
	}
	if p.Origin == nil {
		p.Origin = &OriginPolicy{}
	}
	if p.Origin.MutableTagPenalty == nil {
		p.Origin.MutableTagPenalty = ptr.To[int32](reputation.DefaultMutableTagPenalty)
	}
	if p.Signature == nil {
		p.Signature = &SignaturePolicy{}
	}
	sig := p.Signature
	if sig.VerifiedWeight == nil {
		sig.VerifiedWeight = ptr.To[int32](reputation.DefaultVerifiedWeight)
	}
	if sig.UnverifiedWeight == nil {
		sig.UnverifiedWeight = ptr.To[int32](reputation.DefaultUnverifiedWeight)
	}
	if sig.AbsentWeight == nil {
		sig.AbsentWeight = ptr.To[int32](reputation.DefaultAbsentWeight)
	}
	if sig.RequireForTrusted == nil {
		sig.RequireForTrusted = ptr.To(true)
	}
	if sig.CheckIdentity == nil {
		sig.CheckIdentity = ptr.To(false)
	}
	if p.Dependencies == nil {
		p.Dependencies = &DependencyPolicy{}
	}
	deps := p.Dependencies
	if deps.CriticalWeight == nil {
		deps.CriticalWeight = ptr.To[int32](reputation.DefaultCriticalWeight)
	}
	if deps.HighWeight == nil {
		deps.HighWeight = ptr.To[int32](reputation.DefaultHighWeight)
	}
	if deps.MaxCritical == nil {
		deps.MaxCritical = ptr.To[int32](reputation.DefaultMaxCritical)
	}
	if deps.StaleAfter == nil {
		deps.StaleAfter = &metav1.Duration{Duration: reputation.DefaultStaleAfter}
	}
	if p.Behavior == nil {
		p.Behavior = &BehaviorPolicy{}
	}
	b := p.Behavior
	if b.HalfLife == nil {
		b.HalfLife = &metav1.Duration{Duration: reputation.DefaultBehaviorHalfLife}
	}
	for prio, w := range reputation.DefaultPriorityWeights() {
		if _, set := b.PriorityWeights[prio]; !set {
			if b.PriorityWeights == nil {
				b.PriorityWeights = map[string]int32{}
			}
			b.PriorityWeights[prio] = int32(w)
		}
	}
	if b.UntrustedPriority == nil {
		b.UntrustedPriority = ptr.To(reputation.DefaultUntrustedPriority)
	}
	if b.CrashLoopWeight == nil {
		b.CrashLoopWeight = ptr.To[int32](reputation.DefaultCrashLoopWeight)
	}
	if b.OOMKillWeight == nil {
		b.OOMKillWeight = ptr.To[int32](reputation.DefaultOOMKillWeight)
	}
	if b.RestartWeight == nil {
		b.RestartWeight = ptr.To[int32](reputation.DefaultRestartWeight)
	}
	if obj.Falco == nil {
		obj.Falco = &FalcoIngest{}
	}
	if obj.Falco.MaxBodyBytes == nil {
		obj.Falco.MaxBodyBytes = ptr.To[int64](DefaultFalcoMaxBodyBytes)
	}
	if obj.Store == nil {
		obj.Store = &StoreSpec{}
	}
	if obj.Store.MaxAge == nil {
		obj.Store.MaxAge = &metav1.Duration{Duration: DefaultStoreMaxAge}
	}
	if obj.Store.MaxHistoryPerImage == nil {
		obj.Store.MaxHistoryPerImage = ptr.To[int32](DefaultMaxHistoryPerImage)
	}
	if obj.Store.MaxDecisions == nil {
		obj.Store.MaxDecisions = ptr.To[int32](DefaultMaxDecisions)
	}
	if obj.Evaluation == nil {
		obj.Evaluation = &EvaluationSpec{}
	}
	ev := obj.Evaluation
	if ev.Workers == nil {
		ev.Workers = ptr.To[int32](DefaultWorkers)
	}
	for _, d := range []struct {
		field **metav1.Duration
		value time.Duration
	}{
		{&ev.ReverifyAfter, DefaultReverifyAfter},
		{&ev.RetryAfter, DefaultRetryAfter},
		{&ev.MaxRetryAfter, DefaultMaxRetryAfter},
		{&ev.RegistryTimeout, DefaultRegistryTimeout},
		{&ev.RegistryBackoff, DefaultRegistryBackoff},
		{&ev.MaxRegistryBackoff, DefaultMaxRegistryBackoff},
	} {
		if *d.field == nil {
			*d.field = &metav1.Duration{Duration: d.value}
		}
	}
}

func defaultPool(in *PoolSpec, tier reputation.Tier, placement string) *PoolSpec {
	if in == nil {
		in = &PoolSpec{}
	}
	if in.Name == nil {
		in.Name = ptr.To(string(tier))
	}
	if in.AllowUnpooledNodes == nil {
		in.AllowUnpooledNodes = ptr.To(false)
	}
	if in.Placement == nil {
		in.Placement = ptr.To(placement)
	}
	return in
}
