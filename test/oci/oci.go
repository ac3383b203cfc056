// Package oci gives tests and the demo a real OCI registry on loopback and the real cosign CLI.
package oci

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// StartRegistry serves go-containerregistry's OCI registry, with the referrers API, on a
// loopback port. It returns "127.0.0.1:<port>".
func StartRegistry() (host string, stop func(), err error) {
	return StartRegistryWith(nil)
}

// StartRegistryWith is StartRegistry with the handler wrapped, e.g. to count requests.
func StartRegistryWith(wrap func(http.Handler) http.Handler) (host string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	handler := registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		handler = wrap(handler)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	return l.Addr().String(), func() { srv.Close() }, nil
}

// PushRandomImage pushes a small random image under a tag and returns its digest reference.
func PushRandomImage(tagged string) (name.Digest, error) {
	tag, err := name.NewTag(tagged)
	if err != nil {
		return name.Digest{}, err
	}
	img, err := random.Image(512, 1)
	if err != nil {
		return name.Digest{}, err
	}
	if err := remote.Write(tag, img); err != nil {
		return name.Digest{}, fmt.Errorf("pushing %s: %w", tagged, err)
	}
	h, err := img.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return tag.Context().Digest(h.String()), nil
}

// CopyLegacySignature copies from's "sha256-<hex>.sig" signature onto to: the bytes stay valid,
// the signed digest is from's. It is what a replay attack looks like.
func CopyLegacySignature(from, to name.Digest) error {
	sigTag := func(d name.Digest) name.Tag {
		return d.Context().Tag("sha256-" + strings.TrimPrefix(d.DigestStr(), "sha256:") + ".sig")
	}
	img, err := remote.Image(sigTag(from))
	if err != nil {
		return err
	}
	return remote.Write(sigTag(to), img)
}

// MirrorImage copies an image and its legacy signature to another repository, as a registry
// mirror or `crane copy` would: same digest, same signature bytes, another name.
func MirrorImage(from name.Digest, toRepo string) (name.Digest, error) {
	img, err := remote.Image(from)
	if err != nil {
		return name.Digest{}, err
	}
	repo, err := name.NewRepository(toRepo)
	if err != nil {
		return name.Digest{}, err
	}
	if err := remote.Write(repo.Tag("v1"), img); err != nil {
		return name.Digest{}, err
	}
	to := repo.Digest(from.DigestStr())
	return to, CopyLegacySignature(from, to)
}

// Cosign drives the real cosign CLI, offline: no transparency log, no signing config.
type Cosign struct {
	Bin string
	// Dir holds key pairs and stands in for $HOME.
	Dir string
}

// FindCosign locates the cosign CLI: $COSIGN (make test sets it to bin/tools/cosign), then PATH.
func FindCosign() (string, error) {
	if bin := os.Getenv("COSIGN"); bin != "" {
		return bin, nil
	}
	if bin, err := exec.LookPath("cosign"); err == nil {
		return bin, nil
	}
	return "", fmt.Errorf("cosign CLI not found: run `make tools` or set $COSIGN")
}

func (c *Cosign) run(args ...string) error {
	cmd := exec.Command(c.Bin, args...)
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=repute-test", "COSIGN_YES=true", "HOME="+c.Dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// GenerateKeyPair makes <Dir>/<keyName>.key and .pub and returns the public key's PEM.
func (c *Cosign) GenerateKeyPair(keyName string) (string, error) {
	if err := c.run("generate-key-pair", "--output-key-prefix", filepath.Join(c.Dir, keyName)); err != nil {
		return "", err
	}
	pem, err := os.ReadFile(filepath.Join(c.Dir, keyName+".pub"))
	return string(pem), err
}

// Sign signs ref with a key made by GenerateKeyPair: as a sigstore bundle referrer, or with
// legacy in the "sha256-<hex>.sig" format.
func (c *Cosign) Sign(keyName string, ref name.Digest, legacy bool) error {
	return c.SignAll(keyName, []name.Digest{ref}, legacy)
}

// SignAll is Sign for many images in one run of cosign, which signs each in turn.
func (c *Cosign) SignAll(keyName string, refs []name.Digest, legacy bool) error {
	args := []string{"sign", "--key", filepath.Join(c.Dir, keyName+".key"), "--tlog-upload=false", "--use-signing-config=false"}
	if legacy {
		args = append(args, "--new-bundle-format=false")
	}
	for _, ref := range refs {
		args = append(args, ref.String())
	}
	return c.run(args...)
}

// Verify checks ref's signature by the key pair's public key as cosign verify does, offline.
func (c *Cosign) Verify(keyName string, ref name.Reference) error {
	return c.run("verify", "--key", filepath.Join(c.Dir, keyName+".pub"), "--insecure-ignore-tlog=true", "--output", "text", ref.String())
}

// Attest attaches a key-signed in-toto attestation of the given predicate type.
func (c *Cosign) Attest(keyName string, ref name.Digest, predicateType, predicateJSON string) error {
	pred := filepath.Join(c.Dir, "predicate.json")
	if err := os.WriteFile(pred, []byte(predicateJSON), 0o600); err != nil {
		return err
	}
	return c.run("attest", "--key", filepath.Join(c.Dir, keyName+".key"), "--tlog-upload=false", "--use-signing-config=false",
		"--type", predicateType, "--predicate", pred, ref.String())
}

// CosignForTest returns the cosign CLI, or skips the test without it. Where
// REPUTE_REQUIRE_COSIGN=1 (make test, and so CI, build it and set this) a missing CLI fails the
// test instead, so a signature test can never pass by skipping there.
func CosignForTest(tb testing.TB) string {
	tb.Helper()
	bin, err := FindCosign()
	if err != nil {
		if os.Getenv("REPUTE_REQUIRE_COSIGN") == "1" {
			tb.Fatal(err)
		}
		tb.Skip(err)
	}
	return bin
}
