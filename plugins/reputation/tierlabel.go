package reputation

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/repute-dev/repute/reputation"
)

// TierLabel is set on every pod Repute places, as it is bound, so that NetworkPolicies,
// admission policies and RuntimeClass choices can select pods by tier. A value the pod brought
// with it is overwritten: labels never raise trust.
const TierLabel = "repute.dev/tier"

var _ fwk.BindPlugin = &Reputation{}

// Bind binds the pod as DefaultBinder does, with its tier label on the Binding: the apiserver
// copies a Binding's labels onto the pod in the same write (PodTopologyLabelsAdmission, on by
// default since Kubernetes 1.35), so the pod never runs unlabelled and binding costs no extra
// API call. The profile disables DefaultBinder so that this Bind is the one that runs.
func (pl *Reputation) Bind(ctx context.Context, state fwk.CycleState, pod *v1.Pod, nodeName string) *fwk.Status {
	tier := pl.readState(state, pod).tier
	binding := &v1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, Labels: map[string]string{TierLabel: string(tier)}},
		Target:     v1.ObjectReference{Kind: "Node", Name: nodeName},
	}
	if c := pl.handle.APICacher(); c != nil {
		onFinish, err := c.BindPod(binding)
		if err == nil {
			err = c.WaitOnFinish(ctx, onFinish)
		}
		return fwk.AsStatus(err)
	}
	klog.FromContext(ctx).V(3).Info("Binding pod with its tier label", "pod", klog.KObj(pod), "node", klog.KRef("", nodeName), "tier", tier)
	return fwk.AsStatus(pl.handle.ClientSet().CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{}))
}

// labelTier sets a running pod's tier label: the mover calls it when a pod's tier changes, so
// policies that select by tier follow the reputation even before (or without) a move, and it
// repairs pods bound without the label (an apiserver that does not copy Binding labels).
func (pl *Reputation) labelTier(ctx context.Context, pod *v1.Pod, tier reputation.Tier) error {
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, TierLabel, tier)
	_, err := pl.handle.ClientSet().CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: "repute-scheduler"})
	if err != nil {
		return fmt.Errorf("labelling the pod %s=%s: %w", TierLabel, tier, err)
	}
	return nil
}
