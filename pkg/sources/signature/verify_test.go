package signature

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	sigsig "github.com/sigstore/sigstore/pkg/signature"
)

const digestA = "sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb"
const digestB = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

func legacyPayload(digest string) []byte {
	return []byte(fmt.Sprintf(`{"critical":{"identity":{"docker-reference":"reg/app"},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, digest))
}

// Each supported key type verifies a legacy simple-signing payload signed with sigstore's own
// signers (the cosign CLI test covers ECDSA keys made by cosign itself).
func TestLegacySignatureKeyTypes(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tt := range []struct {
		name string
		priv crypto.Signer
	}{{"ecdsa-p256", ecKey}, {"ed25519", edKey}, {"rsa-2048", rsaKey}} {
		t.Run(tt.name, func(t *testing.T) {
			signer, err := sigsig.LoadSigner(tt.priv, crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			pemBytes, err := cryptoutils.MarshalPublicKeyToPEM(tt.priv.Public())
			if err != nil {
				t.Fatal(err)
			}
			key, err := ParsePublicKey(tt.name, pemBytes)
			if err != nil {
				t.Fatal(err)
			}
			v := checker{keys: []*Key{key}}
			payload := legacyPayload(digestA)
			sig, err := signer.SignMessage(bytes.NewReader(payload))
			if err != nil {
				t.Fatal(err)
			}
			c := v.checkLegacy(payload, base64.StdEncoding.EncodeToString(sig))
			if c.key != key || c.problem != "" || c.subject.String() != digestA {
				t.Fatalf("checkLegacy = %+v, want verified for %s", c, digestA)
			}
			// One flipped payload byte, and no key verifies it.
			tampered := bytes.Replace(payload, []byte("reg/app"), []byte("reg/apq"), 1)
			if c := v.checkLegacy(tampered, base64.StdEncoding.EncodeToString(sig)); c.key != nil {
				t.Errorf("a tampered payload verified: %+v", c)
			}
		})
	}
}

func TestParsePublicKeyRejects(t *testing.T) {
	for _, in := range []string{"", "not pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"} {
		if _, err := ParsePublicKey("k", []byte(in)); err == nil || !strings.Contains(err.Error(), `key "k"`) {
			t.Errorf("ParsePublicKey(%q) error = %v, want one naming the key", in, err)
		}
	}
}

func TestJudge(t *testing.T) {
	a, _ := v1.NewHash(digestA)
	b, _ := v1.NewHash(digestB)
	trusted := &Key{Name: "ops"}
	tests := []struct {
		name       string
		found      []candidate
		readErr    error
		want       State
		wantDetail string
	}{
		{"nothing found", nil, nil, Absent, "no cosign signature"},
		{"nothing read: the registry failed", nil, errors.New("502 bad gateway"), Error, "502"},
		{"a read error outranks an unknown signature", []candidate{{format: "legacy", problem: "verifies under no trusted key"}}, errors.New("referrers: 500"), Error, "referrers: 500"},
		{"a good signature stands despite a read error", []candidate{{format: "legacy", key: trusted, subject: a}}, errors.New("referrers: 500"), Verified, ""},
		{"a replay stands despite a read error", []candidate{{format: "legacy", key: trusted, subject: b}}, errors.New("referrers: 500"), Invalid, "replayed"},
		{"one good signature", []candidate{{format: "bundle", key: trusted, subject: a}}, nil, Verified, "trusted key ops"},
		{"a good signature beside an unknown one", []candidate{{format: "legacy", problem: "verifies under no trusted key"}, {format: "bundle", key: trusted, subject: a}}, nil, Verified, ""},
		{"unknown key only", []candidate{{format: "legacy", problem: "verifies under no trusted key"}}, nil, Unverified, "no trusted key"},
		{"replay", []candidate{{format: "legacy", key: trusted, subject: b}}, nil, Invalid, "replayed"},
		{"replay is not hidden by an unknown signature", []candidate{{format: "legacy", problem: "x"}, {format: "legacy", key: trusted, subject: b}}, nil, Invalid, "replayed"},
		{"claims a trusted key but does not verify", []candidate{{format: "bundle", claimsTrustedKey: "ops", problem: "verifies under no trusted key"}}, nil, Invalid, "tampered"},
		{"trusted key, broken payload", []candidate{{format: "bundle", key: trusted, problem: "signed payload is not an in-toto statement"}}, nil, Invalid, "in-toto"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := judge(a, tt.found, tt.readErr)
			if got.State != tt.want || !strings.Contains(got.Detail, tt.wantDetail) {
				t.Errorf("judge = %+v, want %s with %q", got, tt.want, tt.wantDetail)
			}
		})
	}
}

// FuzzCheckBundle feeds arbitrary bytes as a bundle: it is rejected with a reason, never
// verified, never a panic.
func FuzzCheckBundle(f *testing.F) {
	for _, s := range []string{`{}`, `{"dsseEnvelope":{}}`, `{"dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"AAAA"}]}}`, `[`, `null`} {
		f.Add([]byte(s))
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pemBytes, _ := cryptoutils.MarshalPublicKeyToPEM(key.Public())
	k, err := ParsePublicKey("k", pemBytes)
	if err != nil {
		f.Fatal(err)
	}
	v := checker{keys: []*Key{k}}
	f.Fuzz(func(t *testing.T, blob []byte) {
		c := v.checkBundle(blob)
		if c.key != nil && c.problem == "" {
			t.Fatalf("random bytes verified as a signature: %q", blob)
		}
		if c.problem == "" {
			t.Fatal("rejected without a reason")
		}
	})
}
