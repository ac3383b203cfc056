package integration

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/pkg/mover"
	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/oci"
	"github.com/repute-dev/repute/test/podsecurity"
)

// waitTier waits for a pod's tier label to read tier.
func (e *env) waitTier(name, tier string, timeout time.Duration) {
	e.t.Helper()
	var got string
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := e.client.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil // looked at again: the shared client is rate limited under load
		}
		got = p.Labels[placement.TierLabel]
		return got == tier, nil
	})
	if err != nil {
		e.t.Fatalf("pod %s is labelled %s=%q, want %q within %s", name, placement.TierLabel, got, tier, timeout)
	}
}

// Outside namespaces that enforce the admission policy, anyone with the pod verbs can change
// what a placed pod runs. Repute sees it at once: a pod that swapped its image for one never
// assessed, or that got an ephemeral container, is re-tiered by the image it now runs (label
// and Misplaced event), well before the mover's one-minute resync.
func TestImageSwapsAfterPlacementAreRetiered(t *testing.T) {
	e := newEnv(t)
	trusted := e.node("trusted", "trusted")
	e.node("untrusted", "untrusted")
	e.startScheduler()
	for _, name := range []string{"swapped", "debugged"} {
		e.create(e.pod(name, trustedImage))
		if got := e.waitBound(name, bindTimeout); got != trusted {
			t.Fatalf("%s on %s, want %s", name, got, trusted)
		}
		e.waitTier(name, "trusted", bindTimeout)
	}

	swapped, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, "swapped", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	swapped.Spec.Containers[0].Image = "quay.io/evil/swapped-in:v1" // never assessed
	if _, err := e.client.CoreV1().Pods(e.ns).Update(e.ctx, swapped, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	debugged, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, "debugged", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	debugged.Spec.EphemeralContainers = []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{
		Name: "debugger", Image: "quay.io/evil/debugger:v1", TerminationMessagePolicy: v1.TerminationMessageReadFile}}}
	if _, err := e.client.CoreV1().Pods(e.ns).UpdateEphemeralContainers(e.ctx, "debugged", debugged, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	const withinResync = 20 * time.Second // the mover's resync is a minute
	for _, name := range []string{"swapped", "debugged"} {
		e.waitTier(name, "untrusted", withinResync)
		if note := e.waitEventSaying(name, mover.ReasonMisplaced, "its tier is now untrusted", withinResync); !strings.Contains(note, "quay.io/evil/") {
			t.Errorf("%s: Misplaced event %q does not name the image", name, note)
		}
	}
}

// A ReputationPolicy deleted and created again under the same name is a new policy: it is put
// in force from its first generation, and its status never claims what the old object earned.
func TestRecreatedReputationPolicyIsFollowed(t *testing.T) {
	e := newEnv(t)
	e.node("unknown", "unknown")
	untrusted := e.node("untrusted", "untrusted")
	name := e.prefix + "policy"
	e.createPolicy(name, `origin: {rules: [{pattern: "*", tier: untrusted}]}`)
	updateSpec(t, e, name, `origin: {rules: [{pattern: "*", tier: untrusted, weight: -5}]}`) // generation 2
	cfg := e.config()
	cfg.PolicyName = name
	t.Cleanup(mustStart(t, e, cfg))
	waitPolicyStatus(t, e, name, 2, metav1.ConditionTrue)
	e.create(e.pod("before", trustedImage))
	if got := e.waitBound("before", bindTimeout); got != untrusted {
		t.Fatalf("before on %s, want %s under the first policy", got, untrusted)
	}

	if err := policies(t).Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	recreated := e.createPolicy(name, `origin: {rules: [{pattern: "*", tier: unknown}]}`) // generation 1
	status := waitPolicyStatus(t, e, name, recreated.GetGeneration(), metav1.ConditionTrue)
	if status.ObservedGeneration != 1 {
		t.Errorf("status claims generation %d of a new object at generation 1", status.ObservedGeneration)
	}
	e.create(e.pod("after", trustedImage))
	if got := e.waitBound("after", bindTimeout); got != e.prefix+"unknown" {
		t.Errorf("after on %s, want the unknown pool under the recreated policy", got)
	}
}

// A verdict remembered by the store counts as decided only under the policy it was decided
// under: restarted with another policy (here a changed origin weight) while the registry is
// slow, the scheduler places the signed image as unknown, not trusted, until it is evaluated
// again; its explanation says why.
func TestRememberedVerdictsUnderAnotherPolicyAreAtMostUnknown(t *testing.T) {
	r := placeSignedThenStop(t, filepath.Join(t.TempDir(), "repute.db"))
	e, image, poolOf, cfg := r.env, r.image, r.poolOf, r.cfg
	cfg.OriginRules[0].Weight = 15 // another policy version; the image would still be trusted
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfg.Render())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	e.create(e.pod("after", image.String()))
	if got := poolOf[e.waitBound("after", bindTimeout)]; got != "unknown" {
		t.Errorf("after the restart under another policy the signed image landed in pool %q, want unknown until evaluated again", got)
	}
	if note := e.waitPlacement("after", bindTimeout); !strings.Contains(note, "remembered verdict") {
		t.Errorf("explanation %q does not say the remembered verdict was capped", note)
	}
}

// A tag that moves is followed: a running pod whose kubelet pulled another digest than the one
// verified is re-tiered by the digest that runs, and a new pod of the tag is placed by what the
// tag points at now, once evaluation.tagTTL has passed. The tag really moves, on the loopback
// registry: a signed image first, an unsigned one pushed over it.
func TestMovedTagsAreFollowed(t *testing.T) {
	reg, cosign, pem, _ := signingRegistry(t, nil)
	signed, err := oci.PushRandomImage(reg + "/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := cosign.Sign("ops", signed, false); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	trusted, unknown := e.node("trusted", "trusted"), e.node("unknown", "unknown")
	cfg := signedByOps(e.config(), pem)
	cfg.ExtraArgs = "      evaluation:\n        tagTTL: 1s"
	t.Cleanup(mustStart(t, e, cfg))
	tagged := reg + "/team/app:v1"
	e.create(e.pod("first", tagged))
	if got := e.waitBound("first", bindTimeout); got != trusted {
		t.Fatalf("the signed tag landed on %s, want %s", got, trusted)
	}

	moved, err := oci.PushRandomImage(tagged) // the tag now names an unsigned image
	if err != nil {
		t.Fatal(err)
	}
	// The kubelet pulls the moved tag (a restart, a new node): the pod runs what was never verified.
	first, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, "first", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first.Status.Phase = v1.PodRunning
	first.Status.ContainerStatuses = []v1.ContainerStatus{{Name: first.Spec.Containers[0].Name, Image: tagged, ImageID: moved.String(), Ready: true,
		State: v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.Now()}}}}
	if _, err := e.client.CoreV1().Pods(e.ns).UpdateStatus(e.ctx, first, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitTier("first", "unknown", 20*time.Second)
	e.waitEventSaying("first", mover.ReasonMisplaced, "its tier is now unknown", 20*time.Second)

	// New pods of the tag: once its verdict has been resolved again, they go to the unknown pool.
	err = wait.PollUntilContextTimeout(e.ctx, time.Second, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		name := fmt.Sprintf("later-%d", time.Now().UnixNano())
		e.create(e.pod(name, tagged))
		return e.waitBound(name, bindTimeout) == unknown, nil
	})
	if err != nil {
		t.Errorf("new pods of the moved tag were still placed by its old verdict: %v", err)
	}
}

// A registry outage (here it answers 503) during a re-verification moves nothing inside
// evaluation.maxStaleness: the last verified signature stands, new pods are still placed
// trusted, the running pod keeps its label and pool. Past the window new pods are placed as
// unknown (never untrusted) and the running pod is still not moved: an outage is not
// evidence. When the registry answers again, the image is trusted again.
func TestRegistryOutageMovesNothingWithinTheWindow(t *testing.T) {
	var down atomic.Bool
	image, pem, cosign := signedImageBehind(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if down.Load() {
				http.Error(w, "registry down", http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	e := newEnv(t)
	trusted, unknown := e.node("trusted", "trusted", func(s *controlplane.NodeSpec) { s.Pods = 50 }), e.node("unknown", "unknown")
	cfg := e.config()
	cfg.OriginRules = []controlplane.OriginRule{{Pattern: "127.0.0.1:*/*", Weight: 10}}
	cfg.RequireSignature = true
	cfg.SigningKeys = []controlplane.SigningKey{{Name: "ops", PEM: pem, Repositories: []string{"127.0.0.1:*/*"}}}
	name := e.prefix + "policy"
	e.createPolicy(name, policySpecOf(t, cfg))
	cfg.PolicyName = name
	const window = 4 * time.Second
	cfg.ExtraArgs = "      evaluation:\n        retryAfter: 1s\n        maxRetryAfter: 1s\n        registryBackoff: 100ms\n        maxRegistryBackoff: 100ms\n        maxStaleness: 4s"
	t.Cleanup(mustStart(t, e, cfg))
	e.create(e.pod("running", image.String()))
	if got := e.waitBound("running", bindTimeout); got != trusted {
		t.Fatalf("running on %s, want %s", got, trusted)
	}
	e.waitTier("running", "trusted", bindTimeout)

	down.Store(true)
	// A key added (none withdrawn) makes every image be verified again, now against a registry
	// that is down.
	extraPEM, err := cosign.GenerateKeyPair("extra")
	if err != nil {
		t.Fatal(err)
	}
	cfg.SigningKeys = append(cfg.SigningKeys, controlplane.SigningKey{Name: "extra", PEM: extraPEM})
	updateSpec(t, e, name, policySpecOf(t, cfg))
	outage := time.Now()
	e.create(e.pod("during", image.String()))
	if got := e.waitBound("during", bindTimeout); got != trusted && time.Since(outage) < window {
		t.Errorf("within the window a new pod landed on %s, want %s by the last verified signature", got, trusted)
	}

	// Past the window: new pods are unknown, never untrusted; the running pod stays put.
	err = wait.PollUntilContextTimeout(e.ctx, time.Second, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p := fmt.Sprintf("past-%d", time.Now().UnixNano())
		e.create(e.pod(p, image.String()))
		return e.waitBound(p, bindTimeout) == unknown, nil
	})
	if err != nil {
		t.Fatalf("past the window, new pods were never placed as unknown: %v", err)
	}
	if p, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, "running", metav1.GetOptions{}); err != nil || p.Labels[placement.TierLabel] != "trusted" || p.Spec.NodeName != trusted {
		t.Errorf("the outage moved or relabelled the running pod: %v %v", p.Labels, err)
	}
	if evs := e.eventsOf(mover.ReasonMisplaced); len(evs) != 0 {
		t.Errorf("the outage reported %d pods as misplaced", len(evs))
	}

	down.Store(false)
	err = wait.PollUntilContextTimeout(e.ctx, time.Second, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p := fmt.Sprintf("back-%d", time.Now().UnixNano())
		e.create(e.pod(p, image.String()))
		return e.waitBound(p, bindTimeout) == trusted, nil
	})
	if err != nil {
		t.Errorf("once the registry answered again, the image was not trusted again: %v", err)
	}
}

// policySpecOf is the ReputationPolicy spec, as YAML, that the scheduler configuration renders.
func policySpecOf(t *testing.T, cfg controlplane.SchedulerConfig) string {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(cfg.RenderPolicy("x")), &obj); err != nil {
		t.Fatal(err)
	}
	spec, err := yaml.Marshal(obj["spec"])
	if err != nil {
		t.Fatal(err)
	}
	return string(spec)
}

// The tier decides the Pod Security Standard a pod must meet: an untrusted pod that asks for the
// host's network and a host path stays Pending, and FailedScheduling names each
// violation; the same pod, restricted, is placed.
func TestUntrustedPodsMustMeetTheirPodSecurityLevel(t *testing.T) {
	e := newEnv(t)
	untrusted := e.node("untrusted", "untrusted")
	e.startScheduler()
	asking := e.pod("asks-for-the-host", untrustedImage)
	podsecurity.Restricted(&asking.Spec)
	asking.Spec.HostNetwork = true
	asking.Spec.Volumes = []v1.Volume{{Name: "root", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/"}}}}
	if _, err := e.client.CoreV1().Pods(e.ns).Create(e.ctx, asking, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	note := e.waitFailedScheduling("asks-for-the-host", bindTimeout)
	for _, want := range []string{`Pod Security "restricted"`, "host namespaces", `restricted volume type "hostPath"`} {
		if !strings.Contains(note, want) {
			t.Errorf("FailedScheduling %q does not say %q", note, want)
		}
	}
	e.assertPending("asks-for-the-host", time.Second)
	e.create(e.pod("restricted", untrustedImage))
	if got := e.waitBound("restricted", bindTimeout); got != untrusted {
		t.Errorf("the restricted untrusted pod landed on %s, want %s", got, untrusted)
	}
}
