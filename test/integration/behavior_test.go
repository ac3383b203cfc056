package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/repute-dev/repute/pkg/sources/behavior"
	"github.com/repute-dev/repute/test/controlplane"
)

// falcoEndpoint is the scheduler's Falco alert endpoint as a test reaches it.
type falcoEndpoint struct {
	url, token string
}

// withFalcoEndpoint configures the scheduler to take Falco alerts on a free loopback port,
// authenticated by a bearer token read from a file, as from a mounted Secret.
func (e *env) withFalcoEndpoint(maxBodyBytes int) (falcoEndpoint, string) {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	token := fmt.Sprintf("falco-%s-%d-0123456789abcdef", e.ns, time.Now().UnixNano())
	tokenFile := filepath.Join(e.t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	args := fmt.Sprintf("      falco:\n        bindAddress: %q\n        tokenFile: %q\n        maxBodyBytes: %d", addr, tokenFile, maxBodyBytes)
	return falcoEndpoint{url: "http://" + addr + behavior.AlertsPath, token: token}, args
}

// post sends an alert body; token "" sends none.
func (f falcoEndpoint) post(t *testing.T, token string, body []byte) (int, behavior.IngestResponse) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("posting to the Falco endpoint: %v", err)
	}
	defer resp.Body.Close()
	var out behavior.IngestResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("Falco endpoint answered %d with a body that is not JSON: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// waitUp waits until the endpoint answers at all (the scheduler starts it while it starts).
func (f falcoEndpoint) waitUp(t *testing.T) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, bindTimeout, true, func(context.Context) (bool, error) {
		resp, err := http.Post(f.url, "application/json", strings.NewReader("{}"))
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return true, nil
	})
	if err != nil {
		t.Fatalf("Falco endpoint %s never came up: %v", f.url, err)
	}
}

// falcoAlert is an alert as Falco's json_output writes it, for one container of one pod.
func falcoAlert(ns, pod, containerID, rule, priority string) []byte {
	b, err := json.Marshal(map[string]any{
		"hostname": "worker-1",
		"output":   fmt.Sprintf("%s: %s %s (container_id=%s k8s_ns=%s k8s_pod_name=%s)", time.Now().UTC().Format("15:04:05.000000000"), priority, rule, containerID, ns, pod),
		"priority": priority,
		"rule":     rule,
		"source":   "syscall",
		"tags":     []string{"container", "mitre_execution", "shell"},
		"time":     time.Now().UTC().Format(time.RFC3339Nano),
		"output_fields": map[string]any{
			"container.id": containerID, "container.name": "c0", "evt.type": "execve",
			"k8s.ns.name": ns, "k8s.pod.name": pod, "proc.cmdline": "sh", "user.name": "root",
		},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// containerIDOf makes up the runtime's 64-hex container ID for a test's one container of an image.
func containerIDOf(image string) string {
	_, digest, _ := strings.Cut(image, "@sha256:")
	return strings.Repeat(digest[:8], 8)
}

// setContainerStatus reports the pod's container as the kubelet would once it runs: the image's
// resolved digest in imageID and the runtime's container ID; mutate changes it from there.
func (e *env) setContainerStatus(name, image string, mutate func(*v1.ContainerStatus)) {
	e.t.Helper()
	p, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	repo, digest, _ := strings.Cut(image, "@")
	cs := v1.ContainerStatus{
		Name: "c0", Image: image, ImageID: repo + "@" + digest, Ready: true,
		ContainerID: "containerd://" + containerIDOf(image),
		State:       v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.Now()}},
	}
	if mutate != nil {
		mutate(&cs)
	}
	p.Status.Phase = v1.PodRunning
	p.Status.ContainerStatuses = []v1.ContainerStatus{cs}
	if _, err := e.client.CoreV1().Pods(e.ns).UpdateStatus(e.ctx, p, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

var placedScore = regexp.MustCompile(`score (-?\d+);`)

// scoreOf reads the score out of a Placed event's note.
func scoreOf(t *testing.T, note string) int {
	t.Helper()
	m := placedScore.FindStringSubmatch(note)
	if m == nil {
		t.Fatalf("Placed event %q has no score", note)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A Critical Falco alert posted for a running pod makes its image untrusted, and the verdict
// names the rule; the endpoint refuses callers without the token, unknown pods and oversize
// bodies, each with a 4xx that says why.
func TestFalcoAlertLowersTheImage(t *testing.T) {
	e := newEnv(t)
	trusted, untrusted := e.node("trusted", "trusted"), e.node("untrusted", "untrusted")
	falco, args := e.withFalcoEndpoint(64 << 10)
	cfg := e.config()
	cfg.ExtraArgs = args
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfg.Render())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	falco.waitUp(t)

	e.create(e.pod("api-1", trustedImage))
	if got := e.waitBound("api-1", bindTimeout); got != trusted {
		t.Fatalf("api-1 landed on %s before any alert, want %s", got, trusted)
	}
	before := scoreOf(t, e.waitEvent("api-1", "Placed", bindTimeout))
	e.setContainerStatus("api-1", trustedImage, nil)
	containerID := containerIDOf(trustedImage) // Falco reports the first 12 characters
	alert := falcoAlert(e.ns, "api-1", containerID[:12], "Terminal shell in container", "Critical")

	refusals := []struct {
		name, token string
		body        []byte
		wantStatus  int
		wantMessage string
	}{
		{"no token", "", alert, http.StatusUnauthorized, "unauthenticated"},
		{"wrong token", "not-the-token-0123456789", alert, http.StatusUnauthorized, "unauthenticated"},
		{"unknown pod", falco.token, falcoAlert(e.ns, "gone-1234", containerID[:12], "Terminal shell in container", "Critical"), http.StatusUnprocessableEntity, "pod " + e.ns + "/gone-1234 not found"},
		{"null rule", falco.token, bytes.Replace(alert, []byte(`"rule":"Terminal shell in container"`), []byte(`"rule":null`), 1), http.StatusBadRequest, "rule"},
		{"oversize body", falco.token, append(append([]byte("["), alert...), bytes.Repeat([]byte(" "), 70<<10)...), http.StatusRequestEntityTooLarge, "larger than"},
	}
	for _, r := range refusals {
		status, resp := falco.post(t, r.token, r.body)
		msg := resp.Error
		for _, rej := range resp.Rejected {
			msg += " " + rej.Error
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

	if status, resp := falco.post(t, falco.token, alert); status != http.StatusOK || resp.Accepted != 1 {
		t.Fatalf("posting a valid alert: %d %+v, want 200 with 1 accepted", status, resp)
	}
	e.create(e.pod("api-3", trustedImage))
	if got := e.waitBound("api-3", bindTimeout); got != untrusted {
		t.Errorf("api-3 landed on %s after a Critical alert on its image, want %s", got, untrusted)
	}
	note := e.waitEvent("api-3", "Placed", bindTimeout)
	if !strings.Contains(note, `behavior.untrustedPriority Critical: "Terminal shell in container"`) {
		t.Errorf("Placed event %q does not name the Falco rule that decided", note)
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
	before := scoreOf(t, e.waitEvent("worker-1", "Placed", bindTimeout))
	e.setContainerStatus("worker-1", worker, nil)
	e.setContainerStatus("worker-1", worker, func(cs *v1.ContainerStatus) {
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
		note = e.waitEvent(name, "Placed", bindTimeout)
	}
	if !strings.Contains(note, "CrashLoopBackOff") {
		t.Fatalf("no pod of the crash-looping image was placed with the crash loop in its explanation; last: %q", note)
	}
	if after := scoreOf(t, note); after >= before {
		t.Errorf("score after the crash loop %d, want it below %d (%s)", after, before, note)
	}
}
