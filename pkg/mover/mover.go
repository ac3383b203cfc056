// Package mover moves running pods whose tier no longer matches the pool of the node they run
// on. It is one shared evictor, shaped like descheduler's: an evictability filter decides what
// may be evicted at all (DaemonSet, static and high-priority pods never are), limits bound the
// rate overall, per node and per namespace, and every eviction carries its reason. Pods are
// evicted through the Eviction API, so PodDisruptionBudgets hold and their controllers recreate
// them; Repute then places the replacement in the right pool.
package mover

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/reputation"
)

// Actions on a running pod whose tier no longer matches its node's pool, as recorded.
const (
	ActionEvicted  = "evicted"
	ActionReported = "reported"
	ActionBlocked  = "blocked"
)

// Event reasons. ReasonEvicted is not the kubelet's "Evicted" (node pressure), so the two
// cannot be confused in `kubectl get events` or in alerts that count them.
const (
	ReasonEvicted   = "ReputationEvicted"
	ReasonMisplaced = "Misplaced"
	ReasonBlocked   = "EvictionBlocked"
)

// Annotations on each Eviction, for admission webhooks and the apiserver's audit log.
const (
	AnnotationReason = "repute.dev/eviction-reason"
	AnnotationTier   = "repute.dev/tier"
)

// ResyncEvery is how often every running pod is checked again, besides the checks verdict
// changes trigger: it catches pods misplaced while the scheduler was down or by a policy
// changed during a restart.
const ResyncEvery = time.Minute

// limitWindow is the window of the per-node and per-namespace limits.
const limitWindow = time.Minute

// Options are what the mover reads and writes through.
type Options struct {
	Spec   config.ReplacementSpec
	Client kubernetes.Interface
	Pods   corelisters.PodLister
	Nodes  corelisters.NodeLister
	// Place is a pod's placement by the verdicts in force; Policy is the policy in force.
	Place func(pod *v1.Pod) placement.Placement
	// RequestMissing asks for the verdicts of a pod's images that have none (an image swapped
	// in, an ephemeral container added after placement) and returns those images.
	RequestMissing func(pod *v1.Pod) []string
	Policy         func() *reputation.Policy
	// Profile is the Repute profile of a schedulerName, nil for other schedulers' pods.
	Profile func(schedulerName string) *placement.Profile
	// Record files an action with the placement decisions (store and metrics).
	Record func(pod *v1.Pod, node *v1.Node, profile *placement.Profile, p placement.Placement, action, reason string)
	// Leading says whether this replica may act; a standby moves nothing.
	Leading func() bool
	Clock   clock.WithTicker
}

// inFlightRecheck is how soon a pod that found the eviction budget spent looks again while
// an eviction call is out: about one API call.
const inFlightRecheck = 100 * time.Millisecond

// Mover is the evictor. Verdict changes feed it through OnVerdict; Run works the queue.
type Mover struct {
	opts    Options
	queue   workqueue.TypedRateLimitingInterface[string]
	limiter *rate.Limiter
	// inFlight counts eviction calls out: each holds a token it gives back if it is refused.
	inFlight atomic.Int32

	mu sync.Mutex
	// closeSince is when a pod was first seen misplaced by a close call (hysteresis);
	// reported remembers the action and tier a pod was last reported at, so each is said once.
	closeSince map[types.UID]time.Time
	reported   map[types.UID]string
	// evicted remembers pods already evicted, until the informer shows them terminating: a
	// second eviction of a terminating pod succeeds too, and would be reported twice.
	evicted map[types.UID]time.Time
	// recent holds the times of evictions within limitWindow, by "node/<name>" and "ns/<name>".
	recent map[string][]time.Time
	// awaiting holds, by image, the running pods that wait for its first verdict.
	awaiting map[string]map[string]bool
}

// New builds a mover; nothing runs until Run.
func New(opts Options) *Mover {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	perSecond := rate.Limit(float64(opts.Spec.EvictionsPerMinute) / 60)
	return &Mover{
		opts: opts,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "repute_replacement", Clock: opts.Clock}),
		// A burst of one a second's worth, at least one: a single alert moves its pods at once.
		limiter:    rate.NewLimiter(perSecond, max(1, int(opts.Spec.EvictionsPerMinute)/60)),
		closeSince: map[types.UID]time.Time{},
		reported:   map[types.UID]string{},
		evicted:    map[types.UID]time.Time{},
		recent:     map[string][]time.Time{},
		awaiting:   map[string]map[string]bool{},
	}
}

// Enqueue has the mover look at a running pod now, e.g. when its images changed.
func (m *Mover) Enqueue(pod *v1.Pod) { m.queue.Add(pod.Namespace + "/" + pod.Name) }

// Run starts the workers and the periodic resync, until ctx ends.
func (m *Mover) Run(ctx context.Context) {
	defer m.queue.ShutDown()
	for range m.opts.Spec.MaxConcurrentEvictions {
		go func() {
			for m.processNext(ctx) {
			}
		}()
	}
	ticker := m.opts.Clock.NewTicker(ResyncEvery)
	defer ticker.Stop()
	for {
		m.resync()
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
	}
}

// resync forgets evictions the informer has long since seen and pods that are gone, and queues
// every running pod.
func (m *Mover) resync() {
	now := m.opts.Clock.Now()
	live, liveKeys := map[types.UID]bool{}, map[string]bool{}
	if pods, err := m.opts.Pods.List(labels.Everything()); err == nil {
		for _, pod := range pods {
			live[pod.UID] = true
			liveKeys[pod.Namespace+"/"+pod.Name] = true
		}
	}
	m.mu.Lock()
	for uid, at := range m.evicted {
		if now.Sub(at) > ResyncEvery {
			delete(m.evicted, uid)
		}
	}
	for uid := range m.closeSince {
		if !live[uid] {
			delete(m.closeSince, uid)
		}
	}
	for uid := range m.reported {
		if !live[uid] {
			delete(m.reported, uid)
		}
	}
	// A pod deleted before its image's first verdict stops waiting: images that never get one
	// (a reference the engine refuses) would otherwise keep their waiters for good.
	for image, waiting := range m.awaiting {
		for key := range waiting {
			if !liveKeys[key] {
				delete(waiting, key)
			}
		}
		if len(waiting) == 0 {
			delete(m.awaiting, image)
		}
	}
	m.mu.Unlock()
	m.enqueueRunning(func(*v1.Pod) bool { return true })
}

// enqueueRunning queues the bound pods of Repute's profiles that match.
func (m *Mover) enqueueRunning(match func(*v1.Pod) bool) {
	pods, err := m.opts.Pods.List(labels.Everything())
	if err != nil {
		return
	}
	for _, pod := range pods {
		if pod.Spec.NodeName != "" && m.opts.Profile(pod.Spec.SchedulerName) != nil && match(pod) {
			m.queue.Add(pod.Namespace + "/" + pod.Name)
		}
	}
}

// OnVerdict queues every running pod that uses an image whose verdict changed, and the pods
// that waited for an image's first verdict.
func (m *Mover) OnVerdict(image string, old, updated *reputation.Verdict) {
	if old == nil {
		m.mu.Lock()
		waiting := m.awaiting[image]
		delete(m.awaiting, image)
		m.mu.Unlock()
		for key := range waiting {
			m.queue.Add(key)
		}
		return
	}
	// A standby moves nothing; once elected, its first resync checks every pod. A verdict built
	// while evidence could not be gathered (a registry down) moves nothing either.
	if (old.Tier == updated.Tier && old.Score == updated.Score) || updated.Incomplete || !m.opts.Leading() {
		return
	}
	m.enqueueRunning(func(pod *v1.Pod) bool { return placement.Uses(pod, image) })
}

func (m *Mover) processNext(ctx context.Context) bool {
	key, quit := m.queue.Get()
	if quit {
		return false
	}
	defer m.queue.Done(key)
	retry, after := m.handle(ctx, key)
	switch {
	case retry:
		m.queue.AddRateLimited(key)
	case after > 0:
		m.queue.Forget(key)
		m.queue.AddAfter(key, after)
	default:
		m.queue.Forget(key)
	}
	return true
}

// misplaced is one pod in the wrong pool, and why.
type misplaced struct {
	pod     *v1.Pod
	node    *v1.Node
	profile *placement.Profile
	place   placement.Placement
	why     string
}

// handle decides about one pod; it asks for a retry (with backoff) or a re-check after a delay.
func (m *Mover) handle(ctx context.Context, key string) (retry bool, after time.Duration) {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := m.opts.Pods.Pods(ns).Get(name)
	if err != nil || pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil || placement.IsTerminal(pod) || m.wasEvicted(pod.UID) {
		return false, 0
	}
	profile := m.opts.Profile(pod.Spec.SchedulerName)
	if profile == nil {
		return false, 0
	}
	node, err := m.opts.Nodes.Get(pod.Spec.NodeName)
	if err != nil {
		return false, 0
	}
	p := m.opts.Place(pod)
	unassessed := p.Missing > 0 || p.Verdict != nil && p.Verdict.Provisional
	if unassessed && pod.Labels[placement.TierLabel] == string(reputation.TierUntrusted) && p.Tier != reputation.TierUntrusted {
		// Nothing unassessed raises trust: a pod labelled untrusted keeps its label (and its
		// NetworkPolicy) until a verdict says otherwise, e.g. on a new leader whose cache has
		// not yet caught up (found by TestLeaderKilledDuringBurst).
		if p.Missing > 0 {
			m.await(pod)
		}
		return false, 0
	}
	if p.Missing > 0 {
		// An image that has no verdict (swapped in, or an ephemeral container added, after
		// placement) makes the pod unknown at once, label included, while it is assessed.
		m.await(pod)
	} else if p.Verdict == nil || p.Verdict.Incomplete {
		// An outage is not evidence: the pod stays where it is, as it is labelled.
		return false, 0
	}
	// The label follows the tier at once, whatever happens to the pod: NetworkPolicies that
	// select by tier isolate it before (or without) a move.
	if pod.Labels[placement.TierLabel] != string(p.Tier) {
		if err := m.labelTier(ctx, pod, p.Tier); err != nil {
			klog.FromContext(ctx).Error(err, "Relabelling a running pod", "pod", klog.KObj(pod))
			return true, 0
		}
	}
	if p.Missing > 0 {
		// Labelled unknown, the pod is isolated as unknown now; whether it moves is for the
		// verdict to say, when it arrives (not for a guess that might evict it needlessly).
		return false, 0
	}
	if profile.Belongs(p.Tier, node) {
		m.forget(pod.UID)
		return false, 0
	}
	mode := m.opts.Spec.Mode
	if nodeTier, pooled := profile.TierOfNode(node); pooled && reputation.LessTrusted(nodeTier, p.Tier) {
		mode = m.opts.Spec.Upward
	}
	if mode == config.ReplacementNone {
		return false, 0
	}
	if wait := m.settle(pod.UID, p); wait > 0 {
		return false, wait
	}
	mp := misplaced{pod: pod, node: node, profile: profile, place: p,
		why: fmt.Sprintf("runs in pool %s on %s but its tier is now %s (score %d): %s", profile.PoolName(node), node.Name, p.Tier, p.Score, p.Reason())}
	if mode == config.ReplacementReport {
		m.report(mp, ActionReported, "not evicted: replacement.mode is Report")
		return false, 0
	}
	if why, protected := m.protected(pod); protected {
		m.report(mp, ActionReported, "not evicted: "+why)
		return false, 0
	}
	if wait := m.overLimit(pod); wait > 0 {
		klog.FromContext(ctx).V(2).Info("Eviction deferred by a per-node or per-namespace limit", "pod", klog.KObj(pod), "node", node.Name, "after", wait)
		return false, wait
	}
	now := m.opts.Clock.Now()
	r := m.limiter.ReserveN(now, 1)
	if !r.OK() {
		return true, 0
	} else if delay := r.DelayFrom(now); delay > 0 {
		r.CancelAt(now)
		if m.inFlight.Load() > 0 {
			// The token may be one an eviction call holds and gives back if a budget refuses
			// it: look again once the call is likely done, not a whole refill later.
			delay = min(delay, inFlightRecheck)
		}
		return false, delay
	}
	m.inFlight.Add(1)
	evicted, retry := m.evict(ctx, mp)
	m.inFlight.Add(-1)
	if !evicted {
		// Only evictions spend the budget: a pod a PodDisruptionBudget holds, retrying with
		// backoff, would otherwise take every token and starve the other misplaced pods.
		r.CancelAt(now)
	}
	return retry, 0
}

// evict evicts one misplaced pod through the Eviction API.
func (m *Mover) evict(ctx context.Context, mp misplaced) (evicted, retry bool) {
	pod := mp.pod
	logger := klog.FromContext(ctx).WithValues("pod", klog.KObj(pod), "node", mp.node.Name, "tier", mp.place.Tier)
	eviction := &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace,
			Annotations: map[string]string{AnnotationReason: mp.why, AnnotationTier: string(mp.place.Tier)}},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}},
	}
	err := m.opts.Client.PolicyV1().Evictions(pod.Namespace).Evict(ctx, eviction)
	switch {
	case err == nil:
		m.noteEviction(pod)
		logger.Info("Evicted a pod whose tier no longer matches its pool", "reason", mp.place.Reason())
		m.opts.Record(pod, mp.node, mp.profile, mp.place, ActionEvicted, "evicted: "+mp.why)
		mp.profile.Events.Eventf(pod, nil, v1.EventTypeWarning, ReasonEvicted, "Replacement", "evicted: %s", mp.why)
		m.forget(pod.UID)
		return true, false
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return false, false // gone, or already replaced
	case apierrors.IsTooManyRequests(err):
		// A PodDisruptionBudget holds it: say so once, and keep trying with backoff.
		m.report(mp, ActionBlocked, "eviction blocked: "+err.Error())
		return false, true
	default:
		logger.Error(err, "Evicting a misplaced pod")
		return false, true
	}
}

// protected says why a pod is never evicted: node infrastructure that a move could not put
// elsewhere (DaemonSet and static pods), or a priority at or above the protected one.
func (m *Mover) protected(pod *v1.Pod) (string, bool) {
	if _, mirror := pod.Annotations[v1.MirrorPodAnnotationKey]; mirror {
		return "a static pod", true
	}
	if c := metav1.GetControllerOf(pod); c != nil && c.Kind == "DaemonSet" {
		return "a DaemonSet pod", true
	}
	if c := metav1.GetControllerOf(pod); c == nil && !m.opts.Spec.EvictUnowned {
		return "no controller would recreate it (replacement.evictUnowned)", true
	}
	if p := pod.Spec.Priority; p != nil && *p >= m.opts.Spec.ProtectedPriority {
		return fmt.Sprintf("priority %d is at or above replacement.protectedPriority %d", *p, m.opts.Spec.ProtectedPriority), true
	}
	return "", false
}

// overLimit returns how long the pod's node or namespace must wait before another eviction.
func (m *Mover) overLimit(pod *v1.Pod) time.Duration {
	now := m.opts.Clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	wait := time.Duration(0)
	check := func(key string, limit int32) {
		if limit <= 0 {
			return
		}
		times := m.recentLocked(key, now)
		if len(times) >= int(limit) {
			wait = max(wait, times[len(times)-int(limit)].Add(limitWindow).Sub(now))
		}
	}
	check("node/"+pod.Spec.NodeName, m.opts.Spec.MaxEvictionsPerNodePerMinute)
	check("ns/"+pod.Namespace, m.opts.Spec.MaxEvictionsPerNamespacePerMinute)
	return wait
}

// recentLocked drops times older than the window and returns the rest, oldest first.
func (m *Mover) recentLocked(key string, now time.Time) []time.Time {
	times := m.recent[key]
	i := 0
	for i < len(times) && now.Sub(times[i]) >= limitWindow {
		i++
	}
	times = times[i:]
	if len(times) == 0 {
		delete(m.recent, key)
	} else {
		m.recent[key] = times
	}
	return times
}

func (m *Mover) noteEviction(pod *v1.Pod) {
	now := m.opts.Clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evicted[pod.UID] = now
	for _, key := range []string{"node/" + pod.Spec.NodeName, "ns/" + pod.Namespace} {
		m.recent[key] = append(m.recentLocked(key, now), now)
	}
}

// settle applies hysteresis: a tier decided by a rule (an alert, an invalid signature, a
// denylisted CVE) acts at once; a tier decided by the score acts at once when the score is at
// least margin past the threshold, and otherwise only once it has held for settleFor. It
// returns how long to wait before looking again.
func (m *Mover) settle(uid types.UID, p placement.Placement) time.Duration {
	v := p.Verdict
	if p.Missing > 0 || v.Decision != reputation.DecidedByScore || Distance(m.opts.Policy(), v) >= int(m.opts.Spec.Margin) {
		return 0
	}
	now := m.opts.Clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	first, seen := m.closeSince[uid]
	if !seen {
		first = now
		m.closeSince[uid] = first
	}
	return first.Add(m.opts.Spec.SettleFor.Duration).Sub(now)
}

// Distance is how far a verdict's score is inside its tier's band: points past the threshold
// it crossed (for unknown, the nearer of the two).
func Distance(p *reputation.Policy, v *reputation.Verdict) int {
	switch v.Tier {
	case reputation.TierTrusted:
		return v.Score - p.TrustedAtOrAbove
	case reputation.TierUntrusted:
		return p.UntrustedBelow - 1 - v.Score
	default:
		return min(v.Score-p.UntrustedBelow, p.TrustedAtOrAbove-1-v.Score)
	}
}

// await asks for the verdicts a running pod lacks and has the mover look at it again when they
// arrive.
func (m *Mover) await(pod *v1.Pod) {
	if m.opts.RequestMissing == nil {
		return
	}
	missing := m.opts.RequestMissing(pod)
	key := pod.Namespace + "/" + pod.Name
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, image := range missing {
		if m.awaiting[image] == nil {
			m.awaiting[image] = map[string]bool{}
		}
		m.awaiting[image][key] = true
	}
}

func (m *Mover) wasEvicted(uid types.UID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, done := m.evicted[uid]
	return done
}

func (m *Mover) forget(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.closeSince, uid)
	delete(m.reported, uid)
}

// report says, once per pod, action and tier, that a misplaced pod was left where it is, and why.
func (m *Mover) report(mp misplaced, action, because string) {
	said := action + "/" + string(mp.place.Tier)
	m.mu.Lock()
	again := m.reported[mp.pod.UID] == said
	m.reported[mp.pod.UID] = said
	m.mu.Unlock()
	if again {
		return
	}
	reason := ReasonMisplaced
	if action == ActionBlocked {
		reason = ReasonBlocked
	}
	why := mp.why + "; " + because
	mp.profile.Events.Eventf(mp.pod, nil, v1.EventTypeWarning, reason, "Replacement", "%s", why)
	m.opts.Record(mp.pod, mp.node, mp.profile, mp.place, action, why)
}

// labelTier sets a running pod's tier label, so policies that select by tier follow the
// reputation even before (or without) a move; it also repairs pods bound without the label.
func (m *Mover) labelTier(ctx context.Context, pod *v1.Pod, tier reputation.Tier) error {
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, placement.TierLabel, tier)
	_, err := m.opts.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: "repute-scheduler"})
	if err != nil {
		return fmt.Errorf("labelling the pod %s=%s: %w", placement.TierLabel, tier, err)
	}
	return nil
}
