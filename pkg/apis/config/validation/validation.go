// Package validation checks ReputationArgs after defaulting, naming each bad field by its path.
package validation

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/reputation"
)

// ValidateReputationArgs returns every problem in args, each with its field path.
func ValidateReputationArgs(path *field.Path, args *config.ReputationArgs) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, metav1validation.ValidateLabelName(args.PoolLabelKey, path.Child("poolLabelKey"))...)

	pools := path.Child("pools")
	seen := map[string]reputation.Tier{}
	for _, tier := range reputation.Tiers {
		spec, p := args.Pools.PoolFor(tier), pools.Child(string(tier))
		switch other, dup := seen[spec.Name]; {
		case spec.Name == "":
			errs = append(errs, field.Required(p.Child("name"), "every tier needs a pool"))
		case dup:
			errs = append(errs, field.Duplicate(p.Child("name"), fmt.Sprintf("%s (also the %s pool: tiers must not share a pool)", spec.Name, other)))
		default:
			for _, msg := range k8svalidation.IsValidLabelValue(spec.Name) {
				errs = append(errs, field.Invalid(p.Child("name"), spec.Name, msg))
			}
		}
		seen[spec.Name] = tier
		if !podSecurityLevels.Has(spec.PodSecurity) {
			errs = append(errs, field.NotSupported(p.Child("podSecurity"), spec.PodSecurity, sets.List(podSecurityLevels)))
		}
		if !placements.Has(spec.Placement) {
			errs = append(errs, field.NotSupported(p.Child("placement"), spec.Placement, sets.List(placements)))
		}
	}

	if args.VerdictWait.Duration <= 0 {
		errs = append(errs, field.Invalid(path.Child("verdictWait"), args.VerdictWait.Duration.String(), "must be positive"))
	}
	errs = append(errs, ValidatePolicy(path.Child("policy"), &args.Policy)...)
	if args.PolicyName != "" {
		for _, msg := range k8svalidation.IsDNS1123Subdomain(args.PolicyName) {
			errs = append(errs, field.Invalid(path.Child("policyName"), args.PolicyName, msg))
		}
	}
	errs = append(errs, validateFalco(path.Child("falco"), &args.Falco)...)
	errs = append(errs, validateEvaluation(path.Child("evaluation"), &args.Evaluation)...)
	errs = append(errs, validateStore(path.Child("store"), &args.Store)...)
	errs = append(errs, validateAudit(path.Child("audit"), &args.Audit)...)
	if ns := args.Mirror.Namespace; ns != "" {
		for _, msg := range k8svalidation.IsDNS1123Label(ns) {
			errs = append(errs, field.Invalid(path.Child("mirror", "namespace"), ns, msg))
		}
	}
	if secret := args.Mirror.HMACKeySecret; secret != "" {
		for _, msg := range k8svalidation.IsDNS1123Subdomain(secret) {
			errs = append(errs, field.Invalid(path.Child("mirror", "hmacKeySecret"), secret, msg))
		}
		if args.Mirror.HMACKeyFile != "" {
			errs = append(errs, field.Forbidden(path.Child("mirror", "hmacKeySecret"), "hmacKeyFile or hmacKeySecret: one key"))
		}
		if args.Mirror.Namespace == "" {
			errs = append(errs, field.Required(path.Child("mirror", "namespace"), "the Secret hmacKeySecret lives in the mirror's namespace"))
		}
	}
	errs = append(errs, validateUntrusted(path.Child("untrusted"), &args.Untrusted)...)
	errs = append(errs, validateReplacement(path.Child("replacement"), &args.Replacement)...)
	return errs
}

var replacementModes = sets.New(config.ReplacementNone, config.ReplacementReport, config.ReplacementEvict)

func validateReplacement(path *field.Path, r *config.ReplacementSpec) field.ErrorList {
	var errs field.ErrorList
	if !replacementModes.Has(r.Mode) {
		errs = append(errs, field.NotSupported(path.Child("mode"), r.Mode, sets.List(replacementModes)))
	}
	if !replacementModes.Has(r.Upward) {
		errs = append(errs, field.NotSupported(path.Child("upward"), r.Upward, sets.List(replacementModes)))
	}
	if r.EvictionsPerMinute < 1 {
		errs = append(errs, field.Invalid(path.Child("evictionsPerMinute"), r.EvictionsPerMinute, "must be at least 1"))
	}
	if r.MaxConcurrentEvictions < 1 {
		errs = append(errs, field.Invalid(path.Child("maxConcurrentEvictions"), r.MaxConcurrentEvictions, "must be at least 1"))
	}
	if r.Margin < 0 || r.Margin > 100 {
		errs = append(errs, field.Invalid(path.Child("margin"), r.Margin, "must be between 0 and 100"))
	}
	if r.SettleFor.Duration < 0 {
		errs = append(errs, field.Invalid(path.Child("settleFor"), r.SettleFor.Duration.String(), "must not be negative"))
	}
	if r.MaxEvictionsPerNodePerMinute < 0 {
		errs = append(errs, field.Invalid(path.Child("maxEvictionsPerNodePerMinute"), r.MaxEvictionsPerNodePerMinute, "must not be negative"))
	}
	if r.MaxEvictionsPerNamespacePerMinute < 0 {
		errs = append(errs, field.Invalid(path.Child("maxEvictionsPerNamespacePerMinute"), r.MaxEvictionsPerNamespacePerMinute, "must not be negative"))
	}
	return errs
}

var isolations = sets.New(config.UntrustedIsolationNone, config.UntrustedIsolationPerNamespace)

func validateUntrusted(path *field.Path, u *config.UntrustedPoolSpec) field.ErrorList {
	var errs field.ErrorList
	if !isolations.Has(u.Isolation) {
		errs = append(errs, field.NotSupported(path.Child("isolation"), u.Isolation, sets.List(isolations)))
	}
	if u.MaxPodsPerNode < 0 {
		errs = append(errs, field.Invalid(path.Child("maxPodsPerNode"), u.MaxPodsPerNode, "must not be negative (0: no bound)"))
	}
	return errs
}

func validateStore(path *field.Path, st *config.StoreSpec) field.ErrorList {
	var errs field.ErrorList
	if st.Path != "" && !filepath.IsAbs(st.Path) {
		errs = append(errs, field.Invalid(path.Child("path"), st.Path, "must be an absolute path"))
	}
	if st.MaxAge.Duration < 0 {
		errs = append(errs, field.Invalid(path.Child("maxAge"), st.MaxAge.Duration.String(), "must not be negative"))
	}
	if st.MaxHistoryPerImage < 0 {
		errs = append(errs, field.Invalid(path.Child("maxHistoryPerImage"), st.MaxHistoryPerImage, "must not be negative"))
	}
	if st.MaxDecisions < 0 {
		errs = append(errs, field.Invalid(path.Child("maxDecisions"), st.MaxDecisions, "must not be negative"))
	}
	return errs
}

// validateEvaluation keeps the engine's timing sane: something always retries, nothing spins.
func validateEvaluation(path *field.Path, ev *config.EvaluationSpec) field.ErrorList {
	var errs field.ErrorList
	if ev.Workers < 1 || ev.Workers > 64 {
		errs = append(errs, field.Invalid(path.Child("workers"), ev.Workers, "must be between 1 and 64"))
	}
	positive := func(name string, d metav1.Duration, atLeast time.Duration) {
		if d.Duration < atLeast {
			errs = append(errs, field.Invalid(path.Child(name), d.Duration.String(), "must be at least "+atLeast.String()))
		}
	}
	if ev.ReverifyAfter.Duration != 0 {
		positive("reverifyAfter", ev.ReverifyAfter, time.Minute)
	}
	positive("retryAfter", ev.RetryAfter, time.Second)
	positive("maxRetryAfter", ev.MaxRetryAfter, ev.RetryAfter.Duration)
	positive("registryTimeout", ev.RegistryTimeout, 100*time.Millisecond)
	for host, d := range ev.RegistryTimeouts {
		p := path.Child("registryTimeouts").Key(host)
		if host == "" || strings.ContainsAny(host, "/@ ") {
			errs = append(errs, field.Invalid(p, host, "must be a registry host, with port if any"))
		}
		if d.Duration < 100*time.Millisecond {
			errs = append(errs, field.Invalid(p, d.Duration.String(), "must be at least 100ms"))
		}
	}
	positive("registryBackoff", ev.RegistryBackoff, 100*time.Millisecond)
	positive("maxRegistryBackoff", ev.MaxRegistryBackoff, ev.RegistryBackoff.Duration)
	positive("maxStaleness", ev.MaxStaleness, 0)
	if ev.TagTTL.Duration != 0 {
		positive("tagTTL", ev.TagTTL, time.Second)
	}
	return errs
}

// validateFalco refuses an endpoint nobody could authenticate to, or that would take
// unbounded bodies: unauthenticated callers get nothing.
func validateFalco(path *field.Path, f *config.FalcoIngest) field.ErrorList {
	var errs field.ErrorList
	if f.MaxBodyBytes <= 0 || f.MaxBodyBytes > 64<<20 {
		errs = append(errs, field.Invalid(path.Child("maxBodyBytes"), f.MaxBodyBytes, "must be between 1 and 67108864"))
	}
	if f.BindAddress == "" {
		return errs
	}
	if _, _, err := net.SplitHostPort(f.BindAddress); err != nil {
		errs = append(errs, field.Invalid(path.Child("bindAddress"), f.BindAddress, "want host:port, e.g. \":9443\""))
	}
	if f.TokenFile == "" && f.ClientCAFile == "" {
		errs = append(errs, field.Required(path.Child("tokenFile"), "the endpoint needs authentication: a tokenFile (from a Secret), or a clientCAFile for mTLS"))
	}
	if (f.TLSCertFile == "") != (f.TLSKeyFile == "") {
		errs = append(errs, field.Required(path.Child("tlsKeyFile"), "tlsCertFile and tlsKeyFile go together"))
	}
	if f.ClientCAFile != "" && f.TLSCertFile == "" {
		errs = append(errs, field.Required(path.Child("tlsCertFile"), "clientCAFile (mTLS) needs the endpoint to serve TLS"))
	}
	return errs
}

func validateAudit(path *field.Path, a *config.AuditAPI) field.ErrorList {
	var errs field.ErrorList
	if a.BindAddress != "" {
		if _, _, err := net.SplitHostPort(a.BindAddress); err != nil {
			errs = append(errs, field.Invalid(path.Child("bindAddress"), a.BindAddress, "want host:port, e.g. \":8444\""))
		}
	}
	if a.AggregatedBindAddress != "" {
		// The generic API server listens on an IP address (empty: every one) and a fixed port.
		host, portText, err := net.SplitHostPort(a.AggregatedBindAddress)
		port, portErr := strconv.Atoi(portText)
		if err != nil || portErr != nil || port < 1 || port > 65535 || (host != "" && net.ParseIP(host) == nil) {
			errs = append(errs, field.Invalid(path.Child("aggregatedBindAddress"), a.AggregatedBindAddress, "want IP:port or :port, e.g. \":8445\""))
		}
	}
	if a.CertificateSecret != "" {
		ns, name, ok := strings.Cut(a.CertificateSecret, "/")
		if !ok || len(k8svalidation.IsDNS1123Label(ns)) > 0 || len(k8svalidation.IsDNS1123Subdomain(name)) > 0 {
			errs = append(errs, field.Invalid(path.Child("certificateSecret"), a.CertificateSecret, "want namespace/name of a Secret"))
		}
		if msgs := k8svalidation.IsDNS1035Label(a.ServiceName); len(msgs) > 0 {
			errs = append(errs, field.Invalid(path.Child("serviceName"), a.ServiceName, strings.Join(msgs, "; ")))
		}
	}
	if (a.TLSCertFile == "") != (a.TLSKeyFile == "") {
		errs = append(errs, field.Required(path.Child("tlsKeyFile"), "tlsCertFile and tlsKeyFile go together"))
	}
	return errs
}

var placements = sets.New(config.PlacementPack, config.PlacementSpread)

// podSecurityLevels are the Pod Security Standards' levels.
var podSecurityLevels = sets.New("privileged", "baseline", "restricted")

// ValidatePolicy checks a policy: ranges, rules and patterns, and that every key parses.
func ValidatePolicy(path *field.Path, spec *config.PolicySpec) field.ErrorList {
	var errs field.ErrorList
	for _, e := range config.Policy(spec).Validate() {
		errs = append(errs, field.Invalid(path.Child(e.Field), e.Value, e.Message))
	}
	names := map[string]bool{}
	for i, k := range spec.Signature.Keys {
		kp := path.Child("signature", "keys").Index(i)
		switch {
		case k.Name == "":
			errs = append(errs, field.Required(kp.Child("name"), "name the key; verdicts say which key verified an image"))
			continue
		case names[k.Name]:
			errs = append(errs, field.Duplicate(kp.Child("name"), k.Name))
		}
		names[k.Name] = true
		if _, err := cryptoutils.UnmarshalPEMToPublicKey([]byte(k.PublicKey)); err != nil {
			errs = append(errs, field.Invalid(kp.Child("publicKey"), "<PEM>", "not a PEM public key: "+err.Error()))
		}
		for j, pattern := range k.Repositories {
			if err := reputation.ValidateOriginPattern(pattern); err != nil {
				errs = append(errs, field.Invalid(kp.Child("repositories").Index(j), pattern, err.Error()))
			}
		}
	}
	return errs
}
