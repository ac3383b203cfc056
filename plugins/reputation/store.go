package reputation

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/leadership"
	"github.com/repute-dev/repute/pkg/metrics"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

// pruneEvery is how often the store's retention runs.
const pruneEvery = time.Hour

// openStore opens the configured store and, before the first pod is scheduled, warms the
// verdict cache and the behavior ledger from it: an image known before a restart is known after
// it, and what lowered its trust still does. Once this replica leads, every verdict change is
// recorded. A store that cannot be opened is reported loudly (log, metric, and the error
// returned for the audit API's readiness) and scheduling goes on from memory; the file is left
// as it is.
func openStore(ctx context.Context, args *config.ReputationArgs, policy *reputation.Policy, engine *reputation.Engine, ledger *reputation.BehaviorLedger, elected <-chan struct{}) (*store.Store, error) {
	if args.Store.Path == "" {
		return nil, nil
	}
	logger := klog.FromContext(ctx).WithValues("store", args.Store.Path)
	st, err := store.Open(args.Store.Path, store.Options{OnCommit: metrics.StoreCommitted, OnDrop: metrics.StoreDropped, OnError: func(err error) {
		logger.Error(err, "Reputation store degraded: decisions are not being recorded")
	}})
	if err != nil {
		metrics.StoreDegraded.Set(1)
		logger.Error(err, "Reputation store unavailable: scheduling goes on from memory and nothing is recorded")
		return nil, fmt.Errorf("store %s could not be opened: %w", args.Store.Path, err)
	}
	go func() {
		<-ctx.Done()
		if err := st.Close(); err != nil {
			logger.Error(err, "Closing the reputation store")
		}
	}()

	// Behavior first, so that the verdicts re-evaluated below still carry it. Penalties older
	// than ten half-lives weigh under 0.1%.
	since := time.Time{}
	if hl := policy.Behavior.HalfLife; hl > 0 {
		since = time.Now().Add(-10 * hl)
	}
	events, err := st.Behavior(since)
	if err != nil {
		logger.Error(err, "Reading runtime behavior from the store")
	}
	for _, r := range events {
		ledger.Record(r.Event, r.Keys...)
	}
	verdicts, err := st.Verdicts()
	if err != nil {
		logger.Error(err, "Reading verdicts from the store: the cache starts cold")
	}
	for image, v := range verdicts {
		engine.Cache().Publish(image, v)
	}
	// Stored verdicts stand until their evidence is gathered again, in the background.
	engine.Reevaluate(func(string, *reputation.Verdict) bool { return true })
	logger.Info("Verdict cache warmed from the store", "verdicts", len(verdicts), "behaviorEvents", len(events))

	engine.Cache().Subscribe(func(image string, old, v *reputation.Verdict) {
		if (old == nil || !reputation.SameOutcome(old, v)) && leadership.Leading(elected) {
			st.RecordVerdict(image, v)
		}
	})
	return st, nil
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

func pruneLoop(ctx context.Context, st *store.Store, spec config.StoreSpec, logger klog.Logger) {
	retention := store.Retention{MaxAge: spec.MaxAge.Duration, MaxHistoryPerImage: int(spec.MaxHistoryPerImage), MaxDecisions: int(spec.MaxDecisions)}
	wait.UntilWithContext(ctx, func(context.Context) {
		if n, err := st.Prune(retention); err != nil {
			logger.Error(err, "Pruning the reputation store")
		} else if n > 0 {
			logger.V(2).Info("Pruned the reputation store", "records", n)
		}
	}, pruneEvery)
}

// decisionOf is the record of one placement.
func decisionOf(pod *v1.Pod, node, pool string, p placement, reason, policyVersion string) store.Decision {
	d := store.Decision{
		Time: time.Now(), Namespace: pod.Namespace, Pod: pod.Name, UID: string(pod.UID), Node: node, Pool: pool,
		Tier: p.tier, Score: p.score, PolicyVersion: policyVersion, Reason: reason,
	}
	if p.verdict != nil {
		d.PolicyVersion = p.verdict.PolicyVersion
	}
	if c := metav1.GetControllerOf(pod); c != nil {
		d.Owner = c.Kind + "/" + c.Name
	}
	forEachImage(pod, func(image string) { d.Images = append(d.Images, image) })
	return d
}
