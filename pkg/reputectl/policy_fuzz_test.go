package reputectl

import (
	"bytes"
	"testing"

	rpolicy "github.com/repute-dev/repute/pkg/policy"
)

// FuzzReadPolicy: any file either decodes into a policy that compiles or fails with an error;
// nothing panics.
func FuzzReadPolicy(f *testing.F) {
	f.Add([]byte(proposedPolicy))
	f.Add([]byte("apiVersion: repute.dev/v1alpha1\nkind: ReputationPolicy\nspec: {behavior: {halfLife: 1h, priorityWeights: {Critical: -60}}}\n"))
	f.Add([]byte(`{"apiVersion":"repute.dev/v1alpha1","kind":"ReputationPolicy","spec":{"thresholds":{"trusted":10,"untrusted":90}}}`))
	f.Add([]byte("spec: [1, 2]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rp, err := readPolicyFile("-", bytes.NewReader(data))
		if err != nil {
			return
		}
		c, errs := rpolicy.Compile(&rp.Spec)
		if len(errs) == 0 && c.Policy.Version() == "" {
			t.Fatal("a compiled policy has no version")
		}
	})
}
