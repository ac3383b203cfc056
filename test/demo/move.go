package demo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/mover"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/evidence"
	"github.com/repute-dev/repute/test/podsecurity"
)

// startStorefront runs a one-replica Deployment of the image, placed and Running, and returns
// its pod.
func startStorefront(ctx context.Context, cp *controlplane.ControlPlane, image string) (*v1.Pod, error) {
	labels := map[string]string{"app": "storefront"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "storefront", Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: restrictedSpec(v1.PodSpec{SchedulerName: schedulerName, Containers: []v1.Container{{Name: "main", Image: image}}})},
		},
	}
	if _, err := cp.Client.AppsV1().Deployments(namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	pod, err := waitStorefront(ctx, cp, "")
	if err != nil {
		return nil, err
	}
	return evidence.ReportContainerStatus(ctx, cp.Client, namespace, pod.Name, nil)
}

// waitStorefront waits for a bound storefront pod other than the one named.
func waitStorefront(ctx context.Context, cp *controlplane.ControlPlane, not string) (*v1.Pod, error) {
	var found *v1.Pod
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := cp.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=storefront"})
		if err != nil {
			return false, err
		}
		for i, p := range pods.Items {
			if p.Name != not && p.DeletionTimestamp == nil && p.Spec.NodeName != "" {
				found = &pods.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	return found, err
}

// showMove shows the live move the alert caused: storefront's pod evicted from the trusted
// pool and its replacement placed in the untrusted one, and shop, which no controller would
// recreate, reported instead.
func showMove(ctx context.Context, cp *controlplane.ControlPlane, out io.Writer, old *v1.Pod, poolOf map[string]string) error {
	replacement, err := waitStorefront(ctx, cp, old.Name)
	if err != nil {
		return fmt.Errorf("storefront was not moved: %w", err)
	}
	evicted, err := eventNote(ctx, cp, old.Name, mover.ReasonEvicted)
	if err != nil {
		return err
	}
	misplaced, err := eventNote(ctx, cp, "shop", "Misplaced")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n• Repute moves running pods whose tier changed (replacement.mode: Evict), through the Eviction API:\n")
	for i, line := range wrap(fmt.Sprintf("%s (Deployment storefront, same image as shop) %s", old.Name, evicted), maxWidth-4) {
		indent := "  "
		if i > 0 {
			indent = "    "
		}
		fmt.Fprintln(out, indent+line)
	}
	fmt.Fprintf(out, "  its replacement %s, made by the ReplicaSet controller, is in pool %s on %s\n",
		replacement.Name, poolOf[replacement.Spec.NodeName], replacement.Spec.NodeName)
	fmt.Fprintf(out, "  shop: %s\n", misplaced[strings.Index(misplaced, "not evicted"):])
	return nil
}

// eventNote waits for an event of a reason about a pod and returns its note.
func eventNote(ctx context.Context, cp *controlplane.ControlPlane, pod, reason string) (string, error) {
	var note string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := cp.Client.EventsV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "regarding.name=" + pod + ",reason=" + reason})
		if err != nil || len(evs.Items) == 0 {
			return false, err
		}
		note = evs.Items[0].Note
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("no %s event for %s: %w", reason, pod, err)
	}
	return note, nil
}

// restrictedSpec is a pod spec made to meet the Pod Security Standard "restricted".
func restrictedSpec(spec v1.PodSpec) v1.PodSpec {
	podsecurity.Restricted(&spec)
	return spec
}
