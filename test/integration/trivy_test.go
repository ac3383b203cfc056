package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	if note := e.waitEvent("vuln", "Placed", bindTimeout); !strings.Contains(note, "dependencies.maxCritical → untrusted") {
		t.Errorf("Placed event %q does not name the rule", note)
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
}
