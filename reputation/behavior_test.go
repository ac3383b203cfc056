package reputation

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func behaviorPolicy(t testing.TB) *Policy {
	p := *examplePolicy(t)
	p.Behavior = DefaultBehaviorPolicy()
	return mustPolicy(t, p)
}

func TestBehaviorEvidence(t *testing.T) {
	p := behaviorPolicy(t)
	day := 24 * time.Hour
	shell := BehaviorEvent{Kind: BehaviorFalcoAlert, Rule: "Terminal shell in container", Priority: "Critical", Where: "pod team/api container app"}
	warn := BehaviorEvent{Kind: BehaviorFalcoAlert, Rule: "Read sensitive file untrusted", Priority: "Warning", Where: "pod team/api container app"}
	crash := BehaviorEvent{Kind: BehaviorCrashLoop, Rule: "CrashLoopBackOff", Where: "pod team/api container app"}
	obs := func(e BehaviorEvent, age time.Duration) BehaviorObservation {
		return BehaviorObservation{BehaviorEvent: e, Age: age}
	}
	// registry.internal/… pinned is trusted by origin rule at 90 before behavior.
	tests := []struct {
		name          string
		behavior      []BehaviorObservation
		wantTier      Tier
		wantScore     int
		wantDecidedBy string
		wantObserved  string
	}{
		{"nothing seen", nil, TierTrusted, 90, "origin.rules[0]", ""},
		{"fresh critical alert is a hard untrusted naming the rule", []BehaviorObservation{obs(shell, time.Minute)}, TierUntrusted, 30,
			`behavior.untrustedPriority Critical: "Terminal shell in container" within one half-life → untrusted`, `falco Critical "Terminal shell in container" ×1`},
		{"after two half-lives the hard rule has lapsed and a quarter of the penalty remains", []BehaviorObservation{obs(shell, 2*day)}, TierTrusted, 75,
			"origin.rules[0]", "newest 48h0m0s ago"},
		{"warnings add up, one contribution per rule", []BehaviorObservation{obs(warn, 0), obs(warn, time.Hour), obs(warn, 2*time.Hour)}, TierTrusted, 61,
			"origin.rules[0]", `×3, newest 0s ago in pod team/api container app`},
		{"crash loop", []BehaviorObservation{obs(crash, 0)}, TierTrusted, 75, "origin.rules[0]", `crashLoop "CrashLoopBackOff" ×1`},
		{"a future timestamp counts as now, never as more than the weight", []BehaviorObservation{obs(warn, -10*day)}, TierTrusted, 80, "origin.rules[0]", "falco Warning"},
		{"the signal moves the score by at most 100", []BehaviorObservation{obs(shell, 0), obs(shell, 0), obs(warn, 0), obs(crash, 0)}, TierUntrusted, 0,
			"behavior.untrustedPriority", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := &Evidence{Image: mustRef(t, "registry.internal/team/app@"+testDigest), Behavior: tt.behavior}
			v := Evaluate(p, ev, time.Now())
			if v.Tier != tt.wantTier || v.Score != tt.wantScore || !strings.Contains(v.DecidedBy, tt.wantDecidedBy) {
				t.Fatalf("got %s %d %q, want %s %d %q", v.Tier, v.Score, v.DecidedBy, tt.wantTier, tt.wantScore, tt.wantDecidedBy)
			}
			var observed []string
			behaviorPoints := 0
			for _, c := range v.Contributions {
				if c.Signal == SignalBehavior {
					observed = append(observed, c.Observed)
					behaviorPoints += c.Points
				}
			}
			if behaviorPoints > 0 || behaviorPoints < -100 {
				t.Errorf("behavior moved the score by %d; it may only lower it, by at most 100", behaviorPoints)
			}
			if !strings.Contains(strings.Join(observed, "; "), tt.wantObserved) {
				t.Errorf("behavior explained as %q, want it to mention %q", observed, tt.wantObserved)
			}
		})
	}
}

func TestBehaviorPolicyValidation(t *testing.T) {
	tests := []struct {
		mutate    func(*BehaviorPolicy)
		wantField string
	}{
		{func(b *BehaviorPolicy) { b.HalfLife = -time.Second }, "behavior.halfLife"},
		{func(b *BehaviorPolicy) { b.PriorityWeights["critical"] = -10 }, "behavior.priorityWeights"},
		{func(b *BehaviorPolicy) { b.PriorityWeights["Critical"] = 10 }, "behavior.priorityWeights.Critical"},
		{func(b *BehaviorPolicy) { b.UntrustedPriority = "Severe" }, "behavior.untrustedPriority"},
		{func(b *BehaviorPolicy) { b.CrashLoopWeight = 5 }, "behavior.crashLoopWeight"},
		{func(b *BehaviorPolicy) { b.RestartWeight = -101 }, "behavior.restartWeight"},
	}
	for _, tt := range tests {
		t.Run(tt.wantField, func(t *testing.T) {
			p := *DefaultPolicy()
			p.Behavior = DefaultBehaviorPolicy()
			tt.mutate(&p.Behavior)
			_, err := NewPolicy(p)
			if err == nil || !strings.Contains(err.Error(), tt.wantField+":") {
				t.Fatalf("got %v, want an error naming %s", err, tt.wantField)
			}
		})
	}
}

func TestBehaviorLedger(t *testing.T) {
	l := NewBehaviorLedger()
	now := time.Now()
	alert := BehaviorEvent{Kind: BehaviorFalcoAlert, Rule: "r", Priority: "Warning", At: now.Add(-time.Minute)}
	l.Record(alert, "sha256:aaa", "registry.internal/app:v1", "sha256:aaa")
	if got := l.Observations(now, "sha256:aaa", "registry.internal/app:v1"); len(got) != 1 || got[0].Age != time.Minute {
		t.Fatalf("an event filed under two keys must be observed once, a minute old; got %+v", got)
	}
	if got := l.Observations(now, "registry.internal/app:v1"); len(got) != 1 {
		t.Fatalf("found by its reference: got %d events, want 1", len(got))
	}
	if got := l.Observations(now, "sha256:bbb"); len(got) != 0 {
		t.Fatalf("another digest has no events, got %d", len(got))
	}
	l.Record(alert, "sha256:aaa", "registry.internal/app:v1")
	if got := l.Observations(now, "sha256:aaa", "registry.internal/app:v1"); len(got) != 1 {
		t.Fatalf("the same event learnt again (from the store and a snapshot) must count once; got %d events", len(got))
	}
	for i := range 3 * MaxEventsPerRule {
		repeated := alert
		repeated.At = alert.At.Add(time.Duration(i+1) * time.Millisecond)
		l.Record(repeated, "sha256:aaa")
	}
	l.Record(BehaviorEvent{Kind: BehaviorCrashLoop, Rule: "CrashLoopBackOff", At: now}, "sha256:aaa")
	got := l.Observations(now, "sha256:aaa")
	if len(got) != MaxEventsPerRule+1 {
		t.Fatalf("kept %d events, want %d of the repeated rule plus the other rule's one", len(got), MaxEventsPerRule+1)
	}
}

// The ledger forgets by age only: what a policy no longer weighs at all, and the keys left
// empty; a flood of such keys leaves nothing behind.
func TestBehaviorLedgerPrune(t *testing.T) {
	for _, tc := range []struct {
		halfLife, want time.Duration
	}{
		{0, 0}, // penalties never fade: nothing is forgotten
		{24 * time.Hour, 30 * 24 * time.Hour},
		{7 * 24 * time.Hour, 140 * 24 * time.Hour},
	} {
		bp := BehaviorPolicy{HalfLife: tc.halfLife}
		if got := bp.ForgetAfter(); got != tc.want {
			t.Errorf("half-life %s: ForgetAfter %s, want %s", tc.halfLife, got, tc.want)
		}
		if tc.want > 0 {
			if w := bp.decayed(-100, tc.want); w < -0.0001 {
				t.Errorf("half-life %s: the heaviest event still weighs %f when forgotten", tc.halfLife, w)
			}
		}
	}

	now := time.Now()
	cutoff := now.Add(-30 * 24 * time.Hour)
	l := NewBehaviorLedger()
	old := BehaviorEvent{Kind: BehaviorFalcoAlert, Rule: "shell", Priority: "Critical", At: cutoff.Add(-time.Hour)}
	recent := BehaviorEvent{Kind: BehaviorFalcoAlert, Rule: "shell", Priority: "Critical", At: now.Add(-time.Hour)}
	l.Record(old, "sha256:aaa", "registry.internal/app:v1")
	l.Record(recent, "sha256:aaa")
	l.Record(old, "sha256:bbb")
	for i := range 10_000 {
		l.Record(old, fmt.Sprintf("sha256:flood%d", i))
	}
	if dropped := l.Prune(cutoff); dropped != 10_003 {
		t.Errorf("Prune dropped %d events, want the 10,003 older than the cutoff", dropped)
	}
	if got := l.Observations(now, "sha256:aaa", "registry.internal/app:v1"); len(got) != 1 || !got[0].At.Equal(recent.At) {
		t.Errorf("after Prune: %+v, want only the recent alert", got)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if len(l.events) != 1 || l.peak != 1 {
		t.Errorf("after Prune: %d keys, peak %d; want one key, in a map rebuilt to its size", len(l.events), l.peak)
	}
}

const testDigest2 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

func mustRef(t testing.TB, image string) ImageRef {
	t.Helper()
	ref, err := ParseImageRef(image)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// One namespace's pod status can take at most MaxPodStatusPenaltyPerNamespace points from an
// image, however many of its pods crash; another namespace has its own bound; Falco alerts are
// not bounded.
func TestPodStatusPenaltiesAreBoundedPerNamespace(t *testing.T) {
	p := behaviorPolicy(t)
	crash := func(ns string) BehaviorObservation {
		return BehaviorObservation{BehaviorEvent: BehaviorEvent{Kind: BehaviorCrashLoop, Rule: "CrashLoopBackOff", Namespace: ns, Where: "pod " + ns + "/x"}}
	}
	alert := BehaviorObservation{BehaviorEvent: BehaviorEvent{Kind: BehaviorFalcoAlert, Rule: "Read sensitive file", Priority: "Warning", Namespace: "a"}}
	total := func(obs ...BehaviorObservation) int {
		sum := 0
		for _, c := range assessBehavior(p, &Evidence{Behavior: obs}) {
			sum += c.Points
		}
		return sum
	}
	tests := []struct {
		name string
		obs  []BehaviorObservation
		want int
	}{
		{"one crash loop", []BehaviorObservation{crash("a")}, DefaultCrashLoopWeight},
		{"five crash loops in one namespace", []BehaviorObservation{crash("a"), crash("a"), crash("a"), crash("a"), crash("a")}, -DefaultMaxPodStatusPenaltyPerNamespace},
		{"two namespaces, each bounded", []BehaviorObservation{crash("a"), crash("a"), crash("a"), crash("b"), crash("b"), crash("b")}, -2 * DefaultMaxPodStatusPenaltyPerNamespace},
		{"Falco alerts are not bounded", []BehaviorObservation{crash("a"), crash("a"), alert, alert, alert}, -DefaultMaxPodStatusPenaltyPerNamespace + 3*DefaultPriorityWeights()["Warning"]},
	}
	for _, tt := range tests {
		if got := total(tt.obs...); got != tt.want {
			t.Errorf("%s: %d points, want %d", tt.name, got, tt.want)
		}
	}
}
