package config

import (
	"maps"

	"k8s.io/apimachinery/pkg/runtime"
)

// DeepCopyInto copies args into out. Written by hand: the types are small and code generation
// would be the module's only generator.
func (in *ReputationArgs) DeepCopyInto(out *ReputationArgs) {
	*out = *in
	out.Policy.Origin.Rules = append([]OriginRule(nil), in.Policy.Origin.Rules...)
	out.Policy.Dependencies.DenyVulnerabilities = append([]string(nil), in.Policy.Dependencies.DenyVulnerabilities...)
	out.Policy.Dependencies.DenyPackages = append([]string(nil), in.Policy.Dependencies.DenyPackages...)
	out.Policy.Behavior.PriorityWeights = maps.Clone(in.Policy.Behavior.PriorityWeights)
	out.Evaluation.RegistryTimeouts = maps.Clone(in.Evaluation.RegistryTimeouts)
	out.Policy.Signature.Keys = nil
	for _, k := range in.Policy.Signature.Keys {
		k.Repositories = append([]string(nil), k.Repositories...)
		out.Policy.Signature.Keys = append(out.Policy.Signature.Keys, k)
	}
}

// DeepCopy returns a copy of args.
func (in *ReputationArgs) DeepCopy() *ReputationArgs {
	if in == nil {
		return nil
	}
	out := new(ReputationArgs)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *ReputationArgs) DeepCopyObject() runtime.Object {
	if c := in.DeepCopy(); c != nil {
		return c
	}
	return nil
}
