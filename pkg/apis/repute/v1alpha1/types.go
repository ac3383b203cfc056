package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReputationPolicy is the trust policy: how the evidence about an image (its origin, its
// signatures, its known vulnerabilities and its runtime behavior) weighs into a score and a
// tier. The scheduler follows the one its args name (policyName); editing it re-scores every
// image in the background, without a restart. Checks the schema cannot make (a key that does
// not parse) are the scheduler's, reported in status as Applied=False.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=rpol
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=".status.policyVersion"
// +kubebuilder:printcolumn:name="Applied",type=string,JSONPath=".status.conditions[?(@.type==\"Applied\")].status"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=".status.conditions[?(@.type==\"Applied\")].reason"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type ReputationPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's metadata.
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// spec is the policy. Unset fields take the defaults the scheduler args take.
	Spec PolicySpec `json:"spec"`
	// status says what the scheduler made of the policy.
	// +optional
	Status ReputationPolicyStatus `json:"status,omitempty"`
}

// ReputationPolicyList is a list of ReputationPolicy objects.
//
// +kubebuilder:object:root=true
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type ReputationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's metadata.
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the policies.
	Items []ReputationPolicy `json:"items"`
}

// PolicySpec is the trust policy. Every image starts at baseScore; each kind of evidence adds
// or subtracts points, or decides a tier outright; thresholds split the score into tiers.
type PolicySpec struct {
	// baseScore is where every image's score starts, 0–100. Default 50.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	BaseScore *int32 `json:"baseScore,omitempty"`
	// thresholds split the 0–100 score into the trusted, unknown and untrusted tiers.
	// +optional
	Thresholds Thresholds `json:"thresholds,omitempty"`
	// origin weighs where images come from: registry and repository, and whether a digest pins them.
	// +optional
	Origin OriginPolicy `json:"origin,omitempty"`
	// signature weighs cosign signatures, verified offline against the operator's keys.
	// +optional
	Signature SignaturePolicy `json:"signature,omitempty"`
	// dependencies weighs Trivy Operator's vulnerability reports about the image.
	// +optional
	Dependencies DependencyPolicy `json:"dependencies,omitempty"`
	// behavior weighs runtime behavior: Falco alerts, crash loops, OOM kills and restarts.
	// +optional
	Behavior BehaviorPolicy `json:"behavior,omitempty"`
}

// Thresholds split the 0–100 score into tiers: trusted at or above trusted, untrusted below
// untrusted, unknown between.
//
// +kubebuilder:validation:XValidation:rule="!has(self.trusted) || !has(self.untrusted) || self.untrusted <= self.trusted",message="must not exceed thresholds.trusted",fieldPath=".untrusted"
type Thresholds struct {
	// trusted is the lowest trusted score. Default 70.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Trusted *int32 `json:"trusted,omitempty"`
	// untrusted: scores below it are untrusted. Default 30.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Untrusted *int32 `json:"untrusted,omitempty"`
}

// OriginPolicy weighs where images come from.
type OriginPolicy struct {
	// rules are tried in order; the first whose pattern matches the image decides.
	// +kubebuilder:validation:MaxItems=256
	// +listType=atomic
	// +optional
	Rules []OriginRule `json:"rules,omitempty"`
	// mutableTagPenalty is subtracted when an image is named by a tag, not a digest. Default 10.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	MutableTagPenalty *int32 `json:"mutableTagPenalty,omitempty"`
}

// OriginRule gives the images it matches points, or a tier outright.
type OriginRule struct {
	// pattern is "<registry>/<repository>" with globs (registry.internal/*, *.corp.example/team/*),
	// or "*" for every image. Registries are matched as the container runtime resolves them.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self == '*' || self.matches('^[^/]+/.+$')",message="must be \"<registry>/<repository>\" (globs allowed) or \"*\""
	Pattern string `json:"pattern"`
	// weight is added to the score of the images the rule matches, -100–100.
	// +kubebuilder:validation:Minimum=-100
	// +kubebuilder:validation:Maximum=100
	// +optional
	Weight int32 `json:"weight,omitempty"`
	// tier, when set, is the tier of the images the rule matches, whatever their score.
	// +kubebuilder:validation:Enum=trusted;unknown;untrusted
	// +optional
	Tier string `json:"tier,omitempty"`
}

// SignaturePolicy weighs cosign signatures, verified offline against the operator's keys.
type SignaturePolicy struct {
	// verifiedWeight is added for a signature by a trusted key over the image's digest. Default 30.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	VerifiedWeight *int32 `json:"verifiedWeight,omitempty"`
	// unverifiedWeight (≤ 0) applies when signatures exist but none is by a trusted key. Default -10.
	// +kubebuilder:validation:Minimum=-100
	// +kubebuilder:validation:Maximum=0
	// +optional
	UnverifiedWeight *int32 `json:"unverifiedWeight,omitempty"`
	// absentWeight (≤ 0) applies to unsigned images. Default 0.
	// +kubebuilder:validation:Minimum=-100
	// +kubebuilder:validation:Maximum=0
	// +optional
	AbsentWeight *int32 `json:"absentWeight,omitempty"`
	// requireForTrusted keeps images without a verified signature out of the trusted tier,
	// whatever their score or origin rule. Default true.
	// +optional
	RequireForTrusted *bool `json:"requireForTrusted,omitempty"`
	// checkIdentity also requires the docker-reference a signature names (legacy format; cosign
	// v3 bundles name none) to be the image's repository: a copy mirrored elsewhere then counts
	// as unverified. Default false.
	// +optional
	CheckIdentity *bool `json:"checkIdentity,omitempty"`
	// keys are the trusted public keys. With none, signatures are not checked (and, with
	// requireForTrusted, nothing is trusted).
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	// +optional
	Keys []SigningKey `json:"keys,omitempty"`
}

// SigningKey is one trusted public key.
type SigningKey struct {
	// name identifies the key in verdicts and audit records.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// publicKey is the PEM public key, as `cosign generate-key-pair` writes it to cosign.pub.
	// +kubebuilder:validation:MaxLength=16384
	// +kubebuilder:validation:XValidation:rule="self.contains('-----BEGIN PUBLIC KEY-----')",message="must be a PEM public key (-----BEGIN PUBLIC KEY-----), as cosign.pub holds it"
	PublicKey string `json:"publicKey"`
	// repositories are the "registry/repository" globs (origin-rule syntax) this key vouches
	// for. Only images in them are checked against it; none means every image.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=512
	// +listType=atomic
	// +optional
	Repositories []string `json:"repositories,omitempty"`
}

// DependencyPolicy weighs Trivy Operator VulnerabilityReports and ClusterVulnerabilityReports,
// read from the cluster when their CRDs are installed.
type DependencyPolicy struct {
	// criticalWeight (≤ 0) applies per critical vulnerability. Default -20.
	// +kubebuilder:validation:Minimum=-100
	// +kubebuilder:validation:Maximum=0
	// +optional
	CriticalWeight *int32 `json:"criticalWeight,omitempty"`
	// highWeight (≤ 0) applies per high vulnerability. Default -5.
	// +kubebuilder:validation:Minimum=-100
	// +kubebuilder:validation:Maximum=0
	// +optional
	HighWeight *int32 `json:"highWeight,omitempty"`
	// maxCritical: more critical vulnerabilities make the image untrusted. Default 0.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1048576
	// +optional
	MaxCritical *int32 `json:"maxCritical,omitempty"`
	// denyVulnerabilities are IDs (CVE-2021-44228) that make an image listing any of them untrusted.
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=128
	// +listType=atomic
	// +optional
	DenyVulnerabilities []string `json:"denyVulnerabilities,omitempty"`
	// denyPackages are package names that make an image listing any of them untrusted.
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=atomic
	// +optional
	DenyPackages []string `json:"denyPackages,omitempty"`
	// staleAfter: an older report counts as none. Default 168h.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self == '0' || self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="must be a duration such as 168h, not negative"
	// +optional
	StaleAfter *metav1.Duration `json:"staleAfter,omitempty"`
}

// BehaviorPolicy weighs runtime behavior. Every weight is ≤ 0: behavior only ever lowers a
// reputation, and penalties halve every halfLife, so an image recovers only with time.
type BehaviorPolicy struct {
	// halfLife is how long a penalty takes to halve. Default 24h; 0s: never fades.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self == '0' || self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="must be a duration such as 24h, not negative"
	// +optional
	HalfLife *metav1.Duration `json:"halfLife,omitempty"`
	// priorityWeights are the penalties of one Falco alert by priority (Emergency, Alert,
	// Critical, Error, Warning, Notice, Informational, Debug). Priorities left out keep their
	// defaults: -100, -80, -60, -30, -10, -2, 0, 0.
	// +kubebuilder:validation:MaxProperties=8
	// +kubebuilder:validation:XValidation:rule="self.all(p, p in ['Emergency', 'Alert', 'Critical', 'Error', 'Warning', 'Notice', 'Informational', 'Debug'])",message="keys must be Falco priorities: Emergency, Alert, Critical, Error, Warning, Notice, Informational, Debug"
	// +optional
	PriorityWeights map[string]PriorityWeight `json:"priorityWeights,omitempty"`
	// untrustedPriority: an alert at or above this priority makes the image untrusted for one
	// half-life, whatever its score. Default Critical; "" never.
	// +kubebuilder:validation:Enum="";Emergency;Alert;Critical;Error;Warning;Notice;Informational;Debug
	// +optional
	UntrustedPriority *string `json:"untrustedPriority,omitempty"`
	// crashLoopWeight applies when a container enters CrashLoopBackOff. Default -15.
	// +kubebuilder:validation:Minimum=-100
	// +kubebuilder:validation:Maximum=0
	// +optional
	CrashLoopWeight *int32 `json:"crashLoopWeight,omitempty"`
	// oomKillWeight applies when a container is OOM-killed. Default -10.
	// +kubebuilder:validation:Minimum=-100
	// +kubebuilder:validation:Maximum=0
	// +optional
	OOMKillWeight *int32 `json:"oomKillWeight,omitempty"`
	// restartWeight applies per container restart (at most 5 counted per status update). Default -2.
	// +kubebuilder:validation:Minimum=-100
	// +kubebuilder:validation:Maximum=0
	// +optional
	RestartWeight *int32 `json:"restartWeight,omitempty"`
	// maxPodStatusPenaltyPerNamespace bounds the points the pod-status events (crash loops, OOM
	// kills, restarts) of one namespace's pods may take from an image, in all: a tenant decides
	// whether its own pods crash, and must not make a shared image untrusted for everyone.
	// Falco alerts are not bounded. Only pods Repute placed count at all. Default 20; 0: pod
	// status lowers nothing.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxPodStatusPenaltyPerNamespace *int32 `json:"maxPodStatusPenaltyPerNamespace,omitempty"`
}

// PriorityWeight is the penalty of one Falco alert of a priority, -100–0.
//
// +kubebuilder:validation:Minimum=-100
// +kubebuilder:validation:Maximum=0
type PriorityWeight int32

// ReputationPolicyStatus says what the scheduler made of the object.
type ReputationPolicyStatus struct {
	// observedGeneration is the generation the scheduler last acted on, applied or refused.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// policyVersion is the version of the policy in force, as verdicts and placement decisions record it.
	// +optional
	PolicyVersion string `json:"policyVersion,omitempty"`
	// reweighed counts the images re-scored from memory when the observed generation was applied.
	// +optional
	Reweighed int32 `json:"reweighed,omitempty"`
	// tierChanges counts the images whose tier changed when the observed generation was applied.
	// +optional
	TierChanges int32 `json:"tierChanges,omitempty"`
	// conditions: Applied is True while this generation is in force; False with reason Invalid
	// when it failed the scheduler's checks and the previous policy stayed in force.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types and reasons.
const (
	ConditionApplied = "Applied"
	ReasonApplied    = "Applied"
	ReasonInvalid    = "Invalid"
)
