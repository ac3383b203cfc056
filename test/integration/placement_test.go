package integration

import (
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/repute-dev/repute/plugins/reputation"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/podsecurity"
)

const bindTimeout = 30 * time.Second

// Three pools plus unpooled nodes: every pod lands only in its own tier's pool, with no
// tolerations or node selectors in its manifest.
func TestPodsLandInTheirPools(t *testing.T) {
	e := newEnv(t)
	poolOf := map[string]string{}
	for _, pool := range []string{"trusted", "unknown", "untrusted"} {
		for _, n := range []string{"a", "b"} {
			poolOf[e.node(pool+"-"+n, pool)] = pool
		}
	}
	poolOf[e.node("unpooled-a", "")] = ""
	poolOf[e.node("unpooled-b", "")] = ""
	e.startScheduler()

	tests := []struct {
		name     string
		pod      *v1.Pod
		wantPool string
	}{
		{"trusted-1", e.pod("trusted-1", trustedImage), "trusted"},
		{"trusted-2", e.pod("trusted-2", trustedImage), "trusted"},
		{"unknown-1", e.pod("unknown-1", unknownImage), "unknown"},
		{"unknown-short-name", e.pod("unknown-short-name", "bitnami/redis:7.2"), "unknown"},
		{"untrusted-1", e.pod("untrusted-1", untrustedImage), "untrusted"},
		{"mixed-worst-wins", e.pod("mixed-worst-wins", trustedImage, unknownImage), "unknown"},
		{"claims-trust-by-label", withTrustClaims(e.pod("claims-trust-by-label", untrustedImage)), "untrusted"},
	}
	for _, tt := range tests {
		e.create(tt.pod)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := e.waitBound(tt.pod.Name, bindTimeout)
			if got := poolOf[node]; got != tt.wantPool {
				t.Errorf("pod %s landed on %s in pool %q, want pool %q", tt.pod.Name, node, got, tt.wantPool)
			}
			// The pod carries the explanation of its placement, written with its binding.
			note := e.waitPlacement(tt.pod.Name, bindTimeout)
			if want := "pool " + tt.wantPool + ": tier " + tt.wantPool; !strings.HasPrefix(note, want) {
				t.Errorf("explanation %q, want it to start with %q", note, want)
			}
			// It was labelled with its tier before it was bound; a label it brought is overwritten.
			bound, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, tt.pod.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := bound.Labels[reputation.TierLabel]; got != tt.wantPool {
				t.Errorf("pod %s has %s=%q, want %q", tt.pod.Name, reputation.TierLabel, got, tt.wantPool)
			}
		})
	}
	note := e.waitPlacement("claims-trust-by-label", bindTimeout)
	if want := untrustedImage + ": origin.rules[2] * → untrusted"; !strings.Contains(note, want) {
		t.Errorf("explanation %q does not give the deciding rule %q: a forged one must be overwritten", note, want)
	}
}

// withTrustClaims dresses a pod in every label and annotation that might look like a trust claim.
func withTrustClaims(p *v1.Pod) *v1.Pod {
	p.Labels = map[string]string{"repute.dev/tier": "trusted", "node-restriction.kubernetes.io/repute-pool": "trusted"}
	p.Annotations = map[string]string{"repute.dev/tier": "trusted", "repute.dev/verified": "true",
		"repute.dev/placement": "pool trusted: tier trusted, score 100; signature verified"}
	return p
}

// An untrusted pod stays Pending when its pool is full, even though the trusted pool has room,
// and its FailedScheduling event says why.
func TestUntrustedStaysPendingWhenItsPoolIsFull(t *testing.T) {
	e := newEnv(t)
	e.node("trusted", "trusted")
	e.node("untrusted", "untrusted", func(s *controlplane.NodeSpec) { s.Pods = 1 })
	e.startScheduler()

	e.create(e.pod("first", untrustedImage))
	e.waitBound("first", bindTimeout)
	e.create(e.pod("second", untrustedImage))
	msg := e.waitFailedScheduling("second", bindTimeout)
	for _, want := range []string{reputation.ErrReasonNotInPool, "Too many pods"} {
		if !strings.Contains(msg, want) {
			t.Errorf("FailedScheduling message %q does not contain %q", msg, want)
		}
	}
	e.assertPending("second", 2*time.Second)
}

// A pending pod is placed as soon as a node is labelled (and tainted) into its pool: the
// queueing hint retries it at once instead of after the unschedulable-pod flush.
func TestPendingPodPlacedWhenNodeJoinsItsPool(t *testing.T) {
	e := newEnv(t)
	e.node("trusted", "trusted")
	spare := e.node("spare", "")
	e.startScheduler()

	e.create(e.pod("waiting", untrustedImage))
	e.waitFailedScheduling("waiting", bindTimeout)

	node, err := e.client.CoreV1().Nodes().Get(e.ctx, spare, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Labels[e.poolKey] = "untrusted"
	node.Spec.Taints = append(node.Spec.Taints, v1.Taint{Key: e.poolKey, Value: "untrusted", Effect: v1.TaintEffectNoSchedule})
	if _, err := e.client.CoreV1().Nodes().Update(e.ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Far below the 5-minute flush of unschedulable pods: only the hint can explain it.
	if got := e.waitBound("waiting", 20*time.Second); got != spare {
		t.Fatalf("pod bound to %s, want %s", got, spare)
	}
	t.Logf("bound %s after the node joined the pool", time.Since(start))
}

// Init containers and image volumes count: one untrusted image anywhere makes the pod untrusted.
func TestEveryImageOfThePodCounts(t *testing.T) {
	e := newEnv(t)
	poolOf := map[string]string{}
	for _, pool := range []string{"trusted", "unknown", "untrusted"} {
		poolOf[e.node(pool, pool)] = pool
	}
	e.startScheduler()

	initPod := e.pod("untrusted-init", trustedImage)
	initPod.Spec.InitContainers = []v1.Container{{Name: "setup", Image: untrustedImage}}
	volumePod := e.pod("unknown-image-volume", trustedImage)
	volumePod.Spec.Volumes = []v1.Volume{{Name: "models", VolumeSource: v1.VolumeSource{Image: &v1.ImageVolumeSource{Reference: unknownImage, PullPolicy: v1.PullIfNotPresent}}}}
	volumePod.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "models", MountPath: "/models"}}
	for _, tt := range []struct {
		pod      *v1.Pod
		wantPool string
	}{{initPod, "untrusted"}, {volumePod, "unknown"}} {
		e.create(tt.pod)
		if got := poolOf[e.waitBound(tt.pod.Name, bindTimeout)]; got != tt.wantPool {
			t.Errorf("%s landed in pool %q, want %q", tt.pod.Name, got, tt.wantPool)
		}
	}
}

// Ephemeral containers can only be added to an existing pod: one added to a pending trusted pod
// makes it untrusted, and it lands in the untrusted pool when both pools get a node.
func TestEphemeralContainerImageCounts(t *testing.T) {
	e := newEnv(t)
	e.startScheduler()
	e.create(e.pod("debugged", trustedImage))
	e.waitFailedScheduling("debugged", bindTimeout) // no nodes yet

	// The scheduler writes the pod's PodScheduled condition around the event: retry on conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, "debugged", metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Spec.EphemeralContainers = []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{
			Name: "debug", Image: untrustedImage, ImagePullPolicy: v1.PullIfNotPresent, TerminationMessagePolicy: v1.TerminationMessageReadFile,
		}}}
		podsecurity.Restricted(&pod.Spec) // the pod is untrusted now, and must meet "restricted"
		_, err = e.client.CoreV1().Pods(e.ns).UpdateEphemeralContainers(e.ctx, "debugged", pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	trusted := e.node("trusted", "trusted")
	untrusted := e.node("untrusted", "untrusted")
	if got := e.waitBound("debugged", bindTimeout); got != untrusted {
		t.Errorf("pod with an untrusted ephemeral container landed on %s, want %s (not %s)", got, untrusted, trusted)
	}
}

// The stock default scheduler never places its pods on tainted pool nodes, while Repute's pods
// still respect every taint other than their own pool's.
func TestPoolsAreEnforcedAgainstOtherSchedulers(t *testing.T) {
	e := newEnv(t)
	for _, pool := range []string{"trusted", "unknown", "untrusted"} {
		e.node(pool, pool)
	}
	dedicated := v1.Taint{Key: "dedicated", Value: "gpu", Effect: v1.TaintEffectNoSchedule}
	gpuNode := e.node("untrusted-gpu", "untrusted", func(s *controlplane.NodeSpec) { s.ExtraTaints = []v1.Taint{dedicated} })
	e.startScheduler()
	stop, err := controlplane.StartDefaultScheduler(e.ctx, e.client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	defaultPod := func(name, image string) *v1.Pod {
		p := e.pod(name, image)
		p.Spec.SchedulerName = v1.DefaultSchedulerName
		return p
	}
	t.Run("default scheduler pod stays pending when only pool nodes exist", func(t *testing.T) {
		e.create(defaultPod("default-early", trustedImage))
		msg := e.waitFailedScheduling("default-early", bindTimeout)
		if !strings.Contains(msg, "untolerated taint") {
			t.Errorf("FailedScheduling = %q, want it to name the untolerated taints", msg)
		}
		e.assertPending("default-early", time.Second)
	})
	unpooled := e.node("unpooled", "")
	t.Run("default scheduler uses only the unpooled node", func(t *testing.T) {
		// The pod that was pending lands as soon as a node without a pool exists.
		if got := e.waitBound("default-early", bindTimeout); got != unpooled {
			t.Errorf("default-early landed on %s, want %s", got, unpooled)
		}
		for i := range 6 {
			p := defaultPod("default-"+string(rune('a'+i)), untrustedImage)
			e.create(p)
			if got := e.waitBound(p.Name, bindTimeout); got != unpooled {
				t.Errorf("default-scheduler pod %s landed on %s, want only the unpooled node %s", p.Name, got, unpooled)
			}
		}
	})
	t.Run("other taints still apply to Repute pods", func(t *testing.T) {
		// Spread placement would favour the empty gpu node; the dedicated taint must keep it out.
		for i := range 3 {
			p := e.pod("untrusted-"+string(rune('a'+i)), untrustedImage)
			e.create(p)
			if got := e.waitBound(p.Name, bindTimeout); got == gpuNode {
				t.Errorf("pod %s landed on %s despite its untolerated %v taint", p.Name, got, dedicated)
			}
		}
		p := e.pod("untrusted-tolerates-gpu", untrustedImage)
		p.Spec.Tolerations = []v1.Toleration{{Key: "dedicated", Operator: v1.TolerationOpEqual, Value: "gpu", Effect: v1.TaintEffectNoSchedule}}
		p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": gpuNode}
		e.create(p)
		if got := e.waitBound(p.Name, bindTimeout); got != gpuNode {
			t.Errorf("tolerating pod landed on %s, want %s", got, gpuNode)
		}
	})
}
