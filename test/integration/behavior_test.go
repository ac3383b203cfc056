package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/evidence"
)

// startWithFalco runs the scheduler with its Falco endpoint on a free loopback port.
func (e *env) startWithFalco(maxBodyBytes int) *evidence.FalcoEndpoint {
	e.t.Helper()
	falco, err := evidence.NewFalcoEndpoint(e.t.TempDir())
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := e.config()
	cfg.Falco = controlplane.FalcoArgs{BindAddress: falco.BindAddress, TokenFile: falco.TokenFile, MaxBodyBytes: maxBodyBytes}
	e.t.Cleanup(e.startFalcoScheduler(cfg, falco))
	return falco
}

// startFalcoScheduler runs the scheduler with cfg and waits for its Falco endpoint; it returns
// the scheduler's stop.
func (e *env) startFalcoScheduler(cfg controlplane.SchedulerConfig, falco *evidence.FalcoEndpoint) func() {
	e.t.Helper()
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfg.Render())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := falco.WaitUp(e.ctx, bindTimeout); err != nil {
		stop()
		e.t.Fatal(err)
	}
	return stop
}

func (e *env) reportContainer(name string, mutate func(*v1.ContainerStatus)) {
	e.t.Helper()
	if _, err := evidence.ReportContainerStatus(e.ctx, e.client, e.ns, name, mutate); err != nil {
		e.t.Fatal(err)
	}
}

var placedScore = regexp.MustCompile(`score (-?\d+);`)

// scoreOf reads the score out of a placement explanation.
func scoreOf(t *testing.T, note string) int {
	t.Helper()
	m := placedScore.FindStringSubmatch(note)
	if m == nil {
		t.Fatalf("explanation %q has no score", note)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A Critical Falco alert posted for a running pod makes its image untrusted, and the verdict
// names the rule. The endpoint refuses callers without the token, malformed and oversize
// bodies, each with a 4xx that says why; it ignores, with a 200 that says why, what names no pod
// Repute placed (a pod that is gone, falcosidekick's test event).
func TestFalcoAlertLowersTheImage(t *testing.T) {
	e := newEnv(t)
	trusted, untrusted := e.node("trusted", "trusted"), e.node("untrusted", "untrusted")
	falco := e.startWithFalco(64 << 10)

	e.create(e.pod("api-1", trustedImage))
	if got := e.waitBound("api-1", bindTimeout); got != trusted {
		t.Fatalf("api-1 landed on %s before any alert, want %s", got, trusted)
	}
	before := scoreOf(t, e.waitPlacement("api-1", bindTimeout))
	e.reportContainer("api-1", nil)
	containerID := evidence.ContainerIDOf(trustedImage)
	alert := evidence.FalcoAlert(e.ns, "api-1", containerID[:12], "Terminal shell in container", "Critical")

	testEvent, err := os.ReadFile("../../pkg/sources/behavior/testdata/falcosidekick-test-event.json")
	if err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name, token string
		body        []byte
		wantStatus  int
		wantMessage string
	}{
		{"no token", "", alert, http.StatusUnauthorized, "unauthenticated"},
		{"wrong token", "not-the-token-0123456789", alert, http.StatusUnauthorized, "unauthenticated"},
		// What names no pod Repute placed is ignored with a 2xx, so that falcosidekick and Falco
		// do not count Repute as a failing output.
		{"unknown pod", falco.Token, evidence.FalcoAlert(e.ns, "gone-1234", containerID[:12], "Terminal shell in container", "Critical"), http.StatusOK, "ignored/pod_not_found: pod " + e.ns + "/gone-1234 not found"},
		{"falcosidekick's test event", falco.Token, testEvent, http.StatusOK, "ignored/no_pod"},
		{"null rule", falco.Token, bytes.Replace(alert, []byte(`"rule":"Terminal shell in container"`), []byte(`"rule":null`), 1), http.StatusBadRequest, "rejected/malformed: rule"},
		{"oversize body", falco.Token, append(append([]byte("["), alert...), bytes.Repeat([]byte(" "), 70<<10)...), http.StatusRequestEntityTooLarge, "larger than"},
	}
	for _, r := range refusals {
		status, resp, err := falco.Post(e.ctx, r.token, r.body)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		msg := resp.Error
		for _, res := range resp.Results {
			msg += fmt.Sprintf(" %s/%s: %s", res.Result, res.Reason, res.Detail)
		}
		if status != r.wantStatus || resp.Accepted != 0 || !strings.Contains(msg, r.wantMessage) {
			t.Errorf("%s: got %d %+v, want %d with %q and nothing accepted", r.name, status, resp, r.wantStatus, r.wantMessage)
		}
	}
	// None of the refused requests changed the image's standing.
	e.create(e.pod("api-2", trustedImage))
	if got := e.waitBound("api-2", bindTimeout); got != trusted {
		t.Fatalf("api-2 landed on %s after only refused alerts, want %s", got, trusted)
	}

	if status, resp, err := falco.Post(e.ctx, falco.Token, alert); err != nil || status != http.StatusOK || resp.Accepted != 1 {
		t.Fatalf("posting a valid alert: %d %+v %v, want 200 with 1 accepted", status, resp, err)
	}
	e.create(e.pod("api-3", trustedImage))
	if got := e.waitBound("api-3", bindTimeout); got != untrusted {
		t.Errorf("api-3 landed on %s after a Critical alert on its image, want %s", got, untrusted)
	}
	note := e.waitPlacement("api-3", bindTimeout)
	if !strings.Contains(note, `behavior.untrustedPriority Critical: "Terminal shell in container"`) {
		t.Errorf("explanation %q does not name the Falco rule that decided", note)
	}
	if after := scoreOf(t, note); after >= before {
		t.Errorf("score after the alert %d, want it below %d", after, before)
	}
}

// The kubelet's own reports count too: a crash-looping container lowers its image's score, and
// the explanation says so.
func TestCrashLoopLowersTheImage(t *testing.T) {
	e := newEnv(t)
	e.node("trusted", "trusted")
	e.node("unknown", "unknown")
	e.node("untrusted", "untrusted")
	e.startScheduler()
	const worker = "registry.internal/team/worker@sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"

	e.create(e.pod("worker-1", worker))
	e.waitBound("worker-1", bindTimeout)
	before := scoreOf(t, e.waitPlacement("worker-1", bindTimeout))
	e.reportContainer("worker-1", nil)
	e.reportContainer("worker-1", func(cs *v1.ContainerStatus) {
		cs.Ready, cs.RestartCount = false, 3
		cs.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s restarting failed container"}}
		cs.LastTerminationState = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", FinishedAt: metav1.Now()}}
	})

	// The status reaches the scheduler through its informer; a later pod shows the new verdict.
	var note string
	for attempt := 0; attempt < 20 && !strings.Contains(note, "CrashLoopBackOff"); attempt++ {
		time.Sleep(250 * time.Millisecond)
		name := fmt.Sprintf("worker-%d", attempt+2)
		e.create(e.pod(name, worker))
		e.waitBound(name, bindTimeout)
		note = e.waitPlacement(name, bindTimeout)
	}
	if !strings.Contains(note, "CrashLoopBackOff") {
		t.Fatalf("no pod of the crash-looping image was placed with the crash loop in its explanation; last: %q", note)
	}
	if after := scoreOf(t, note); after >= before {
		t.Errorf("score after the crash loop %d, want it below %d (%s)", after, before, note)
	}
}

// Pod status is a tenant's to make bad: one namespace's crash-looping pods take at most
// policy.behavior.maxPodStatusPenaltyPerNamespace (20) points from a shared image, so five of
// them leave a 90-point image trusted; and pods another scheduler placed count for nothing.
func TestPodStatusPenaltiesAreBoundedAndScoped(t *testing.T) {
	e := newEnv(t)
	trusted := e.node("trusted", "trusted", func(s *controlplane.NodeSpec) { s.Pods = 50 })
	e.node("unknown", "unknown")
	e.node("untrusted", "untrusted")
	cfg := e.config()
	cfg.OriginRules = []controlplane.OriginRule{{Pattern: "registry.internal/*", Weight: 40}} // 90: trusted by score
	t.Cleanup(mustStart(t, e, cfg))
	const (
		shared  = "registry.internal/team/shared@sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
		foreign = "registry.internal/team/foreign@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
	)
	crashLoop := func(cs *v1.ContainerStatus) {
		cs.Ready, cs.RestartCount = false, 3
		cs.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	}
	// Another scheduler's pod (its node preset) crash-loops first.
	other := e.pod("other-scheduler", foreign)
	other.Spec.SchedulerName, other.Spec.NodeName = "default-scheduler", trusted
	e.create(other)
	e.reportContainer("other-scheduler", nil)
	e.reportContainer("other-scheduler", crashLoop)
	// Then five of Repute's pods of the shared image.
	for i := range 5 {
		name := fmt.Sprintf("crasher-%d", i)
		e.create(e.pod(name, shared))
		e.waitBound(name, bindTimeout)
		e.reportContainer(name, nil)
		e.reportContainer(name, crashLoop)
	}
	var note, node string
	for attempt := 0; attempt < 40 && !strings.Contains(note, "CrashLoopBackOff"); attempt++ {
		time.Sleep(250 * time.Millisecond)
		name := fmt.Sprintf("after-%d", attempt)
		e.create(e.pod(name, shared))
		node = e.waitBound(name, bindTimeout)
		note = e.waitPlacement(name, bindTimeout)
	}
	if !strings.Contains(note, "CrashLoopBackOff") {
		t.Fatalf("the crash loops never reached the shared image's verdict; last: %q", note)
	}
	if score := scoreOf(t, note); score != 70 || node != trusted {
		t.Errorf("after five crash loops in one namespace the shared image scored %d on %s, want 70 (90 - 20) on the trusted pool: %s", score, node, note)
	}
	// The other scheduler's pod's crash loop came first; it counted for nothing.
	e.create(e.pod("foreign-via-repute", foreign))
	e.waitBound("foreign-via-repute", bindTimeout)
	if note := e.waitPlacement("foreign-via-repute", bindTimeout); strings.Contains(note, "CrashLoopBackOff") {
		t.Errorf("a pod another scheduler placed lowered the image: %s", note)
	}
}
