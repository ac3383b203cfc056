package reputectl

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	rpolicy "github.com/repute-dev/repute/pkg/policy"
	"github.com/repute-dev/repute/reputation/store"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const proposedPolicy = `apiVersion: repute.dev/v1alpha1
kind: ReputationPolicy
metadata:
  name: default
spec:
  baseScore: 60
  origin:
    rules:
    - {pattern: "registry.internal/*", weight: 10}
`

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name, content, want string
		wantErr             bool
	}{
		{"valid", proposedPolicy, "valid; policy version p-", false},
		{"misspelled field", strings.Replace(proposedPolicy, "baseScore", "baseScroe", 1), `unknown field "spec.baseScroe"`, true},
		{"out of range", strings.Replace(proposedPolicy, "baseScore: 60", "baseScore: 160", 1), "spec.baseScore: Invalid value: 160: must be between 0 and 100", true},
		{"bad key", proposedPolicy + "  signature:\n    keys: [{name: ops, publicKey: \"-----BEGIN PUBLIC KEY-----\\nxx\\n-----END PUBLIC KEY-----\"}]\n", "spec.signature.keys[0].publicKey", true},
		{"another kind", "apiVersion: v1\nkind: ConfigMap\n", "want apiVersion repute.dev/v1alpha1 kind ReputationPolicy", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := run(t, "policy", "validate", "-f", writeFile(t, "p.yaml", tt.content))
			got := out
			if err != nil {
				got = err.Error()
			}
			if (err != nil) != tt.wantErr || !strings.Contains(got, tt.want) {
				t.Errorf("validate: %q (err %v), want %q", got, err, tt.want)
			}
		})
	}
}

// diff compares the proposed file, defaults filled in, with the policy the store says is in force.
func TestPolicyDiffAgainstThePolicyInForce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repute.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, errs := rpolicy.Compile(&v1alpha1.PolicySpec{})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	inForce, err := specYAML(c)
	if err != nil {
		t.Fatal(err)
	}
	asJSON, err := yaml.YAMLToJSON(inForce)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AppendPolicy(context.Background(), store.PolicyRecord{Version: c.Policy.Version(), Source: "plugin args", Policy: json.RawMessage(asJSON)}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	// They differ: exit status 1, as kubectl diff.
	out, _, err := run(t, "--store", path, "policy", "diff", "-f", writeFile(t, "p.yaml", proposedPolicy))
	if !errors.Is(err, ErrDiffers) || ExitCode(err) != 1 {
		t.Fatalf("diff of differing policies: %v (exit %d), want ErrDiffers, exit 1", err, ExitCode(err))
	}
	for _, want := range []string{"--- in force " + c.Policy.Version(), "-baseScore: 50", "+baseScore: 60", "+  - pattern: registry.internal/*", "+    weight: 10"} {
		if !strings.Contains(out, want) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
	// Defaults are filled in on both sides: restating one is no difference.
	same := "apiVersion: repute.dev/v1alpha1\nkind: ReputationPolicy\nmetadata: {name: default}\nspec: {baseScore: 50}\n"
	out, _, err = run(t, "--store", path, "policy", "diff", "-f", writeFile(t, "same.yaml", same))
	if err != nil || ExitCode(err) != 0 || !strings.Contains(out, "no difference") {
		t.Errorf("diff of the policy in force: %q, %v", out, err)
	}
}
