package runtime

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/reputation/store"
)

// bindingsInDoubt holds the placements whose Binding call failed without saying it did not land:
// a connection cut by a restarting apiserver, a timeout, a 5xx. Such a binding may be in etcd
// while the scheduler believes it failed; the scheduler then never binds that pod again, so
// without this its decision would never be recorded. When the pod is seen bound to the node of
// one of its attempts, that attempt's decision is recorded. Entries go with their pod: they are
// settled, or dropped when the pod is deleted, so they are bounded by the pods in flight.
type bindingsInDoubt struct {
	mu   sync.Mutex
	pods map[types.UID]*podInDoubt
}

type podInDoubt struct {
	// key names the pod, for a look at it when the scheduler stops.
	key      types.NamespacedName
	attempts []bindAttempt
	// binding is set while another Binding call for the pod is out: its own outcome settles
	// the pod, so a sighting of the pod bound is left to it.
	binding bool
}

// BindingConfirmed is logged for each binding found landed after its call failed.
const BindingConfirmed = "Recorded the decision of a binding that landed although its call failed"

type bindAttempt struct {
	node, pool string
	placement  placement.Placement
}

// mayHaveLanded says whether a Binding call that returned err may have bound the pod anyway.
// An answer from the apiserver refusing the request (4xx) says it did not, except a Conflict:
// "already assigned" is what a retry of a binding that landed gets.
func mayHaveLanded(err error) bool {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code == 0 || code == http.StatusConflict || code >= http.StatusInternalServerError
	}
	return true
}

// bindingStarts is told that a Binding call for the pod is about to be sent.
func (d *bindingsInDoubt) bindingStarts(uid types.UID) {
	d.mu.Lock()
	if p := d.pods[uid]; p != nil {
		p.binding = true
	}
	d.mu.Unlock()
}

// settled drops what is held for a pod: its binding succeeded, or it is gone.
func (d *bindingsInDoubt) settled(uid types.UID) {
	d.mu.Lock()
	delete(d.pods, uid)
	d.mu.Unlock()
}

// BindFailed is told of a Binding call that failed. If the binding may have landed, the
// placement is held until the pod is seen bound (its decision is then recorded) or deleted.
func (rt *Runtime) BindFailed(pod *v1.Pod, node, pool string, p placement.Placement, err error) {
	if rt.store == nil {
		return
	}
	d := &rt.inDoubt
	d.mu.Lock()
	held := d.pods[pod.UID]
	if mayHaveLanded(err) {
		if d.pods == nil {
			d.pods = map[types.UID]*podInDoubt{}
		}
		if held == nil {
			held = &podInDoubt{key: types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}}
			d.pods[pod.UID] = held
		}
		held.attempts = append(held.attempts, bindAttempt{node: node, pool: pool, placement: p})
	}
	if held != nil {
		held.binding = false
	}
	d.mu.Unlock()
	// The watch may have shown the pod bound before the call returned.
	if held != nil && rt.informers != nil {
		if seen, err := rt.informers.Core().V1().Pods().Lister().Pods(pod.Namespace).Get(pod.Name); err == nil && seen.UID == pod.UID {
			rt.confirmBinding(seen)
		}
	}
}

// confirmBinding records the decision of the attempt that bound the pod, once; it reports
// whether it recorded one.
func (rt *Runtime) confirmBinding(pod *v1.Pod) bool {
	if pod.Spec.NodeName == "" {
		return false
	}
	d := &rt.inDoubt
	d.mu.Lock()
	held := d.pods[pod.UID]
	if held == nil || held.binding {
		d.mu.Unlock()
		return false
	}
	delete(d.pods, pod.UID)
	d.mu.Unlock()
	_, byRepute := pod.Labels[placement.TierLabel] // only Repute's Binding sets it, in the same write
	for _, a := range held.attempts {
		if a.node == pod.Spec.NodeName && pod.Labels[placement.TierLabel] == string(a.placement.Tier) {
			klog.InfoS(BindingConfirmed, "pod", klog.KObj(pod), "node", a.node)
			rt.RecordPlacement(pod, a.node, a.pool, a.placement)
			return true
		}
	}
	// Bound by a Binding of Repute's, but not one of these attempts: the previous leader's,
	// which landed as it died (this replica's retry then got "already assigned"). Recovery at
	// takeover leaves pods this replica tried to bind to their own records, so it is filed here.
	// A binding someone else made is not recorded as Repute's.
	if byRepute && rt.informers != nil && !rt.hasPlacement(pod) && rt.recordRecovered(pod) {
		klog.InfoS("Recorded the placement of a pod the previous leader bound as it died", "pod", klog.KObj(pod), "node", pod.Spec.NodeName)
		return true
	}
	return false
}

// hasPlacement says whether the store holds a placement of the pod: the previous leader's may
// have been written before it died. It is read after everything queued is written. Rare (a
// leader died mid-binding), so a scan from the pod's creation is cheap enough.
func (rt *Runtime) hasPlacement(pod *v1.Pod) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.store.Flush(ctx); err != nil {
		return true // cannot tell: filing nothing keeps "exactly one" rather than risk two
	}
	found := false
	_, _, err := rt.store.Decisions(store.Page{From: pod.CreationTimestamp.Time}, func(d *store.Decision) bool {
		if types.UID(d.UID) == pod.UID && (d.Action == "" || d.Action == ActionRecovered) {
			found = true
		}
		return false
	})
	return err != nil || found
}

// watchBindingsInDoubt settles the bindings in doubt from the pod informer.
func (rt *Runtime) watchBindingsInDoubt() error {
	_, err := rt.informers.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, newObj any) {
			if pod, ok := newObj.(*v1.Pod); ok && pod.Spec.NodeName != "" && rt.inDoubt.any() {
				rt.confirmBinding(pod)
			}
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*v1.Pod); ok {
				rt.inDoubt.settled(pod.UID)
			}
		},
	})
	return err
}

// held lists the pods held in doubt.
func (d *bindingsInDoubt) held() []types.NamespacedName {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := make([]types.NamespacedName, 0, len(d.pods))
	for _, p := range d.pods {
		keys = append(keys, p.key)
	}
	return keys
}

// BindDone is told that a Bind that began with NoteBinding has returned, whatever its outcome.
func (rt *Runtime) BindDone() { rt.bindsInFlight.Add(-1) }

// drainBindingsInDoubt settles, as the scheduler stops and before its store closes, the
// bindings whose calls the stop itself cut: the scheduler's context ends their calls, which may
// have landed, and the watch that would have shown them bound is gone too. It waits (briefly) for
// the Binding calls still out to return, then looks at each pod held in doubt once, and records
// the decision of the attempt that bound it. Without this those decisions waited for the next
// start's recovery, which files them as "recovered".
func (rt *Runtime) drainBindingsInDoubt(logger klog.Logger) {
	if rt.client == nil {
		return
	}
	for deadline := time.Now().Add(drainWait); rt.bindsInFlight.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	held := rt.inDoubt.held()
	if len(held) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainWait)
	defer cancel()
	settled := 0
	for _, key := range held {
		pod, err := rt.client.CoreV1().Pods(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
		if err != nil {
			continue // gone, or the apiserver too: the next start's recovery files it
		}
		if rt.confirmBinding(pod) {
			settled++
		}
	}
	logger.Info("Settled the bindings the stop cut", "held", len(held), "recorded", settled)
}

// drainWait bounds each step of the drain: a stopping scheduler must not hang on a dead
// apiserver.
const drainWait = 2 * time.Second

// any keeps the informer's path to one lock when nothing is in doubt, as is usual.
func (d *bindingsInDoubt) any() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pods) > 0
}
