package reputation

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"
)

// dockerHub is how operators spell Docker Hub in rules; go-containerregistry says index.docker.io.
const dockerHub = "docker.io"

// MaxImageRefLen bounds what is parsed, stored and mirrored; real references are far shorter,
// and a pod spec is not a place to trust for sizes. A longer one is refused with an error, and
// its (untrusted) verdict stays in memory: never in the store's keys or a mirror shard.
const MaxImageRefLen = 4096

// ImageRef is a canonical image reference: Docker Hub short names are expanded
// ("nginx" → "docker.io/library/nginx:latest") and the digest, when the reference pins one,
// is the identity evidence is keyed by.
type ImageRef struct {
	// Registry is the registry host (and port), with Docker Hub spelled docker.io.
	Registry string
	// Repository is the path inside the registry, e.g. "library/nginx".
	Repository string
	// Tag is the tag the reference names, if any ("latest" when it names neither tag nor digest).
	Tag string
	// Digest is the content digest the reference pins, e.g. "sha256:…", or empty.
	Digest string
}

// ParseImageRef canonicalizes an image reference as it appears in a pod spec.
func ParseImageRef(s string) (ImageRef, error) {
	if s == "" {
		return ImageRef{}, fmt.Errorf("invalid image reference: empty")
	}
	if len(s) > MaxImageRefLen {
		return ImageRef{}, fmt.Errorf("invalid image reference: %d bytes, longer than %d", len(s), MaxImageRefLen)
	}
	// The reference grammar is ASCII throughout. go-containerregistry lets other bytes through in
	// a registry host, and lowercasing the host then turns each invalid byte into three: a
	// reference of 4096 bytes had a canonical form of 10954 (found by FuzzParseImageRef).
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf || s[i] < ' ' {
			return ImageRef{}, fmt.Errorf("invalid image reference %q: byte %d is not printable ASCII", s, i)
		}
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return ImageRef{}, fmt.Errorf("invalid image reference %q: %w", s, err)
	}
	out := ImageRef{
		Registry:   canonicalRegistry(ref.Context().RegistryStr()),
		Repository: ref.Context().RepositoryStr(),
	}
	switch r := ref.(type) {
	case name.Digest:
		out.Digest = r.DigestStr()
		// "repo:tag@sha256:…" keeps the tag for people; the digest is what is pulled.
		if at := strings.LastIndex(s, "@"); at > 0 {
			if t, err := name.NewTag(s[:at]); err == nil && strings.Contains(lastSegment(s[:at]), ":") {
				out.Tag = t.TagStr()
			}
		}
	case name.Tag:
		out.Tag = r.TagStr()
	}
	// Rules, keys and verdicts see only the canonical form, so it must itself be a reference:
	// one that is not (a name too long once Docker Hub's library/ is added, say) is refused
	// rather than matched in a form nothing pulls.
	again, err := name.ParseReference(out.String())
	if err != nil {
		return ImageRef{}, fmt.Errorf("invalid image reference %q: its canonical form %q is not a reference: %w", s, out.String(), err)
	}
	if canonicalRegistry(again.Context().RegistryStr()) != out.Registry || again.Context().RepositoryStr() != out.Repository {
		return ImageRef{}, fmt.Errorf("invalid image reference %q: its canonical form %q names another repository", s, out.String())
	}
	return out, nil
}

// canonicalRegistry spells a registry host one way, as the container runtime reaches it: hosts
// are case-insensitive, 443 is HTTPS's default port, and Docker Hub has several names. Without
// this, QUAY.IO/evil/miner or quay.io:443/evil/miner would escape a rule for quay.io/*.
func canonicalRegistry(host string) string {
	host = strings.TrimSuffix(strings.ToLower(host), ":443")
	switch host {
	case name.DefaultRegistry, "registry-1.docker.io":
		return dockerHub
	}
	return host
}

func lastSegment(s string) string {
	if i := strings.LastIndex(s, "/"); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Name is "registry/repository", the string origin rules are matched against.
func (r ImageRef) Name() string { return r.Registry + "/" + r.Repository }

// Pinned reports whether the reference names content by digest rather than by a movable tag.
func (r ImageRef) Pinned() bool { return r.Digest != "" }

// Key identifies the image for evidence and verdicts: the digest-pinned name when the digest is
// known, otherwise the tagged name (a later resolution step replaces tags with digests).
func (r ImageRef) Key() string {
	if r.Digest != "" {
		return r.Name() + "@" + r.Digest
	}
	return r.Name() + ":" + r.Tag
}

// String is the full canonical reference, tag included when there is one.
func (r ImageRef) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// DigestOfImageID reads the manifest digest from a container status imageID, as runtimes report
// it: "docker.io/library/nginx@sha256:…", "docker-pullable://nginx@sha256:…". A bare
// "sha256:…" is an image configuration ID, not a manifest digest, and yields "".
func DigestOfImageID(imageID string) string {
	_, digest, ok := strings.Cut(imageID, "@")
	hexPart, sha := strings.CutPrefix(digest, "sha256:")
	if !ok || !sha || len(hexPart) != 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return ""
	}
	return digest
}
