package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// promtool finds Prometheus's promtool (Debian's prometheus package); where
// REPUTE_REQUIRE_PROMTOOL=1 (make test, and so CI, install it) a missing one fails the test.
func promtool(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("PROMTOOL"); bin != "" {
		return bin
	}
	bin, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("REPUTE_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("promtool not found: apt-get install prometheus")
		}
		t.Skip("promtool not found (apt-get install prometheus)")
	}
	return bin
}

// The PrometheusRule's spec is a rule file promtool accepts, and its alerts behave as
// monitoring/rules_test.yaml says: each fires on its fault and none on a healthy pair.
func TestAlertRulesPassPromtool(t *testing.T) {
	bin := promtool(t)
	manifest, err := Files.ReadFile("monitoring/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Kind string         `json:"kind"`
		Spec map[string]any `json:"spec"`
	}
	if err := yaml.Unmarshal(manifest, &rule); err != nil || rule.Kind != "PrometheusRule" {
		t.Fatalf("monitoring/prometheusrule.yaml: kind %q, %v", rule.Kind, err)
	}
	spec, err := yaml.Marshal(rule.Spec)
	if err != nil {
		t.Fatal(err)
	}
	unitTests, err := Files.ReadFile("monitoring/rules_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rules, tests := filepath.Join(dir, "rules.yaml"), filepath.Join(dir, "rules_test.yaml")
	if err := os.WriteFile(rules, spec, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tests, unitTests, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", rules}, {"test", "rules", tests}} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args[:2], err, out)
		}
	}
}
