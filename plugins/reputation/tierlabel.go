package reputation

import (
	"context"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/repute-dev/repute/pkg/placement"
)

// TierLabel is set on every pod Repute places, as it is bound (see placement.TierLabel).
const TierLabel = placement.TierLabel

var _ fwk.BindPlugin = &Reputation{}

// Bind binds the pod as DefaultBinder does, with its tier label and the explanation of its
// placement on the Binding: the apiserver copies a Binding's labels (PodTopologyLabelsAdmission,
// on by default since Kubernetes 1.35) and annotations onto the pod in the same write, so the pod
// never runs unlabelled and saying why costs no API call beyond the default scheduler's. The
// decision is handed to the store's writer the moment the binding succeeds, before anyone can
// see the pod bound: a PostBind step would leave a window in which a stopping scheduler has
// bound a pod and recorded nothing. The profile disables DefaultBinder so that this Bind is the
// one that runs.
func (pl *Reputation) Bind(ctx context.Context, state fwk.CycleState, pod *v1.Pod, nodeName string) *fwk.Status {
	s := pl.readState(state, pod)
	tier := s.Tier
	pl.runtime.NoteBinding(pod)
	defer pl.runtime.BindDone()
	binding := &v1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
			Labels:      map[string]string{TierLabel: string(tier)},
			Annotations: map[string]string{placement.ExplanationAnnotation: s.Explanation(s.pool.Name)}},
		Target: v1.ObjectReference{Kind: "Node", Name: nodeName},
	}
	var err error
	if c := pl.handle.APICacher(); c != nil {
		var onFinish <-chan error
		if onFinish, err = c.BindPod(binding); err == nil {
			err = c.WaitOnFinish(ctx, onFinish)
		}
	} else {
		klog.FromContext(ctx).V(3).Info("Binding pod with its tier label", "pod", klog.KObj(pod), "node", klog.KRef("", nodeName), "tier", tier)
		err = pl.handle.ClientSet().CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	}
	if err != nil {
		pl.runtime.BindFailed(pod, nodeName, s.pool.Name, s.Placement, err)
		return fwk.AsStatus(err)
	}
	pl.runtime.RecordPlacement(pod, nodeName, s.pool.Name, s.Placement)
	return nil
}
