// Package layout checks the direction of the module's imports, as the README's architecture
// section draws it: cmd → plugins → pkg → reputation, with test/ outside the product.
package layout

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/repute-dev/repute/"

// deps lists every package the given packages import, directly or not.
func deps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, pkgs...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", pkgs, err)
	}
	return strings.Fields(string(out))
}

func TestImportDirection(t *testing.T) {
	tests := []struct {
		pkgs      string
		forbidden []string
	}{
		{"../../cmd/...", []string{module + "test/"}},
		{"../../plugins/...", []string{module + "test/", module + "cmd/"}},
		{"../../pkg/...", []string{module + "test/", module + "cmd/", module + "plugins/"}},
		{"../../reputation/...", []string{module + "test/", module + "cmd/", module + "plugins/", module + "pkg/",
			"k8s.io/kubernetes/", "k8s.io/client-go/", "k8s.io/kube-scheduler/"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkgs, func(t *testing.T) {
			for _, dep := range deps(t, tt.pkgs) {
				for _, f := range tt.forbidden {
					if strings.HasPrefix(dep, f) {
						t.Errorf("%s imports %s", tt.pkgs, dep)
					}
				}
			}
		})
	}
}
