package reputation

import (
	"context"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/util"

	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/reputation"
)

// EventsToRegister retries a rejected pod when a node joins the cluster, or changes its pool
// label or taints, in a way that may admit it. Verdict changes are not cluster events: they
// reach pending pods through the handle's pod activation (see onVerdict).
func (pl *Reputation) EventsToRegister(_ context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		{Event: fwk.ClusterEvent{Resource: fwk.Node, ActionType: fwk.Add | fwk.UpdateNodeLabel | fwk.UpdateNodeTaint}, QueueingHintFn: pl.isSchedulableAfterNodeChange},
		{Event: fwk.ClusterEvent{Resource: fwk.TargetPod, ActionType: fwk.UpdatePodToleration}, QueueingHintFn: queueAlways},
		{Event: fwk.ClusterEvent{Resource: fwk.AssignedPod, ActionType: fwk.Delete}, QueueingHintFn: pl.isSchedulableAfterPodLeft},
	}, nil
}

func queueAlways(klog.Logger, *v1.Pod, interface{}, interface{}) (fwk.QueueingHint, error) {
	return fwk.Queue, nil
}

// isSchedulableAfterNodeChange queues the pod only when the node went from rejecting it to
// admitting it as far as this plugin is concerned.
func (pl *Reputation) isSchedulableAfterNodeChange(logger klog.Logger, pod *v1.Pod, oldObj, newObj interface{}) (fwk.QueueingHint, error) {
	oldNode, newNode, err := util.As[*v1.Node](oldObj, newObj)
	if err != nil {
		return fwk.Queue, err
	}
	s := pl.resolveState(pod)
	if s.Missing > 0 {
		// An image with no verdict (e.g. an ephemeral container added while the pod waited):
		// ask for it and let PreEnqueue hold the pod until it arrives.
		pl.requestMissing(pod)
		logger.V(5).Info("pod has images without a verdict; requeueing so it waits for them", "pod", klog.KObj(pod))
		return fwk.Queue, nil
	}
	if !pl.admits(logger, newNode, pod, s) {
		logger.V(5).Info("node change does not admit the pod to its reputation pool", "pod", klog.KObj(pod), "node", klog.KObj(newNode), "tier", s.Tier)
		return fwk.QueueSkip, nil
	}
	if oldNode != nil && pl.admits(logger, oldNode, pod, s) {
		logger.V(5).Info("node already admitted the pod; its rejection was elsewhere", "pod", klog.KObj(pod), "node", klog.KObj(newNode))
		return fwk.QueueSkip, nil
	}
	logger.V(5).Info("node now admits the pod to its reputation pool", "pod", klog.KObj(pod), "node", klog.KObj(newNode), "pool", s.pool.Name)
	return fwk.Queue, nil
}

func (pl *Reputation) admits(logger klog.Logger, node *v1.Node, pod *v1.Pod, s *podState) bool {
	if !pl.inPool(node, s) {
		return false
	}
	_, untolerated := pl.untoleratedTaint(klog.NewContext(context.Background(), logger), node, pod, s.taints)
	return !untolerated
}

// onVerdict runs when the engine publishes a verdict. Pods gated on the image are activated;
// when an existing verdict changes tier, unscheduled pods that use the image are retried too,
// since the pool they were rejected for is no longer theirs.
func (pl *Reputation) onVerdict(image string, old, updated *reputation.Verdict) {
	pods := pl.waiting.take(image)
	if old != nil && old.Tier != updated.Tier {
		pods = pl.unscheduledUsing(image, pods)
	}
	if len(pods) > 0 {
		pl.profile.Activate(pods)
	}
}

// unscheduledUsing adds this profile's unscheduled pods that use the image.
func (pl *Reputation) unscheduledUsing(image string, into map[string]*v1.Pod) map[string]*v1.Pod {
	all, err := pl.handle.SharedInformerFactory().Core().V1().Pods().Lister().List(labels.Everything())
	if err != nil {
		return into
	}
	for _, pod := range all {
		if pod.Spec.NodeName != "" || pod.Spec.SchedulerName != pl.handle.ProfileName() {
			continue
		}
		if placement.Uses(pod, image) {
			if into == nil {
				into = map[string]*v1.Pod{}
			}
			into[pod.Namespace+"/"+pod.Name] = pod
		}
	}
	return into
}

// waitingPods indexes pods gated in PreEnqueue by the image they wait for.
type waitingPods struct {
	mu      sync.Mutex
	byImage map[string]map[string]*v1.Pod
}

func newWaitingPods() *waitingPods {
	return &waitingPods{byImage: map[string]map[string]*v1.Pod{}}
}

func (w *waitingPods) add(image string, pod *v1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	pods := w.byImage[image]
	if pods == nil {
		pods = map[string]*v1.Pod{}
		w.byImage[image] = pods
	}
	pods[pod.Namespace+"/"+pod.Name] = pod
}

// take removes and returns the pods waiting for an image.
func (w *waitingPods) take(image string) map[string]*v1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	pods := w.byImage[image]
	delete(w.byImage, image)
	return pods
}
