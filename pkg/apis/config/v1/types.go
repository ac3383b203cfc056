package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
)

// ReputationArgs configures the Reputation plugin.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type ReputationArgs struct {
	metav1.TypeMeta `json:",inline"`

	// PoolLabelKey is the node label (and taint key) naming a node's pool. Default node-restriction.kubernetes.io/repute-pool.
	PoolLabelKey *string `json:"poolLabelKey,omitempty"`
	// Pools says where each tier's pods go.
	Pools TierPools `json:"pools,omitempty"`
	// Policy weighs evidence into a score and a tier: a ReputationPolicy's spec
	// (repute.dev/v1alpha1), so the two never drift apart.
	Policy v1alpha1.PolicySpec `json:"policy,omitempty"`
	// PolicyName names the cluster-scoped ReputationPolicy (repute.dev/v1alpha1) to follow:
	// edits to it are put in force without a restart. Until it has been read (or while it does
	// not exist) policy is in force.
	PolicyName string `json:"policyName,omitempty"`
	// VerdictWait bounds how long a pod waits for its images' first verdicts. Default 5s.
	VerdictWait *metav1.Duration `json:"verdictWait,omitempty"`
	// Falco configures the endpoint that takes Falco alerts. Off unless bindAddress is set.
	Falco FalcoIngest `json:"falco,omitempty"`
	// Evaluation tunes the engine that gathers and weighs evidence in the background.
	Evaluation EvaluationSpec `json:"evaluation,omitempty"`
	// Store is the durable record auditors read: verdicts and their history, placement
	// decisions, policy versions and runtime behavior. Off unless path is set.
	Store StoreSpec `json:"store,omitempty"`
	// Audit serves the read-only audit API (what reputectl reads). Off unless bindAddress is set.
	Audit AuditAPI `json:"audit,omitempty"`
	// Mirror keeps a snapshot of the verdicts, and the runtime behavior behind them, in
	// ConfigMaps, so that a standby replica is warm when it is elected. Off unless namespace is set.
	Mirror MirrorSpec `json:"mirror,omitempty"`
	// Untrusted restricts untrusted pods beyond placement: node sharing, pods per node, limits.
	Untrusted UntrustedPoolSpec `json:"untrusted,omitempty"`
	// Replacement moves running pods whose tier no longer matches their node's pool.
	Replacement ReplacementSpec `json:"replacement,omitempty"`
}

// ReplacementSpec configures moving running pods when their tier changes.
type ReplacementSpec struct {
	// Mode, for pods whose tier dropped: None, Report (an Event and an audit record; the
	// default) or Evict (through the Eviction API, so PodDisruptionBudgets hold).
	Mode string `json:"mode,omitempty"`
	// Upward, for pods whose tier rose (e.g. unknown → trusted once verified): None (default),
	// Report or Evict.
	Upward string `json:"upward,omitempty"`
	// EvictionsPerMinute bounds the eviction rate. Default 30.
	EvictionsPerMinute *int32 `json:"evictionsPerMinute,omitempty"`
	// MaxConcurrentEvictions bounds evictions in flight. Default 5.
	MaxConcurrentEvictions *int32 `json:"maxConcurrentEvictions,omitempty"`
	// Margin: a score this far past a threshold acts at once; closer, the new tier must hold
	// for settleFor. Tiers decided by a rule act at once. Default 5.
	Margin *int32 `json:"margin,omitempty"`
	// SettleFor: how long a close call must hold. Default 2m.
	SettleFor *metav1.Duration `json:"settleFor,omitempty"`
	// EvictUnowned also evicts pods no controller would recreate (they would be lost); by
	// default they are only reported.
	EvictUnowned bool `json:"evictUnowned,omitempty"`
	// MaxEvictionsPerNodePerMinute bounds evictions from one node within any minute, so one
	// node is never drained at once. 0, the default, means no bound beyond evictionsPerMinute.
	MaxEvictionsPerNodePerMinute int32 `json:"maxEvictionsPerNodePerMinute,omitempty"`
	// MaxEvictionsPerNamespacePerMinute bounds evictions from one namespace within any minute.
	// 0, the default, means no bound beyond evictionsPerMinute.
	MaxEvictionsPerNamespacePerMinute int32 `json:"maxEvictionsPerNamespacePerMinute,omitempty"`
	// ProtectedPriority: pods at or above this priority are reported, never evicted. Default
	// 2000000000 (system-cluster-critical and system-node-critical).
	ProtectedPriority *int32 `json:"protectedPriority,omitempty"`
}

// UntrustedPoolSpec restricts untrusted pods beyond the pool they are placed in.
type UntrustedPoolSpec struct {
	// Isolation is None (default: untrusted pods share the pool's nodes) or PerNamespace (an
	// untrusted pod never shares a node with pods of another namespace; DaemonSet and static
	// pods do not count).
	Isolation string `json:"isolation,omitempty"`
	// MaxPodsPerNode bounds the pods (DaemonSet and static pods aside) on a node that takes an
	// untrusted pod. 0, the default, means no bound.
	MaxPodsPerNode int32 `json:"maxPodsPerNode,omitempty"`
	// RequireLimits keeps untrusted pods that do not declare CPU and memory limits on every
	// container unschedulable, with a reason that says so. Default false.
	RequireLimits bool `json:"requireLimits,omitempty"`
}

// StoreSpec configures the bbolt store file and what it keeps.
type StoreSpec struct {
	// Path of the store file, on a volume of its own, e.g. /var/lib/repute/repute.db.
	Path string `json:"path,omitempty"`
	// MaxAge drops history, decisions and behavior older than this. Default 2160h (90 days); 0s keeps everything.
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`
	// MaxHistoryPerImage keeps each image's newest verdict changes. Default 1000; 0 no bound.
	MaxHistoryPerImage *int32 `json:"maxHistoryPerImage,omitempty"`
	// MaxDecisions keeps the newest placement decisions. Default 1000000; 0 no bound.
	MaxDecisions *int32 `json:"maxDecisions,omitempty"`
}

// EvaluationSpec tunes the evidence engine. It never runs in the scheduling cycle.
type EvaluationSpec struct {
	// Workers evaluate images concurrently (1–64). Default 4.
	Workers *int32 `json:"workers,omitempty"`
	// ReverifyAfter: a complete verdict's evidence (signatures, keys) is gathered again after
	// this long; the verdict stands meanwhile. Default 1h; 0s never.
	ReverifyAfter *metav1.Duration `json:"reverifyAfter,omitempty"`
	// RetryAfter: an image whose evidence could not all be gathered is evaluated again after
	// this long, doubling up to MaxRetryAfter. Defaults 30s and 10m.
	RetryAfter    *metav1.Duration `json:"retryAfter,omitempty"`
	MaxRetryAfter *metav1.Duration `json:"maxRetryAfter,omitempty"`
	// RegistryTimeout bounds one image's signature checks against its registry. Default 5s.
	RegistryTimeout *metav1.Duration `json:"registryTimeout,omitempty"`
	// RegistryTimeouts overrides RegistryTimeout per registry host, e.g. {"registry.slow.example:5000": 15s}.
	RegistryTimeouts map[string]metav1.Duration `json:"registryTimeouts,omitempty"`
	// RegistryBackoff: after a registry fails (unreachable, 5xx, 429), its other images fail
	// fast, without a request, for this long, doubling per failure up to MaxRegistryBackoff.
	// Defaults 5s and 5m.
	RegistryBackoff    *metav1.Duration `json:"registryBackoff,omitempty"`
	MaxRegistryBackoff *metav1.Duration `json:"maxRegistryBackoff,omitempty"`
	// MaxStaleness: while an image's registry cannot be reached (no answer, 5xx, timeout), its
	// last verified signature stands for this long, and the explanation says so; past it the
	// image is unknown (never invalid). An outage never moves running pods. Default 24h; 0s: a
	// failed re-verification counts at once.
	MaxStaleness *metav1.Duration `json:"maxStaleness,omitempty"`
	// TagTTL: a verdict on an image named by a tag stands this long before the tag is resolved
	// again (tags move; pin digests to avoid the lookups). Default 5m; 0s: as long as
	// reverifyAfter.
	TagTTL *metav1.Duration `json:"tagTTL,omitempty"`
}

// MirrorSpec says where the verdict snapshot lives: ConfigMaps repute-verdicts-00 … -15. The
// leader writes them; standbys read them continuously, so leader election needs no warm-up.
type MirrorSpec struct {
	// Namespace holds the ConfigMaps, normally the scheduler's own. Empty: no mirror.
	Namespace string `json:"namespace,omitempty"`
	// HMACKeyFile is a file, mounted from a Secret both replicas share, holding at least 32
	// bytes of key: the leader signs each shard with it and standbys ignore any shard whose
	// signature does not check, so ConfigMap write in the namespace cannot forge a verdict.
	// Empty: snapshots are not authenticated.
	HMACKeyFile string `json:"hmacKeyFile,omitempty"`
	// HMACKeySecret names a Secret in Namespace that holds the key (under "key"): the scheduler
	// creates it with a random key if it is missing, so both replicas share one without an
	// operator making it. Instead of HMACKeyFile.
	HMACKeySecret string `json:"hmacKeySecret,omitempty"`
}

// AuditAPI is the read-only HTTPS API under /apis/audit.repute.dev/v1. Callers authenticate
// as they do to the apiserver (bearer token, checked with a TokenReview, or a client certificate
// from the cluster's client CA) and are authorized with SubjectAccessReviews, so access is
// granted with RBAC on the resources images, decisions, policies and backups of the API group
// audit.repute.dev.
type AuditAPI struct {
	// BindAddress, e.g. ":8444". Empty: no API.
	BindAddress string `json:"bindAddress,omitempty"`
	// TLSCertFile and TLSKeyFile are the serving certificate; without them, the one kept in
	// CertificateSecret, or else a self-signed one made at start, as kube-scheduler does for its
	// secure port.
	TLSCertFile string `json:"tlsCertFile,omitempty"`
	TLSKeyFile  string `json:"tlsKeyFile,omitempty"`
	// AggregatedBindAddress, e.g. ":8445", serves the same records as the Kubernetes API
	// audit.repute.dev/v1, for the kube-apiserver to proxy to once the APIService
	// v1.audit.repute.dev is registered: kubectl get decisions,images. It uses the same
	// certificate, which must name the Service the APIService points at. Empty: not served.
	AggregatedBindAddress string `json:"aggregatedBindAddress,omitempty"`
	// CertificateSecret, "namespace/name", has the scheduler keep both APIs' serving
	// certificate in that Secret (type kubernetes.io/tls, with ca.crt), used when tlsCertFile is
	// not set: made at the first start by a CA of its own, for ServiceName in the Secret's
	// namespace and localhost; shared by the replicas; read again hourly and renewed, while
	// running, when under 30 days remain. The scheduler puts ca.crt in the APIService v1.audit.repute.dev's caBundle, so
	// the kube-apiserver verifies it, and reputectl --audit-ca can use it.
	CertificateSecret string `json:"certificateSecret,omitempty"`
	// ServiceName is the Service in front of the APIs, which the certificate names. Default
	// repute-audit.
	ServiceName string `json:"serviceName,omitempty"`
}

// FalcoIngest is the HTTP endpoint for Falco's http_output and falcosidekick's webhook output.
// Alerts are posted to /v1/falco. Every request must authenticate, with the bearer token in
// tokenFile (mount it from a Secret) or with a client certificate signed by clientCAFile.
type FalcoIngest struct {
	// BindAddress, e.g. ":9443". Empty: no endpoint.
	BindAddress string `json:"bindAddress,omitempty"`
	// TokenFile holds the bearer token; it is re-read when the Secret is rotated.
	TokenFile string `json:"tokenFile,omitempty"`
	// TLSCertFile and TLSKeyFile serve HTTPS (recommended; required for clientCAFile).
	TLSCertFile string `json:"tlsCertFile,omitempty"`
	TLSKeyFile  string `json:"tlsKeyFile,omitempty"`
	// ClientCAFile accepts client certificates signed by this CA (mTLS).
	ClientCAFile string `json:"clientCAFile,omitempty"`
	// MaxBodyBytes caps a request body. Default 1048576 (1 MiB).
	MaxBodyBytes *int64 `json:"maxBodyBytes,omitempty"`
}

// TierPools names the pool of each tier.
type TierPools struct {
	Trusted   PoolSpec `json:"trusted,omitempty"`
	Unknown   PoolSpec `json:"unknown,omitempty"`
	Untrusted PoolSpec `json:"untrusted,omitempty"`
}

// PoolSpec describes one tier's pool.
type PoolSpec struct {
	// Name is the pool label value. Defaults to the tier's name.
	Name *string `json:"name,omitempty"`
	// AllowUnpooledNodes lets the tier also use nodes without a pool label. Default false:
	// isolation first.
	AllowUnpooledNodes *bool `json:"allowUnpooledNodes,omitempty"`
	// Placement is Pack or Spread. Default Pack for trusted, Spread otherwise.
	Placement string `json:"placement,omitempty"`
	// PodSecurity is the Pod Security Standard level a pod of the tier must meet to be placed:
	// privileged, baseline or restricted. A pod that fails it stays Pending, and the reason
	// names each violation. Default privileged for trusted, baseline for unknown, restricted
	// for untrusted: the less trusted the code, the less it may ask of its node.
	PodSecurity string `json:"podSecurity,omitempty"`
}
