// Package config holds the internal types of the Reputation plugin's arguments, registered with
// kube-scheduler's own config scheme so that they are decoded strictly, defaulted and converted
// like the in-tree plugins' args.
package config

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReputationArgs configures the Reputation plugin. The type name must be the plugin name plus
// "Args": kube-scheduler finds the type for a pluginConfig entry by that name.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type ReputationArgs struct {
	metav1.TypeMeta

	// PoolLabelKey is the node label that names a node's pool. Pool nodes are also tainted
	// <PoolLabelKey>=<pool>:NoSchedule so that no other scheduler places pods on them.
	PoolLabelKey string
	// Pools says where each tier's pods go.
	Pools TierPools
	// Policy weighs evidence into a score and a tier.
	Policy PolicySpec
	// PolicyName, when set, names the cluster-scoped ReputationPolicy (repute.dev/v1alpha1)
	// that is the policy: followed live, with Policy only in force until it has been read.
	PolicyName string
	// VerdictWait bounds how long a pod waits for its images' first verdicts before it is placed
	// as unknown.
	VerdictWait metav1.Duration
	// Falco configures the endpoint that takes Falco alerts; no bind address, no endpoint.
	Falco FalcoIngest
	// Evaluation tunes the engine's background work: concurrency, re-verification, retries
	// and how registries are treated.
	Evaluation EvaluationSpec
	// Store is the durable record of verdicts, decisions and policies; no path, no store.
	Store StoreSpec
	// Audit serves the read-only audit API; no bind address, no API.
	Audit AuditAPI
	// Mirror keeps a verdict snapshot in the cluster for standby replicas; no namespace, no mirror.
	Mirror MirrorSpec
	// Untrusted restricts the untrusted pool beyond placement.
	Untrusted UntrustedPoolSpec
	// Replacement moves running pods whose tier no longer matches their node's pool.
	Replacement ReplacementSpec
}

// ReplacementMode says what happens to a running pod in the wrong pool.
type ReplacementMode string

const (
	// ReplacementNone: nothing happens (not "Off", which YAML reads as false).
	ReplacementNone ReplacementMode = "None"
	// ReplacementReport: an Event on the pod and a record in the store, nothing more.
	ReplacementReport ReplacementMode = "Report"
	// ReplacementEvict: evicted through the Eviction API (PodDisruptionBudgets hold), so its
	// controller recreates it and Repute places the replacement in the right pool.
	ReplacementEvict ReplacementMode = "Evict"
)

// ReplacementSpec configures moving running pods when their tier changes.
type ReplacementSpec struct {
	// Mode applies to pods whose tier dropped (their pool is too trusted for them now);
	// Upward to pods whose tier rose.
	Mode, Upward ReplacementMode
	// EvictionsPerMinute and MaxConcurrentEvictions bound the evictions.
	EvictionsPerMinute     int32
	MaxConcurrentEvictions int32
	// Margin is how far past a threshold a score must be to act at once; closer, the tier
	// must hold for SettleFor. Tiers decided by a rule (an alert, an invalid signature) act at once.
	Margin    int32
	SettleFor metav1.Duration
	// EvictUnowned also evicts pods no controller would recreate; by default they are reported.
	EvictUnowned bool
	// MaxEvictionsPerNodePerMinute and MaxEvictionsPerNamespacePerMinute bound evictions from
	// one node and from one namespace within any minute; 0 means no bound beyond
	// EvictionsPerMinute.
	MaxEvictionsPerNodePerMinute, MaxEvictionsPerNamespacePerMinute int32
	// ProtectedPriority: pods at or above this priority are reported, never evicted.
	ProtectedPriority int32
}

// UntrustedIsolation says whom untrusted pods may share a node with.
type UntrustedIsolation string

const (
	// UntrustedIsolationNone: untrusted pods share their pool's nodes.
	UntrustedIsolationNone UntrustedIsolation = "None"
	// UntrustedIsolationPerNamespace: an untrusted pod never shares a node with pods of
	// another namespace.
	UntrustedIsolationPerNamespace UntrustedIsolation = "PerNamespace"
)

// UntrustedPoolSpec restricts untrusted pods beyond the pool they are placed in.
type UntrustedPoolSpec struct {
	Isolation UntrustedIsolation
	// MaxPodsPerNode bounds the pods on a node that takes untrusted pods; 0 means no bound.
	MaxPodsPerNode int32
	// RequireLimits keeps untrusted pods without CPU and memory limits on every container
	// unschedulable, with a reason that says so.
	RequireLimits bool
}

// AuditAPI is the read-only HTTPS API auditors query, authorized through the cluster.
type AuditAPI struct {
	BindAddress string
	TLSCertFile string
	TLSKeyFile  string
	// AggregatedBindAddress serves the aggregated API audit.repute.dev/v1; empty: not served.
	AggregatedBindAddress string
	// CertificateSecret ("namespace/name") keeps the serving certificate, made and renewed by
	// the scheduler, when TLSCertFile is not set; ServiceName is the Service it names.
	CertificateSecret string
	ServiceName       string
}

// MirrorSpec configures the verdict snapshot that keeps standby replicas warm.
type MirrorSpec struct {
	Namespace string
	// HMACKeyFile holds the key that authenticates snapshots; empty: unauthenticated.
	HMACKeyFile string
	// HMACKeySecret is a Secret in Namespace the scheduler keeps the key in, making it if needed.
	HMACKeySecret string
}

// StoreSpec configures the bbolt store.
type StoreSpec struct {
	Path string
	// MaxAge drops history, decisions and behavior older than this; 0 keeps everything.
	MaxAge metav1.Duration
	// MaxHistoryPerImage and MaxDecisions bound the counts kept (0: no bound).
	MaxHistoryPerImage, MaxDecisions int32
}

// EvaluationSpec tunes the evidence engine.
type EvaluationSpec struct {
	// Workers evaluate images concurrently.
	Workers int32
	// ReverifyAfter is how long a complete verdict stands before its evidence is gathered
	// again; 0 never.
	ReverifyAfter metav1.Duration
	// RetryAfter is the first delay before an image with missing evidence is evaluated again;
	// it doubles up to MaxRetryAfter.
	RetryAfter, MaxRetryAfter metav1.Duration
	// RegistryTimeout bounds one image's signature checks against its registry;
	// RegistryTimeouts overrides it per registry host ("host[:port]").
	RegistryTimeout  metav1.Duration
	RegistryTimeouts map[string]metav1.Duration
	// RegistryBackoff: after a registry fails (unreachable, 5xx, 429), its images fail fast
	// for this long, doubling with each failure up to MaxRegistryBackoff.
	RegistryBackoff, MaxRegistryBackoff metav1.Duration
	// MaxStaleness is how long an image's last verified signature stands while its registry
	// cannot be reached; 0 not at all.
	MaxStaleness metav1.Duration
	// TagTTL is how long a verdict on an image named by a tag stands before the tag is
	// resolved again; 0: as long as ReverifyAfter.
	TagTTL metav1.Duration
}

// FalcoIngest is the authenticated HTTP endpoint for Falco and falcosidekick alerts.
type FalcoIngest struct {
	BindAddress  string
	TokenFile    string
	TLSCertFile  string
	TLSKeyFile   string
	ClientCAFile string
	MaxBodyBytes int64
}

// TierPools names the pool of each tier.
type TierPools struct {
	Trusted   PoolSpec
	Unknown   PoolSpec
	Untrusted PoolSpec
}

// PoolSpec describes one tier's pool.
type PoolSpec struct {
	// Name is the value of the pool label (and taint) on the pool's nodes.
	Name string
	// AllowUnpooledNodes lets the tier also use nodes that carry no pool label.
	AllowUnpooledNodes bool
	// Placement ranks feasible nodes inside the pool.
	Placement PlacementStrategy
	// PodSecurity is the Pod Security Standard level ("privileged", "baseline" or "restricted")
	// a pod of the tier must meet to be placed.
	PodSecurity string
}

// PlacementStrategy ranks nodes within a pool.
type PlacementStrategy string

const (
	// PlacementPack prefers the fullest node, keeping whole nodes free.
	PlacementPack PlacementStrategy = "Pack"
	// PlacementSpread prefers the emptiest node, limiting what one node's compromise exposes.
	PlacementSpread PlacementStrategy = "Spread"
)

// PolicySpec is the trust policy as operators write it.
type PolicySpec struct {
	BaseScore    int32
	Thresholds   Thresholds
	Origin       OriginPolicy
	Signature    SignaturePolicy
	Dependencies DependencyPolicy
	Behavior     BehaviorPolicy
}

// BehaviorPolicy weighs runtime behavior: Falco alerts and pod status.
type BehaviorPolicy struct {
	HalfLife          metav1.Duration
	PriorityWeights   map[string]int32
	UntrustedPriority string
	CrashLoopWeight   int32
	OOMKillWeight     int32
	RestartWeight     int32
	// MaxPodStatusPenaltyPerNamespace bounds one namespace's pod-status penalties on an image.
	MaxPodStatusPenaltyPerNamespace int32
}

// DependencyPolicy weighs vulnerability reports (Trivy Operator's VulnerabilityReports).
type DependencyPolicy struct {
	CriticalWeight      int32
	HighWeight          int32
	MaxCritical         int32
	DenyVulnerabilities []string
	DenyPackages        []string
	StaleAfter          metav1.Duration
}

// SignaturePolicy weighs cosign signatures, checked offline against the operator's keys.
type SignaturePolicy struct {
	VerifiedWeight    int32
	UnverifiedWeight  int32
	AbsentWeight      int32
	RequireForTrusted bool
	// CheckIdentity also requires a legacy signature's docker-reference to name the image's
	// repository, so a signature follows an image only where it was signed.
	CheckIdentity bool
	// Keys are the trusted public keys; with none, signatures are not checked.
	Keys []SigningKey
}

// SigningKey is one trusted public key, PEM-encoded (ECDSA, Ed25519 or RSA).
type SigningKey struct {
	Name      string
	PublicKey string
	// Repositories scope the key: "registry/repository" globs as in origin rules; none means all.
	Repositories []string
}

// Thresholds split the 0–100 score into tiers.
type Thresholds struct {
	// Trusted is the lowest score that is trusted.
	Trusted int32
	// Untrusted: scores below it are untrusted.
	Untrusted int32
}

// OriginPolicy weighs where images come from.
type OriginPolicy struct {
	Rules             []OriginRule
	MutableTagPenalty int32
}

// OriginRule maps a registry/repository glob to a weight or a hard tier.
type OriginRule struct {
	Pattern string
	Weight  int32
	Tier    string
}
