package signature

import (
	"context"
	"errors"
	"k8s.io/utils/clock"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/reputation"
)

// DefaultTimeout bounds one image's verification, registry round trips included.
const DefaultTimeout = 5 * time.Second

// Source is the engine's signature evidence: it resolves the image's digest and verifies its
// signatures. It runs on engine workers only.
type Source struct {
	Verifier *Verifier
	// keys are swapped whole when the policy changes (SetKeys), while workers verify.
	keys atomic.Pointer[[]ScopedKey]
	// Timeout bounds one image's verification; RegistryTimeouts overrides it per registry host.
	Timeout          time.Duration
	RegistryTimeouts map[string]time.Duration
	// Backoff, when set, spares a failing registry the requests for its other images.
	Backoff *RegistryBackoff
	// Credentials, when set, finds registry credentials for an image (from pull secrets).
	Credentials interface {
		For(ctx context.Context, ref reputation.ImageRef) []authn.AuthConfig
	}
}

// ScopedKey is a trusted key and the repositories it vouches for ("registry/repo" globs, as in
// origin rules; none means every repository).
type ScopedKey struct {
	Key          *Key
	Repositories []string
}

// keysFor returns the keys that vouch for an image's repository.
func (s *Source) keysFor(ref reputation.ImageRef) []*Key {
	var out []*Key
	keys := s.keys.Load()
	if keys == nil {
		return nil
	}
	for _, k := range *keys {
		if len(k.Repositories) == 0 {
			out = append(out, k.Key)
			continue
		}
		for _, pattern := range k.Repositories {
			if reputation.MatchOrigin(pattern, ref) {
				out = append(out, k.Key)
				break
			}
		}
	}
	return out
}

var _ reputation.EvidenceSource = (*Source)(nil)

// Name implements reputation.EvidenceSource.
func (s *Source) Name() string { return "signature" }

// Collect records the verification result and, when the registry answered, the digest: from
// then on the evidence is about that content, whatever the tag points at later. An image no key
// vouches for is not checked (and its registry not contacted): it has no signature evidence.
func (s *Source) Collect(ctx context.Context, ev *reputation.Evidence) error {
	keys := s.keysFor(ev.Image)
	if len(keys) == 0 {
		return nil
	}
	registry := ev.Image.Registry
	if s.Backoff != nil {
		if ok, why := s.Backoff.Allow(registry); !ok {
			ev.Signature = &reputation.SignatureEvidence{State: reputation.SignatureError, Detail: why}
			return errors.New(why)
		}
	}
	timeout := s.Timeout
	if t, ok := s.RegistryTimeouts[registry]; ok {
		timeout = t
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ref, err := name.ParseReference(ev.Image.String())
	if err != nil {
		ev.Signature = &reputation.SignatureEvidence{State: reputation.SignatureError, Detail: err.Error()}
		return err
	}
	var creds []authn.AuthConfig
	if s.Credentials != nil {
		creds = s.Credentials.For(ctx, ev.Image)
	}
	res := s.Verifier.VerifyWith(ctx, ref, keys, creds)
	if s.Backoff != nil {
		s.Backoff.Record(registry, res.unreachable, res.Detail)
	}
	ev.Signature = &reputation.SignatureEvidence{State: res.State, Key: res.Key, Format: res.Format, Detail: res.Detail}
	if res.Digest != "" && ev.Image.Digest == "" {
		ev.ResolvedDigest = res.Digest
	}
	if res.State == Error {
		// The evidence is recorded (it explains the verdict) and reported missing, so the
		// engine tries again.
		return errors.New(res.Detail)
	}
	return nil
}

// NewSource builds the signature source from validated plugin args. With no keys it checks
// nothing (and contacts no registry) until Configure gives it some.
func NewSource(policy config.SignaturePolicy, eval config.EvaluationSpec) (*Source, error) {
	verifier, err := NewVerifier()
	if err != nil {
		return nil, err
	}
	src := &Source{Verifier: verifier, Timeout: eval.RegistryTimeout.Duration, RegistryTimeouts: map[string]time.Duration{},
		Backoff: NewRegistryBackoff(eval.RegistryBackoff.Duration, eval.MaxRegistryBackoff.Duration, clock.RealClock{})}
	for host, d := range eval.RegistryTimeouts {
		src.RegistryTimeouts[host] = d.Duration
	}
	return src, src.Configure(policy)
}

// Configure puts a policy's keys and identity check in force for verifications from now on;
// on error nothing changes.
func (s *Source) Configure(policy config.SignaturePolicy) error {
	keys, err := ParseKeys(policy.Keys)
	if err != nil {
		return err
	}
	s.keys.Store(&keys)
	s.Verifier.SetCheckIdentity(policy.CheckIdentity)
	return nil
}

// ParseKeys parses the keys a policy trusts.
func ParseKeys(in []config.SigningKey) ([]ScopedKey, error) {
	var keys []ScopedKey
	for _, k := range in {
		key, err := ParsePublicKey(k.Name, []byte(k.PublicKey))
		if err != nil {
			return nil, err
		}
		keys = append(keys, ScopedKey{Key: key, Repositories: k.Repositories})
	}
	return keys, nil
}
