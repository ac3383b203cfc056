package reputation

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/repute-dev/repute/reputation"
)

// TierLabel is set on every pod Repute places, just before it is bound, so that
// NetworkPolicies, admission policies and RuntimeClass choices can select pods by tier. A value
// the pod brought with it is overwritten: labels never raise trust.
const TierLabel = "repute.dev/tier"

var _ fwk.PreBindPlugin = &Reputation{}

// PreBindPreFlight skips pods that already carry their tier.
func (pl *Reputation) PreBindPreFlight(_ context.Context, state fwk.CycleState, pod *v1.Pod, _ string) (*fwk.PreBindPreFlightResult, *fwk.Status) {
	if pl.handle.ClientSet() == nil || pod.Labels[TierLabel] == string(pl.readState(state, pod).tier) {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	return &fwk.PreBindPreFlightResult{AllowParallel: true}, nil
}

// PreBind labels the pod with its tier. It runs in the binding cycle, off the scheduling
// cycle; if the label cannot be set the pod is not bound (and is retried), because policies
// that select by tier would otherwise miss it.
func (pl *Reputation) PreBind(ctx context.Context, state fwk.CycleState, pod *v1.Pod, _ string) *fwk.Status {
	if err := pl.labelTier(ctx, pod, pl.readState(state, pod).tier); err != nil {
		return fwk.AsStatus(err)
	}
	return nil
}

// labelTier sets the pod's tier label; the mover also calls it for running pods whose tier
// changed, so policies that select by tier follow the reputation even before a pod is moved.
func (pl *Reputation) labelTier(ctx context.Context, pod *v1.Pod, tier reputation.Tier) error {
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, TierLabel, tier)
	_, err := pl.handle.ClientSet().CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: "repute-scheduler"})
	if err != nil {
		return fmt.Errorf("labelling the pod %s=%s: %w", TierLabel, tier, err)
	}
	return nil
}
