package reputation

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Signal names a kind of evidence.
type Signal string

const (
	SignalOrigin       Signal = "origin"
	SignalSignature    Signal = "signature"
	SignalDependencies Signal = "dependencies"
	SignalBehavior     Signal = "behavior"
)

// Evidence is everything known about one image. Collectors fill it in the background; assessors
// turn it into contributions. Each later kind of evidence gets its own field here and its own
// assessor in Assessors, so the engine and the verdict format do not change.
type Evidence struct {
	// Image is the reference as the pod spells it: a tag stays a tag (and mutable) even once
	// resolved.
	Image ImageRef
	// ResolvedDigest is the content digest a source resolved the reference to, if any.
	ResolvedDigest string
	// Signature is what signature verification found; nil when no verification was configured.
	Signature *SignatureEvidence
	// Dependencies is the newest vulnerability report for the image; nil when there is none.
	Dependencies *DependencyEvidence
	// Behavior is what was seen at runtime (Falco alerts, crash loops), newest knowledge at
	// evaluation time; empty when nothing was seen.
	Behavior []BehaviorObservation
}

// DependencyEvidence summarizes a vulnerability report (Trivy Operator's, for now).
type DependencyEvidence struct {
	// Report names the report, e.g. "VulnerabilityReport team/replicaset-api-app".
	Report                               string
	Critical, High, Medium, Low, Unknown int
	// IDs and Packages are every vulnerability ID and package the report lists, for denylists.
	IDs, Packages []string
	// Age is how old the report was when the image was evaluated.
	Age time.Duration
}

// SignatureState is the outcome of checking an image's signatures.
type SignatureState string

const (
	SignatureVerified   SignatureState = "verified"
	SignatureAbsent     SignatureState = "absent"
	SignatureUnverified SignatureState = "unverified"
	SignatureInvalid    SignatureState = "invalid"
	SignatureError      SignatureState = "error"
)

// SignatureEvidence is the signature source's finding.
type SignatureEvidence struct {
	State SignatureState `json:"state"`
	// Key and Format say which trusted key verified it, in which format.
	Key    string `json:"key,omitempty"`
	Format string `json:"format,omitempty"`
	Detail string `json:"detail"`
}

// Key is what the verdict is indexed by: the digest-pinned name once the digest is known.
func (ev *Evidence) Key() string {
	if ev.Image.Digest == "" && ev.ResolvedDigest != "" {
		return ev.Image.Name() + "@" + ev.ResolvedDigest
	}
	return ev.Image.Key()
}

// Contribution is one signal's part in a verdict, written for the person who asks "why".
type Contribution struct {
	Signal Signal `json:"signal"`
	// Observed says what was seen, e.g. "registry docker.io, repository library/nginx".
	Observed string `json:"observed"`
	// Points moved the score by this much (negative lowers it).
	Points int `json:"points"`
	// Rule names the policy rule that produced the points or the tier, e.g. "origin.rules[1] docker.io/*".
	Rule string `json:"rule,omitempty"`
	// Tier, when set, is a hard tier this contribution imposes.
	Tier Tier `json:"tier,omitempty"`
	// Finding is a one-word summary for tables, e.g. "verified"; empty when the signal says enough.
	Finding string `json:"finding,omitempty"`
}

// Decision says, as a type, what settled a verdict's tier; DecidedBy says it in words.
type Decision string

const (
	// DecidedByScore: the score against a threshold, so a close call may flip back.
	DecidedByScore Decision = "Score"
	// DecidedByRule: a hard rule (an origin rule's tier, an alert, a tampered signature, a
	// denylisted vulnerability), whatever the score.
	DecidedByRule Decision = "Rule"
	// DecidedBySignatureRequirement: trusted by score or rule, but held at unknown because
	// signature.requireForTrusted found no verified signature.
	DecidedBySignatureRequirement Decision = "SignatureRequired"
	// DecidedUnassessable: the image cannot be evaluated at all.
	DecidedUnassessable Decision = "Unassessable"
	// DecidedProvisionally: evaluation had not finished in time.
	DecidedProvisionally Decision = "Provisional"
)

// Verdict is the explained result of weighing one image's evidence under one policy.
type Verdict struct {
	// Image is the canonical reference; Key is what the verdict is indexed by (digest when known).
	Image string `json:"image"`
	Key   string `json:"key"`
	Score int    `json:"score"`
	Tier  Tier   `json:"tier"`
	// DecidedBy says which rule settled the tier: a hard rule, or the score against a threshold.
	DecidedBy string `json:"decidedBy"`
	// Decision is DecidedBy's kind, for code that acts on it.
	Decision      Decision       `json:"decision,omitempty"`
	Contributions []Contribution `json:"contributions"`
	PolicyVersion string         `json:"policyVersion"`
	EvaluatedAt   time.Time      `json:"evaluatedAt"`
	// Provisional marks the unknown verdict given while evaluation had not finished in time:
	// any assessed verdict replaces it.
	Provisional bool `json:"provisional,omitempty"`
	// Incomplete marks a verdict built while some evidence could not be gathered (a registry
	// down): running pods are not moved by it.
	Incomplete bool `json:"incomplete,omitempty"`
}

// Reason is a one-line explanation fit for an event or a table cell: the deciding rule, then
// every contribution, e.g. "score 90 ≥ trusted threshold 70 [origin +10, signature +30]".
func (v *Verdict) Reason() string {
	if v == nil {
		return "no verdict yet"
	}
	if len(v.Contributions) == 0 {
		return v.DecidedBy
	}
	parts := make([]string, 0, len(v.Contributions))
	for _, c := range v.Contributions {
		label := string(c.Signal)
		if c.Finding != "" {
			label += " " + c.Finding
		}
		parts = append(parts, fmt.Sprintf("%s %+d", label, c.Points))
	}
	return v.DecidedBy + " [" + strings.Join(parts, ", ") + "]"
}

// Assessor turns one kind of evidence into contributions under a policy. Assessors are pure:
// no I/O, no clocks, so verdicts are reproducible (and what-if simulation is exact).
type Assessor func(p *Policy, ev *Evidence) []Contribution

// Assessors are applied in order to every image. This is the seam where signatures,
// dependencies and behavior plug in.
var Assessors = []Assessor{assessOrigin, assessSignature, assessDependencies, assessBehavior}

// assessDependencies weighs the vulnerability report. A denylisted CVE or package, or more
// critical vulnerabilities than allowed, make the image untrusted; a stale report counts as none.
func assessDependencies(p *Policy, ev *Evidence) []Contribution {
	d := ev.Dependencies
	if d == nil {
		return nil
	}
	dp := p.Dependencies
	if dp.StaleAfter > 0 && d.Age > dp.StaleAfter {
		return []Contribution{{Signal: SignalDependencies, Finding: "stale", Rule: "dependencies.staleAfter",
			Observed: fmt.Sprintf("%s is %s old, older than %s: ignored", d.Report, d.Age.Round(time.Second), dp.StaleAfter)}}
	}
	c := Contribution{
		Signal:   SignalDependencies,
		Finding:  fmt.Sprintf("%d critical %d high", d.Critical, d.High),
		Observed: fmt.Sprintf("%s: %d critical, %d high, %d medium, %d low", d.Report, d.Critical, d.High, d.Medium, d.Low),
		Points:   max(-100, dp.CriticalWeight*d.Critical+dp.HighWeight*d.High),
		Rule:     "dependencies.criticalWeight/highWeight",
	}
	out := []Contribution{c}
	if d.Critical > dp.MaxCritical {
		out = append(out, Contribution{Signal: SignalDependencies, Finding: "maxCritical", Tier: TierUntrusted, Rule: "dependencies.maxCritical",
			Observed: fmt.Sprintf("%d critical vulnerabilities, more than %d", d.Critical, dp.MaxCritical)})
	}
	for _, list := range []struct {
		name         string
		deny, listed []string
	}{{"dependencies.denyVulnerabilities", dp.DenyVulnerabilities, d.IDs}, {"dependencies.denyPackages", dp.DenyPackages, d.Packages}} {
		if hit := firstCommon(list.deny, list.listed); hit != "" {
			out = append(out, Contribution{Signal: SignalDependencies, Finding: hit, Tier: TierUntrusted, Rule: list.name, Observed: "denylisted " + hit})
		}
	}
	return out
}

func firstCommon(deny, listed []string) string {
	for _, d := range deny {
		if slices.Contains(listed, d) {
			return d
		}
	}
	return ""
}

// assessSignature weighs the signature finding. An invalid signature (tampered, replayed) is a
// hard untrusted: nobody honest produces one. An error is missing evidence: it moves nothing,
// and cannot make an image trusted when the policy requires a verified signature.
func assessSignature(p *Policy, ev *Evidence) []Contribution {
	sig := ev.Signature
	if sig == nil {
		return nil
	}
	c := Contribution{Signal: SignalSignature, Finding: string(sig.State), Observed: fmt.Sprintf("signature %s: %s", sig.State, sig.Detail)}
	switch sig.State {
	case SignatureVerified:
		c.Points, c.Rule = p.Signature.VerifiedWeight, "signature.verifiedWeight"
	case SignatureUnverified:
		c.Points, c.Rule = p.Signature.UnverifiedWeight, "signature.unverifiedWeight"
	case SignatureAbsent:
		c.Points, c.Rule = p.Signature.AbsentWeight, "signature.absentWeight"
	case SignatureInvalid:
		c.Tier, c.Rule = TierUntrusted, "signature invalid"
	}
	return []Contribution{c}
}

func assessOrigin(p *Policy, ev *Evidence) []Contribution {
	ref := ev.Image
	var out []Contribution
	matched := false
	for i, r := range p.Origin.Rules {
		if !MatchOrigin(r.Pattern, ref) {
			continue
		}
		matched = true
		out = append(out, Contribution{
			Signal:   SignalOrigin,
			Observed: fmt.Sprintf("registry %s, repository %s", ref.Registry, ref.Repository),
			Points:   r.Weight,
			Rule:     fmt.Sprintf("origin.rules[%d] %s", i, r.Pattern),
			Tier:     r.Tier,
		})
		break
	}
	if !matched {
		out = append(out, Contribution{
			Signal:   SignalOrigin,
			Finding:  "unmatched",
			Observed: fmt.Sprintf("registry %s, repository %s matched no origin rule", ref.Registry, ref.Repository),
		})
	}
	if !ref.Pinned() && p.Origin.MutableTagPenalty != 0 {
		out = append(out, Contribution{
			Signal:   SignalOrigin,
			Finding:  "unpinned",
			Observed: fmt.Sprintf("mutable tag %q, not pinned by digest", ref.Tag),
			Points:   -p.Origin.MutableTagPenalty,
			Rule:     "origin.mutableTagPenalty",
		})
	}
	return out
}

// Evaluate weighs evidence into a verdict. The score starts at the policy's base, each
// contribution moves it, and it is clamped to 0–100. A hard tier from any contribution overrides
// the thresholds; when contributions disagree, the least trusted hard tier wins.
func Evaluate(p *Policy, ev *Evidence, now time.Time) *Verdict {
	v := &Verdict{
		Image:         ev.Image.String(),
		Key:           ev.Key(),
		Score:         p.BaseScore,
		PolicyVersion: p.Version(),
		EvaluatedAt:   now,
	}
	var hard *Contribution
	for _, assess := range Assessors {
		for _, c := range assess(p, ev) {
			v.Contributions = append(v.Contributions, c)
			v.Score += c.Points
		}
	}
	for i := range v.Contributions {
		c := &v.Contributions[i]
		if c.Tier != "" && (hard == nil || Worse(hard.Tier, c.Tier) != hard.Tier) {
			hard = c
		}
	}
	v.Score = max(0, min(100, v.Score))
	defer func() {
		// Checked last so that no weight or rule can grant trust an unverified image lacks.
		if v.Tier == TierTrusted && p.Signature.RequireForTrusted && (ev.Signature == nil || ev.Signature.State != SignatureVerified) {
			state := "not checked"
			if ev.Signature != nil {
				state = string(ev.Signature.State)
			}
			v.Tier, v.Decision = TierUnknown, DecidedBySignatureRequirement
			v.DecidedBy = fmt.Sprintf("signature.requireForTrusted: signature %s, so not trusted (%s)", state, v.DecidedBy)
		}
	}()
	switch {
	case hard != nil:
		v.Tier, v.Decision = hard.Tier, DecidedByRule
		v.DecidedBy = fmt.Sprintf("%s → %s", hard.Rule, hard.Tier)
	case v.Score >= p.TrustedAtOrAbove:
		v.Tier, v.Decision = TierTrusted, DecidedByScore
		v.DecidedBy = fmt.Sprintf("score %d ≥ trusted threshold %d", v.Score, p.TrustedAtOrAbove)
	case v.Score < p.UntrustedBelow:
		v.Tier, v.Decision = TierUntrusted, DecidedByScore
		v.DecidedBy = fmt.Sprintf("score %d < untrusted threshold %d", v.Score, p.UntrustedBelow)
	default:
		v.Tier, v.Decision = TierUnknown, DecidedByScore
		v.DecidedBy = fmt.Sprintf("score %d between thresholds %d and %d", v.Score, p.UntrustedBelow, p.TrustedAtOrAbove)
	}
	return v
}

// Unassessable is the verdict for an image that cannot be evaluated at all, such as a reference
// that does not parse. It can never be trusted.
func Unassessable(image string, err error, p *Policy, now time.Time) *Verdict {
	return &Verdict{
		Image:         image,
		Key:           image,
		Score:         0,
		Tier:          TierUntrusted,
		DecidedBy:     "image cannot be assessed: " + err.Error(),
		Decision:      DecidedUnassessable,
		PolicyVersion: p.Version(),
		EvaluatedAt:   now,
	}
}

// Pending is the provisional verdict published when evaluation has not finished within the
// wait bound, so that pods are placed (as unknown, never trusted) instead of waiting forever.
func Pending(image string, waited time.Duration, p *Policy, now time.Time) *Verdict {
	return &Verdict{
		Image:         image,
		Key:           image,
		Score:         p.BaseScore,
		Tier:          TierUnknown,
		DecidedBy:     fmt.Sprintf("evaluation not finished after %s: placed as unknown until assessed", waited),
		Decision:      DecidedProvisionally,
		PolicyVersion: p.Version(),
		EvaluatedAt:   now,
		Provisional:   true,
	}
}

// SameOutcome reports whether two verdicts place and explain an image alike: same score, tier,
// deciding rule and contributions, however their observation texts differ (ages move on).
func SameOutcome(a, b *Verdict) bool {
	if a == nil || b == nil || a.Score != b.Score || a.Tier != b.Tier || a.DecidedBy != b.DecidedBy || a.Decision != b.Decision ||
		a.PolicyVersion != b.PolicyVersion || a.Incomplete != b.Incomplete || len(a.Contributions) != len(b.Contributions) {
		return false
	}
	for i, c := range a.Contributions {
		d := b.Contributions[i]
		if c.Signal != d.Signal || c.Rule != d.Rule || c.Points != d.Points || c.Tier != d.Tier || c.Finding != d.Finding {
			return false
		}
	}
	return true
}
