package reputation

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"strings"
	"time"
)

// Policy is how the operator weighs evidence. It is immutable once built: the engine swaps whole
// policies, and every verdict records the Version of the policy that produced it.
type Policy struct {
	// BaseScore is where every image starts, before any evidence, on the 0–100 scale.
	BaseScore int
	// TrustedAtOrAbove and UntrustedBelow split the score into tiers; between them is unknown.
	TrustedAtOrAbove int
	UntrustedBelow   int
	// Origin weighs where an image comes from.
	Origin OriginPolicy
	// Signature weighs cosign signature verification.
	Signature SignaturePolicy
	// Dependencies weighs vulnerability reports.
	Dependencies DependencyPolicy
	// Behavior weighs what was seen at runtime.
	Behavior BehaviorPolicy

	version string
}

// DependencyPolicy weighs vulnerability reports.
type DependencyPolicy struct {
	// CriticalWeight and HighWeight (≤ 0) apply per vulnerability of that severity.
	CriticalWeight, HighWeight int
	// MaxCritical: more critical vulnerabilities than this make the image untrusted.
	MaxCritical int
	// DenyVulnerabilities and DenyPackages make an image listing any of them untrusted.
	DenyVulnerabilities, DenyPackages []string
	// StaleAfter: an older report counts as no report. Zero never expires.
	StaleAfter time.Duration
}

// SignaturePolicy weighs what signature verification found.
type SignaturePolicy struct {
	VerifiedWeight   int
	UnverifiedWeight int
	AbsentWeight     int
	// RequireForTrusted keeps any image without a verified signature out of the trusted tier.
	RequireForTrusted bool
	// Keys identify the trusted keys, so that the policy's version changes with them; the keys
	// themselves are the signature source's.
	Keys []KeyIdentity
}

// KeyIdentity is a trusted key as the policy names it: name, a fingerprint of the key
// material, and the repositories it vouches for.
type KeyIdentity struct {
	Name, Fingerprint string
	Repositories      []string
}

// RevokedKeys names the keys old trusted that next no longer trusts as they were: removed,
// replaced under the same name, or rescoped. Signatures they verified must be checked again.
func RevokedKeys(old, next *Policy) map[string]bool {
	same := map[string]string{}
	for _, k := range next.Signature.Keys {
		same[k.Name] = k.Fingerprint + "|" + strings.Join(k.Repositories, ",")
	}
	revoked := map[string]bool{}
	for _, k := range old.Signature.Keys {
		if same[k.Name] != k.Fingerprint+"|"+strings.Join(k.Repositories, ",") {
			revoked[k.Name] = true
		}
	}
	return revoked
}

// WithdrawSignatures returns an adjustment for Engine.Reweigh and Engine.Simulate: a signature
// a revoked key verified counts as unverified until the image is verified again, so revoking
// a key lowers trust at once, before any registry is asked.
func WithdrawSignatures(revoked map[string]bool) func(ev *Evidence) {
	return func(ev *Evidence) {
		s := ev.Signature
		if s == nil || s.State != SignatureVerified || !revoked[s.Key] {
			return
		}
		ev.Signature = &SignatureEvidence{State: SignatureUnverified, Format: s.Format,
			Detail: fmt.Sprintf("key %s is no longer trusted as it was; the image is being verified again", s.Key)}
	}
}

// OriginPolicy weighs the registry and repository an image comes from.
type OriginPolicy struct {
	// Rules are tried in order; the first whose pattern matches decides. No match contributes nothing.
	Rules []OriginRule
	// MutableTagPenalty is subtracted when the reference is a tag, not a digest: the same name may
	// later run different content.
	MutableTagPenalty int
}

// OriginRule maps "registry/repository" globs to a weight or to a hard tier.
type OriginRule struct {
	// Pattern is "<registry glob>/<repository glob>", or "*" for every image. The registry glob uses
	// path.Match syntax and never spans a "/", so "*.corp/*" cannot match "evil.io/x.corp/y"; in
	// the repository glob "*" spans any characters, "/" included, so "registry.internal/*" covers
	// every repository of that registry.
	Pattern string
	// Weight is added to the score when the rule matches.
	Weight int
	// Tier, when set, decides the tier outright whatever the score.
	Tier Tier
}

// Defaults used when a policy leaves them unset.
const (
	DefaultBaseScore         = 50
	DefaultTrustedAtOrAbove  = 70
	DefaultUntrustedBelow    = 30
	DefaultMutableTagPenalty = 10
	DefaultVerifiedWeight    = 30
	DefaultUnverifiedWeight  = -10
	DefaultAbsentWeight      = 0
	DefaultCriticalWeight    = -20
	DefaultHighWeight        = -5
	DefaultMaxCritical       = 0
	DefaultStaleAfter        = 7 * 24 * time.Hour
)

// DefaultPolicy trusts nothing and distrusts nothing: every image is unknown until evidence and
// rules say otherwise.
func DefaultPolicy() *Policy {
	p, err := NewPolicy(Policy{
		BaseScore:        DefaultBaseScore,
		TrustedAtOrAbove: DefaultTrustedAtOrAbove,
		UntrustedBelow:   DefaultUntrustedBelow,
		Origin:           OriginPolicy{MutableTagPenalty: DefaultMutableTagPenalty},
		Behavior:         DefaultBehaviorPolicy(),
	})
	if err != nil {
		panic(err) // the constants above are valid; a failure here is a programming error
	}
	return p
}

// NewPolicy validates a policy and stamps its version.
func NewPolicy(p Policy) (*Policy, error) {
	if errs := p.Validate(); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("invalid policy: %s", strings.Join(msgs, "; "))
	}
	p.Origin.Rules = append([]OriginRule(nil), p.Origin.Rules...)
	p.Dependencies.DenyVulnerabilities = append([]string(nil), p.Dependencies.DenyVulnerabilities...)
	p.Dependencies.DenyPackages = append([]string(nil), p.Dependencies.DenyPackages...)
	p.Behavior.PriorityWeights = maps.Clone(p.Behavior.PriorityWeights)
	p.Signature.Keys = append([]KeyIdentity(nil), p.Signature.Keys...)
	p.version = p.computeVersion()
	return &p, nil
}

// Version names this policy's content: two policies with the same rules share a version.
func (p *Policy) Version() string { return p.version }

// FieldError is one problem in a policy, at a field path relative to the policy.
type FieldError struct {
	Field   string
	Value   any
	Message string
}

func (e FieldError) Error() string { return fmt.Sprintf("%s: %v: %s", e.Field, e.Value, e.Message) }

// Validate returns every problem in the policy, each naming its field.
func (p Policy) Validate() []FieldError {
	var errs []FieldError
	inRange := func(field string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, FieldError{field, v, fmt.Sprintf("must be between %d and %d", lo, hi)})
		}
	}
	inRange("baseScore", p.BaseScore, 0, 100)
	inRange("thresholds.trusted", p.TrustedAtOrAbove, 0, 100)
	inRange("thresholds.untrusted", p.UntrustedBelow, 0, 100)
	if p.UntrustedBelow > p.TrustedAtOrAbove {
		errs = append(errs, FieldError{"thresholds.untrusted", p.UntrustedBelow, fmt.Sprintf("must not exceed thresholds.trusted (%d)", p.TrustedAtOrAbove)})
	}
	inRange("origin.mutableTagPenalty", p.Origin.MutableTagPenalty, 0, 100)
	inRange("signature.verifiedWeight", p.Signature.VerifiedWeight, 0, 100)
	inRange("signature.unverifiedWeight", p.Signature.UnverifiedWeight, -100, 0)
	inRange("signature.absentWeight", p.Signature.AbsentWeight, -100, 0)
	inRange("dependencies.criticalWeight", p.Dependencies.CriticalWeight, -100, 0)
	inRange("dependencies.highWeight", p.Dependencies.HighWeight, -100, 0)
	inRange("dependencies.maxCritical", p.Dependencies.MaxCritical, 0, 1<<20)
	if p.Dependencies.StaleAfter < 0 {
		errs = append(errs, FieldError{"dependencies.staleAfter", p.Dependencies.StaleAfter.String(), "must not be negative"})
	}
	errs = append(errs, p.Behavior.validate()...)
	for i, r := range p.Origin.Rules {
		field := fmt.Sprintf("origin.rules[%d]", i)
		if err := ValidateOriginPattern(r.Pattern); err != nil {
			errs = append(errs, FieldError{field + ".pattern", r.Pattern, err.Error()})
		}
		inRange(field+".weight", r.Weight, -100, 100)
		if r.Tier != "" {
			if _, err := ParseTier(string(r.Tier)); err != nil {
				errs = append(errs, FieldError{field + ".tier", r.Tier, "must be one of trusted, unknown, untrusted"})
			}
		}
	}
	return errs
}

// ValidateOriginPattern checks a rule pattern's syntax.
func ValidateOriginPattern(pattern string) error {
	if pattern == "*" {
		return nil
	}
	if pattern == "" {
		return fmt.Errorf(`required, e.g. "registry.internal/*" or "*"`)
	}
	registry, repository, ok := strings.Cut(pattern, "/")
	if !ok || registry == "" || repository == "" {
		return fmt.Errorf("%q must be \"<registry>/<repository>\" (globs allowed) or \"*\"", pattern)
	}
	if _, err := path.Match(registry, ""); err != nil {
		return fmt.Errorf("%q: bad registry glob: %w", pattern, err)
	}
	if _, err := path.Match(repository, ""); err != nil {
		return fmt.Errorf("%q: bad repository glob: %w", pattern, err)
	}
	return nil
}

// MatchOrigin reports whether an image's "registry/repository" matches a validated pattern.
func MatchOrigin(pattern string, ref ImageRef) bool {
	if pattern == "*" {
		return true
	}
	registry, repository, _ := strings.Cut(pattern, "/")
	if ok, _ := path.Match(registry, ref.Registry); !ok {
		return false
	}
	// Replacing "/" lets path.Match's "*" span path segments in the repository part only.
	ok, _ := path.Match(strings.ReplaceAll(repository, "/", "\x00"), strings.ReplaceAll(ref.Repository, "/", "\x00"))
	return ok
}

func (p Policy) computeVersion() string {
	p.version = ""
	b, _ := json.Marshal(p) // exported fields only; a plain struct cannot fail to marshal
	sum := sha256.Sum256(b)
	return "p-" + hex.EncodeToString(sum[:6])
}
