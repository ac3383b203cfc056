package runtime

import (
	"context"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/reputation/store"
)

// ActionRecovered marks a decision filed at takeover for a pod bound into the pools whose own
// record was lost: queued in memory when the previous leader died.
const ActionRecovered = "recovered"

// recoveredReason says, in the record, what a recovered decision is and is not.
const recoveredReason = "recorded at takeover: this replica's store has no record of the placement (it was queued when the previous leader died, or it is in the store of the replica that placed it); tier and reason as of now: "

// NoteBinding is told of each pod this replica is about to bind, before the Binding is sent:
// recoverDecisions leaves those pods to their own records, which may still be queued. Pods are
// noted from the store's opening until recovery has run, then no more. A pod with a binding in
// doubt waits for this call's outcome (BindFailed or RecordPlacement).
func (rt *Runtime) NoteBinding(pod *v1.Pod) {
	rt.bindsInFlight.Add(1)
	rt.inDoubt.bindingStarts(pod.UID)
	if binding := rt.bindingsDuringRecovery.Load(); binding != nil {
		binding.Store(pod.UID, struct{}{})
	}
}

// recoverDecisions files a decision (action "recovered") for every pod bound into this
// scheduler's pools that has none in the store, so every pod Repute bound has exactly one.
// Decisions are written off the scheduling cycle, so a leader killed mid-burst loses those still
// queued; the new leader finds their pods here. Pods it has bound itself (the scheduler starts
// as soon as it leads, before this runs) are noted by Bind and skipped: their own records are on
// the way.
func (rt *Runtime) recoverDecisions(ctx context.Context) {
	binding := rt.bindingsDuringRecovery.Load()
	if rt.store == nil || binding == nil {
		return
	}
	logger := klog.FromContext(ctx)
	defer rt.bindingsDuringRecovery.Store(nil)
	pods := rt.informers.Core().V1().Pods()
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		return
	}
	// Everything queued before now is committed, so the scan below sees it.
	if err := rt.store.Flush(ctx); err != nil {
		logger.Error(err, "Recovering lost placement decisions: the store cannot write")
		return
	}
	all, err := pods.Lister().List(labels.Everything())
	if err != nil {
		logger.Error(err, "Recovering lost placement decisions")
		return
	}
	unrecorded := map[types.UID]*v1.Pod{}
	var oldest time.Time
	bound, recovered := 0, 0
	defer func() {
		logger.Info("Checked that every pod bound into the pools has its placement decision", "pods", bound, "recovered", recovered)
	}()
	for _, pod := range all {
		if pod.Spec.NodeName == "" || rt.Profile(pod.Spec.SchedulerName) == nil {
			continue
		}
		unrecorded[pod.UID] = pod
		bound++
		if created := pod.CreationTimestamp.Time; oldest.IsZero() || created.Before(oldest) {
			oldest = created
		}
	}
	if len(unrecorded) == 0 {
		return
	}
	// A placement is recorded after its pod was created: the scan starts there, and its memory
	// is bounded by the pods, not by the decisions.
	if _, _, err := rt.store.Decisions(store.Page{From: oldest}, func(d *store.Decision) bool {
		if d.Action == "" || d.Action == ActionRecovered {
			delete(unrecorded, types.UID(d.UID))
		}
		return false
	}); err != nil {
		logger.Error(err, "Recovering lost placement decisions: reading the store")
		return
	}
	for uid, pod := range unrecorded {
		if _, mine := binding.Load(uid); mine {
			continue
		}
		if rt.recordRecovered(pod) {
			recovered++
		}
	}
	// Written before "Checked" is logged, so the line means what it says.
	if err := rt.store.Flush(ctx); err != nil {
		logger.Error(err, "Recovering lost placement decisions: the store cannot write")
	}
}

// recordRecovered files a "recovered" decision for a pod bound into the pools whose placement
// this replica has no record of, with its tier and reason as of now.
func (rt *Runtime) recordRecovered(pod *v1.Pod) bool {
	profile := rt.Profile(pod.Spec.SchedulerName)
	if profile == nil {
		return false
	}
	pool := "(node gone)"
	if node, err := rt.informers.Core().V1().Nodes().Lister().Get(pod.Spec.NodeName); err == nil {
		pool = profile.PoolName(node)
	}
	p := rt.Place(pod)
	d := rt.decisionOf(pod, pod.Spec.NodeName, pool, p, recoveredReason+p.Reason())
	d.Action = ActionRecovered
	return rt.store.RecordDecision(d)
}
