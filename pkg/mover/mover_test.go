package mover

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/reputation"
)

const (
	poolKey   = "node-restriction.kubernetes.io/repute-pool"
	scheduler = "repute-scheduler"
)

// fixture is a mover over listers filled by hand, a fake clientset that records evictions, and
// a fake clock: tests drive handle directly, with no goroutine and no sleep.
type fixture struct {
	t       *testing.T
	mover   *Mover
	client  *fake.Clientset
	clock   *testingclock.FakeClock
	events  *events.FakeRecorder
	pods    cache.Indexer
	tiers   map[string]*reputation.Verdict // pod name → the verdict that places it
	records []string                       // "<pod> <action>"
	// requested are the pods whose missing verdicts were asked for.
	requested []string
}

func newFixture(t *testing.T, spec config.ReplacementSpec, nodes ...*v1.Node) *fixture {
	f := &fixture{t: t, client: fake.NewClientset(), clock: testingclock.NewFakeClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)),
		events: events.NewFakeRecorder(100), pods: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		tiers: map[string]*reputation.Verdict{}}
	nodeIndex := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, n := range nodes {
		if err := nodeIndex.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	profile := &placement.Profile{Name: scheduler, PoolKey: poolKey, Events: f.events, Pools: map[reputation.Tier]config.PoolSpec{
		reputation.TierTrusted: {Name: "trusted"}, reputation.TierUnknown: {Name: "unknown"}, reputation.TierUntrusted: {Name: "untrusted"}}}
	policy := reputation.DefaultPolicy()
	f.mover = New(Options{Spec: spec, Client: f.client, Clock: f.clock,
		Pods: corelisters.NewPodLister(f.pods), Nodes: corelisters.NewNodeLister(nodeIndex),
		Place: func(pod *v1.Pod) placement.Placement {
			v := f.tiers[pod.Name]
			if v == nil { // its image has no verdict yet
				return placement.Placement{Tier: reputation.TierUnknown, Score: 100, Missing: 1}
			}
			return placement.Placement{Tier: v.Tier, Score: v.Score, Image: "img", Verdict: v}
		},
		RequestMissing: func(pod *v1.Pod) []string {
			if f.tiers[pod.Name] != nil {
				return nil
			}
			f.requested = append(f.requested, pod.Name)
			return []string{pod.Spec.Containers[0].Image}
		},
		Policy: func() *reputation.Policy { return policy },
		Profile: func(name string) *placement.Profile {
			if name == scheduler {
				return profile
			}
			return nil
		},
		Record: func(pod *v1.Pod, _ *v1.Node, _ *placement.Profile, _ placement.Placement, action, _ string) {
			f.records = append(f.records, pod.Name+" "+action)
		},
		Leading: func() bool { return true }})
	return f
}

func node(name, pool string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{poolKey: pool}}}
}

// runningPod is a pod on a node, labelled with its tier already, owned by a ReplicaSet unless
// mutated otherwise.
func (f *fixture) runningPod(name, nodeName string, v *reputation.Verdict, mutate ...func(*v1.Pod)) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(name), Labels: map[string]string{placement.TierLabel: string(v.Tier)},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "rs", Controller: ptr.To(true)}}},
		Spec:   v1.PodSpec{NodeName: nodeName, SchedulerName: scheduler},
		Status: v1.PodStatus{Phase: v1.PodRunning},
	}
	for _, m := range mutate {
		m(p)
	}
	if err := f.pods.Add(p); err != nil {
		f.t.Fatal(err)
	}
	// The clientset holds it too, so that its eviction finds it.
	if err := f.client.Tracker().Add(p); err != nil {
		f.t.Fatal(err)
	}
	f.tiers[name] = v
	return p
}

// evictions returns the evictions the mover asked for, by pod name.
func (f *fixture) evictions() map[string]*policyv1.Eviction {
	out := map[string]*policyv1.Eviction{}
	for _, a := range f.client.Actions() {
		if c, ok := a.(clienttesting.CreateAction); ok && c.GetSubresource() == "eviction" {
			e := c.GetObject().(*policyv1.Eviction)
			out[e.Name] = e
		}
	}
	return out
}

func (f *fixture) eventsSeen() string {
	var out []string
	for {
		select {
		case e := <-f.events.Events:
			out = append(out, e)
		default:
			return strings.Join(out, "\n")
		}
	}
}

func evictSpec() config.ReplacementSpec {
	return config.ReplacementSpec{Mode: config.ReplacementEvict, Upward: config.ReplacementNone, EvictionsPerMinute: 600,
		MaxConcurrentEvictions: 1, Margin: 5, SettleFor: metav1.Duration{Duration: 2 * time.Minute}, ProtectedPriority: 2000000000}
}

var untrustedByRule = &reputation.Verdict{Tier: reputation.TierUntrusted, Score: 30, Decision: reputation.DecidedByRule, DecidedBy: "behavior.untrustedPriority"}

func TestWhatIsNeverEvicted(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*v1.Pod)
		wantReason string
	}{
		{"DaemonSet pod", func(p *v1.Pod) { p.OwnerReferences[0].Kind = "DaemonSet" }, "a DaemonSet pod"},
		{"static pod", func(p *v1.Pod) {
			p.Annotations = map[string]string{v1.MirrorPodAnnotationKey: "x"}
			p.OwnerReferences[0].Kind = "Node"
		}, "a static pod"},
		{"system-critical priority", func(p *v1.Pod) { p.Spec.Priority = ptr.To[int32](2000001000) }, "priority 2000001000 is at or above replacement.protectedPriority"},
		{"no controller", func(p *v1.Pod) { p.OwnerReferences = nil }, "no controller would recreate it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, evictSpec(), node("t1", "trusted"))
			f.runningPod("p", "t1", untrustedByRule, tt.mutate)
			if retry, after := f.mover.handle(context.Background(), "ns/p"); retry || after != 0 {
				t.Errorf("handle = retry %v, after %s; want done", retry, after)
			}
			if ev := f.evictions(); len(ev) != 0 {
				t.Fatalf("evicted %v, want nothing evicted", ev)
			}
			seen := f.eventsSeen()
			if !strings.Contains(seen, "Warning "+ReasonMisplaced) || !strings.Contains(seen, "not evicted: "+tt.wantReason) {
				t.Errorf("events = %q, want a Misplaced event saying %q", seen, tt.wantReason)
			}
			if len(f.records) != 1 || f.records[0] != "p "+ActionReported {
				t.Errorf("records = %v, want one reported", f.records)
			}
		})
	}
}

func TestEvictionCarriesItsReason(t *testing.T) {
	f := newFixture(t, evictSpec(), node("t1", "trusted"))
	f.runningPod("p", "t1", untrustedByRule)
	f.mover.handle(context.Background(), "ns/p")
	e := f.evictions()["p"]
	if e == nil {
		t.Fatal("the misplaced pod was not evicted")
	}
	if got := e.Annotations[AnnotationTier]; got != "untrusted" {
		t.Errorf("%s = %q, want untrusted", AnnotationTier, got)
	}
	if got := e.Annotations[AnnotationReason]; !strings.Contains(got, "runs in pool trusted on t1 but its tier is now untrusted") {
		t.Errorf("%s = %q, want the reason", AnnotationReason, got)
	}
	if e.DeleteOptions == nil || e.DeleteOptions.Preconditions == nil || *e.DeleteOptions.Preconditions.UID != "p" {
		t.Errorf("eviction %+v does not pin the pod's UID", e.DeleteOptions)
	}
	seen := f.eventsSeen()
	if !strings.Contains(seen, "Warning "+ReasonEvicted+" evicted: ") || strings.Contains(seen, " Evicted ") {
		t.Errorf("events = %q, want %s and never the kubelet's Evicted", seen, ReasonEvicted)
	}
	// Seen again before the informer shows it terminating: not evicted twice.
	f.client.ClearActions()
	f.mover.handle(context.Background(), "ns/p")
	if ev := f.evictions(); len(ev) != 0 {
		t.Errorf("evicted again: %v", ev)
	}
}

func TestPerNodeAndPerNamespaceLimits(t *testing.T) {
	tests := []struct {
		name  string
		limit func(*config.ReplacementSpec)
		nodes [3]string // the three pods' nodes
		// wantFirst are the pods evicted at once; the others wait for the window.
		wantFirst int
	}{
		{"per node", func(s *config.ReplacementSpec) { s.MaxEvictionsPerNodePerMinute = 1 }, [3]string{"t1", "t1", "t2"}, 2},
		{"per namespace", func(s *config.ReplacementSpec) { s.MaxEvictionsPerNamespacePerMinute = 2 }, [3]string{"t1", "t2", "t3"}, 2},
		{"no limit", func(*config.ReplacementSpec) {}, [3]string{"t1", "t1", "t1"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := evictSpec()
			tt.limit(&spec)
			f := newFixture(t, spec, node("t1", "trusted"), node("t2", "trusted"), node("t3", "trusted"))
			var waits []time.Duration
			for i, n := range tt.nodes {
				name := string(rune('a' + i))
				f.runningPod(name, n, untrustedByRule)
				if _, after := f.mover.handle(context.Background(), "ns/"+name); after > 0 {
					waits = append(waits, after)
				}
			}
			if got := len(f.evictions()); got != tt.wantFirst {
				t.Fatalf("evicted %d at once, want %d", got, tt.wantFirst)
			}
			for _, w := range waits {
				if w <= 0 || w > limitWindow {
					t.Errorf("deferred by %s, want within the %s window", w, limitWindow)
				}
			}
			f.clock.Step(limitWindow)
			for i := range tt.nodes {
				f.mover.handle(context.Background(), "ns/"+string(rune('a'+i)))
			}
			if got := len(f.evictions()); got != 3 {
				t.Errorf("after the window, %d evicted; want all 3", got)
			}
		})
	}
}

func TestCloseCallsSettleFirst(t *testing.T) {
	// Default thresholds: trusted at 70, untrusted below 30. 28 is 1 point inside untrusted.
	closeCall := &reputation.Verdict{Tier: reputation.TierUntrusted, Score: 28, Decision: reputation.DecidedByScore, DecidedBy: "score 28 < untrusted threshold 30"}
	f := newFixture(t, evictSpec(), node("t1", "trusted"))
	f.runningPod("p", "t1", closeCall)
	_, after := f.mover.handle(context.Background(), "ns/p")
	if after != 2*time.Minute {
		t.Fatalf("a close call waits %s, want settleFor (2m)", after)
	}
	f.clock.Step(time.Minute)
	if _, after = f.mover.handle(context.Background(), "ns/p"); after != time.Minute || len(f.evictions()) != 0 {
		t.Fatalf("halfway: wait %s, evictions %v; want 1m more and none", after, f.evictions())
	}
	f.clock.Step(time.Minute)
	f.mover.handle(context.Background(), "ns/p")
	if f.evictions()["p"] == nil {
		t.Error("a close call that held for settleFor was not evicted")
	}
}

func TestDistance(t *testing.T) {
	p := reputation.DefaultPolicy() // trusted ≥ 70, untrusted < 30
	tests := []struct {
		tier  reputation.Tier
		score int
		want  int
	}{
		{reputation.TierTrusted, 70, 0},
		{reputation.TierTrusted, 90, 20},
		{reputation.TierUntrusted, 29, 0},
		{reputation.TierUntrusted, 10, 19},
		{reputation.TierUnknown, 31, 1},
		{reputation.TierUnknown, 68, 1},
		{reputation.TierUnknown, 50, 19},
		{reputation.TierUnknown, 69, 0},
	}
	for _, tt := range tests {
		if got := Distance(p, &reputation.Verdict{Tier: tt.tier, Score: tt.score}); got != tt.want {
			t.Errorf("Distance(%s, %d) = %d, want %d", tt.tier, tt.score, got, tt.want)
		}
	}
}

func TestStandbyMovesNothing(t *testing.T) {
	f := newFixture(t, evictSpec(), node("t1", "trusted"))
	f.mover.opts.Leading = func() bool { return false }
	f.runningPod("p", "t1", untrustedByRule)
	f.mover.OnVerdict("img", &reputation.Verdict{Tier: reputation.TierTrusted, Score: 90}, untrustedByRule)
	if n := f.mover.queue.Len(); n != 0 {
		t.Errorf("a standby queued %d pods, want none", n)
	}
}

// What the mover remembers of a pod goes with the pod.
func TestResyncForgetsPodsThatAreGone(t *testing.T) {
	f := newFixture(t, evictSpec(), node("t1", "trusted"))
	p := f.runningPod("p", "t1", untrustedByRule, func(p *v1.Pod) { p.OwnerReferences = nil }) // reported, not evicted
	f.mover.handle(context.Background(), "ns/p")
	if len(f.mover.reported) != 1 {
		t.Fatalf("reported = %v, want the pod", f.mover.reported)
	}
	// Another waits for its image's first verdict, which never comes.
	waiter := f.runningPod("waiter", "t1", untrustedByRule, func(p *v1.Pod) {
		p.Spec.Containers = []v1.Container{{Name: "app", Image: "quay.io/evil/never-decided:v1"}}
	})
	f.tiers[waiter.Name] = nil
	f.mover.handle(context.Background(), "ns/waiter")
	if len(f.mover.awaiting) != 1 {
		t.Fatalf("awaiting = %v, want the waiter's image", f.mover.awaiting)
	}
	for _, gone := range []*v1.Pod{p, waiter} {
		if err := f.pods.Delete(gone); err != nil {
			t.Fatal(err)
		}
	}
	f.mover.resync()
	if len(f.mover.reported) != 0 || len(f.mover.closeSince) != 0 {
		t.Errorf("after the pod left: reported %v, closeSince %v", f.mover.reported, f.mover.closeSince)
	}
	if len(f.mover.awaiting) != 0 {
		t.Errorf("after the waiter left: awaiting %v", f.mover.awaiting)
	}
}

// A pod whose image changed to one never assessed counts as unknown at once, label included,
// while the verdict is asked for; its first verdict has the mover look again.
func TestAnImageWithoutAVerdictMakesTheRunningPodUnknown(t *testing.T) {
	spec := evictSpec()
	spec.Mode = config.ReplacementReport
	f := newFixture(t, spec, node("t1", "trusted"))
	pod := f.runningPod("swapped", "t1", untrustedByRule, func(p *v1.Pod) {
		p.Labels[placement.TierLabel] = "trusted"
		p.Spec.Containers = []v1.Container{{Name: "app", Image: "quay.io/evil/never-seen:v1"}}
	})
	f.tiers[pod.Name] = nil // swapped in after placement: no verdict yet
	if retry, _ := f.mover.handle(context.Background(), "ns/swapped"); retry {
		t.Fatal("handle asked for a retry")
	}
	if len(f.requested) != 1 {
		t.Errorf("verdicts requested for %v, want the swapped pod", f.requested)
	}
	var relabelled bool
	for _, a := range f.client.Actions() {
		if p, ok := a.(clienttesting.PatchAction); ok && strings.Contains(string(p.GetPatch()), `"repute.dev/tier":"unknown"`) {
			relabelled = true
		}
	}
	if !relabelled {
		t.Errorf("the pod was not relabelled unknown: %v", f.client.Actions())
	}
	if seen := f.eventsSeen(); seen != "" || len(f.evictions()) != 0 {
		t.Errorf("events %q, evictions %v: the move waits for the verdict", seen, f.evictions())
	}
	f.mover.OnVerdict("quay.io/evil/never-seen:v1", nil, untrustedByRule)
	if n := f.mover.queue.Len(); n != 1 {
		t.Errorf("the first verdict queued %d pods, want the one that waited for it", n)
	}
}

// Nothing unassessed raises trust: a pod labelled untrusted whose image has no verdict, or a
// provisional one (a new leader whose cache has not caught up), keeps its label; one labelled
// trusted is still lowered to unknown.
func TestUnassessedNeverRaisesALabel(t *testing.T) {
	provisional := &reputation.Verdict{Tier: reputation.TierUnknown, Score: 50, Decision: reputation.DecidedProvisionally, Provisional: true}
	tests := []struct {
		name, label string
		verdict     *reputation.Verdict // nil: none yet
		wantPatch   string              // "": no relabel
	}{
		{"untrusted, no verdict", "untrusted", nil, ""},
		{"untrusted, provisional verdict", "untrusted", provisional, ""},
		{"trusted, no verdict", "trusted", nil, `"repute.dev/tier":"unknown"`},
		{"trusted, provisional verdict", "trusted", provisional, `"repute.dev/tier":"unknown"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := evictSpec()
			spec.Mode = config.ReplacementReport
			f := newFixture(t, spec, node("u1", "untrusted"))
			pod := f.runningPod("p", "u1", provisional, func(p *v1.Pod) {
				p.Labels[placement.TierLabel] = tt.label
				p.Spec.Containers = []v1.Container{{Name: "app", Image: "quay.io/tenant/app:v1"}}
			})
			f.tiers[pod.Name] = tt.verdict
			f.mover.handle(context.Background(), "ns/p")
			var patches []string
			for _, a := range f.client.Actions() {
				if p, ok := a.(clienttesting.PatchAction); ok {
					patches = append(patches, string(p.GetPatch()))
				}
			}
			switch {
			case tt.wantPatch == "" && len(patches) != 0:
				t.Errorf("relabelled %v: an unassessed image raised the pod's label", patches)
			case tt.wantPatch != "" && (len(patches) != 1 || !strings.Contains(patches[0], tt.wantPatch)):
				t.Errorf("patches %v, want one setting %s", patches, tt.wantPatch)
			}
			if len(f.evictions()) != 0 {
				t.Errorf("evicted %v on unassessed evidence", f.evictions())
			}
		})
	}
}

// A registry outage is not evidence: a verdict built while evidence could not be gathered never
// relabels, reports or evicts a running pod.
func TestAnOutageMovesNothing(t *testing.T) {
	f := newFixture(t, evictSpec(), node("t1", "trusted"))
	outage := &reputation.Verdict{Tier: reputation.TierUnknown, Score: 50, Decision: reputation.DecidedByScore, Incomplete: true}
	f.runningPod("p", "t1", outage, func(p *v1.Pod) { p.Labels[placement.TierLabel] = "trusted" })
	f.mover.OnVerdict("img", &reputation.Verdict{Tier: reputation.TierTrusted, Score: 90}, outage)
	if n := f.mover.queue.Len(); n != 0 {
		t.Errorf("an incomplete verdict queued %d pods", n)
	}
	f.mover.handle(context.Background(), "ns/p")
	if actions := f.client.Actions(); len(actions) != 0 {
		t.Errorf("the mover acted on an incomplete verdict: %v", actions)
	}
	if seen := f.eventsSeen(); seen != "" {
		t.Errorf("events %q on an incomplete verdict", seen)
	}
}

// A pod a PodDisruptionBudget holds is retried with backoff, and its refused evictions spend
// none of the eviction budget: otherwise its retries take every token and the other misplaced
// pods wait behind it for as long as the budget holds.
func TestABlockedEvictionSpendsNoBudget(t *testing.T) {
	spec := evictSpec()
	spec.EvictionsPerMinute = 30 // one token, refilled every 2s
	f := newFixture(t, spec, node("t1", "trusted"))
	f.client.PrependReactor("create", "pods", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "eviction" && a.(clienttesting.CreateAction).GetObject().(*policyv1.Eviction).Name == "held" {
			return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
		}
		return false, nil, nil
	})
	f.runningPod("held", "t1", untrustedByRule)
	f.runningPod("free", "t1", untrustedByRule)
	for range 3 { // the held pod's backoff retries, all at one instant
		if retry, after := f.mover.handle(context.Background(), "ns/held"); !retry || after != 0 {
			t.Fatalf("the held pod's retry: retry %v, after %s; want a backoff retry, not a wait for budget its refused evictions spent", retry, after)
		}
	}
	if retry, after := f.mover.handle(context.Background(), "ns/free"); retry || after != 0 {
		t.Fatalf("the free pod waits (retry %v, after %s) behind the held pod's refused evictions", retry, after)
	}
	if _, ok := f.evictions()["free"]; !ok {
		t.Error("the free pod was not evicted")
	}
	if retry, after := f.mover.handle(context.Background(), "ns/held"); retry || after <= 0 {
		t.Errorf("after a real eviction, the held pod's next try: retry %v, after %s; want a wait for the budget", retry, after)
	}
	if n := strings.Count(f.eventsSeen(), ReasonBlocked); n != 1 {
		t.Errorf("%d %s events for the held pod, want 1", n, ReasonBlocked)
	}
}

// A pod that finds the budget's one token held by an eviction call still out looks again soon,
// not a whole refill later: if a PodDisruptionBudget refuses that call, the token comes back.
func TestATokenHeldByAnEvictionInFlightIsAwaitedBriefly(t *testing.T) {
	spec := evictSpec()
	spec.EvictionsPerMinute = 30 // one token, refilled every 2s
	f := newFixture(t, spec, node("t1", "trusted"))
	calling, release := make(chan struct{}), make(chan struct{})
	f.client.PrependReactor("create", "pods", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "eviction" && a.(clienttesting.CreateAction).GetObject().(*policyv1.Eviction).Name == "held" {
			close(calling)
			<-release
			return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
		}
		return false, nil, nil
	})
	f.runningPod("held", "t1", untrustedByRule)
	f.runningPod("free", "t1", untrustedByRule)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.mover.handle(context.Background(), "ns/held")
	}()
	<-calling
	if retry, after := f.mover.handle(context.Background(), "ns/free"); retry || after <= 0 || after > inFlightRecheck {
		t.Errorf("while held's eviction is out, free waits %s (retry %v); want at most %s", after, retry, inFlightRecheck)
	}
	close(release)
	<-done
	if retry, after := f.mover.handle(context.Background(), "ns/free"); retry || after != 0 {
		t.Fatalf("after held's eviction was refused, free waits %s (retry %v); want the token it gave back", after, retry)
	}
	if _, ok := f.evictions()["free"]; !ok {
		t.Error("the free pod was not evicted")
	}
	if retry, after := f.mover.handle(context.Background(), "ns/held"); retry || after <= inFlightRecheck {
		t.Errorf("with no call out and the token spent, held waits %s (retry %v); want the refill", after, retry)
	}
}
