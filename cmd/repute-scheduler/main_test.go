package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/repute-dev/repute/pkg/version"
)

// The binary built as make builds it, with the version and commit stamped in, reports them on
// --version (one line) and --version=raw (JSON), not kube-scheduler's own version alone.
func TestVersionFlagReportsTheStampedVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "repute-scheduler")
	const stamped, commit = "v9.8.7-test", "0123456789abcdef0123456789abcdef01234567"
	ldflags := "-X github.com/repute-dev/repute/pkg/version.version=" + stamped + " -X github.com/repute-dev/repute/pkg/version.revision=" + commit
	if out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	raw, err := exec.Command(bin, "--version=raw").Output()
	if err != nil {
		t.Fatalf("--version=raw: %v", err)
	}
	var info version.Info
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatalf("--version=raw printed %q: %v", raw, err)
	}
	if info.Version != stamped || info.Revision != commit || !strings.HasPrefix(info.Kubernetes, "v1.") {
		t.Errorf("--version=raw = %+v, want version %s, revision %s and the kube-scheduler compiled in", info, stamped, commit)
	}
	line, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("--version: %v", err)
	}
	if want := "repute-scheduler " + info.String() + "\n"; string(line) != want {
		t.Errorf("--version = %q, want %q", line, want)
	}
}
