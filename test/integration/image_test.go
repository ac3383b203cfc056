package integration

import (
	"archive/tar"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/repute-dev/repute/deploy/image"
	"github.com/repute-dev/repute/pkg/version"
	"github.com/repute-dev/repute/test/controlplane"
)

// Repute's own image, used as a user would use it. It is built as make image builds it (one
// platform here: the second costs a full cross-compile and adds nothing the first does not
// test), twice, to the same digest; pushed to a registry on loopback and pulled back; its
// config runs the binary as nonroot with the labels; the binary taken out of its layer reports
// the stamped version; its SBOM is among its referrers and lists the Kubernetes compiled in; the
// real cosign CLI signs and verifies it; and Repute places a pod that runs it as trusted, by
// that signature.
func TestReputesOwnImage(t *testing.T) {
	moduleDir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	const stamped, commit = "v0.0.0-imagetest", "0123456789abcdef0123456789abcdef01234567"
	opts := image.Options{
		ModuleDir: moduleDir, Package: "./cmd/repute-scheduler", Platforms: []string{"linux/amd64"},
		Version: stamped, Revision: commit, Source: "https://github.com/repute-dev/repute",
		Created: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC),
		LDFlags: "-X github.com/repute-dev/repute/pkg/version.version=" + stamped + " -X github.com/repute-dev/repute/pkg/version.revision=" + commit,
	}
	ctx := context.Background()
	first, err := image.Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	again, err := image.Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := first.Index.Digest()
	d2, _ := again.Index.Digest()
	if d1 != d2 {
		t.Fatalf("two builds of one commit gave %s and %s", d1, d2)
	}

	reg, cosign, opsPEM, _ := signingRegistry(t, nil)
	tag, err := name.NewTag(reg + "/repute/repute-scheduler:" + stamped)
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := first.Push(tag)
	if err != nil {
		t.Fatal(err)
	}
	if pushed.DigestStr() != d1.String() {
		t.Fatalf("pushed %s, built %s", pushed, d1)
	}

	// Pulled back by tag, as a node would.
	index, err := remote.Index(tag)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(manifest.Manifests) != 1 || manifest.Manifests[0].Platform == nil || manifest.Manifests[0].Platform.Architecture != "amd64" {
		t.Fatalf("index lists %+v, want the linux/amd64 image", manifest.Manifests)
	}
	if manifest.Annotations["org.opencontainers.image.version"] != stamped {
		t.Errorf("index annotations %v lack the version", manifest.Annotations)
	}
	platformDigest := tag.Context().Digest(manifest.Manifests[0].Digest.String())
	img, err := remote.Image(platformDigest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	labels := cfg.Config.Labels
	if cfg.Config.User != image.User || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != image.Entrypoint ||
		labels["org.opencontainers.image.version"] != stamped || labels["org.opencontainers.image.revision"] != commit ||
		labels["org.opencontainers.image.source"] != opts.Source || cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("config: user %q, entrypoint %q, labels %v, platform %s/%s", cfg.Config.User, cfg.Config.Entrypoint, labels, cfg.OS, cfg.Architecture)
	}

	// The binary out of the layer reports what was stamped.
	bin := extract(t, img, strings.TrimPrefix(image.Entrypoint, "/"))
	raw, err := exec.Command(bin, "--version=raw").Output()
	if err != nil {
		t.Fatalf("%s --version=raw: %v", image.Entrypoint, err)
	}
	var info version.Info
	if err := json.Unmarshal(raw, &info); err != nil || info.Version != stamped || info.Revision != commit {
		t.Errorf("the image's binary reports %s (%v), want version %s revision %s", raw, err, stamped, commit)
	}
	if interp := interpreter(t, bin); interp != "" {
		t.Errorf("the binary is dynamically linked (interpreter %s): the image has no libc", interp)
	}

	// The SBOM, found as a registry client finds it: the image's referrers.
	referrers, err := remote.Referrers(platformDigest)
	if err != nil {
		t.Fatal(err)
	}
	refs, _ := referrers.IndexManifest()
	var sbom []byte
	for _, r := range refs.Manifests {
		if r.ArtifactType == image.SBOMArtifactType {
			artifact, err := remote.Image(tag.Context().Digest(r.Digest.String()))
			if err != nil {
				t.Fatal(err)
			}
			layers, _ := artifact.Layers()
			rc, err := layers[0].Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			sbom, _ = io.ReadAll(rc)
			rc.Close()
		}
	}
	var doc struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct{ Name, VersionInfo string }
	}
	if err := json.Unmarshal(sbom, &doc); err != nil || doc.SPDXVersion != "SPDX-2.3" {
		t.Fatalf("no SPDX SBOM among the referrers %+v (%v)", refs.Manifests, err)
	}
	kube := ""
	for _, p := range doc.Packages {
		if p.Name == "k8s.io/kubernetes" {
			kube = p.VersionInfo
		}
	}
	if kube != info.Kubernetes || kube == "" {
		t.Errorf("the SBOM lists k8s.io/kubernetes at %q, the binary reports %q", kube, info.Kubernetes)
	}

	// Signed as the README says, by make image-sign (the real cosign CLI), with the digest make
	// image wrote; then verified by cosign.
	made := t.TempDir() // stands in for bin/
	if err := os.WriteFile(filepath.Join(made, "image.digest"), []byte(pushed.DigestStr()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sign := exec.CommandContext(ctx, "make", "-s", "-C", moduleDir, "image-sign", "REGISTRY="+reg+"/repute",
		"KEY="+filepath.Join(cosign.Dir, "ops.key"), "BIN="+made, "COSIGN="+cosign.Bin)
	sign.Env = append(os.Environ(), "COSIGN_PASSWORD=repute-test", "COSIGN_YES=true", "HOME="+cosign.Dir)
	if out, err := sign.CombinedOutput(); err != nil {
		t.Fatalf("make image-sign: %v\n%s", err, out)
	}
	if err := cosign.Verify("ops", tag); err != nil {
		t.Fatal(err)
	}

	// And placed trusted by Repute, by that signature.
	e := newEnv(t)
	trusted, untrusted := e.node("trusted", "trusted"), e.node("unknown", "unknown")
	cfgRepute := signedByOps(e.config(), opsPEM)
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfgRepute.Render())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	e.create(e.pod("repute-itself", tag.String()))
	if node := e.waitBound("repute-itself", bindTimeout); node != trusted {
		t.Errorf("Repute's own signed image landed on %s, want the trusted pool (%s is unknown)", node, untrusted)
	}
	if note := e.waitPlacement("repute-itself", bindTimeout); !strings.Contains(note, "signature verified") {
		t.Errorf("explanation %q does not name the verified signature", note)
	}
}

// interpreter is the dynamic loader an ELF binary asks for, or "" for a static binary.
func interpreter(t *testing.T, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, _ := io.ReadAll(p.Open())
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}

// extract writes one file of an image's filesystem to a temporary executable.
func extract(t *testing.T, img v1.Image, path string) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the image: %v", path, err)
		}
		if h.Name == path {
			out := filepath.Join(t.TempDir(), filepath.Base(path))
			f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
			return out
		}
	}
}

// The arm64 image runs: built as make image builds it for linux/arm64, its binary, taken out of
// its layer, is run under qemu's user-mode emulator and reports the stamped version and its
// platform. .ci/run installs qemu-user-static; without it the test says so and skips.
func TestTheArm64ImageRuns(t *testing.T) {
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Skip("qemu-aarch64-static is not installed (apt-get install qemu-user-static; .ci/run does)")
	}
	moduleDir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	const stamped = "v0.0.0-arm64test"
	built, err := image.Build(context.Background(), image.Options{
		ModuleDir: moduleDir, Package: "./cmd/repute-scheduler", Platforms: []string{"linux/arm64"},
		Version: stamped, Revision: "0123456789abcdef0123456789abcdef01234567", Source: "https://github.com/repute-dev/repute",
		Created: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), LDFlags: "-X github.com/repute-dev/repute/pkg/version.version=" + stamped,
	})
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := built.Index.IndexManifest()
	if err != nil || len(manifest.Manifests) != 1 || manifest.Manifests[0].Platform.Architecture != "arm64" {
		t.Fatalf("index %+v (%v), want one linux/arm64 image", manifest, err)
	}
	img, err := built.Index.Image(manifest.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	bin := extract(t, img, strings.TrimPrefix(image.Entrypoint, "/"))
	raw, err := exec.Command(qemu, bin, "--version=raw").Output()
	if err != nil {
		t.Fatalf("qemu-aarch64-static %s --version=raw: %v", image.Entrypoint, err)
	}
	var info version.Info
	if err := json.Unmarshal(raw, &info); err != nil || info.Version != stamped || info.Platform != "linux/arm64" {
		t.Errorf("the arm64 binary reports %s (%v), want version %s on linux/arm64", raw, err, stamped)
	}
}
