package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/metrics"
	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

// pruneEvery is how often the store's retention runs.
const pruneEvery = time.Hour

// openStore opens the configured store and, before the runtime is ready, warms the verdict
// cache and the behavior ledger from it: an image known before a restart is known after it,
// and what lowered its trust still does. Once this replica leads, every verdict change is
// recorded. A store that cannot be opened is reported loudly (log, metric, and the audit API's
// readiness) and scheduling goes on from memory; the file is left as it is.
func (rt *Runtime) openStore(ctx context.Context) {
	path := rt.args.Store.Path
	if path == "" {
		return
	}
	logger := klog.FromContext(ctx).WithValues("store", path)
	st, err := store.Open(path, store.Options{OnCommit: metrics.StoreCommitted, OnDrop: metrics.StoreDropped, OnError: func(err error) {
		logger.Error(err, "Reputation store degraded: decisions are not being recorded")
	}})
	if err != nil {
		metrics.StoreDegraded.Set(1)
		logger.Error(err, "Reputation store unavailable: scheduling goes on from memory and nothing is recorded")
		rt.storeErr = fmt.Errorf("store %s could not be opened: %w", path, err)
		return
	}
	storesOpen.Add(1)

	// Behavior first, so that the verdicts re-evaluated below still carry it. Penalties older
	// than ten half-lives weigh under 0.1%.
	since := time.Time{}
	if hl := rt.Policy().Behavior.HalfLife; hl > 0 {
		since = time.Now().Add(-10 * hl)
	}
	events, err := st.Behavior(since)
	if err != nil {
		logger.Error(err, "Reading runtime behavior from the store")
	}
	for _, r := range events {
		rt.ledger.Record(r.Event, r.Keys...)
	}
	verdicts, err := st.Verdicts()
	if err != nil {
		logger.Error(err, "Reading verdicts from the store: the cache starts cold")
	}
	now := time.Now()
	for image, v := range verdicts {
		rt.verdicts.Publish(image, rt.warm(v, now))
	}
	// Stored verdicts stand until their evidence is gathered again, in the background.
	rt.engine.Reevaluate(func(string, *reputation.Verdict) bool { return true })
	logger.Info("Verdict cache warmed from the store", "verdicts", len(verdicts), "behaviorEvents", len(events))

	rt.verdicts.Subscribe(func(image string, old, v *reputation.Verdict) {
		if (old == nil || !reputation.SameOutcome(old, v)) && rt.Leading() {
			st.RecordVerdict(image, v)
		}
	})
	rt.store = st
	go func() {
		defer storesOpen.Done()
		<-ctx.Done()
		rt.drainBindingsInDoubt(logger)
		if err := st.Close(); err != nil {
			logger.Error(err, "Closing the reputation store")
		}
	}()
	// From now until recovery at takeover, the pods this replica binds are noted (NoteBinding).
	rt.bindingsDuringRecovery.Store(&sync.Map{})
}

// storesOpen counts the stores not yet closed: their queued records are written by Close.
var storesOpen sync.WaitGroup

// AwaitStores waits, up to timeout, until every store the process opened has written what was
// queued and closed, which each does once its scheduler's context ends. main calls it after
// the scheduler returns: without it the process exits while the last placements (and the
// decisions recovery just filed) are still queued, and a graceful stop loses what only a kill
// should. It reports whether they all closed in time.
func AwaitStores(timeout time.Duration) bool {
	closed := make(chan struct{})
	go func() { storesOpen.Wait(); close(closed) }()
	select {
	case <-closed:
		return true
	case <-time.After(timeout):
		return false
	}
}

// warm is the verdict a warm start may place by: as decided while it was decided under the
// policy in force (its version covers the trusted keys) and within the re-verification period;
// otherwise at most unknown, provisionally, until the image is evaluated again. A warmed verdict
// never raises trust: only a lower tier passes as it is.
func (rt *Runtime) warm(v *reputation.Verdict, now time.Time) *reputation.Verdict {
	reverify := rt.args.Evaluation.ReverifyAfter.Duration
	current := rt.Policy().Version()
	fresh := reverify <= 0 || now.Sub(v.EvaluatedAt) < reverify
	if v.Provisional || (v.PolicyVersion == current && fresh) || reputation.LessTrusted(v.Tier, reputation.TierUnknown) || v.Tier == reputation.TierUnknown {
		return v
	}
	why := fmt.Sprintf("decided %s ago", now.Sub(v.EvaluatedAt).Round(time.Second))
	if v.PolicyVersion != current {
		why = fmt.Sprintf("decided under policy %s, not %s", v.PolicyVersion, current)
	}
	capped := *v
	capped.Tier, capped.Decision, capped.Provisional = reputation.TierUnknown, reputation.DecidedProvisionally, true
	capped.DecidedBy = fmt.Sprintf("remembered verdict (%s: %s) %s: unknown until evaluated again", v.Tier, v.DecidedBy, why)
	return &capped
}

// persistBehavior keeps a runtime event beyond a restart (store) and a failover (mirror).
func (rt *Runtime) persistBehavior(e reputation.BehaviorEvent, keys []string) {
	if rt.store != nil {
		rt.store.RecordBehavior(store.BehaviorRecord{Keys: keys, Event: e})
	}
	if rt.mirror != nil {
		rt.mirror.RecordBehavior(e, keys)
	}
}

// catchUp records, in a newly elected leader's store, every verdict it holds that its store does
// not: those it adopted from the snapshot while it stood by.
func catchUp(st *store.Store, verdicts *reputation.Cache) (int, error) {
	stored, err := st.Verdicts()
	if err != nil {
		return 0, err
	}
	n := 0
	for image, v := range verdicts.Snapshot() {
		if s := stored[image]; s == nil || !reputation.SameOutcome(s, v) {
			st.RecordVerdict(image, v)
			n++
		}
	}
	return n, nil
}

// policyOrigin says where a policy came from, for the store's policy record.
type policyOrigin struct {
	source string
	spec   any
}

// recordPolicy stores the policy in force unless it is the latest one stored already.
func recordPolicy(ctx context.Context, st *store.Store, policy *reputation.Policy, origin policyOrigin) {
	logger := klog.FromContext(ctx)
	stored, err := st.Policies()
	if err == nil && len(stored) > 0 && stored[len(stored)-1].Version == policy.Version() {
		return
	}
	text, err := json.Marshal(origin.spec)
	if err == nil {
		err = st.AppendPolicy(ctx, store.PolicyRecord{Version: policy.Version(), Source: origin.source, Policy: text})
	}
	if err != nil {
		logger.Error(err, "Recording the policy in the store", "policyVersion", policy.Version())
	}
}

func (rt *Runtime) pruneLoop(ctx context.Context) {
	spec := rt.args.Store
	logger := klog.FromContext(ctx).WithValues("store", spec.Path)
	retention := store.Retention{MaxAge: spec.MaxAge.Duration, MaxHistoryPerImage: int(spec.MaxHistoryPerImage), MaxDecisions: int(spec.MaxDecisions)}
	wait.UntilWithContext(ctx, func(context.Context) {
		if n, err := rt.store.Prune(retention); err != nil {
			logger.Error(err, "Pruning the reputation store")
		} else if n > 0 {
			logger.V(2).Info("Pruned the reputation store", "records", n)
		}
	}, pruneEvery)
}

// RecordPlacement files a placement with the decisions auditors read, and counts it.
func (rt *Runtime) RecordPlacement(pod *v1.Pod, node, pool string, p placement.Placement) {
	rt.inDoubt.settled(pod.UID)
	metrics.PodsPlaced.WithLabelValues(string(p.Tier)).Inc()
	if rt.store != nil {
		rt.store.RecordDecision(rt.decisionOf(pod, node, pool, p, p.Reason()))
	}
}

// recordAction files what the mover did about a misplaced pod, so reputectl decisions shows it.
func (rt *Runtime) recordAction(pod *v1.Pod, node *v1.Node, profile *placement.Profile, p placement.Placement, action, reason string) {
	metrics.PodsMoved.WithLabelValues(action).Inc()
	if rt.store == nil {
		return
	}
	d := rt.decisionOf(pod, node.Name, profile.PoolName(node), p, reason)
	d.Action = action
	rt.store.RecordDecision(d)
}

// decisionOf is the record of one placement or action.
func (rt *Runtime) decisionOf(pod *v1.Pod, node, pool string, p placement.Placement, reason string) store.Decision {
	d := store.Decision{
		Time: time.Now(), Namespace: pod.Namespace, Pod: pod.Name, UID: string(pod.UID), Node: node, Pool: pool,
		Tier: p.Tier, Score: p.Score, PolicyVersion: rt.Policy().Version(), Reason: reason,
	}
	if p.Verdict != nil {
		d.PolicyVersion = p.Verdict.PolicyVersion
	}
	if c := metav1.GetControllerOf(pod); c != nil {
		d.Owner = c.Kind + "/" + c.Name
	}
	placement.ForEachImage(pod, func(image string) { d.Images = append(d.Images, image) })
	return d
}
