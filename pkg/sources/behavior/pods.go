package behavior

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/repute-dev/repute/reputation"
)

// Target is one container image an observation concerns.
type Target struct {
	// Keys file the observation in the ledger: the digest the runtime reported, and the
	// canonical reference the pod spec spells.
	Keys []string
	// Where says where it was seen, e.g. "pod team/api container app".
	Where string
}

// containerStatuses returns every container status of a pod, with the spec image of each.
func containerStatuses(pod *v1.Pod) (statuses []v1.ContainerStatus, specImage map[string]string) {
	specImage = map[string]string{}
	for _, c := range pod.Spec.InitContainers {
		specImage[c.Name] = c.Image
	}
	for _, c := range pod.Spec.Containers {
		specImage[c.Name] = c.Image
	}
	for _, c := range pod.Spec.EphemeralContainers {
		specImage[c.Name] = c.Image
	}
	statuses = append(statuses, pod.Status.InitContainerStatuses...)
	statuses = append(statuses, pod.Status.ContainerStatuses...)
	statuses = append(statuses, pod.Status.EphemeralContainerStatuses...)
	return statuses, specImage
}

// targetOf maps one container status to its image: the digest in status.imageID, and the image
// the spec names. It is false when neither can be read.
func targetOf(pod *v1.Pod, st v1.ContainerStatus, specImage string) (Target, bool) {
	t := Target{Where: fmt.Sprintf("pod %s/%s container %s", pod.Namespace, pod.Name, st.Name)}
	digest := reputation.DigestOfImageID(st.ImageID)
	ref, err := reputation.ParseImageRef(specImage)
	if digest == "" && err == nil {
		digest = ref.Digest // a pinned spec names the digest itself
	}
	if digest != "" {
		t.Keys = append(t.Keys, digest)
	}
	if err == nil {
		t.Keys = append(t.Keys, ref.String())
	}
	return t, len(t.Keys) > 0
}

// TargetsOfAlert maps a Falco alert to the images it concerns in the pod it names: the container
// with the alert's container.id, or, when Falco gave none, every container of the pod (the alert
// is about the pod, and behavior can only lower trust).
func TargetsOfAlert(pod *v1.Pod, containerID string) ([]Target, error) {
	statuses, specImage := containerStatuses(pod)
	var targets []Target
	for _, st := range statuses {
		if containerID != "" && !sameContainer(st.ContainerID, containerID) {
			continue
		}
		if t, ok := targetOf(pod, st, specImage[st.Name]); ok {
			targets = append(targets, t)
		}
	}
	if len(targets) == 0 {
		if containerID != "" {
			return nil, fmt.Errorf("pod %s/%s has no container with id %s in its status", pod.Namespace, pod.Name, containerID)
		}
		return nil, fmt.Errorf("pod %s/%s reports no container images in its status yet", pod.Namespace, pod.Name)
	}
	return targets, nil
}

// sameContainer compares a status containerID ("containerd://<64 hex>") with Falco's
// container.id, which is the first 12 characters of the ID (or all of it).
func sameContainer(statusID, falcoID string) bool {
	_, id, found := strings.Cut(statusID, "://")
	if !found {
		id = statusID
	}
	return len(falcoID) >= 12 && strings.HasPrefix(id, falcoID)
}

// PodStatusEvents compares two versions of a pod and returns the behavior they reveal, per
// container: a new CrashLoopBackOff, a new OOM kill, restarts. old is nil when the pod is first
// seen; then only a crash loop in progress counts, since earlier restarts cannot be dated.
func PodStatusEvents(old, pod *v1.Pod) []Observed {
	var before map[string]v1.ContainerStatus
	if old != nil {
		oldStatuses, _ := containerStatuses(old)
		before = map[string]v1.ContainerStatus{}
		for _, st := range oldStatuses {
			before[st.Name] = st
		}
	}
	statuses, specImage := containerStatuses(pod)
	var out []Observed
	for _, st := range statuses {
		prev, known := before[st.Name]
		var events []reputation.BehaviorEvent
		if w := st.State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" &&
			!(known && prev.State.Waiting != nil && prev.State.Waiting.Reason == "CrashLoopBackOff") {
			events = append(events, reputation.BehaviorEvent{Kind: reputation.BehaviorCrashLoop, Rule: "CrashLoopBackOff"})
		}
		if known {
			if t := st.LastTerminationState.Terminated; t != nil && t.Reason == "OOMKilled" && !sameTermination(prev.LastTerminationState.Terminated, t) {
				events = append(events, reputation.BehaviorEvent{Kind: reputation.BehaviorOOMKilled, Rule: "OOMKilled", At: t.FinishedAt.Time})
			}
			for range min(st.RestartCount-prev.RestartCount, 5) { // a burst counts, but boundedly
				events = append(events, reputation.BehaviorEvent{Kind: reputation.BehaviorRestart, Rule: "Restarted"})
			}
		}
		if len(events) == 0 {
			continue
		}
		t, ok := targetOf(pod, st, specImage[st.Name])
		if !ok {
			continue
		}
		for _, e := range events {
			e.Where, e.Namespace = t.Where, pod.Namespace
			out = append(out, Observed{Target: t, Event: e})
		}
	}
	return out
}

func sameTermination(a, b *v1.ContainerStateTerminated) bool {
	return a != nil && b != nil && a.ContainerID == b.ContainerID && a.FinishedAt.Equal(&b.FinishedAt) && a.Reason == b.Reason
}

// Observed is one behavior event and the image it concerns.
type Observed struct {
	Target Target
	Event  reputation.BehaviorEvent
}

// WatchPods records the behavior pod status reveals, from the scheduler's pod informer, of the
// pods counts accepts: the pods Repute placed, whose images it vouches for.
func WatchPods(informer cache.SharedIndexInformer, rec *Recorder, counts func(*v1.Pod) bool) error {
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if pod, ok := obj.(*v1.Pod); ok && counts(pod) {
				rec.Record(PodStatusEvents(nil, pod))
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(*v1.Pod)
			pod, ok2 := newObj.(*v1.Pod)
			if ok1 && ok2 && counts(pod) {
				rec.Record(PodStatusEvents(old, pod))
			}
		},
	})
	return err
}
