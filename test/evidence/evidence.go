// Package evidence produces evidence the way the real tools do, for tests and the demo: Trivy
// Operator's CRDs and vulnerability reports, and Falco alerts posted to the scheduler's endpoint.
package evidence

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/repute-dev/repute/pkg/sources/behavior"
	"github.com/repute-dev/repute/test/controlplane"
)

// TrivyCRDFiles are Trivy Operator's report CRDs, as it installs them.
var TrivyCRDFiles = []string{"aquasecurity.github.io_vulnerabilityreports.yaml", "aquasecurity.github.io_clustervulnerabilityreports.yaml"}

//go:embed crds/*.yaml
var crds embed.FS

// InstallTrivyCRDs installs Trivy Operator's real CRDs and waits until they are served, so the
// reports created afterwards are validated by their schema.
func InstallTrivyCRDs(ctx context.Context, cfg *rest.Config) error {
	var docs [][]byte
	for _, file := range TrivyCRDFiles {
		data, err := crds.ReadFile("crds/" + file)
		if err != nil {
			return err
		}
		docs = append(docs, data)
	}
	return controlplane.InstallCRDs(ctx, cfg, docs...)
}

// CRD returns the embedded copy of one CRD file.
func CRD(file string) ([]byte, error) { return crds.ReadFile("crds/" + file) }

// VulnerabilityReport is a report as Trivy Operator writes it for one image, with `critical`
// critical vulnerabilities of which the first is cve in xz-utils.
func VulnerabilityReport(ns, name, registry, repository, digest string, critical int64, cve string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "aquasecurity.github.io/v1alpha1", "kind": "VulnerabilityReport",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"report": map[string]any{
			"artifact": map[string]any{"repository": repository, "tag": "v1", "digest": digest},
			"registry": map[string]any{"server": registry},
			"os":       map[string]any{"family": "debian", "name": "12.5"},
			"scanner":  map[string]any{"name": "Trivy", "vendor": "Aqua Security", "version": "0.50.1"},
			"summary": map[string]any{"criticalCount": critical, "highCount": int64(0), "mediumCount": int64(0),
				"lowCount": int64(0), "unknownCount": int64(0)},
			"updateTimestamp": time.Now().UTC().Format(time.RFC3339),
			"vulnerabilities": []any{map[string]any{
				"vulnerabilityID": cve, "resource": "xz-utils", "severity": "CRITICAL", "title": "backdoor in xz",
				"installedVersion": "5.6.0", "fixedVersion": "5.6.1",
				"publishedDate": "2024-03-29T00:00:00Z", "lastModifiedDate": "2024-03-29T00:00:00Z",
			}},
		},
	}}
}

// ForWorkload makes a report the kind Trivy Operator writes when it does not record the image
// digest: it names the scanned workload's container only in its labels.
func ForWorkload(report *unstructured.Unstructured, kind, name, container string) *unstructured.Unstructured {
	unstructured.RemoveNestedField(report.Object, "report", "artifact", "digest")
	report.SetLabels(map[string]string{
		"trivy-operator.resource.kind": kind, "trivy-operator.resource.name": name,
		"trivy-operator.resource.namespace": report.GetNamespace(), "trivy-operator.container.name": container,
	})
	return report
}

// FalcoEndpoint is the scheduler's Falco alert endpoint on a free loopback port, authenticated
// by a bearer token read from a file, as from a mounted Secret.
type FalcoEndpoint struct {
	BindAddress, TokenFile string
	URL, Token             string
}

// NewFalcoEndpoint picks a free loopback port and writes a fresh token into dir.
func NewFalcoEndpoint(dir string) (*FalcoEndpoint, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	f := &FalcoEndpoint{BindAddress: addr, TokenFile: filepath.Join(dir, "falco-token"),
		URL: "http://" + addr + behavior.AlertsPath, Token: hex.EncodeToString(secret)}
	if err := os.WriteFile(f.TokenFile, []byte(f.Token+"\n"), 0o600); err != nil {
		return nil, err
	}
	return f, nil
}

// Post sends an alert body with the given bearer token ("" sends none) and decodes the answer.
func (f *FalcoEndpoint) Post(ctx context.Context, token string, body []byte) (int, behavior.IngestResponse, error) {
	var out behavior.IngestResponse
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL, bytes.NewReader(body))
	if err != nil {
		return 0, out, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, out, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return resp.StatusCode, out, fmt.Errorf("answer %d is not JSON: %w", resp.StatusCode, err)
	}
	return resp.StatusCode, out, nil
}

// WaitUp waits until the endpoint answers at all: the scheduler opens it while it starts.
func (f *FalcoEndpoint) WaitUp(ctx context.Context, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		status, _, err := f.Post(ctx, "", []byte("{}"))
		return err == nil && status == http.StatusUnauthorized, nil
	})
	if err != nil {
		return fmt.Errorf("Falco endpoint %s never came up: %w", f.URL, err)
	}
	return nil
}

// FalcoAlert is an alert as Falco's json_output writes it, for one container of one pod.
func FalcoAlert(ns, pod, containerID, rule, priority string) []byte {
	now := time.Now().UTC()
	b, err := json.Marshal(map[string]any{
		"hostname": "worker-1",
		"output": fmt.Sprintf("%s: %s %s (user=root process=sh container_id=%s k8s_ns=%s k8s_pod_name=%s)",
			now.Format("15:04:05.000000000"), priority, rule, containerID, ns, pod),
		"priority": priority,
		"rule":     rule,
		"source":   "syscall",
		"tags":     []string{"container", "mitre_execution", "shell"},
		"time":     now.Format(time.RFC3339Nano),
		"output_fields": map[string]any{
			"container.id": containerID, "container.name": "main", "evt.type": "execve", "evt.time": now.UnixNano(),
			"k8s.ns.name": ns, "k8s.pod.name": pod, "proc.cmdline": "sh", "user.name": "root", "user.uid": 0,
		},
	})
	if err != nil {
		panic(err) // only strings and numbers
	}
	return b
}

// ContainerIDOf makes up the runtime's 64-hex container ID for a pod's container of an image
// pinned by digest; Falco reports its first 12 characters.
func ContainerIDOf(image string) string {
	_, digest, _ := strings.Cut(image, "@sha256:")
	return strings.Repeat((digest + "00000000")[:8], 8)
}

// ReportContainerStatus writes the pod's status as the kubelet would once its one container
// runs: the image's resolved digest in imageID and the runtime's container ID; mutate changes it
// from there (a crash loop, an OOM kill). There is no kubelet in the embedded control plane.
func ReportContainerStatus(ctx context.Context, client kubernetes.Interface, ns, name string, mutate func(*v1.ContainerStatus)) (*v1.Pod, error) {
	p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	c := p.Spec.Containers[0]
	repo, digest, pinned := strings.Cut(c.Image, "@")
	if !pinned {
		return nil, fmt.Errorf("pod %s/%s: image %s is not pinned by digest; give the status its digest yourself", ns, name, c.Image)
	}
	cs := v1.ContainerStatus{
		Name: c.Name, Image: c.Image, ImageID: repo + "@" + digest, Ready: true,
		ContainerID: "containerd://" + ContainerIDOf(c.Image),
		State:       v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.Now()}},
	}
	if mutate != nil {
		mutate(&cs)
	}
	p.Status.Phase = v1.PodRunning
	p.Status.ContainerStatuses = []v1.ContainerStatus{cs}
	ready := v1.ConditionFalse
	if cs.Ready {
		ready = v1.ConditionTrue
	}
	p.Status.Conditions = []v1.PodCondition{
		{Type: v1.PodScheduled, Status: v1.ConditionTrue},
		{Type: v1.ContainersReady, Status: ready, LastTransitionTime: metav1.Now()},
		{Type: v1.PodReady, Status: ready, LastTransitionTime: metav1.Now()},
	}
	return client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
}
