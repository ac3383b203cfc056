package evidence

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The embedded CRDs are the shared fixtures, unchanged; where the shared folder is absent (a
// clone on its own) there is nothing to compare against.
func TestEmbeddedCRDsMatchTheSharedFixtures(t *testing.T) {
	dir := os.Getenv("REPUTE_SHARED")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared")
	}
	fixtures := filepath.Join(dir, "fixtures", "trivy-operator")
	if _, err := os.Stat(fixtures); err != nil {
		t.Skipf("no shared fixtures at %s", fixtures)
	}
	for _, file := range TrivyCRDFiles {
		want, err := os.ReadFile(filepath.Join(fixtures, file))
		if err != nil {
			t.Fatal(err)
		}
		got, err := CRD(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("embedded %s differs from the shared fixture", file)
		}
	}
}
