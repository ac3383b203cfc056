package integration

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/oci"
)

// Images signed by the real cosign CLI, in a real registry on loopback, placed by the real
// scheduler: only a signature by a trusted key earns the trusted pool, and a replayed one makes
// the image untrusted.
func TestSignaturesDecideTrust(t *testing.T) {
	bin := oci.CosignForTest(t)
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

// 200 pods sharing 5 signed digests cost exactly 5 verifications: the engine evaluates each
// image once, however many pods use it. Every verification reads the image's legacy ".sig" tag
// exactly once, so the registry's count of those reads is the count of verifications.
func TestEachImageIsVerifiedOnce(t *testing.T) {
	bin := oci.CosignForTest(t)
	var mu sync.Mutex
	sigReads := map[string]int{}
	reg, stopRegistry, err := oci.StartRegistryWith(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, ".sig") {
				mu.Lock()
				sigReads[r.URL.Path]++
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopRegistry)
	cosign := &oci.Cosign{Bin: bin, Dir: t.TempDir()}
	pem, err := cosign.GenerateKeyPair("ops")
	if err != nil {
		t.Fatal(err)
	}
	var images []string
	for i := range 5 {
		d, err := oci.PushRandomImage(fmt.Sprintf("%s/shared/app-%d:v1", reg, i))
		if err != nil {
			t.Fatal(err)
		}
		if err := cosign.Sign("ops", d, false); err != nil {
			t.Fatal(err)
		}
		images = append(images, d.String())
	}
	mu.Lock()
	clear(sigReads) // signing itself may read the tags
	mu.Unlock()

	e := newEnv(t)
	trustedNode := e.node("trusted", "trusted", func(s *controlplane.NodeSpec) { s.Pods = 250 })
	cfg := e.config()
	cfg.OriginRules = []controlplane.OriginRule{{Pattern: "127.0.0.1:*/*", Weight: 10}}
	cfg.RequireSignature = true
	cfg.SigningKeys = []controlplane.SigningKey{{Name: "ops", PEM: pem}}
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfg.Render())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	for i := range 200 {
		e.create(e.pod(fmt.Sprintf("shared-%03d", i), images[i%len(images)]))
	}
	for i := range 200 {
		if got := e.waitBound(fmt.Sprintf("shared-%03d", i), 60*time.Second); got != trustedNode {
			t.Fatalf("shared-%03d on %s, want the trusted node", i, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, n := range sigReads {
		total += n
	}
	if len(sigReads) != 5 || total != 5 {
		t.Errorf("signature tag reads = %v (%d in all), want one for each of the 5 digests", sigReads, total)
	}
}
