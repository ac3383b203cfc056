package v1

import (
	"maps"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/apis/config"
)

// Convert_v1_ReputationArgs_To_config_ReputationArgs converts defaulted versioned args to the
// internal type. Unset pointers (only possible when defaulting was skipped) become zero values,
// which validation then rejects with a field path.
func Convert_v1_ReputationArgs_To_config_ReputationArgs(in *ReputationArgs, out *config.ReputationArgs) {
	*out = config.ReputationArgs{
		PoolLabelKey: ptr.Deref(in.PoolLabelKey, ""),
		VerdictWait:  ptr.Deref(in.VerdictWait, metav1.Duration{}),
		PolicyName:   in.PolicyName,
	}
	if f := in.Falco; f != nil {
		out.Falco = config.FalcoIngest{BindAddress: f.BindAddress, TokenFile: f.TokenFile, TLSCertFile: f.TLSCertFile,
			TLSKeyFile: f.TLSKeyFile, ClientCAFile: f.ClientCAFile, MaxBodyBytes: ptr.Deref(f.MaxBodyBytes, 0)}
	}
	if a := in.Audit; a != nil {
		out.Audit = config.AuditAPI(*a)
	}
	if m := in.Mirror; m != nil {
		out.Mirror = config.MirrorSpec(*m)
	}
	if r := in.Replacement; r != nil {
		out.Replacement = config.ReplacementSpec{Mode: config.ReplacementMode(r.Mode), Upward: config.ReplacementMode(r.Upward),
			EvictionsPerMinute: ptr.Deref(r.EvictionsPerMinute, 0), MaxConcurrentEvictions: ptr.Deref(r.MaxConcurrentEvictions, 0),
			Margin: ptr.Deref(r.Margin, 0), SettleFor: ptr.Deref(r.SettleFor, metav1.Duration{}), EvictUnowned: r.EvictUnowned,
			MaxEvictionsPerNodePerMinute: r.MaxEvictionsPerNodePerMinute, MaxEvictionsPerNamespacePerMinute: r.MaxEvictionsPerNamespacePerMinute,
			ProtectedPriority: ptr.Deref(r.ProtectedPriority, 0)}
	}
	if u := in.Untrusted; u != nil {
		out.Untrusted = config.UntrustedPoolSpec{Isolation: config.UntrustedIsolation(u.Isolation), MaxPodsPerNode: u.MaxPodsPerNode, RequireLimits: u.RequireLimits}
	}
	if st := in.Store; st != nil {
		out.Store = config.StoreSpec{Path: st.Path, MaxAge: ptr.Deref(st.MaxAge, metav1.Duration{}),
			MaxHistoryPerImage: ptr.Deref(st.MaxHistoryPerImage, 0), MaxDecisions: ptr.Deref(st.MaxDecisions, 0)}
	}
	if ev := in.Evaluation; ev != nil {
		out.Evaluation = config.EvaluationSpec{
			Workers: ptr.Deref(ev.Workers, 0), ReverifyAfter: ptr.Deref(ev.ReverifyAfter, metav1.Duration{}),
			RetryAfter: ptr.Deref(ev.RetryAfter, metav1.Duration{}), MaxRetryAfter: ptr.Deref(ev.MaxRetryAfter, metav1.Duration{}),
			RegistryTimeout: ptr.Deref(ev.RegistryTimeout, metav1.Duration{}), RegistryTimeouts: maps.Clone(ev.RegistryTimeouts),
			RegistryBackoff: ptr.Deref(ev.RegistryBackoff, metav1.Duration{}), MaxRegistryBackoff: ptr.Deref(ev.MaxRegistryBackoff, metav1.Duration{}),
		}
	}
	if in.Pools != nil {
		out.Pools = config.TierPools{
			Trusted:   poolToInternal(in.Pools.Trusted),
			Unknown:   poolToInternal(in.Pools.Unknown),
			Untrusted: poolToInternal(in.Pools.Untrusted),
		}
	}
	if p := in.Policy; p != nil {
		out.Policy.BaseScore = ptr.Deref(p.BaseScore, 0)
		if t := p.Thresholds; t != nil {
			out.Policy.Thresholds = config.Thresholds{Trusted: ptr.Deref(t.Trusted, 0), Untrusted: ptr.Deref(t.Untrusted, 0)}
		}
		if o := p.Origin; o != nil {
			out.Policy.Origin.MutableTagPenalty = ptr.Deref(o.MutableTagPenalty, 0)
			for _, r := range o.Rules {
				out.Policy.Origin.Rules = append(out.Policy.Origin.Rules, config.OriginRule(r))
			}
		}
		if d := p.Dependencies; d != nil {
			out.Policy.Dependencies = config.DependencyPolicy{
				CriticalWeight:      ptr.Deref(d.CriticalWeight, 0),
				HighWeight:          ptr.Deref(d.HighWeight, 0),
				MaxCritical:         ptr.Deref(d.MaxCritical, 0),
				DenyVulnerabilities: append([]string(nil), d.DenyVulnerabilities...),
				DenyPackages:        append([]string(nil), d.DenyPackages...),
				StaleAfter:          ptr.Deref(d.StaleAfter, metav1.Duration{}),
			}
		}
		if b := p.Behavior; b != nil {
			out.Policy.Behavior = config.BehaviorPolicy{
				HalfLife:          ptr.Deref(b.HalfLife, metav1.Duration{}),
				PriorityWeights:   maps.Clone(b.PriorityWeights),
				UntrustedPriority: ptr.Deref(b.UntrustedPriority, ""),
				CrashLoopWeight:   ptr.Deref(b.CrashLoopWeight, 0),
				OOMKillWeight:     ptr.Deref(b.OOMKillWeight, 0),
				RestartWeight:     ptr.Deref(b.RestartWeight, 0),
			}
		}
		if sig := p.Signature; sig != nil {
			out.Policy.Signature = config.SignaturePolicy{
				VerifiedWeight:    ptr.Deref(sig.VerifiedWeight, 0),
				UnverifiedWeight:  ptr.Deref(sig.UnverifiedWeight, 0),
				AbsentWeight:      ptr.Deref(sig.AbsentWeight, 0),
				RequireForTrusted: ptr.Deref(sig.RequireForTrusted, true),
				CheckIdentity:     ptr.Deref(sig.CheckIdentity, false),
			}
			for _, k := range sig.Keys {
				out.Policy.Signature.Keys = append(out.Policy.Signature.Keys, config.SigningKey{Name: k.Name, PublicKey: k.PublicKey, Repositories: append([]string(nil), k.Repositories...)})
			}
		}
	}
}

func poolToInternal(in *PoolSpec) config.PoolSpec {
	if in == nil {
		return config.PoolSpec{}
	}
	return config.PoolSpec{
		Name:               ptr.Deref(in.Name, ""),
		AllowUnpooledNodes: ptr.Deref(in.AllowUnpooledNodes, false),
		Placement:          config.PlacementStrategy(ptr.Deref(in.Placement, "")),
	}
}

// Convert_config_ReputationArgs_To_v1_ReputationArgs converts internal args back, for
// kube-scheduler's --write-config-to and for logging the effective configuration.
func Convert_config_ReputationArgs_To_v1_ReputationArgs(in *config.ReputationArgs, out *ReputationArgs) {
	rules := make([]OriginRule, 0, len(in.Policy.Origin.Rules))
	for _, r := range in.Policy.Origin.Rules {
		rules = append(rules, OriginRule(r))
	}
	sig := in.Policy.Signature
	keys := make([]SigningKey, 0, len(sig.Keys))
	for _, k := range sig.Keys {
		keys = append(keys, SigningKey{Name: k.Name, PublicKey: k.PublicKey, Repositories: append([]string(nil), k.Repositories...)})
	}
	*out = ReputationArgs{
		PoolLabelKey: ptr.To(in.PoolLabelKey),
		VerdictWait:  ptr.To(in.VerdictWait),
		PolicyName:   in.PolicyName,
		Pools: &TierPools{
			Trusted:   poolToV1(in.Pools.Trusted),
			Unknown:   poolToV1(in.Pools.Unknown),
			Untrusted: poolToV1(in.Pools.Untrusted),
		},
		Policy: &PolicySpec{
			BaseScore:  ptr.To(in.Policy.BaseScore),
			Thresholds: &Thresholds{Trusted: ptr.To(in.Policy.Thresholds.Trusted), Untrusted: ptr.To(in.Policy.Thresholds.Untrusted)},
			Origin:     &OriginPolicy{Rules: rules, MutableTagPenalty: ptr.To(in.Policy.Origin.MutableTagPenalty)},
			Signature: &SignaturePolicy{
				VerifiedWeight: ptr.To(sig.VerifiedWeight), UnverifiedWeight: ptr.To(sig.UnverifiedWeight),
				AbsentWeight: ptr.To(sig.AbsentWeight), RequireForTrusted: ptr.To(sig.RequireForTrusted), Keys: keys,
				CheckIdentity: ptr.To(sig.CheckIdentity),
			},
			Dependencies: dependenciesToV1(in.Policy.Dependencies),
			Behavior:     behaviorToV1(in.Policy.Behavior),
		},
		Falco: &FalcoIngest{BindAddress: in.Falco.BindAddress, TokenFile: in.Falco.TokenFile, TLSCertFile: in.Falco.TLSCertFile,
			TLSKeyFile: in.Falco.TLSKeyFile, ClientCAFile: in.Falco.ClientCAFile, MaxBodyBytes: ptr.To(in.Falco.MaxBodyBytes)},
		Audit:  ptr.To(AuditAPI(in.Audit)),
		Mirror: ptr.To(MirrorSpec(in.Mirror)),
		Replacement: &ReplacementSpec{Mode: string(in.Replacement.Mode), Upward: string(in.Replacement.Upward),
			EvictionsPerMinute: ptr.To(in.Replacement.EvictionsPerMinute), MaxConcurrentEvictions: ptr.To(in.Replacement.MaxConcurrentEvictions),
			Margin: ptr.To(in.Replacement.Margin), SettleFor: ptr.To(in.Replacement.SettleFor), EvictUnowned: in.Replacement.EvictUnowned,
			MaxEvictionsPerNodePerMinute:      in.Replacement.MaxEvictionsPerNodePerMinute,
			MaxEvictionsPerNamespacePerMinute: in.Replacement.MaxEvictionsPerNamespacePerMinute,
			ProtectedPriority:                 ptr.To(in.Replacement.ProtectedPriority)},
		Untrusted: &UntrustedPoolSpec{Isolation: string(in.Untrusted.Isolation), MaxPodsPerNode: in.Untrusted.MaxPodsPerNode,
			RequireLimits: in.Untrusted.RequireLimits},
		Store: &StoreSpec{Path: in.Store.Path, MaxAge: ptr.To(in.Store.MaxAge),
			MaxHistoryPerImage: ptr.To(in.Store.MaxHistoryPerImage), MaxDecisions: ptr.To(in.Store.MaxDecisions)},
		Evaluation: &EvaluationSpec{
			Workers: ptr.To(in.Evaluation.Workers), ReverifyAfter: ptr.To(in.Evaluation.ReverifyAfter),
			RetryAfter: ptr.To(in.Evaluation.RetryAfter), MaxRetryAfter: ptr.To(in.Evaluation.MaxRetryAfter),
			RegistryTimeout: ptr.To(in.Evaluation.RegistryTimeout), RegistryTimeouts: maps.Clone(in.Evaluation.RegistryTimeouts),
			RegistryBackoff: ptr.To(in.Evaluation.RegistryBackoff), MaxRegistryBackoff: ptr.To(in.Evaluation.MaxRegistryBackoff),
		},
	}
}

func behaviorToV1(in config.BehaviorPolicy) *BehaviorPolicy {
	return &BehaviorPolicy{
		HalfLife: ptr.To(in.HalfLife), PriorityWeights: maps.Clone(in.PriorityWeights), UntrustedPriority: ptr.To(in.UntrustedPriority),
		CrashLoopWeight: ptr.To(in.CrashLoopWeight), OOMKillWeight: ptr.To(in.OOMKillWeight), RestartWeight: ptr.To(in.RestartWeight),
	}
}

func poolToV1(in config.PoolSpec) *PoolSpec {
	return &PoolSpec{Name: ptr.To(in.Name), AllowUnpooledNodes: ptr.To(in.AllowUnpooledNodes), Placement: ptr.To(string(in.Placement))}
}

// DeepCopyObject implements runtime.Object.
func (in *ReputationArgs) DeepCopyObject() runtime.Object {
	if in == nil {
		return nil
	}
	out := &ReputationArgs{TypeMeta: in.TypeMeta, PoolLabelKey: copyPtr(in.PoolLabelKey), VerdictWait: copyPtr(in.VerdictWait), PolicyName: in.PolicyName}
	if f := in.Falco; f != nil {
		c := *f
		c.MaxBodyBytes = copyPtr(f.MaxBodyBytes)
		out.Falco = &c
	}
	out.Audit = copyPtr(in.Audit)
	out.Mirror = copyPtr(in.Mirror)
	out.Untrusted = copyPtr(in.Untrusted)
	if r := in.Replacement; r != nil {
		c := *r
		c.EvictionsPerMinute, c.MaxConcurrentEvictions, c.Margin, c.SettleFor = copyPtr(r.EvictionsPerMinute), copyPtr(r.MaxConcurrentEvictions), copyPtr(r.Margin), copyPtr(r.SettleFor)
		c.ProtectedPriority = copyPtr(r.ProtectedPriority)
		out.Replacement = &c
	}
	if st := in.Store; st != nil {
		out.Store = &StoreSpec{Path: st.Path, MaxAge: copyPtr(st.MaxAge), MaxHistoryPerImage: copyPtr(st.MaxHistoryPerImage), MaxDecisions: copyPtr(st.MaxDecisions)}
	}
	if ev := in.Evaluation; ev != nil {
		out.Evaluation = &EvaluationSpec{Workers: copyPtr(ev.Workers), ReverifyAfter: copyPtr(ev.ReverifyAfter),
			RetryAfter: copyPtr(ev.RetryAfter), MaxRetryAfter: copyPtr(ev.MaxRetryAfter),
			RegistryTimeout: copyPtr(ev.RegistryTimeout), RegistryTimeouts: maps.Clone(ev.RegistryTimeouts),
			RegistryBackoff: copyPtr(ev.RegistryBackoff), MaxRegistryBackoff: copyPtr(ev.MaxRegistryBackoff)}
	}
	if in.Pools != nil {
		out.Pools = &TierPools{Trusted: in.Pools.Trusted.deepCopy(), Unknown: in.Pools.Unknown.deepCopy(), Untrusted: in.Pools.Untrusted.deepCopy()}
	}
	if p := in.Policy; p != nil {
		out.Policy = &PolicySpec{BaseScore: copyPtr(p.BaseScore)}
		if t := p.Thresholds; t != nil {
			out.Policy.Thresholds = &Thresholds{Trusted: copyPtr(t.Trusted), Untrusted: copyPtr(t.Untrusted)}
		}
		if o := p.Origin; o != nil {
			out.Policy.Origin = &OriginPolicy{Rules: append([]OriginRule(nil), o.Rules...), MutableTagPenalty: copyPtr(o.MutableTagPenalty)}
		}
		if d := p.Dependencies; d != nil {
			out.Policy.Dependencies = &DependencyPolicy{
				CriticalWeight: copyPtr(d.CriticalWeight), HighWeight: copyPtr(d.HighWeight), MaxCritical: copyPtr(d.MaxCritical),
				DenyVulnerabilities: append([]string(nil), d.DenyVulnerabilities...), DenyPackages: append([]string(nil), d.DenyPackages...),
				StaleAfter: copyPtr(d.StaleAfter),
			}
		}
		if b := p.Behavior; b != nil {
			out.Policy.Behavior = &BehaviorPolicy{
				HalfLife: copyPtr(b.HalfLife), PriorityWeights: maps.Clone(b.PriorityWeights), UntrustedPriority: copyPtr(b.UntrustedPriority),
				CrashLoopWeight: copyPtr(b.CrashLoopWeight), OOMKillWeight: copyPtr(b.OOMKillWeight), RestartWeight: copyPtr(b.RestartWeight),
			}
		}
		if sig := p.Signature; sig != nil {
			out.Policy.Signature = &SignaturePolicy{
				VerifiedWeight: copyPtr(sig.VerifiedWeight), UnverifiedWeight: copyPtr(sig.UnverifiedWeight),
				AbsentWeight: copyPtr(sig.AbsentWeight), RequireForTrusted: copyPtr(sig.RequireForTrusted), CheckIdentity: copyPtr(sig.CheckIdentity),
				Keys: copyKeys(sig.Keys),
			}
		}
	}
	return out
}

func (in *PoolSpec) deepCopy() *PoolSpec {
	if in == nil {
		return nil
	}
	return &PoolSpec{Name: copyPtr(in.Name), AllowUnpooledNodes: copyPtr(in.AllowUnpooledNodes), Placement: copyPtr(in.Placement)}
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func copyKeys(in []SigningKey) []SigningKey {
	if in == nil {
		return nil
	}
	out := make([]SigningKey, len(in))
	for i, k := range in {
		out[i] = SigningKey{Name: k.Name, PublicKey: k.PublicKey, Repositories: append([]string(nil), k.Repositories...)}
	}
	return out
}

func dependenciesToV1(in config.DependencyPolicy) *DependencyPolicy {
	return &DependencyPolicy{
		CriticalWeight: ptr.To(in.CriticalWeight), HighWeight: ptr.To(in.HighWeight), MaxCritical: ptr.To(in.MaxCritical),
		DenyVulnerabilities: append([]string(nil), in.DenyVulnerabilities...), DenyPackages: append([]string(nil), in.DenyPackages...),
		StaleAfter: ptr.To(in.StaleAfter),
	}
}
