// Package v1alpha1 is the repute.dev/v1alpha1 API: ReputationPolicy, the trust policy as a
// cluster-scoped object that operators edit and the scheduler follows without a restart. Its
// CustomResourceDefinition is deploy/base/reputationpolicy-crd.yaml.
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	configv1 "github.com/repute-dev/repute/pkg/apis/config/v1"
)

const (
	Group   = "repute.dev"
	Version = "v1alpha1"
	Kind    = "ReputationPolicy"
)

// Resource is the API resource of ReputationPolicy objects.
var Resource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "reputationpolicies"}

// ReputationPolicy is the trust policy: weights, thresholds, origin rules and trusted keys.
type ReputationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec has exactly the fields of the scheduler args' policy block.
	Spec   configv1.PolicySpec    `json:"spec"`
	Status ReputationPolicyStatus `json:"status,omitempty"`
}

// ReputationPolicyStatus says what the scheduler made of the object.
type ReputationPolicyStatus struct {
	// ObservedGeneration is the generation the scheduler last acted on, applied or refused.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// PolicyVersion is the version of the policy in force, as verdicts and decisions record it.
	PolicyVersion string `json:"policyVersion,omitempty"`
	// Reweighed and TierChanges count the images re-scored, and those whose tier changed, when
	// the observed generation was applied.
	Reweighed   int32 `json:"reweighed,omitempty"`
	TierChanges int32 `json:"tierChanges,omitempty"`
	// Conditions: Applied is True while this generation is in force; False with reason Invalid
	// when it failed the scheduler's checks and the previous policy stayed in force.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types and reasons.
const (
	ConditionApplied = "Applied"
	ReasonApplied    = "Applied"
	ReasonInvalid    = "Invalid"
)

// DeepCopy copies a status; conditions hold no pointers.
func (in *ReputationPolicyStatus) DeepCopy() *ReputationPolicyStatus {
	out := *in
	out.Conditions = append([]metav1.Condition(nil), in.Conditions...)
	return &out
}
