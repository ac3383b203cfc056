package reputation

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/metrics"
	"github.com/repute-dev/repute/reputation"
)

// Actions on a running pod whose tier no longer matches its node's pool, as recorded.
const (
	ActionEvicted  = "evicted"
	ActionReported = "reported"
	ActionBlocked  = "blocked"
)

// mover watches verdicts and moves running pods whose tier no longer matches the pool of the
// node they run on: it evicts them through the Eviction API (so PodDisruptionBudgets hold and
// their controller recreates them, and Repute places the replacement), or reports them. It
// runs in the scheduler process because it needs the verdicts and the policy in force, which
// live here; a separate binary would have to rebuild both.
type mover struct {
	pl      *Reputation
	spec    config.ReplacementSpec
	queue   workqueue.TypedRateLimitingInterface[string]
	limiter *rate.Limiter

	mu sync.Mutex
	// closeSince is when a pod was first seen misplaced by a close call (hysteresis);
	// reported remembers the tier a pod was last reported (or blocked) at, so each is said once.
	closeSince map[types.UID]time.Time
	reported   map[types.UID]string
	// evicted remembers pods already evicted, until the informer shows them terminating: a
	// second eviction of a terminating pod succeeds too, and would be reported twice.
	evicted map[types.UID]time.Time
}

func newMover(pl *Reputation, spec config.ReplacementSpec) *mover {
	perSecond := rate.Limit(float64(spec.EvictionsPerMinute) / 60)
	return &mover{
		pl: pl, spec: spec,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "repute-replacement"}),
		// A burst of one a second's worth, at least one: a single alert moves its pods at once.
		limiter:    rate.NewLimiter(perSecond, max(1, int(spec.EvictionsPerMinute)/60)),
		closeSince: map[types.UID]time.Time{},
		reported:   map[types.UID]string{},
		evicted:    map[types.UID]time.Time{},
	}
}

// resyncEvery is how often every running pod is checked again, besides the checks verdict
// changes trigger: it catches pods misplaced while the scheduler was down or by a policy
// changed during a restart.
const resyncEvery = time.Minute

// run starts the workers; verdict changes feed the queue through onVerdict, and a periodic
// resync checks every running pod.
func (m *mover) run(ctx context.Context) {
	defer m.queue.ShutDown()
	for range m.spec.MaxConcurrentEvictions {
		go func() {
			for m.next(ctx) {
			}
		}()
	}
	wait.UntilWithContext(ctx, func(context.Context) {
		m.mu.Lock()
		for uid, at := range m.evicted {
			if time.Since(at) > resyncEvery {
				delete(m.evicted, uid)
			}
		}
		m.mu.Unlock()
		m.enqueueRunning(func(*v1.Pod) bool { return true })
	}, resyncEvery)
}

// enqueueRunning queues the bound pods of this profile that match.
func (m *mover) enqueueRunning(match func(*v1.Pod) bool) {
	pods, err := m.pl.handle.SharedInformerFactory().Core().V1().Pods().Lister().List(labels.Everything())
	if err != nil {
		return
	}
	for _, pod := range pods {
		if pod.Spec.NodeName != "" && pod.Spec.SchedulerName == m.pl.handle.ProfileName() && match(pod) {
			m.queue.Add(pod.Namespace + "/" + pod.Name)
		}
	}
}

// onVerdict queues every running pod of this profile that uses the image.
func (m *mover) onVerdict(image string, old, updated *reputation.Verdict) {
	// A standby moves nothing; once elected, its first resync checks every pod.
	if old == nil || (old.Tier == updated.Tier && old.Score == updated.Score) || m.pl.standingBy() {
		return
	}
	m.enqueueRunning(func(pod *v1.Pod) bool {
		uses := false
		forEachImage(pod, func(i string) { uses = uses || i == image })
		return uses
	})
}

func (m *mover) next(ctx context.Context) bool {
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

// handle decides about one pod; it asks for a retry (with backoff) or a re-check after a delay.
func (m *mover) handle(ctx context.Context, key string) (retry bool, after time.Duration) {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := m.pl.handle.SharedInformerFactory().Core().V1().Pods().Lister().Pods(ns).Get(name)
	if err != nil || pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil || isTerminal(pod.Status.Phase) || m.wasEvicted(pod.UID) {
		return false, 0
	}
	node, err := m.pl.handle.SharedInformerFactory().Core().V1().Nodes().Lister().Get(pod.Spec.NodeName)
	if err != nil {
		return false, 0
	}
	s := m.pl.stateFor(pod)
	if s.missing > 0 || s.verdict == nil {
		return false, 0
	}
	// The label follows the tier at once, whatever happens to the pod: NetworkPolicies that
	// select by tier isolate it before (or without) a move.
	if pod.Labels[TierLabel] != string(s.tier) {
		if err := m.pl.labelTier(ctx, pod, s.tier); err != nil {
			klog.FromContext(ctx).Error(err, "Relabelling a running pod", "pod", klog.KObj(pod))
			return true, 0
		}
	}
	nodeTier, pooled := m.pl.tierOfNode(node)
	if (pooled && nodeTier == s.tier) || (!pooled && s.pool.AllowUnpooledNodes) {
		m.forget(pod.UID)
		return false, 0
	}
	mode := m.spec.Mode
	if pooled && reputation.LessTrusted(nodeTier, s.tier) {
		mode = m.spec.Upward
	}
	if mode == config.ReplacementNone {
		return false, 0
	}
	if wait := m.settle(pod.UID, s); wait > 0 {
		return false, wait
	}
	logger := klog.FromContext(ctx).WithValues("pod", klog.KObj(pod), "node", node.Name, "tier", s.tier)
	why := fmt.Sprintf("runs in pool %s on %s but its tier is now %s (score %d): %s", poolName(node, m.pl.poolKey), node.Name, s.tier, s.score, s.Reason())
	switch {
	case mode == config.ReplacementReport:
		m.report(pod, node, s, ActionReported, why+"; not evicted: replacement.mode is Report")
		return false, 0
	case metav1.GetControllerOf(pod) == nil && !m.spec.EvictUnowned:
		m.report(pod, node, s, ActionReported, why+"; not evicted: no controller would recreate it (replacement.evictUnowned)")
		return false, 0
	}
	if err := m.limiter.Wait(ctx); err != nil {
		return false, 0
	}
	eviction := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}}}
	err = m.pl.handle.ClientSet().PolicyV1().Evictions(pod.Namespace).Evict(ctx, eviction)
	switch {
	case err == nil:
		m.mu.Lock()
		m.evicted[pod.UID] = time.Now()
		m.mu.Unlock()
		logger.Info("Evicted a pod whose tier no longer matches its pool", "reason", s.Reason())
		m.record(pod, node, s, ActionEvicted, "evicted: "+why)
		m.pl.handle.EventRecorder().Eventf(pod, nil, v1.EventTypeWarning, "Evicted", "Replacement", "evicted: %s", why)
		m.forget(pod.UID)
		return false, 0
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return false, 0 // gone, or already replaced
	case apierrors.IsTooManyRequests(err):
		// A PodDisruptionBudget holds it: say so once, and keep trying with backoff.
		m.report(pod, node, s, ActionBlocked, why+"; eviction blocked: "+err.Error())
		return true, 0
	default:
		logger.Error(err, "Evicting a misplaced pod")
		return true, 0
	}
}

// settle applies hysteresis: a tier decided by a rule (an alert, an invalid signature, a
// denylisted CVE) acts at once; a tier decided by the score acts at once when the score is at
// least margin past the threshold, and otherwise only once it has held for settleFor. It
// returns how long to wait before looking again.
func (m *mover) settle(uid types.UID, s *podState) time.Duration {
	if !strings.HasPrefix(s.verdict.DecidedBy, "score ") || m.distance(s.verdict) >= int(m.spec.Margin) {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	first, seen := m.closeSince[uid]
	if !seen {
		first = time.Now()
		m.closeSince[uid] = first
	}
	return time.Until(first.Add(m.spec.SettleFor.Duration))
}

// distance is how far a verdict's score is inside its tier's band: points past the threshold
// it crossed.
func (m *mover) distance(v *reputation.Verdict) int {
	p := m.pl.engine.Policy()
	switch v.Tier {
	case reputation.TierTrusted:
		return v.Score - p.TrustedAtOrAbove
	case reputation.TierUntrusted:
		return p.UntrustedBelow - 1 - v.Score
	default:
		return min(v.Score-p.UntrustedBelow, p.TrustedAtOrAbove-1-v.Score)
	}
}

func (m *mover) wasEvicted(uid types.UID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, done := m.evicted[uid]
	return done
}

func (m *mover) forget(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.closeSince, uid)
	delete(m.reported, uid)
}

// report says, once per pod and tier, that a misplaced pod was left where it is, and why.
func (m *mover) report(pod *v1.Pod, node *v1.Node, s *podState, action, why string) {
	m.mu.Lock()
	said := m.reported[pod.UID] == action+"/"+string(s.tier)
	m.reported[pod.UID] = action + "/" + string(s.tier)
	m.mu.Unlock()
	if said {
		return
	}
	reason := map[string]string{ActionReported: "Misplaced", ActionBlocked: "EvictionBlocked"}[action]
	m.pl.handle.EventRecorder().Eventf(pod, nil, v1.EventTypeWarning, reason, "Replacement", "%s", why)
	m.record(pod, node, s, action, why)
}

// record files the action with the placement decisions, so reputectl decisions shows it.
func (m *mover) record(pod *v1.Pod, node *v1.Node, s *podState, action, reason string) {
	metrics.PodsMoved.WithLabelValues(action).Inc()
	if m.pl.store == nil {
		return
	}
	d := decisionOf(pod, node.Name, poolName(node, m.pl.poolKey), s.placement, reason, m.pl.engine.Policy().Version())
	d.Action = action
	m.pl.store.RecordDecision(d)
}

// tierOfNode is the tier whose pool the node is in; pooled is false for unpooled nodes and
// pools no tier uses.
func (pl *Reputation) tierOfNode(node *v1.Node) (reputation.Tier, bool) {
	name, ok := node.Labels[pl.poolKey]
	if !ok {
		return "", false
	}
	for tier, spec := range pl.pools {
		if spec.Name == name {
			return tier, true
		}
	}
	return "", false
}

func poolName(node *v1.Node, key string) string {
	if name, ok := node.Labels[key]; ok {
		return name
	}
	return "(none)"
}
