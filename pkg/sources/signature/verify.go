// Package signature verifies cosign signatures offline against the operator's public keys, in
// both formats cosign writes: the sigstore bundle (v0.3, a DSSE envelope around an in-toto
// statement) stored as an OCI 1.1 referrer or under the fallback tag, and the legacy
// "sha256-<hex>.sig" tag. It talks to registries with go-containerregistry and checks
// signatures with sigstore/sigstore; it never contacts a transparency log.
package signature

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	sigsig "github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"

	"github.com/repute-dev/repute/reputation"
)

// Formats and constants cosign uses.
const (
	BundleArtifactType  = "application/vnd.dev.sigstore.bundle.v0.3+json"
	InTotoPayloadType   = "application/vnd.in-toto+json"
	SignPredicateType   = "https://sigstore.dev/cosign/sign/v1"
	LegacySignatureAnno = "dev.cosignproject.cosign/signature"
	legacyPayloadType   = "cosign container image signature"

	// maxBlobBytes bounds every signature blob we read: real ones are a few kilobytes.
	maxBlobBytes = 1 << 20
	// maxSignatures bounds how many signatures of one image we examine.
	maxSignatures = 32
)

// State is the outcome of verifying an image's signatures.
type State = reputation.SignatureState

// The states, as the domain names them.
const (
	// Verified: a signature made by a trusted key covers exactly this digest.
	Verified = reputation.SignatureVerified
	// Absent: the image carries no signature.
	Absent = reputation.SignatureAbsent
	// Unverified: signatures exist, but none verifies under a trusted key (an unknown key).
	Unverified = reputation.SignatureUnverified
	// Invalid: a signature is broken in a way no honest signer produces: it claims a trusted key
	// but does not verify, or a trusted key signed another image (a replay).
	Invalid = reputation.SignatureInvalid
	// Error: the registry could not be asked (unreachable, timed out, refused).
	Error = reputation.SignatureError
)

// Result explains a verification.
type Result struct {
	State State `json:"state"`
	// Digest is the image's content digest ("sha256:…"), the identity everything is keyed by.
	Digest string `json:"digest,omitempty"`
	// Key names the trusted key that verified it; Format is "bundle" or "legacy".
	Key    string `json:"key,omitempty"`
	Format string `json:"format,omitempty"`
	// Detail is one line for people: what was found and why it counts as it does.
	Detail string `json:"detail"`
	// refusedCredentials: the registry said 401 or 403, so other credentials may do better.
	refusedCredentials bool
	// unreachable: the registry did not answer usefully (network, timeout, 5xx, 429).
	unreachable bool
}

// Key is one trusted public key.
type Key struct {
	Name     string
	verifier sigsig.Verifier
	// id is cosign's key hint: base64 of the SHA-256 of the DER public key.
	id string
}

// ParsePublicKey loads a PEM public key (ECDSA, Ed25519 or RSA). Do it once: verification reuses it.
func ParsePublicKey(name string, pemBytes []byte) (*Key, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", name, err)
	}
	v, err := sigsig.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", name, err)
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", name, err)
	}
	sum := sha256.Sum256(der)
	return &Key{Name: name, verifier: v, id: base64.StdEncoding.EncodeToString(sum[:])}, nil
}

// Verifier reads images' signatures from registries and checks them against trusted keys.
type Verifier struct {
	// checkIdentity also requires a signature's docker-reference, where it names one, to be
	// the image's repository. A policy change may flip it while verifications run.
	checkIdentity atomic.Bool

	base []remote.Option // as given: transport and such
	opts []remote.Option // base, reusing one anonymous puller

	mu sync.Mutex
	// authenticated holds options reusing one puller per credential, so connections and
	// registry tokens are reused for private registries too.
	authenticated map[[sha256.Size]byte][]remote.Option
}

// maxCredentialPullers bounds the per-credential pullers kept.
const maxCredentialPullers = 256

// NewVerifier returns a verifier; registry options (auth, transport) apply to every request,
// and connections are reused across requests.
func NewVerifier(opts ...remote.Option) (*Verifier, error) {
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, err
	}
	return &Verifier{base: opts, opts: append(slices.Clip(opts), remote.Reuse(puller)), authenticated: map[[sha256.Size]byte][]remote.Option{}}, nil
}

// Verify resolves ref to a digest and checks its signatures against keys, bundle format first,
// reading the registry anonymously.
// SetCheckIdentity turns the docker-reference check on or off for verifications from now on.
func (v *Verifier) SetCheckIdentity(on bool) { v.checkIdentity.Store(on) }

func (v *Verifier) Verify(ctx context.Context, ref name.Reference, keys []*Key) Result {
	return v.verify(ctx, ref, keys, v.opts)
}

// VerifyWith is Verify with registry credentials, tried in order until the registry accepts
// one; with none it reads anonymously.
func (v *Verifier) VerifyWith(ctx context.Context, ref name.Reference, keys []*Key, creds []authn.AuthConfig) Result {
	if len(creds) == 0 {
		return v.Verify(ctx, ref, keys)
	}
	var res Result
	for _, cfg := range creds {
		opts, err := v.optionsFor(cfg)
		if err != nil {
			return Result{State: Error, Detail: err.Error()}
		}
		if res = v.verify(ctx, ref, keys, opts); !res.refusedCredentials {
			return res
		}
	}
	return res
}

func (v *Verifier) optionsFor(cfg authn.AuthConfig) ([]remote.Option, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	id := sha256.Sum256(b)
	v.mu.Lock()
	defer v.mu.Unlock()
	if opts, ok := v.authenticated[id]; ok {
		return opts, nil
	}
	opts := append(slices.Clip(v.base), remote.WithAuth(authn.FromConfig(cfg)))
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, err
	}
	if len(v.authenticated) >= maxCredentialPullers {
		clear(v.authenticated)
	}
	opts = append(opts, remote.Reuse(puller))
	v.authenticated[id] = opts
	return opts, nil
}

func (v *Verifier) verify(ctx context.Context, ref name.Reference, keys []*Key, baseOpts []remote.Option) Result {
	if len(keys) == 0 {
		return Result{State: Error, Detail: "no trusted keys for " + ref.Context().Name()}
	}
	c := checker{keys: keys}
	if v.checkIdentity.Load() {
		c.identity = canonicalRepository(ref.Context().Name())
	}
	opts := append([]remote.Option{remote.WithContext(ctx)}, baseOpts...)
	desc, err := remote.Head(ref, opts...)
	if err != nil {
		return Result{State: Error, Detail: fmt.Sprintf("resolving %s: %v", ref, err), refusedCredentials: isUnauthorized(err), unreachable: isUnreachable(err)}
	}
	digest := ref.Context().Digest(desc.Digest.String())
	bundles, bundleErr := c.bundles(digest, opts)
	legacy, legacyErr := c.legacy(digest, opts)
	readErr := errors.Join(bundleErr, legacyErr)
	res := judge(desc.Digest, append(bundles, legacy...), readErr)
	res.unreachable = res.State == Error && isUnreachable(readErr)
	return res
}

// candidate is one signature found on an image, already checked.
type candidate struct {
	format string
	// key is the trusted key that verified the signature bytes, if any.
	key *Key
	// claimsTrustedKey is set when the signature names (by hint) a trusted key.
	claimsTrustedKey string
	// subject is the digest the signed payload is about; problem explains a failed check.
	subject v1.Hash
	problem string
	// signedFor is the repository a signature names when the identity check finds it is not
	// this image's.
	signedFor string
}

// judge decides from every candidate found and any error reading them. One good signature
// verifies the image; otherwise the worst finding wins, so a replayed or forged signature cannot
// hide behind an unrelated one. A read error outranks "unverified" and "absent": the signature
// that was not read may have been the good one, and Error is retried where Absent is not.
func judge(digest v1.Hash, found []candidate, readErr error) Result {
	res := Result{Digest: digest.String()}
	var invalid, unverified []string
	for _, c := range found {
		switch {
		case c.key != nil && c.problem == "" && c.subject == digest && c.signedFor != "":
			unverified = append(unverified, fmt.Sprintf("%s signature by %s is for %s, not this repository (identity check)", c.format, c.key.Name, c.signedFor))
		case c.key != nil && c.problem == "" && c.subject == digest:
			return Result{State: Verified, Digest: digest.String(), Key: c.key.Name, Format: c.format,
				Detail: fmt.Sprintf("%s signature by trusted key %s", c.format, c.key.Name)}
		case c.key != nil && c.problem == "" && c.subject != digest:
			invalid = append(invalid, fmt.Sprintf("%s signature by %s is for %s, not this image (replayed)", c.format, c.key.Name, c.subject))
		case c.key != nil:
			invalid = append(invalid, fmt.Sprintf("%s signature by %s: %s", c.format, c.key.Name, c.problem))
		case c.claimsTrustedKey != "":
			invalid = append(invalid, fmt.Sprintf("%s signature names trusted key %s but does not verify (tampered)", c.format, c.claimsTrustedKey))
		default:
			unverified = append(unverified, fmt.Sprintf("%s signature: %s", c.format, c.problem))
		}
	}
	switch {
	case len(invalid) > 0:
		res.State, res.Detail = Invalid, strings.Join(invalid, "; ")
	case readErr != nil:
		res.State, res.Detail = Error, "reading signatures: "+readErr.Error()
	case len(unverified) > 0:
		res.State, res.Detail = Unverified, strings.Join(unverified, "; ")
	default:
		res.State, res.Detail = Absent, "no cosign signature (bundle referrer or .sig tag)"
	}
	return res
}

// checker checks one image's signatures against one key set.
type checker struct {
	keys []*Key
	// identity, when set, is the repository a signature's docker-reference must name.
	identity string
}

// canonicalRepository spells a repository as image references do ("docker.io/library/nginx").
func canonicalRepository(s string) string {
	ref, err := reputation.ParseImageRef(s)
	if err != nil {
		return s
	}
	return ref.Name()
}

// bundles reads cosign v3 bundles attached to the digest as referrers. go-containerregistry
// falls back to the "sha256-<hex>" tag index on registries without the referrers API.
func (v checker) bundles(digest name.Digest, opts []remote.Option) ([]candidate, error) {
	idx, err := remote.Referrers(digest, opts...)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var out []candidate
	examined := 0
	for _, d := range im.Manifests {
		// Count every referrer fetched, bundle or not: anyone who can push can attach many.
		if examined >= maxSignatures {
			break
		}
		// Registries disagree on where a referrer's artifactType comes from (the manifest's own
		// field or its config's media type), so the bundle layer's media type decides.
		if d.ArtifactType != "" && d.ArtifactType != BundleArtifactType && !strings.HasPrefix(d.ArtifactType, "application/vnd.oci.empty") {
			continue
		}
		examined++
		img, err := remote.Image(digest.Context().Digest(d.Digest.String()), opts...)
		if err != nil {
			return nil, err
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, err
		}
		for _, ld := range m.Layers {
			if string(ld.MediaType) != BundleArtifactType {
				continue
			}
			l, err := img.LayerByDigest(ld.Digest)
			if err != nil {
				return nil, err
			}
			blob, err := readLayer(l)
			if err != nil {
				return nil, err
			}
			out = append(out, v.checkBundle(blob))
		}
	}
	return out, nil
}

type bundleJSON struct {
	MediaType            string `json:"mediaType"`
	VerificationMaterial struct {
		PublicKey *struct {
			Hint string `json:"hint"`
		} `json:"publicKey"`
	} `json:"verificationMaterial"`
	DSSEEnvelope json.RawMessage `json:"dsseEnvelope"`
}

type statement struct {
	Type          string `json:"_type"`
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
}

func (v checker) checkBundle(blob []byte) candidate {
	c := candidate{format: "bundle"}
	var b bundleJSON
	if err := json.Unmarshal(blob, &b); err != nil {
		c.problem = "bundle is not JSON: " + err.Error()
		return c
	}
	if len(b.DSSEEnvelope) == 0 {
		c.problem = "bundle has no DSSE envelope (a message-signature bundle is not a cosign image signature)"
		return c
	}
	hint := ""
	if b.VerificationMaterial.PublicKey != nil {
		hint = b.VerificationMaterial.PublicKey.Hint
	}
	for _, k := range v.keys {
		if hint != "" && hint == k.id {
			c.claimsTrustedKey = k.Name
		}
		var payload []byte
		dv := dsse.WrapVerifier(k.verifier, dsse.WithExpectedPayloadType(InTotoPayloadType), dsse.WithDecodedPayload(&payload))
		if err := dv.VerifySignature(bytes.NewReader(b.DSSEEnvelope), nil); err != nil {
			continue
		}
		c.key = k
		var st statement
		if err := json.Unmarshal(payload, &st); err != nil {
			c.problem = "signed payload is not an in-toto statement"
			return c
		}
		if st.PredicateType != SignPredicateType {
			// A key-signed attestation (SBOM, provenance, …) says something about the image; it
			// does not sign it.
			c.key, c.problem = nil, fmt.Sprintf("an attestation of %s, not a signature", st.PredicateType)
			c.claimsTrustedKey = ""
			return c
		}
		if len(st.Subject) != 1 {
			c.problem = fmt.Sprintf("statement has %d subjects, want 1", len(st.Subject))
			return c
		}
		h, err := v1.NewHash("sha256:" + st.Subject[0].Digest["sha256"])
		if err != nil {
			c.problem = "statement subject has no sha256 digest"
			return c
		}
		c.subject = h
		return c
	}
	c.problem = "verifies under no trusted key"
	return c
}

// legacy reads the "sha256-<hex>.sig" tag cosign v2 writes (and v3 with --new-bundle-format=false).
func (v checker) legacy(digest name.Digest, opts []remote.Option) ([]candidate, error) {
	tag := "sha256-" + strings.TrimPrefix(digest.DigestStr(), "sha256:") + ".sig"
	img, err := remote.Image(digest.Context().Tag(tag), opts...)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	var out []candidate
	for _, ld := range m.Layers {
		if len(out) >= maxSignatures {
			break
		}
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return nil, err
		}
		payload, err := readLayer(l)
		if err != nil {
			return nil, err
		}
		out = append(out, v.checkLegacy(payload, ld.Annotations[LegacySignatureAnno]))
	}
	return out, nil
}

type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

func (v checker) checkLegacy(payload []byte, sigB64 string) candidate {
	c := candidate{format: "legacy"}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil || len(sig) == 0 {
		c.problem = "signature annotation missing or not base64"
		return c
	}
	for _, k := range v.keys {
		if err := k.verifier.VerifySignature(bytes.NewReader(sig), bytes.NewReader(payload)); err != nil {
			continue
		}
		c.key = k
		var ss simpleSigning
		if err := json.Unmarshal(payload, &ss); err != nil || ss.Critical.Type != legacyPayloadType {
			c.problem = "signed payload is not a cosign simple-signing payload"
			return c
		}
		h, err := v1.NewHash(ss.Critical.Image.DockerManifestDigest)
		if err != nil {
			c.problem = "signed payload names no digest"
			return c
		}
		c.subject = h
		if named := canonicalRepository(ss.Critical.Identity.DockerReference); v.identity != "" && named != v.identity {
			c.signedFor = ss.Critical.Identity.DockerReference
		}
		return c
	}
	c.problem = "verifies under no trusted key"
	return c
}

func readLayer(l v1.Layer) ([]byte, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxBlobBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBlobBytes {
		return nil, fmt.Errorf("signature blob larger than %d bytes", maxBlobBytes)
	}
	return b, nil
}

func isNotFound(err error) bool {
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode == 404 || hasCode(terr, transport.ManifestUnknownErrorCode) || hasCode(terr, transport.NameUnknownErrorCode)
	}
	return false
}

func isUnauthorized(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && (terr.StatusCode == 401 || terr.StatusCode == 403)
}

func hasCode(terr *transport.Error, code transport.ErrorCode) bool {
	for _, d := range terr.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}
