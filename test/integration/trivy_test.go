package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/repute-dev/repute/pkg/sources/trivy"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/evidence"
)

// Vulnerability reports are read from the cluster: an image with critical vulnerabilities is
// untrusted, and a report that arrives later re-tiers a pending pod.
func TestVulnerabilityReportsDecideTrust(t *testing.T) {
	if err := evidence.InstallTrivyCRDs(context.Background(), cluster.Config); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	reports := dynamic.NewForConfigOrDie(cluster.Config).Resource(trivy.VulnerabilityReports).Namespace(e.ns)
	const (
		vulnDigest  = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		cleanDigest = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
		lateDigest  = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	)
	if _, err := reports.Create(e.ctx, evidence.VulnerabilityReport(e.ns, "replicaset-vuln-app", "registry.internal", "team/vuln", vulnDigest, 2, "CVE-2024-3094"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := reports.Create(e.ctx, evidence.VulnerabilityReport(e.ns, "replicaset-clean-app", "registry.internal", "team/clean", cleanDigest, 0, "CVE-2023-0001"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	untrusted := e.node("untrusted", "untrusted")
	e.node("unknown", "unknown")
	stop, err := controlplane.StartReputeScheduler(e.ctx, e.config().Render())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	// The origin rules make registry.internal trusted; a report with critical vulnerabilities overrides.
	e.create(e.pod("vuln", "registry.internal/team/vuln@"+vulnDigest))
	if got := e.waitBound("vuln", bindTimeout); got != untrusted {
		t.Errorf("image with 2 critical vulnerabilities landed on %s, want %s", got, untrusted)
	}
	if note := e.waitPlacement("vuln", bindTimeout); !strings.Contains(note, "dependencies.maxCritical → untrusted") {
		t.Errorf("explanation %q does not name the rule", note)
	}

	// A forged report in another namespace (which runs no pod of the image), dated in the future
	// and clean, hides nothing: re-evaluated with it, the image stays untrusted.
	other := newEnv(t)
	forged := evidence.VulnerabilityReport(other.ns, "forged", "registry.internal", "team/vuln", vulnDigest, 0, "CVE-2023-0001")
	_ = unstructured.SetNestedField(forged.Object, "2099-01-01T00:00:00Z", "report", "updateTimestamp")
	if _, err := dynamic.NewForConfigOrDie(cluster.Config).Resource(trivy.VulnerabilityReports).Namespace(other.ns).Create(e.ctx, forged, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.create(e.pod("vuln-again", "registry.internal/team/vuln@"+vulnDigest))
	if got := e.waitBound("vuln-again", bindTimeout); got != untrusted {
		t.Errorf("after a forged clean report elsewhere, the vulnerable image landed on %s, want %s", got, untrusted)
	}

	// A clean report leaves the image trusted: with no trusted node, it waits.
	e.create(e.pod("clean", "registry.internal/team/clean@"+cleanDigest))
	e.create(e.pod("late", "registry.internal/team/late@"+lateDigest))
	e.waitFailedScheduling("clean", bindTimeout)
	e.waitFailedScheduling("late", bindTimeout)

	// The report for "late" arrives: the verdict changes, and the pending pod is retried at once.
	if _, err := reports.Create(e.ctx, evidence.VulnerabilityReport(e.ns, "replicaset-late-app", "registry.internal", "team/late", lateDigest, 3, "CVE-2024-3094"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := e.waitBound("late", 20*time.Second); got != untrusted {
		t.Errorf("pod re-tiered by a late report landed on %s, want %s", got, untrusted)
	}
	e.assertPending("clean", time.Second)

	// A ClusterVulnerabilityReport (Trivy Operator's report for cluster-scoped workloads) counts too.
	const clusterDigest = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
	clusterReport := evidence.VulnerabilityReport("", "node-agent-"+e.ns, "registry.internal", "team/agent", clusterDigest, 1, "CVE-2024-3094")
	clusterReport.SetKind("ClusterVulnerabilityReport")
	clusterReports := dynamic.NewForConfigOrDie(cluster.Config).Resource(trivy.ClusterVulnReports)
	if _, err := clusterReports.Create(e.ctx, clusterReport, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = clusterReports.Delete(context.Background(), clusterReport.GetName(), metav1.DeleteOptions{})
	})
	e.create(e.pod("agent", "registry.internal/team/agent@"+clusterDigest))
	if got := e.waitBound("agent", bindTimeout); got != untrusted {
		t.Errorf("image with a critical ClusterVulnerabilityReport landed on %s, want %s", got, untrusted)
	}
	if note := e.waitPlacement("agent", bindTimeout); !strings.Contains(note, "dependencies 1 critical 0 high -20, dependencies maxCritical") {
		t.Errorf("explanation %q does not give the cluster report's finding", note)
	}
}

// A report that does not carry the digest reaches the image through the scanned workload's pods:
// once a ReplicaSet's pod reports the digest its container runs, the report counts for it.
func TestVulnerabilityReportMappedThroughTheWorkload(t *testing.T) {
	if err := evidence.InstallTrivyCRDs(context.Background(), cluster.Config); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	trusted, untrusted := e.node("trusted", "trusted"), e.node("untrusted", "untrusted")
	e.startScheduler()
	const webDigest = "sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
	image := "registry.internal/team/web@" + webDigest

	// The workload: a real ReplicaSet (no controller runs here, so the test makes its pod).
	replicas := int32(1)
	labels := map[string]string{"app": "web"}
	rs, err := e.client.AppsV1().ReplicaSets(e.ns).Create(e.ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-5d8c", Namespace: e.ns},
		Spec: appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: restrictedSpec(v1.PodSpec{SchedulerName: e.schedulerName, Containers: []v1.Container{{Name: "c0", Image: image}}})}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	report := evidence.ForWorkload(evidence.VulnerabilityReport(e.ns, "replicaset-web-5d8c-c0", "registry.internal", "team/web", "", 1, "CVE-2024-3094"), "ReplicaSet", rs.Name, "c0")
	reports := dynamic.NewForConfigOrDie(cluster.Config).Resource(trivy.VulnerabilityReports).Namespace(e.ns)
	if _, err := reports.Create(e.ctx, report, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Until a pod says which digest the workload runs, the report is about no image Repute knows.
	first := e.pod("web-5d8c-a1", image)
	first.Labels = labels
	first.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}
	e.create(first)
	if got := e.waitBound(first.Name, bindTimeout); got != trusted {
		t.Fatalf("%s landed on %s before its digest was known to the report, want %s", first.Name, got, trusted)
	}
	e.reportContainer(first.Name, nil)

	var note string
	for attempt := 0; attempt < 20 && !strings.Contains(note, "dependencies.maxCritical"); attempt++ {
		time.Sleep(250 * time.Millisecond)
		name := fmt.Sprintf("web-5d8c-b%d", attempt)
		e.create(e.pod(name, image))
		if got := e.waitBound(name, bindTimeout); got == untrusted {
			note = e.waitPlacement(name, bindTimeout)
		}
	}
	if !strings.Contains(note, "dependencies.maxCritical → untrusted") {
		t.Fatalf("no later pod of the image was placed as untrusted by the workload's report; last note %q", note)
	}
}
