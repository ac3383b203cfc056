package v1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/reputation"
)

// Defaults an operator gets by saying nothing.
const (
	DefaultPoolLabelKey = "node-restriction.kubernetes.io/repute-pool"
	DefaultVerdictWait  = 5 * time.Second
	// DefaultFalcoMaxBodyBytes caps an alert request body: 1 MiB holds hundreds of alerts.
	DefaultFalcoMaxBodyBytes = 1 << 20
	// DefaultReverifyAfter is how long a complete verdict stands before its evidence is
	// gathered again; DefaultRetryAfter the first delay before missing evidence is sought
	// again, doubling up to DefaultMaxRetryAfter.
	DefaultReverifyAfter = time.Hour
	DefaultRetryAfter    = 30 * time.Second
	DefaultMaxRetryAfter = 10 * time.Minute
	// DefaultMaxStaleness is how long a verified signature stands while its registry is down.
	DefaultMaxStaleness = 24 * time.Hour
	// DefaultTagTTL is how long a tag's verdict stands before the tag is resolved again.
	DefaultTagTTL = 5 * time.Minute
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

// Defaults, one function per type: the generated SetObjectDefaults_ReputationArgs calls each for
// its part of the args, the policy's (in repute.dev/v1alpha1) included. Zero means what the
// field's comment says it means (0s: never; 0: no bound); only an unset field is defaulted.

// SetDefaults_ReputationArgs defaults the top-level fields.
func SetDefaults_ReputationArgs(obj *ReputationArgs) {
	if obj.PoolLabelKey == nil {
		obj.PoolLabelKey = ptr.To(DefaultPoolLabelKey)
	}
	if obj.VerdictWait == nil {
		obj.VerdictWait = &metav1.Duration{Duration: DefaultVerdictWait}
	}
}

// SetDefaults_TierPools names each tier's pool after the tier: trusted pods are packed, the
// others spread.
func SetDefaults_TierPools(obj *TierPools) {
	defaultPool(&obj.Trusted, reputation.TierTrusted, "Pack", "privileged")
	defaultPool(&obj.Unknown, reputation.TierUnknown, "Spread", "baseline")
	defaultPool(&obj.Untrusted, reputation.TierUntrusted, "Spread", "restricted")
}

func defaultPool(in *PoolSpec, tier reputation.Tier, placement, podSecurity string) {
	if in.Name == nil {
		in.Name = ptr.To(string(tier))
	}
	if in.AllowUnpooledNodes == nil {
		in.AllowUnpooledNodes = ptr.To(false)
	}
	if in.Placement == "" {
		in.Placement = placement
	}
	if in.PodSecurity == "" {
		in.PodSecurity = podSecurity
	}
}

// SetDefaults_ReplacementSpec reports misplaced pods, and bounds evictions.
func SetDefaults_ReplacementSpec(obj *ReplacementSpec) {
	if obj.Mode == "" {
		obj.Mode = "Report"
	}
	if obj.Upward == "" {
		obj.Upward = "None"
	}
	if obj.EvictionsPerMinute == nil {
		obj.EvictionsPerMinute = ptr.To[int32](30)
	}
	if obj.MaxConcurrentEvictions == nil {
		obj.MaxConcurrentEvictions = ptr.To[int32](5)
	}
	if obj.Margin == nil {
		obj.Margin = ptr.To[int32](5)
	}
	if obj.SettleFor == nil {
		obj.SettleFor = &metav1.Duration{Duration: 2 * time.Minute}
	}
	if obj.ProtectedPriority == nil {
		obj.ProtectedPriority = ptr.To[int32](DefaultProtectedPriority)
	}
}

// SetDefaults_UntrustedPoolSpec lets untrusted pods share their pool's nodes.
func SetDefaults_UntrustedPoolSpec(obj *UntrustedPoolSpec) {
	if obj.Isolation == "" {
		obj.Isolation = "None"
	}
}

// SetDefaults_FalcoIngest bounds an alert request.
func SetDefaults_FalcoIngest(obj *FalcoIngest) {
	if obj.MaxBodyBytes == nil {
		obj.MaxBodyBytes = ptr.To[int64](DefaultFalcoMaxBodyBytes)
	}
}

// SetDefaults_AuditAPI names the Service a kept certificate is for.
func SetDefaults_AuditAPI(obj *AuditAPI) {
	if obj.CertificateSecret != "" && obj.ServiceName == "" {
		obj.ServiceName = "repute-audit"
	}
}

// SetDefaults_StoreSpec bounds what the store keeps.
func SetDefaults_StoreSpec(obj *StoreSpec) {
	if obj.MaxAge == nil {
		obj.MaxAge = &metav1.Duration{Duration: DefaultStoreMaxAge}
	}
	if obj.MaxHistoryPerImage == nil {
		obj.MaxHistoryPerImage = ptr.To[int32](DefaultMaxHistoryPerImage)
	}
	if obj.MaxDecisions == nil {
		obj.MaxDecisions = ptr.To[int32](DefaultMaxDecisions)
	}
}

// SetDefaults_EvaluationSpec tunes the engine.
func SetDefaults_EvaluationSpec(obj *EvaluationSpec) {
	if obj.Workers == nil {
		obj.Workers = ptr.To[int32](DefaultWorkers)
	}
	for _, d := range []struct {
		field **metav1.Duration
		value time.Duration
	}{
		{&obj.ReverifyAfter, DefaultReverifyAfter},
		{&obj.RetryAfter, DefaultRetryAfter},
		{&obj.MaxRetryAfter, DefaultMaxRetryAfter},
		{&obj.RegistryTimeout, DefaultRegistryTimeout},
		{&obj.RegistryBackoff, DefaultRegistryBackoff},
		{&obj.MaxRegistryBackoff, DefaultMaxRegistryBackoff},
		{&obj.MaxStaleness, DefaultMaxStaleness},
		{&obj.TagTTL, DefaultTagTTL},
	} {
		if *d.field == nil {
			*d.field = &metav1.Duration{Duration: d.value}
		}
	}
}
