package signature

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/repute-dev/repute/test/oci"
)

// cosignEnv is a loopback registry plus the real cosign CLI and two key pairs made by it.
type cosignEnv struct {
	t        *testing.T
	cosign   *oci.Cosign
	registry string
	trusted  *Key
}

// newCosignEnv needs the cosign CLI. CI builds it from the module proxy (make test) and sets
// REPUTE_REQUIRE_COSIGN=1, so there the test cannot skip.
func newCosignEnv(t *testing.T) *cosignEnv {
	e := &cosignEnv{t: t, cosign: &oci.Cosign{Bin: oci.CosignForTest(t), Dir: t.TempDir()}}
	host, stop, err := oci.StartRegistry()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	e.registry = host
	pem, err := e.cosign.GenerateKeyPair("trusted")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cosign.GenerateKeyPair("stranger"); err != nil {
		t.Fatal(err)
	}
	if e.trusted, err = ParsePublicKey("trusted", []byte(pem)); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *cosignEnv) push(repo string) name.Digest {
	e.t.Helper()
	d, err := oci.PushRandomImage(e.registry + "/" + repo + ":v1")
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *cosignEnv) sign(key string, ref name.Digest, legacy bool) {
	e.t.Helper()
	if err := e.cosign.Sign(key, ref, legacy); err != nil {
		e.t.Fatal(err)
	}
}

func (e *cosignEnv) verifier() *Verifier {
	v, err := NewVerifier()
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func TestVerifyCosignSignatures(t *testing.T) {
	e := newCosignEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	bundleSigned := e.push("team/bundle")
	e.sign("trusted", bundleSigned, false)
	legacySigned := e.push("team/legacy")
	e.sign("trusted", legacySigned, true)
	unsigned := e.push("team/unsigned")
	stranger := e.push("team/stranger")
	e.sign("stranger", stranger, false)
	strangerLegacy := e.push("team/stranger-legacy")
	e.sign("stranger", strangerLegacy, true)

	attested := e.push("team/attested")
	if err := e.cosign.Attest("trusted", attested, "slsaprovenance", `{"buildType":"test"}`); err != nil {
		t.Fatal(err)
	}

	// A legacy signature of one image copied onto another: valid bytes, wrong subject.
	replayedLegacy := e.push("team/replayed-legacy")
	if err := oci.CopyLegacySignature(legacySigned, replayedLegacy); err != nil {
		t.Fatal(err)
	}
	// A bundle of one image re-attached to another as its referrer.
	replayedBundle := e.push("team/replayed-bundle")
	reattachBundle(t, bundleSigned, replayedBundle, nil)
	// A bundle whose signed statement was edited after signing (subject pointed at this image).
	tampered := e.push("team/tampered")
	reattachBundle(t, bundleSigned, tampered, func(env map[string]any) {
		payload, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
		edited := strings.Replace(string(payload), strings.TrimPrefix(bundleSigned.DigestStr(), "sha256:"), strings.TrimPrefix(tampered.DigestStr(), "sha256:"), 1)
		env["payload"] = base64.StdEncoding.EncodeToString([]byte(edited))
	})

	// The same content and signature, mirrored to another repository.
	mirrored, err := oci.MirrorImage(legacySigned, e.registry+"/mirror/legacy")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		ref        name.Reference
		want       State
		wantFormat string
		wantDetail string
	}{
		{"bundle signed by a trusted key", bundleSigned, Verified, "bundle", "trusted key trusted"},
		{"legacy signed by a trusted key", legacySigned, Verified, "legacy", "trusted key trusted"},
		{"resolved from a tag", mustTag(t, e.registry+"/team/bundle:v1"), Verified, "bundle", ""},
		{"unsigned", unsigned, Absent, "", "no cosign signature"},
		{"bundle by an unknown key", stranger, Unverified, "", "no trusted key"},
		{"legacy by an unknown key", strangerLegacy, Unverified, "", "no trusted key"},
		{"attestation of another predicate type is not a signature", attested, Unverified, "", "attestation of https://slsa.dev/provenance"},
		{"legacy signature replayed from another image", replayedLegacy, Invalid, "", "replayed"},
		{"bundle replayed from another image", replayedBundle, Invalid, "", "replayed"},
		{"bundle edited after signing", tampered, Invalid, "", "tampered"},
		{"legacy signature mirrored to another repository", mirrored, Verified, "legacy", "trusted key trusted"},
	}
	v := e.verifier()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := v.Verify(ctx, tt.ref, []*Key{e.trusted})
			if got.State != tt.want || got.Format != tt.wantFormat || !strings.Contains(got.Detail, tt.wantDetail) {
				t.Errorf("Verify = %+v, want state %s format %q detail containing %q", got, tt.want, tt.wantFormat, tt.wantDetail)
			}
			if got.Digest == "" {
				t.Error("no digest in the result: everything is keyed by digest")
			}
		})
	}

	// With the identity check, a signature counts only in the repository it names: the mirrored
	// copy is unverified, not invalid (nothing was forged); bundles name no repository.
	identity := e.verifier()
	identity.SetCheckIdentity(true)
	for _, tt := range []struct {
		name       string
		ref        name.Reference
		want       State
		wantDetail string
	}{
		{"signed repository", legacySigned, Verified, "legacy signature by trusted key trusted"},
		{"mirror", mirrored, Unverified, "is for " + e.registry + "/team/legacy, not this repository (identity check)"},
		{"bundle", bundleSigned, Verified, "bundle signature"},
	} {
		t.Run("identity check: "+tt.name, func(t *testing.T) {
			if got := identity.Verify(ctx, tt.ref, []*Key{e.trusted}); got.State != tt.want || !strings.Contains(got.Detail, tt.wantDetail) {
				t.Errorf("Verify = %+v, want %s with %q", got, tt.want, tt.wantDetail)
			}
		})
	}

	t.Run("registry unreachable", func(t *testing.T) {
		ref, _ := name.NewDigest("127.0.0.1:1/team/app@" + bundleSigned.DigestStr())
		if got := v.Verify(ctx, ref, []*Key{e.trusted}); got.State != Error {
			t.Errorf("Verify = %+v, want error", got)
		}
	})
}

// On a registry without the OCI 1.1 referrers API, cosign v3 stores its bundle under the
// fallback tag "sha256-<hex>" (an index), and the bundle verifies from there.
func TestVerifyBundleFromTheReferrersFallbackTag(t *testing.T) {
	e := newCosignEnv(t)
	host, stop, err := oci.StartRegistryWith(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/referrers/") {
				http.NotFound(w, r) // as registries that predate OCI 1.1 answer
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	e.registry = host
	signed := e.push("team/old-registry")
	e.sign("trusted", signed, false)
	fallback := signed.Context().Tag(strings.Replace(signed.DigestStr(), ":", "-", 1))
	if _, err := remote.Head(fallback); err != nil {
		t.Fatalf("cosign left no fallback tag %s: %v", fallback, err)
	}
	if got := e.verifier().Verify(context.Background(), signed, []*Key{e.trusted}); got.State != Verified || got.Format != "bundle" {
		t.Errorf("Verify = %+v, want a verified bundle", got)
	}
}

func mustTag(t *testing.T, s string) name.Tag {
	tag, err := name.NewTag(s)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// reattachBundle copies from's bundle referrer onto to (its subject set to to), optionally
// editing the DSSE envelope on the way.
func reattachBundle(t *testing.T, from, to name.Digest, edit func(env map[string]any)) {
	t.Helper()
	idx, err := remote.Referrers(from)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) == 0 {
		t.Fatalf("no referrers on %s: %v", from, err)
	}
	src, err := remote.Image(from.Context().Digest(im.Manifests[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := src.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("bundle manifest has %d layers: %v", len(layers), err)
	}
	blob, err := readLayer(layers[0])
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		var b map[string]any
		if err := json.Unmarshal(blob, &b); err != nil {
			t.Fatal(err)
		}
		edit(b["dsseEnvelope"].(map[string]any))
		if blob, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	m, err := src.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(mutate.MediaType(mutate.ConfigMediaType(emptyImage(), m.Config.MediaType), types.OCIManifestSchema1),
		mutate.Addendum{Layer: static.NewLayer(blob, types.MediaType(BundleArtifactType))})
	if err != nil {
		t.Fatal(err)
	}
	toDesc, err := remote.Head(to)
	if err != nil {
		t.Fatal(err)
	}
	withSubject := mutate.Subject(img, v1.Descriptor{MediaType: toDesc.MediaType, Digest: toDesc.Digest, Size: toDesc.Size}).(v1.Image)
	h, err := withSubject.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(to.Context().Digest(h.String()), withSubject); err != nil {
		t.Fatal(err)
	}
}

func emptyImage() v1.Image { return empty.Image }

// BenchmarkVerifyLoopback is one first-seen verification (resolve, referrers, bundle, legacy
// probe, crypto) against the in-process registry on loopback, with connections reused.
func BenchmarkVerifyLoopback(b *testing.B) {
	cosign := &oci.Cosign{Bin: oci.CosignForTest(b), Dir: b.TempDir()}
	host, stop, err := oci.StartRegistry()
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	pem, err := cosign.GenerateKeyPair("ops")
	if err != nil {
		b.Fatal(err)
	}
	key, err := ParsePublicKey("ops", []byte(pem))
	if err != nil {
		b.Fatal(err)
	}
	for _, format := range []struct {
		name   string
		legacy bool
	}{{"bundle", false}, {"legacy", true}} {
		b.Run(format.name, func(b *testing.B) {
			d, err := oci.PushRandomImage(host + "/bench/" + format.name + ":v1")
			if err != nil {
				b.Fatal(err)
			}
			if err := cosign.Sign("ops", d, format.legacy); err != nil {
				b.Fatal(err)
			}
			v, err := NewVerifier()
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if res := v.Verify(ctx, d, []*Key{key}); res.State != Verified {
					b.Fatalf("%+v", res)
				}
			}
		})
	}
}
