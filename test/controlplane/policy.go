package controlplane

import (
	"context"
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
)

// WaitPolicyStatus waits until the scheduler reports a ReputationPolicy's generation with its
// Applied condition at applied, and returns the status and that condition.
func WaitPolicyStatus(ctx context.Context, cfg *rest.Config, name string, generation int64, applied metav1.ConditionStatus, timeout time.Duration) (v1alpha1.ReputationPolicyStatus, *metav1.Condition, error) {
	policies := dynamic.NewForConfigOrDie(cfg).Resource(v1alpha1.Resource)
	var rp v1alpha1.ReputationPolicy
	var cond *metav1.Condition
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		obj, err := policies.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &rp); err != nil {
			return false, err
		}
		cond = meta.FindStatusCondition(rp.Status.Conditions, v1alpha1.ConditionApplied)
		return rp.Status.ObservedGeneration == generation && cond != nil && cond.Status == applied && cond.ObservedGeneration == generation, nil
	})
	if err != nil {
		return rp.Status, cond, fmt.Errorf("ReputationPolicy %s never reported generation %d Applied=%s: %w (status %+v)", name, generation, applied, err, rp.Status)
	}
	return rp.Status, cond, nil
}

// WaitPolicyEvent waits for an Event about a ReputationPolicy (cluster-scoped, so its Events
// are in "default", where kubectl describe looks) of the type and reason whose message holds
// says, and returns it.
func WaitPolicyEvent(ctx context.Context, client kubernetes.Interface, name, eventType, reason, says string, timeout time.Duration) (*v1.Event, error) {
	var found *v1.Event
	var seen []string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=ReputationPolicy,involvedObject.name=" + name})
		if err != nil {
			return false, err
		}
		seen = seen[:0]
		for i, ev := range list.Items {
			seen = append(seen, ev.Type+" "+ev.Reason+": "+ev.Message)
			if ev.Type == eventType && ev.Reason == reason && strings.Contains(ev.Message, says) && ev.InvolvedObject.APIVersion == v1alpha1.SchemeGroupVersion.String() {
				found = &list.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("no %s %s Event about ReputationPolicy %s saying %q: %w; Events: %q", eventType, reason, name, says, err, seen)
	}
	return found, nil
}
