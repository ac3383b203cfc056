// Package image builds the repute-scheduler container image without a container engine: a
// static binary per platform on an empty base, run as a nonroot user, labelled with its source,
// version and revision, each platform's image with an SPDX SBOM attached as an OCI referrer.
// Two builds of one commit give the same digests: every timestamp is the commit's, the binary is
// built with -trimpath and no build ID, and layers are written in a fixed order.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// Entrypoint is where the binary lives in the image.
	Entrypoint = "/usr/bin/repute-scheduler"
	// User is the image's user: nonroot, as distroless names it.
	User = "65532:65532"
	// SBOMArtifactType marks the referrer that carries a platform image's SBOM.
	SBOMArtifactType = "application/spdx+json"
)

// Options say what to build.
type Options struct {
	// ModuleDir is the module's root, where go build runs.
	ModuleDir string
	// Package is the main package to build, e.g. ./cmd/repute-scheduler.
	Package string
	// Platforms are os/arch pairs, e.g. linux/amd64, linux/arm64.
	Platforms []string
	// Version and Revision go into the labels (and, through LDFlags, into the binary).
	Version, Revision string
	// Source is the repository URL for the source label.
	Source string
	// Created is the commit's time: every timestamp in the image is this one.
	Created time.Time
	// LDFlags are passed to go build, beside -s -w -buildid=.
	LDFlags string
}

// Built is the image index and, per platform image, its SBOM referrer.
type Built struct {
	Index v1.ImageIndex
	SBOMs []v1.Image
}

// Build compiles the binary for every platform and assembles the index.
func Build(ctx context.Context, opts Options) (*Built, error) {
	if opts.Created.IsZero() {
		return nil, fmt.Errorf("image: Created must be set (the commit's time), or the build is not reproducible")
	}
	built := &Built{}
	index := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, platform := range opts.Platforms {
		osName, arch, ok := strings.Cut(platform, "/")
		if !ok {
			return nil, fmt.Errorf("platform %q: want os/arch", platform)
		}
		binary, err := Compile(ctx, opts, osName, arch)
		if err != nil {
			return nil, err
		}
		img, err := platformImage(opts, osName, arch, binary)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", platform, err)
		}
		desc, err := partial.Descriptor(img)
		if err != nil {
			return nil, err
		}
		desc.Platform = &v1.Platform{OS: osName, Architecture: arch}
		sbom, err := sbomReferrer(opts, binary, platform, desc)
		if err != nil {
			return nil, fmt.Errorf("%s SBOM: %w", platform, err)
		}
		index = mutate.AppendManifests(index, mutate.IndexAddendum{Add: img, Descriptor: *desc})
		built.SBOMs = append(built.SBOMs, sbom)
	}
	index = mutate.Annotations(index, labels(opts)).(v1.ImageIndex)
	built.Index = index
	return built, nil
}

// Compile builds opts.Package as a static binary for one platform, reproducibly (-trimpath, no
// build ID, no VCS stamp), and returns its bytes.
func Compile(ctx context.Context, opts Options, osName, arch string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "repute-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "repute-scheduler")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", strings.TrimSpace("-s -w -buildid= "+opts.LDFlags), "-o", out, opts.Package)
	cmd.Dir = opts.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+osName, "GOARCH="+arch, "GOFLAGS=-buildvcs=false")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build for %s/%s: %v\n%s", osName, arch, err, msg)
	}
	return os.ReadFile(out)
}

// labels are the OCI annotations the index carries and the labels each image's config carries.
func labels(opts Options) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "repute-scheduler",
		"org.opencontainers.image.description": "Kubernetes secondary scheduler that isolates workloads by image reputation",
		"org.opencontainers.image.source":      opts.Source,
		"org.opencontainers.image.version":     opts.Version,
		"org.opencontainers.image.revision":    opts.Revision,
		"org.opencontainers.image.created":     opts.Created.UTC().Format(time.RFC3339),
	}
}

// platformImage is one platform's image: one layer with the binary and the nonroot user's
// passwd and group entries, on nothing.
func platformImage(opts Options, osName, arch string, binary []byte) (v1.Image, error) {
	files := []tarFile{
		{name: "etc/", dir: true},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "home/", dir: true},
		{name: "home/nonroot/", dir: true, mode: 0o700, uid: 65532},
		{name: "usr/", dir: true},
		{name: "usr/bin/", dir: true},
		{name: strings.TrimPrefix(Entrypoint, "/"), mode: 0o755, data: binary},
	}
	layerTar, err := tarOf(files, opts.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = osName, arch
	cfg.Config.User = User
	cfg.Config.Entrypoint = []string{Entrypoint}
	cfg.Config.WorkingDir = "/home/nonroot"
	cfg.Config.Labels = labels(opts)
	cfg.History = []v1.History{{Created: v1.Time{Time: opts.Created}, CreatedBy: "repute deploy/image: " + path.Base(opts.Package) + " " + opts.Version}}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, v1.Time{Time: opts.Created})
}

type tarFile struct {
	name string
	dir  bool
	mode int64
	uid  int
	data []byte
}

// tarOf writes files in the given order with one fixed time and owner, so the layer's digest
// depends only on the content.
func tarOf(files []tarFile, at time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: at, Format: tar.FormatPAX, Size: int64(len(f.data)), Typeflag: tar.TypeReg}
		if f.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// sbomReferrer is an OCI artifact whose one layer is the binary's SPDX SBOM and whose subject
// is the platform image, so registries list it among the image's referrers.
func sbomReferrer(opts Options, binary []byte, platform string, subject *v1.Descriptor) (v1.Image, error) {
	info, err := buildinfo.Read(bytes.NewReader(binary))
	if err != nil {
		return nil, err
	}
	doc, err := SPDX(info, opts, platform, subject.Digest)
	if err != nil {
		return nil, err
	}
	layer := static.NewLayer(doc, SBOMArtifactType)
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	// The config's media type is the artifact type (OCI 1.1's rule when a manifest names none),
	// which registries report in the referrers list.
	img = mutate.ConfigMediaType(img, SBOMArtifactType)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: SBOMArtifactType})
	if err != nil {
		return nil, err
	}
	img = mutate.Annotations(img, map[string]string{"org.opencontainers.image.created": opts.Created.UTC().Format(time.RFC3339)}).(v1.Image)
	return mutate.Subject(img, v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}).(v1.Image), nil
}

// WriteLayout writes the index and the SBOM referrers into an OCI image layout directory.
func (b *Built) WriteLayout(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(b.Index); err != nil {
		return err
	}
	for _, sbom := range b.SBOMs {
		if err := p.AppendImage(sbom); err != nil {
			return err
		}
	}
	return nil
}

// Push writes the index under a tag and each SBOM beside it (by digest, found through the
// referrers API), and returns the index's digest reference.
func (b *Built) Push(tag name.Tag, options ...remote.Option) (name.Digest, error) {
	if err := remote.WriteIndex(tag, b.Index, options...); err != nil {
		return name.Digest{}, err
	}
	for _, sbom := range b.SBOMs {
		d, err := sbom.Digest()
		if err != nil {
			return name.Digest{}, err
		}
		if err := remote.Write(tag.Context().Digest(d.String()), sbom, options...); err != nil {
			return name.Digest{}, err
		}
	}
	d, err := b.Index.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return tag.Context().Digest(d.String()), nil
}
