package krew

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/test/controlplane"
)

// The plugin works as krew installs it: the manifest names the archive by URL and SHA-256, the
// archive holds the executable kubectl-repute, and the real kubectl, finding it on PATH, runs
// it as "kubectl repute".
func TestKrewPluginInstallsAndRuns(t *testing.T) {
	kubectl := controlplane.CLIForTest(t, "kubectl")
	const version = "v9.8.7-test"
	here := runtime.GOOS + "/" + runtime.GOARCH
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	built, err := Build(ctx, Options{Version: version, URL: "https://example.invalid/releases/" + version, Platforms: []string{here},
		Created: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), ModuleDir: "../..",
		LDFlags: "-X github.com/repute-dev/repute/pkg/version.version=" + version})
	if err != nil {
		t.Fatal(err)
	}
	var manifest plugin
	if err := yaml.UnmarshalStrict(built.Manifest, &manifest); err != nil {
		t.Fatalf("manifest: %v\n%s", err, built.Manifest)
	}
	if manifest.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || manifest.Kind != "Plugin" ||
		manifest.Metadata.Name != PluginName || manifest.Spec.Version != version || manifest.Spec.ShortDescription == "" ||
		len(manifest.Spec.Platforms) != 1 {
		t.Fatalf("manifest: %+v", manifest)
	}
	p := manifest.Spec.Platforms[0]
	name := filepath.Base(p.URI)
	archive, ok := built.Archives[name]
	if !ok || !strings.HasPrefix(p.URI, "https://example.invalid/releases/"+version+"/") {
		t.Fatalf("the manifest names %s, built %d archives", p.URI, len(built.Archives))
	}
	sum := sha256.Sum256(archive)
	if p.SHA256 != hex.EncodeToString(sum[:]) || p.Bin != BinaryName ||
		p.Selector.MatchLabels["os"] != runtime.GOOS || p.Selector.MatchLabels["arch"] != runtime.GOARCH {
		t.Fatalf("platform %+v does not match its archive (sha256 %x)", p, sum)
	}

	// Unpack as krew does, and put the plugin on PATH.
	dir := t.TempDir()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != BinaryName || hdr.Mode&0o111 == 0 {
		t.Fatalf("archive's first entry: %+v, %v; want an executable %s", hdr, err, BinaryName)
	}
	bin, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, BinaryName), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, kubectl, PluginName, "version", "--client")
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), version) {
		t.Fatalf("kubectl %s version --client: %v\n%s", PluginName, err, out)
	}
}
