package image

import (
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The SPDX 2.3 JSON document, as much of it as a static Go binary needs: the binary's main
// module and every module linked into it, with versions, checksums and package URLs.
type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	Name             string            `json:"name"`
	SPDXID           string            `json:"SPDXID"`
	VersionInfo      string            `json:"versionInfo,omitempty"`
	DownloadLocation string            `json:"downloadLocation"`
	FilesAnalyzed    bool              `json:"filesAnalyzed"`
	Checksums        []spdxChecksum    `json:"checksums,omitempty"`
	ExternalRefs     []spdxExternalRef `json:"externalRefs,omitempty"`
	PrimaryPurpose   string            `json:"primaryPackagePurpose,omitempty"`
}

type spdxChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type spdxExternalRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// SPDX writes the SBOM of a binary from the module list Go linked into it. The document's
// namespace names the platform image it describes, so it is unique and reproducible.
func SPDX(info *debug.BuildInfo, opts Options, platform string, image v1.Hash) ([]byte, error) {
	doc := spdxDocument{
		SPDXVersion: "SPDX-2.3", DataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT",
		Name:              fmt.Sprintf("repute-scheduler %s %s", opts.Version, platform),
		DocumentNamespace: "https://github.com/repute-dev/repute/spdx/" + image.Hex,
		CreationInfo: spdxCreationInfo{Created: opts.Created.UTC().Format(time.RFC3339),
			Creators: []string{"Tool: repute deploy/image", "Organization: Repute"}},
	}
	image0 := spdxPackage{Name: "repute-scheduler", SPDXID: "SPDXRef-Image", VersionInfo: opts.Version, DownloadLocation: "NOASSERTION",
		PrimaryPurpose: "CONTAINER", Checksums: []spdxChecksum{{Algorithm: "SHA256", ChecksumValue: image.Hex}},
		ExternalRefs: []spdxExternalRef{{Category: "PACKAGE-MANAGER", Type: "purl",
			Locator: fmt.Sprintf("pkg:oci/repute-scheduler@sha256%%3A%s?arch=%s", image.Hex, strings.SplitN(platform, "/", 2)[1])}}}
	doc.Packages = append(doc.Packages, image0)
	doc.Relationships = append(doc.Relationships, spdxRelationship{Element: "SPDXRef-DOCUMENT", Type: "DESCRIBES", Related: image0.SPDXID})
	add := func(m *debug.Module, id string) {
		version := m.Version
		if m.Replace != nil {
			m = m.Replace
			if m.Version != "" {
				version = m.Version
			}
		}
		p := spdxPackage{Name: m.Path, SPDXID: id, VersionInfo: version, DownloadLocation: "NOASSERTION", PrimaryPurpose: "LIBRARY",
			ExternalRefs: []spdxExternalRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: "pkg:golang/" + m.Path + "@" + version}}}
		if h, ok := strings.CutPrefix(m.Sum, "h1:"); ok {
			// go.sum's h1: is a SHA-256 over the module's file hashes; SPDX has no name for it,
			// so it rides as a comment-free external reference rather than a checksum.
			p.ExternalRefs = append(p.ExternalRefs, spdxExternalRef{Category: "OTHER", Type: "go-module-h1", Locator: h})
		}
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, spdxRelationship{Element: image0.SPDXID, Type: "CONTAINS", Related: id})
	}
	main := info.Main
	if main.Version == "" || main.Version == "(devel)" {
		main.Version = opts.Version
	}
	add(&main, "SPDXRef-Main")
	add(&debug.Module{Path: "stdlib", Version: info.GoVersion}, "SPDXRef-Go")
	for i, dep := range info.Deps {
		add(dep, fmt.Sprintf("SPDXRef-Module-%d", i))
	}
	return json.MarshalIndent(doc, "", "  ")
}
