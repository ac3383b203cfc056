package reputation

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// BehaviorKind is what was seen at runtime.
type BehaviorKind string

const (
	// BehaviorFalcoAlert is a Falco rule that fired in a container running the image.
	BehaviorFalcoAlert BehaviorKind = "falco"
	// BehaviorCrashLoop is a container of the image entering CrashLoopBackOff.
	BehaviorCrashLoop BehaviorKind = "crashLoop"
	// BehaviorOOMKilled is a container of the image killed for running out of memory.
	BehaviorOOMKilled BehaviorKind = "oomKilled"
	// BehaviorRestart is a container of the image restarting.
	BehaviorRestart BehaviorKind = "restart"
)

// Falco priorities, most severe first, as Falco spells them.
var FalcoPriorities = []string{"Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug"}

// ParseFalcoPriority returns the canonical spelling of a Falco priority, case-insensitively.
// Falco also accepts "Info".
func ParseFalcoPriority(s string) (string, bool) {
	if strings.EqualFold(s, "info") {
		return "Informational", true
	}
	for _, p := range FalcoPriorities {
		if strings.EqualFold(s, p) {
			return p, true
		}
	}
	return "", false
}

// severity ranks a canonical priority: 0 is Emergency, the most severe; unknown ranks last.
func severity(priority string) int {
	if i := slices.Index(FalcoPriorities, priority); i >= 0 {
		return i
	}
	return len(FalcoPriorities)
}

// BehaviorEvent is one runtime observation about an image digest.
type BehaviorEvent struct {
	Kind BehaviorKind
	// Rule names what fired: the Falco rule, or the container state ("CrashLoopBackOff").
	Rule string
	// Priority is the Falco priority (canonical spelling); empty for pod-status events.
	Priority string
	// Where says where it was seen, e.g. "pod team/api-7d9 container app".
	Where string
	// Namespace is the namespace of the pod it was seen in, for the per-namespace bound on
	// pod-status penalties.
	Namespace string `json:",omitempty"`
	At        time.Time
}

// same reports whether two events are one: the same thing seen at the same time and place.
func (e *BehaviorEvent) same(other *BehaviorEvent) bool {
	return e.Kind == other.Kind && e.Rule == other.Rule && e.Priority == other.Priority && e.Where == other.Where && e.At.Equal(other.At)
}

// BehaviorObservation is an event as the assessor sees it: its age instead of a time, so that
// assessors stay free of clocks.
type BehaviorObservation struct {
	BehaviorEvent
	Age time.Duration
}

// BehaviorPolicy weighs runtime behavior. Every weight is ≤ 0: behavior can only lower a
// reputation, and each penalty halves every HalfLife, so recovery comes only with time.
type BehaviorPolicy struct {
	// HalfLife is how long a penalty takes to halve. Zero: penalties never fade.
	HalfLife time.Duration
	// PriorityWeights are the penalties for a Falco alert, by priority.
	PriorityWeights map[string]int
	// UntrustedPriority: an alert at or above it makes the image untrusted for one half-life.
	// Empty never.
	UntrustedPriority string
	// CrashLoopWeight, OOMKillWeight and RestartWeight are the penalties for pod-status events.
	CrashLoopWeight, OOMKillWeight, RestartWeight int
	// MaxPodStatusPenaltyPerNamespace bounds how many points the pod-status events of one
	// namespace's pods may take from an image, in all: a tenant decides whether its own pods
	// crash, and must not make a shared image untrusted for everyone. Falco alerts are not
	// bounded: they are authenticated and say what the image did.
	MaxPodStatusPenaltyPerNamespace int
}

// Default behavior weights.
const (
	DefaultBehaviorHalfLife  = 24 * time.Hour
	DefaultUntrustedPriority = "Critical"
	DefaultCrashLoopWeight   = -15
	DefaultOOMKillWeight     = -10
	DefaultRestartWeight     = -2
	// DefaultMaxPodStatusPenaltyPerNamespace: by its pods' status alone, one namespace can take
	// a verified image (score 90 by default) to the trusted threshold (70), not below it.
	DefaultMaxPodStatusPenaltyPerNamespace = 20
)

// DefaultPriorityWeights are the Falco alert penalties by priority.
func DefaultPriorityWeights() map[string]int {
	return map[string]int{"Emergency": -100, "Alert": -80, "Critical": -60, "Error": -30, "Warning": -10, "Notice": -2, "Informational": 0, "Debug": 0}
}

func (bp *BehaviorPolicy) weight(e BehaviorEvent) int {
	switch e.Kind {
	case BehaviorFalcoAlert:
		return bp.PriorityWeights[e.Priority]
	case BehaviorCrashLoop:
		return bp.CrashLoopWeight
	case BehaviorOOMKilled:
		return bp.OOMKillWeight
	case BehaviorRestart:
		return bp.RestartWeight
	}
	return 0
}

// ForgetAfter is how old an event must be before it counts for nothing under this policy: 20
// half-lives, when its weight is under a millionth of what it was (no weight is over 100, so
// under a ten-thousandth of a point), and never under 30 days, so that a policy whose half-life
// is later raised a little finds what it would weigh. Zero: penalties never fade, and nothing is
// forgotten.
func (bp *BehaviorPolicy) ForgetAfter() time.Duration {
	if bp.HalfLife <= 0 {
		return 0
	}
	return max(20*bp.HalfLife, 30*24*time.Hour)
}

// decayed is a weight after age under the half-life; a negative age (clock skew) counts as none.
func (bp *BehaviorPolicy) decayed(weight int, age time.Duration) float64 {
	if bp.HalfLife <= 0 || age <= 0 {
		return float64(weight)
	}
	return float64(weight) * math.Exp2(-float64(age)/float64(bp.HalfLife))
}

// assessBehavior turns runtime observations into penalties, one contribution per rule so that
// the explanation names each one. It never adds points.
func assessBehavior(p *Policy, ev *Evidence) []Contribution {
	if len(ev.Behavior) == 0 {
		return nil
	}
	bp := &p.Behavior
	type group struct {
		first           BehaviorObservation // newest
		count           int
		penalty         float64
		hardUntrustedBy *BehaviorObservation
	}
	var order []string
	groups := map[string]*group{}
	// left is what each namespace's pod-status events may still take, in points.
	left := map[string]float64{}
	for _, o := range ev.Behavior {
		key := string(o.Kind) + "\x00" + o.Rule + "\x00" + o.Priority
		g := groups[key]
		if g == nil {
			g = &group{first: o}
			groups[key] = g
			order = append(order, key)
		}
		if o.Age < g.first.Age {
			g.first = o
		}
		g.count++
		penalty := bp.decayed(bp.weight(o.BehaviorEvent), o.Age)
		if o.Kind != BehaviorFalcoAlert {
			budget, seen := left[o.Namespace]
			if !seen {
				budget = float64(bp.MaxPodStatusPenaltyPerNamespace)
			}
			penalty = max(penalty, -budget)
			left[o.Namespace] = budget + penalty
		}
		g.penalty += penalty
		if o.Kind == BehaviorFalcoAlert && bp.UntrustedPriority != "" && severity(o.Priority) <= severity(bp.UntrustedPriority) &&
			(bp.HalfLife == 0 || o.Age < bp.HalfLife) && g.hardUntrustedBy == nil {
			g.hardUntrustedBy = &o
		}
	}
	var out []Contribution
	total := 0
	for _, key := range order {
		g := groups[key]
		points := int(math.Round(g.penalty))
		points = max(points, -100-total) // the signal as a whole moves the score by at most 100
		total += points
		what := string(g.first.Kind)
		if g.first.Priority != "" {
			what += " " + g.first.Priority
		}
		c := Contribution{
			Signal:   SignalBehavior,
			Finding:  g.first.Rule,
			Observed: fmt.Sprintf("%s %q ×%d, newest %s ago in %s", what, g.first.Rule, g.count, g.first.Age.Round(time.Second), g.first.Where),
			Points:   points,
			Rule:     behaviorRule(g.first.BehaviorEvent),
		}
		if g.hardUntrustedBy != nil {
			c.Tier = TierUntrusted
			c.Rule = fmt.Sprintf("behavior.untrustedPriority %s: %q within one half-life", bp.UntrustedPriority, g.first.Rule)
		}
		out = append(out, c)
	}
	return out
}

func behaviorRule(e BehaviorEvent) string {
	switch e.Kind {
	case BehaviorFalcoAlert:
		return "behavior.priorityWeights." + e.Priority
	case BehaviorCrashLoop:
		return "behavior.crashLoopWeight"
	case BehaviorOOMKilled:
		return "behavior.oomKillWeight"
	default:
		return "behavior.restartWeight"
	}
}

func (bp *BehaviorPolicy) validate() []FieldError {
	var errs []FieldError
	if bp.HalfLife < 0 {
		errs = append(errs, FieldError{"behavior.halfLife", bp.HalfLife.String(), "must not be negative"})
	}
	for prio, w := range bp.PriorityWeights {
		if canon, ok := ParseFalcoPriority(prio); !ok || canon != prio {
			errs = append(errs, FieldError{"behavior.priorityWeights", prio, "must be one of " + strings.Join(FalcoPriorities, ", ")})
		}
		if w < -100 || w > 0 {
			errs = append(errs, FieldError{"behavior.priorityWeights." + prio, w, "must be between -100 and 0"})
		}
	}
	if bp.UntrustedPriority != "" {
		if canon, ok := ParseFalcoPriority(bp.UntrustedPriority); !ok || canon != bp.UntrustedPriority {
			errs = append(errs, FieldError{"behavior.untrustedPriority", bp.UntrustedPriority, "must be empty or one of " + strings.Join(FalcoPriorities, ", ")})
		}
	}
	for _, f := range []struct {
		field string
		w     int
	}{{"behavior.crashLoopWeight", bp.CrashLoopWeight}, {"behavior.oomKillWeight", bp.OOMKillWeight}, {"behavior.restartWeight", bp.RestartWeight}} {
		if f.w < -100 || f.w > 0 {
			errs = append(errs, FieldError{f.field, f.w, "must be between -100 and 0"})
		}
	}
	if m := bp.MaxPodStatusPenaltyPerNamespace; m < 0 || m > 100 {
		errs = append(errs, FieldError{"behavior.maxPodStatusPenaltyPerNamespace", m, "must be between 0 and 100"})
	}
	slices.SortFunc(errs, func(a, b FieldError) int { return strings.Compare(a.Field, b.Field) })
	return errs
}

// BehaviorLedger remembers runtime events per image. It is in memory and bounded: per key and
// rule it keeps the newest MaxEventsPerRule events, since older ones of the same rule weigh ever
// less. It is safe for concurrent use.
type BehaviorLedger struct {
	mu     sync.RWMutex
	events map[string][]*BehaviorEvent // key (digest or canonical reference) → events
	// peak is the most keys since events was last rebuilt: Go maps keep their space after
	// deletes, so Prune rebuilds it once a quarter of that is left.
	peak int
}

// MaxEventsPerRule bounds how many events of one rule are kept per key.
const MaxEventsPerRule = 32

// NewBehaviorLedger returns an empty ledger.
func NewBehaviorLedger() *BehaviorLedger {
	return &BehaviorLedger{events: map[string][]*BehaviorEvent{}}
}

// Record files one event under every key that names its image: the digest ("sha256:…") the
// runtime reported, and the canonical reference the pod spells, so that an image is found
// whether or not its tag has been resolved. Observations counts the event once. An event learnt
// twice (from the store and from a standby's snapshot, say) is filed once.
func (l *BehaviorLedger) Record(e BehaviorEvent, keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, key := range keys {
		if key == "" || slices.Contains(keys[:i], key) || slices.ContainsFunc(l.events[key], e.same) {
			continue
		}
		l.events[key] = KeepNewestPerRule(append(l.events[key], &e), func(o *BehaviorEvent) bool { return o.Kind == e.Kind && o.Rule == e.Rule })
	}
	l.peak = max(l.peak, len(l.events))
}

// Prune drops the events from before a time (see BehaviorPolicy.ForgetAfter), and the keys
// left with none, and returns how many events went. Only age forgets an event: an image no pod
// uses keeps its behavior, so that it cannot come back clean.
func (l *BehaviorLedger) Prune(before time.Time) (dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, events := range l.events {
		kept := slices.DeleteFunc(events, func(e *BehaviorEvent) bool { return e.At.Before(before) })
		dropped += len(events) - len(kept)
		if len(kept) == 0 {
			delete(l.events, key)
		} else {
			l.events[key] = kept
		}
	}
	if l.peak >= 1024 && len(l.events) <= l.peak/4 {
		rebuilt := make(map[string][]*BehaviorEvent, len(l.events))
		for k, v := range l.events {
			rebuilt[k] = v
		}
		l.events, l.peak = rebuilt, len(rebuilt)
	}
	return dropped
}

// KeepNewestPerRule bounds a list to which one event was just appended: when more than
// MaxEventsPerRule of its entries are of the new event's rule (sameRule), the oldest of them goes.
func KeepNewestPerRule[T any](list []T, sameRule func(T) bool) []T {
	same := 0
	for j := len(list) - 1; j >= 0; j-- {
		if sameRule(list[j]) {
			if same++; same > MaxEventsPerRule {
				return slices.Delete(list, j, j+1)
			}
		}
	}
	return list
}

// Observations returns the events filed under any of the keys, each once, with their ages at now.
func (l *BehaviorLedger) Observations(now time.Time, keys ...string) []BehaviorObservation {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []BehaviorObservation
	seen := map[*BehaviorEvent]bool{}
	for _, k := range keys {
		for _, e := range l.events[k] {
			if !seen[e] {
				seen[e] = true
				out = append(out, BehaviorObservation{BehaviorEvent: *e, Age: now.Sub(e.At)})
			}
		}
	}
	return out
}

// BehaviorKeys are the ledger keys that concern an image: its digest when known, and its
// canonical reference.
func BehaviorKeys(ev *Evidence) []string {
	digest := ev.Image.Digest
	if digest == "" {
		digest = ev.ResolvedDigest
	}
	return []string{digest, ev.Image.String()}
}

// BehaviorSource is the evidence source that reads the ledger. It does no I/O, so the engine
// also runs it when it rescores from memory.
type BehaviorSource struct {
	Ledger *BehaviorLedger
	Now    func() time.Time
}

// Name implements EvidenceSource.
func (s *BehaviorSource) Name() string { return "behavior" }

// Collect implements EvidenceSource.
func (s *BehaviorSource) Collect(_ context.Context, ev *Evidence) error {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	ev.Behavior = s.Ledger.Observations(now(), BehaviorKeys(ev)...)
	return nil
}

// DefaultBehaviorPolicy is the behavior policy operators get by saying nothing.
func DefaultBehaviorPolicy() BehaviorPolicy {
	return BehaviorPolicy{
		HalfLife:          DefaultBehaviorHalfLife,
		PriorityWeights:   DefaultPriorityWeights(),
		UntrustedPriority: DefaultUntrustedPriority,
		CrashLoopWeight:   DefaultCrashLoopWeight,
		OOMKillWeight:     DefaultOOMKillWeight,
		RestartWeight:     DefaultRestartWeight,

		MaxPodStatusPenaltyPerNamespace: DefaultMaxPodStatusPenaltyPerNamespace,
	}
}
