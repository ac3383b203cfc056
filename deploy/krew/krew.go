// Package krew packages reputectl as the kubectl plugin "repute" for krew, kubectl's plugin
// manager: one archive per platform holding the static binary kubectl-repute, and the plugin
// manifest that names each archive's URL and SHA-256. make krew writes both; a release uploads
// the archives where the URL points and submits the manifest.
package krew

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/deploy/image"
)

// PluginName is what users type after kubectl; BinaryName is the executable kubectl looks for.
const (
	PluginName = "repute"
	BinaryName = "kubectl-" + PluginName
)

// Options say what to build and where the archives will be downloaded from.
type Options struct {
	// Version is the release, a semantic version with a leading v (krew requires it).
	Version string
	// URL is where the archives are published; each is URL/<archive name>.
	URL string
	// Platforms are os/arch pairs, e.g. linux/amd64.
	Platforms []string
	// Created dates every file in the archives, so that the same commit gives the same bytes.
	Created time.Time
	// LDFlags stamp the version into the binary; ModuleDir is the module's root.
	LDFlags, ModuleDir string
}

// Built is the manifest and the archives it names, by file name.
type Built struct {
	Manifest []byte
	Archives map[string][]byte
}

// Build compiles reputectl for each platform, archives it, and writes the manifest.
func Build(ctx context.Context, opts Options) (*Built, error) {
	if !strings.HasPrefix(opts.Version, "v") || opts.URL == "" || len(opts.Platforms) == 0 {
		return nil, fmt.Errorf("krew: a version starting with v, a URL and platforms are required")
	}
	built := &Built{Archives: map[string][]byte{}}
	var platforms []platform
	for _, p := range opts.Platforms {
		osName, arch, ok := strings.Cut(p, "/")
		if !ok || osName == "windows" {
			return nil, fmt.Errorf("krew: platform %q: want os/arch, not windows", p)
		}
		binary, err := image.Compile(ctx, image.Options{Package: "./cmd/reputectl", LDFlags: opts.LDFlags, ModuleDir: opts.ModuleDir}, osName, arch)
		if err != nil {
			return nil, err
		}
		archive, err := tarGz(BinaryName, binary, opts.Created)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s_%s_%s_%s.tar.gz", BinaryName, opts.Version, osName, arch)
		built.Archives[name] = archive
		sum := sha256.Sum256(archive)
		platforms = append(platforms, platform{
			Selector: selector{MatchLabels: map[string]string{"os": osName, "arch": arch}},
			URI:      strings.TrimSuffix(opts.URL, "/") + "/" + name,
			SHA256:   hex.EncodeToString(sum[:]),
			Bin:      BinaryName,
			Files:    []file{{From: BinaryName, To: "."}},
		})
	}
	manifest, err := yaml.Marshal(plugin{
		APIVersion: "krew.googlecontainertools.github.com/v1alpha2",
		Kind:       "Plugin",
		Metadata:   metadata{Name: PluginName},
		Spec: spec{
			Version:          opts.Version,
			Homepage:         "https://github.com/repute-dev/repute",
			ShortDescription: "Ask Repute what it placed where, when and why",
			Description: "Reads the Repute scheduler's audit API: image verdicts with every piece of evidence,\n" +
				"their history, the placement decisions, and the trust policy in force. `kubectl repute\n" +
				"policy simulate -f` shows what a policy change would re-tier before it is applied.\n",
			Caveats: "It reads the audit API with a client certificate or a token issued for the audience\n" +
				"repute-audit, never your apiserver token: see `kubectl repute --help`.\n",
			Platforms: platforms,
		},
	})
	if err != nil {
		return nil, err
	}
	built.Manifest = manifest
	return built, nil
}

// tarGz is a gzipped tar of one executable, dated, owned by nobody in particular, so that its
// bytes depend on the binary alone.
func tarGz(name string, binary []byte, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	gz.ModTime = created
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(binary)), ModTime: created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// The manifest, as krew's index.krew.googlecontainertools.github.com/v1alpha2 Plugin has it.
type plugin struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   metadata `json:"metadata"`
	Spec       spec     `json:"spec"`
}

type metadata struct {
	Name string `json:"name"`
}

type spec struct {
	Version          string     `json:"version"`
	Homepage         string     `json:"homepage"`
	ShortDescription string     `json:"shortDescription"`
	Description      string     `json:"description"`
	Caveats          string     `json:"caveats"`
	Platforms        []platform `json:"platforms"`
}

type platform struct {
	Selector selector `json:"selector"`
	URI      string   `json:"uri"`
	SHA256   string   `json:"sha256"`
	Bin      string   `json:"bin"`
	Files    []file   `json:"files"`
}

type selector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

type file struct {
	From string `json:"from"`
	To   string `json:"to"`
}
