package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/pkg/sources/trivy"
	"github.com/repute-dev/repute/test/controlplane"
)

// trivyFixtures finds shared/fixtures/trivy-operator (the real CRDs): $REPUTE_SHARED, or the
// shared/ folder beside the checkout, as CI lays it out.
func trivyFixtures(t *testing.T) string {
	t.Helper()
	candidates := []string{filepath.Join("..", "..", "..", "shared")}
	if dir := os.Getenv("REPUTE_SHARED"); dir != "" {
		candidates = append([]string{dir}, candidates...)
	}
	for _, dir := range candidates {
		fixtures := filepath.Join(dir, "fixtures", "trivy-operator")
		if _, err := os.Stat(fixtures); err == nil {
			return fixtures
		}
	}
	t.Fatalf("Trivy Operator CRD fixtures not found in %v: set REPUTE_SHARED to the shared/ folder", candidates)
	return ""
}

// installTrivyCRDs installs Trivy Operator's real CRDs, so reports are validated by their schema.
func installTrivyCRDs(t *testing.T) {
	t.Helper()
	fixtures := trivyFixtures(t)
	client := apiextensions.NewForConfigOrDie(cluster.Config)
	for _, file := range []string{"aquasecurity.github.io_vulnerabilityreports.yaml", "aquasecurity.github.io_clustervulnerabilityreports.yaml"} {
		data, err := os.ReadFile(filepath.Join(fixtures, file))
		if err != nil {
			t.Fatalf("reading the Trivy Operator CRD fixture: %v", err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &crd); err != nil {
			t.Fatal(err)
		}
		if _, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(context.Background(), &crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s not established: %v", crd.Name, err)
		}
	}
}

// vulnerabilityReport is a report as Trivy Operator writes it for one image.
func vulnerabilityReport(ns, name, repository, digest string, critical int64, cve string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "aquasecurity.github.io/v1alpha1", "kind": "VulnerabilityReport",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"report": map[string]any{
			"artifact": map[string]any{"repository": repository, "tag": "v1", "digest": digest},
			"registry": map[string]any{"server": "registry.internal"},
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

// Vulnerability reports are read from the cluster: an image with critical vulnerabilities is
// untrusted, and a report that arrives later re-tiers a pending pod.
func TestVulnerabilityReportsDecideTrust(t *testing.T) {
	installTrivyCRDs(t)
	e := newEnv(t)
	reports := dynamic.NewForConfigOrDie(cluster.Config).Resource(trivy.VulnerabilityReports).Namespace(e.ns)
	const (
		vulnDigest  = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		cleanDigest = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
		lateDigest  = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	)
	if _, err := reports.Create(e.ctx, vulnerabilityReport(e.ns, "replicaset-vuln-app", "team/vuln", vulnDigest, 2, "CVE-2024-3094"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := reports.Create(e.ctx, vulnerabilityReport(e.ns, "replicaset-clean-app", "team/clean", cleanDigest, 0, "CVE-2023-0001"), metav1.CreateOptions{}); err != nil {
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
	if _, err := reports.Create(e.ctx, vulnerabilityReport(e.ns, "replicaset-late-app", "team/late", lateDigest, 3, "CVE-2024-3094"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := e.waitBound("late", 20*time.Second); got != untrusted {
		t.Errorf("pod re-tiered by a late report landed on %s, want %s", got, untrusted)
	}
	e.assertPending("clean", time.Second)
}
