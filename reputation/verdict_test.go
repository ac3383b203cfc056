package reputation

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func mustPolicy(t testing.TB, p Policy) *Policy {
	t.Helper()
	pol, err := NewPolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// examplePolicy is the example: an internal registry is trusted, Docker Hub is unknown,
// anything else is untrusted; library images earn a little.
func examplePolicy(t testing.TB) *Policy {
	return mustPolicy(t, Policy{
		BaseScore: 50, TrustedAtOrAbove: 70, UntrustedBelow: 30,
		Origin: OriginPolicy{MutableTagPenalty: 10, Rules: []OriginRule{
			{Pattern: "registry.internal/*", Tier: TierTrusted, Weight: 40},
			{Pattern: "*.corp.example/*", Weight: 25},
			{Pattern: "docker.io/library/*", Weight: 5},
			{Pattern: "docker.io/*", Tier: TierUnknown},
			{Pattern: "*", Tier: TierUntrusted, Weight: -40},
		}},
	})
}

func TestEvaluateOrigin(t *testing.T) {
	p := examplePolicy(t)
	tests := []struct {
		image         string
		wantTier      Tier
		wantScore     int
		wantDecidedBy string
	}{
		{"registry.internal/team/app@" + testDigest, TierTrusted, 90, "origin.rules[0] registry.internal/* → trusted"},
		{"registry.internal/team/app:v1", TierTrusted, 80, "origin.rules[0]"},
		{"git.corp.example/svc@" + testDigest, TierTrusted, 75, "score 75 ≥ trusted threshold 70"},
		{"git.corp.example/svc:latest", TierUnknown, 65, "between thresholds"},
		{"nginx@" + testDigest, TierUnknown, 55, "between thresholds"},
		{"bitnami/redis:7", TierUnknown, 40, "origin.rules[3] docker.io/* → unknown"},
		{"quay.io/evil/miner:latest", TierUntrusted, 0, "origin.rules[4] * → untrusted"},
		// A registry glob never spans a "/": this is evil.io, not a corp registry.
		{"evil.io/x.corp.example/svc@" + testDigest, TierUntrusted, 10, "origin.rules[4]"},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			ref, err := ParseImageRef(tt.image)
			if err != nil {
				t.Fatal(err)
			}
			v := Evaluate(p, &Evidence{Image: ref}, time.Unix(0, 0))
			if v.Tier != tt.wantTier || v.Score != tt.wantScore || !strings.Contains(v.DecidedBy, tt.wantDecidedBy) {
				t.Errorf("Evaluate(%s) = tier %s score %d decidedBy %q; want %s %d containing %q", tt.image, v.Tier, v.Score, v.DecidedBy, tt.wantTier, tt.wantScore, tt.wantDecidedBy)
			}
			if v.PolicyVersion != p.Version() || v.PolicyVersion == "" {
				t.Errorf("PolicyVersion = %q, want %q", v.PolicyVersion, p.Version())
			}
			sum := p.BaseScore
			for _, c := range v.Contributions {
				sum += c.Points
			}
			if want := max(0, min(100, sum)); want != v.Score {
				t.Errorf("contributions add up to %d, score is %d: the explanation does not account for the score", want, v.Score)
			}
		})
	}
}

func TestMutableTagPenaltyIsExplained(t *testing.T) {
	p := examplePolicy(t)
	ref, _ := ParseImageRef("registry.internal/app:latest")
	v := Evaluate(p, &Evidence{Image: ref}, time.Now())
	var found bool
	for _, c := range v.Contributions {
		if c.Rule == "origin.mutableTagPenalty" && c.Points == -10 && strings.Contains(c.Observed, `"latest"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no mutable-tag contribution in %+v", v.Contributions)
	}
}

func TestDefaultPolicyMakesEverythingUnknown(t *testing.T) {
	p := DefaultPolicy()
	for _, image := range []string{"nginx", "registry.internal/app@" + testDigest, "quay.io/x/y:z"} {
		ref, _ := ParseImageRef(image)
		if v := Evaluate(p, &Evidence{Image: ref}, time.Now()); v.Tier != TierUnknown {
			t.Errorf("%s: tier %s under the default policy, want unknown", image, v.Tier)
		}
	}
}

func TestPolicyValidation(t *testing.T) {
	tests := []struct {
		name    string
		policy  Policy
		wantErr []string
	}{
		{"valid", examplePolicy(t).withoutVersion(), nil},
		{"thresholds crossed", Policy{BaseScore: 50, TrustedAtOrAbove: 20, UntrustedBelow: 40}, []string{"thresholds.untrusted"}},
		{"out of range", Policy{BaseScore: 150, TrustedAtOrAbove: 70, UntrustedBelow: 30}, []string{"baseScore"}},
		{"bad rule", Policy{BaseScore: 50, TrustedAtOrAbove: 70, UntrustedBelow: 30, Origin: OriginPolicy{Rules: []OriginRule{
			{Pattern: "no-slash"}, {Pattern: "reg/[", Weight: 1}, {Pattern: "reg/x", Tier: "trustworthy"}, {Pattern: "reg/y", Weight: 101},
		}}}, []string{"origin.rules[0].pattern", "origin.rules[1].pattern", "origin.rules[2].tier", "origin.rules[3].weight"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.policy.Validate()
			var fields []string
			for _, e := range errs {
				fields = append(fields, e.Field)
			}
			if strings.Join(fields, ",") != strings.Join(tt.wantErr, ",") {
				t.Errorf("Validate() fields = %v, want %v (errors: %v)", fields, tt.wantErr, errs)
			}
			_, err := NewPolicy(tt.policy)
			if (err != nil) != (len(tt.wantErr) > 0) {
				t.Errorf("NewPolicy error = %v", err)
			}
		})
	}
}

func (p *Policy) withoutVersion() Policy {
	c := *p
	c.version = ""
	return c
}

func TestPolicyVersionFollowsContent(t *testing.T) {
	a, b := examplePolicy(t), examplePolicy(t)
	if a.Version() != b.Version() {
		t.Errorf("same content, different versions %s %s", a.Version(), b.Version())
	}
	changed := a.withoutVersion()
	changed.Origin.Rules = append([]OriginRule(nil), changed.Origin.Rules...)
	changed.Origin.Rules[0].Weight = 41
	if mustPolicy(t, changed).Version() == a.Version() {
		t.Error("a changed weight kept the same policy version")
	}
}

func TestWorse(t *testing.T) {
	tests := []struct{ a, b, want Tier }{
		{TierTrusted, TierTrusted, TierTrusted},
		{TierTrusted, TierUnknown, TierUnknown},
		{TierUnknown, TierUntrusted, TierUntrusted},
		{TierUntrusted, TierTrusted, TierUntrusted},
		{TierTrusted, Tier("bogus"), Tier("bogus")},
	}
	for _, tt := range tests {
		if got := Worse(tt.a, tt.b); got != tt.want {
			t.Errorf("Worse(%s, %s) = %s, want %s", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestSignatureEvidence(t *testing.T) {
	p := mustPolicy(t, Policy{
		BaseScore: 50, TrustedAtOrAbove: 70, UntrustedBelow: 30,
		Origin: OriginPolicy{Rules: []OriginRule{
			{Pattern: "registry.internal/*", Weight: 10},
			{Pattern: "vendor.example/*", Tier: TierTrusted},
		}},
		Signature: SignaturePolicy{VerifiedWeight: 30, UnverifiedWeight: -10, AbsentWeight: -5, RequireForTrusted: true},
	})
	internal := "registry.internal/team/api@" + testDigest
	tests := []struct {
		name          string
		image         string
		sig           *SignatureEvidence
		wantTier      Tier
		wantScore     int
		wantDecidedBy string
	}{
		{"verified", internal, &SignatureEvidence{State: SignatureVerified, Key: "ops"}, TierTrusted, 90, "score 90"},
		{"unsigned", internal, &SignatureEvidence{State: SignatureAbsent}, TierUnknown, 55, "between thresholds"},
		{"unknown key", internal, &SignatureEvidence{State: SignatureUnverified}, TierUnknown, 50, "between thresholds"},
		{"tampered or replayed", internal, &SignatureEvidence{State: SignatureInvalid, Detail: "replayed"}, TierUntrusted, 60, "signature invalid → untrusted"},
		{"registry down: missing evidence moves nothing", internal, &SignatureEvidence{State: SignatureError}, TierUnknown, 60, "between thresholds"},
		{"a hard trusted rule still needs a signature", "vendor.example/tool@" + testDigest, &SignatureEvidence{State: SignatureAbsent}, TierUnknown, 45, "signature.requireForTrusted: signature absent"},
		{"not checked at all is not trusted either", "vendor.example/tool@" + testDigest, nil, TierUnknown, 50, "signature not checked"},
		{"a hard trusted rule with a verified signature", "vendor.example/tool@" + testDigest, &SignatureEvidence{State: SignatureVerified}, TierTrusted, 80, "origin.rules[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref, _ := ParseImageRef(tt.image)
			v := Evaluate(p, &Evidence{Image: ref, Signature: tt.sig}, time.Now())
			if v.Tier != tt.wantTier || v.Score != tt.wantScore || !strings.Contains(v.DecidedBy, tt.wantDecidedBy) {
				t.Errorf("got tier %s score %d decidedBy %q; want %s %d containing %q", v.Tier, v.Score, v.DecidedBy, tt.wantTier, tt.wantScore, tt.wantDecidedBy)
			}
		})
	}
}

func TestSignatureWeightsCannotRaiseTrustUnverified(t *testing.T) {
	base := Policy{BaseScore: 50, TrustedAtOrAbove: 70, UntrustedBelow: 30}
	for _, bad := range []SignaturePolicy{{UnverifiedWeight: 10}, {AbsentWeight: 1}, {VerifiedWeight: -5}} {
		p := base
		p.Signature = bad
		if _, err := NewPolicy(p); err == nil {
			t.Errorf("policy with %+v accepted", bad)
		}
	}
}

func TestDependencyEvidence(t *testing.T) {
	p := mustPolicy(t, Policy{BaseScore: 80, TrustedAtOrAbove: 70, UntrustedBelow: 30,
		Dependencies: DependencyPolicy{CriticalWeight: -20, HighWeight: -5, MaxCritical: 1, StaleAfter: time.Hour,
			DenyVulnerabilities: []string{"CVE-2021-44228"}, DenyPackages: []string{"event-stream"}}})
	ref, _ := ParseImageRef("registry.internal/app@" + testDigest)
	tests := []struct {
		name          string
		deps          *DependencyEvidence
		wantTier      Tier
		wantScore     int
		wantDecidedBy string
	}{
		{"no report", nil, TierTrusted, 80, "score 80"},
		{"two highs", &DependencyEvidence{Report: "r", High: 2}, TierTrusted, 70, "score 70"},
		{"one critical is allowed but costs", &DependencyEvidence{Report: "r", Critical: 1}, TierUnknown, 60, "between"},
		{"more criticals than allowed", &DependencyEvidence{Report: "r", Critical: 2}, TierUntrusted, 40, "dependencies.maxCritical → untrusted"},
		{"denylisted CVE", &DependencyEvidence{Report: "r", Low: 1, IDs: []string{"CVE-2021-44228"}}, TierUntrusted, 80, "dependencies.denyVulnerabilities → untrusted"},
		{"denylisted package", &DependencyEvidence{Report: "r", Packages: []string{"event-stream"}}, TierUntrusted, 80, "dependencies.denyPackages → untrusted"},
		{"stale report counts as none", &DependencyEvidence{Report: "r", Critical: 9, Age: 2 * time.Hour}, TierTrusted, 80, "score 80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Evaluate(p, &Evidence{Image: ref, Dependencies: tt.deps}, time.Now())
			if v.Tier != tt.wantTier || v.Score != tt.wantScore || !strings.Contains(v.DecidedBy, tt.wantDecidedBy) {
				t.Errorf("got %s %d %q; want %s %d containing %q", v.Tier, v.Score, v.DecidedBy, tt.wantTier, tt.wantScore, tt.wantDecidedBy)
			}
		})
	}
}

// Every verdict says by type what decided it, so code acts on the kind, never on the words.
func TestVerdictDecisionKinds(t *testing.T) {
	p := examplePolicy(t)
	signed := *p
	signed.Signature.RequireForTrusted = true
	now := time.Now()
	evidence := func(image string) *Evidence {
		ref, err := ParseImageRef(image)
		if err != nil {
			t.Fatal(err)
		}
		return &Evidence{Image: ref}
	}
	tests := []struct {
		name    string
		verdict *Verdict
		want    Decision
	}{
		{"an origin rule's tier", Evaluate(p, evidence("quay.io/evil/miner:latest"), now), DecidedByRule},
		{"the score", Evaluate(p, evidence("registry.corp.example/team/app:v1"), now), DecidedByScore},
		{"trusted by rule, but unsigned", Evaluate(mustPolicy(t, signed), evidence("registry.internal/app@"+testDigest), now), DecidedBySignatureRequirement},
		{"a reference that does not parse", Unassessable("Not/A:Valid:Ref", errors.New("bad"), p, now), DecidedUnassessable},
		{"evaluation not finished", Pending("registry.internal/app:v1", time.Second, p, now), DecidedProvisionally},
	}
	for _, tt := range tests {
		if tt.verdict.Decision != tt.want {
			t.Errorf("%s: decision %q (%s), want %q", tt.name, tt.verdict.Decision, tt.verdict.DecidedBy, tt.want)
		}
	}
}

// A deny rule holds for every spelling the runtime pulls the same image by.
func TestOriginRulesSeeOneSpelling(t *testing.T) {
	p := mustPolicy(t, Policy{BaseScore: 50, TrustedAtOrAbove: 70, UntrustedBelow: 30,
		Origin: OriginPolicy{Rules: []OriginRule{{Pattern: "quay.io/evil/*", Tier: TierUntrusted}, {Pattern: "*", Weight: 30}}}})
	for _, image := range []string{"quay.io/evil/miner", "QUAY.IO/evil/miner", "quay.io:443/evil/miner", "Quay.IO:443/evil/miner:latest"} {
		ref, err := ParseImageRef(image)
		if err != nil {
			t.Fatal(err)
		}
		if v := Evaluate(p, &Evidence{Image: ref}, time.Now()); v.Tier != TierUntrusted {
			t.Errorf("%s: %s (%s), want untrusted by quay.io/evil/*", image, v.Tier, v.DecidedBy)
		}
	}
}
