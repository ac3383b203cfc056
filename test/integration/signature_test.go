package integration

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/oci"
)

// Images signed by the real cosign CLI, in a real registry on loopback, placed by the real
// scheduler: only a signature by a trusted key earns the trusted pool, and a replayed one makes
// the image untrusted.
func TestSignaturesDecideTrust(t *testing.T) {
	bin, err := oci.FindCosign()
	if err != nil {
		if os.Getenv("REPUTE_REQUIRE_COSIGN") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	cosign := &oci.Cosign{Bin: bin, Dir: t.TempDir()}
	reg, stopRegistry, err := oci.StartRegistry()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopRegistry)
	trustedPEM, err := cosign.GenerateKeyPair("ops")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cosign.GenerateKeyPair("stranger"); err != nil {
		t.Fatal(err)
	}
	push := func(repo string) name.Digest {
		d, err := oci.PushRandomImage(reg + "/" + repo + ":v1")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	sign := func(key string, d name.Digest, legacy bool) {
		if err := cosign.Sign(key, d, legacy); err != nil {
			t.Fatal(err)
		}
	}
	bundle := push("team/bundle")
	sign("ops", bundle, false)
	legacy := push("team/legacy")
	sign("ops", legacy, true)
	unsigned := push("team/unsigned")
	stranger := push("team/stranger")
	sign("stranger", stranger, false)
	replayed := push("team/replayed")
	if err := oci.CopyLegacySignature(legacy, replayed); err != nil {
		t.Fatal(err)
	}

	e := newEnv(t)
	poolOf := map[string]string{}
	for _, pool := range []string{"trusted", "unknown", "untrusted"} {
		poolOf[e.node(pool, pool)] = pool
	}
	cfg := e.config()
	cfg.OriginRules = []controlplane.OriginRule{{Pattern: "127.0.0.1:*/*", Weight: 10}, {Pattern: "*", Tier: "untrusted"}}
	cfg.RequireSignature = true
	cfg.SigningKeys = []controlplane.SigningKey{{Name: "ops", PEM: trustedPEM, Repositories: []string{"127.0.0.1:*/team/*"}}}
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfg.Render())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	tests := []struct {
		pod, image, wantPool, wantNote string
	}{
		{"bundle", bundle.String(), "trusted", "signature verified +30"},
		{"legacy-by-tag", reg + "/team/legacy:v1", "trusted", "score 80"},
		{"unsigned", unsigned.String(), "unknown", "signature absent"},
		{"stranger", stranger.String(), "unknown", "signature unverified -10"},
		{"replayed", replayed.String(), "untrusted", "signature invalid → untrusted"},
	}
	for _, tt := range tests {
		e.create(e.pod(tt.pod, tt.image))
	}
	for _, tt := range tests {
		t.Run(tt.pod, func(t *testing.T) {
			node := e.waitBound(tt.pod, bindTimeout)
			if got := poolOf[node]; got != tt.wantPool {
				t.Errorf("%s landed in pool %q, want %q", tt.pod, got, tt.wantPool)
			}
			if note := e.waitEvent(tt.pod, "Placed", bindTimeout); !strings.Contains(note, tt.wantNote) {
				t.Errorf("Placed event %q does not contain %q", note, tt.wantNote)
			}
		})
	}

	// The registry goes away: a first-seen image is still placed, as unknown, never trusted.
	late := push("team/late")
	sign("ops", late, false)
	stopRegistry()
	e.create(e.pod("registry-down", late.String()))
	if got := poolOf[e.waitBound("registry-down", bindTimeout)]; got != "unknown" {
		t.Errorf("with the registry down, a signed image landed in pool %q, want unknown", got)
	}
	if note := e.waitEvent("registry-down", "Placed", bindTimeout); !strings.Contains(note, "signature error") {
		t.Errorf("Placed event %q does not say the signature could not be checked", note)
	}
}
