package integration

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/oci"
)

// Images signed by the real cosign CLI, in a real registry on loopback, placed by the real
// scheduler: only a signature by a trusted key earns the trusted pool, and a replayed one makes
// the image untrusted.
func TestSignaturesDecideTrust(t *testing.T) {
	reg, cosign, trustedPEM, stopRegistry := signingRegistry(t, nil)
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
			if note := e.waitPlacement(tt.pod, bindTimeout); !strings.Contains(note, tt.wantNote) {
				t.Errorf("explanation %q does not contain %q", note, tt.wantNote)
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
	if note := e.waitPlacement("registry-down", bindTimeout); !strings.Contains(note, "signature error") {
		t.Errorf("explanation %q does not say the signature could not be checked", note)
	}
}

// 200 pods sharing 5 signed digests cost exactly 5 verifications: the engine evaluates each
// image once, however many pods use it. Every verification reads the image's legacy ".sig" tag
// exactly once, so the registry's count of those reads is the count of verifications.
func TestEachImageIsVerifiedOnce(t *testing.T) {
	images, pem, verifications := countingSignedRegistry(t)
	e := newEnv(t)
	trustedNode := e.node("trusted", "trusted", func(s *controlplane.NodeSpec) { s.Pods = 250 })
	cfg := signedByOps(e.config(), pem)
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
	assertOneReadEach(t, verifications(), len(images))
}

// A private registry: signatures are read with the pod's imagePullSecrets or its service
// account's, as the kubelet would pull; without credentials the image cannot be checked and is
// placed as unknown, never trusted.
func TestPrivateRegistryUsesPullSecrets(t *testing.T) {
	const user, password = "puller", "pull-secret-0123456789"
	var locked atomic.Bool
	reg, cosign, pem, _ := signingRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); locked.Load() && (!ok || u != user || p != password) {
				w.Header().Set("WWW-Authenticate", `Basic realm="repute-test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	images := map[string]string{}
	for _, repo := range []string{"own", "via-sa", "no-secret", "wrong-secret"} {
		d, err := oci.PushRandomImage(reg + "/private/" + repo + ":v1")
		if err != nil {
			t.Fatal(err)
		}
		if err := cosign.Sign("ops", d, false); err != nil {
			t.Fatal(err)
		}
		images[repo] = d.String()
	}
	locked.Store(true) // from here on the registry wants credentials

	e := newEnv(t)
	poolOf := map[string]string{}
	for _, pool := range []string{"trusted", "unknown", "untrusted"} {
		poolOf[e.node(pool, pool)] = pool
	}
	dockerConfig := func(name, pass string) *v1.Secret {
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		return &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns}, Type: v1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{v1.DockerConfigJsonKey: []byte(`{"auths":{"` + reg + `":{"auth":"` + auth + `"}}}`)}}
	}
	for _, s := range []*v1.Secret{dockerConfig("registry-creds", password), dockerConfig("builder-creds", password), dockerConfig("stale-creds", "rotated-away-0123")} {
		if _, err := e.client.CoreV1().Secrets(e.ns).Create(e.ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.client.CoreV1().ServiceAccounts(e.ns).Create(e.ctx, &v1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "builder", Namespace: e.ns},
		ImagePullSecrets: []v1.LocalObjectReference{{Name: "builder-creds"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := signedByOps(e.config(), pem)
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfg.Render())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	withSecret := func(p *v1.Pod, name string) *v1.Pod {
		p.Spec.ImagePullSecrets = []v1.LocalObjectReference{{Name: name}}
		return p
	}
	viaSA := e.pod("via-sa", images["via-sa"])
	viaSA.Spec.ServiceAccountName = "builder"
	tests := []struct {
		pod                *v1.Pod
		wantPool, wantNote string
	}{
		{withSecret(e.pod("own", images["own"]), "registry-creds"), "trusted", "signature verified +30"},
		{viaSA, "trusted", "signature verified +30"},
		{e.pod("no-secret", images["no-secret"]), "unknown", "signature error"},
		{withSecret(e.pod("wrong-secret", images["wrong-secret"]), "stale-creds"), "unknown", "signature error"},
	}
	for _, tt := range tests {
		e.create(tt.pod)
	}
	for _, tt := range tests {
		t.Run(tt.pod.Name, func(t *testing.T) {
			if got := poolOf[e.waitBound(tt.pod.Name, bindTimeout)]; got != tt.wantPool {
				t.Errorf("%s landed in pool %q, want %q", tt.pod.Name, got, tt.wantPool)
			}
			if note := e.waitPlacement(tt.pod.Name, bindTimeout); !strings.Contains(note, tt.wantNote) {
				t.Errorf("explanation %q does not contain %q", note, tt.wantNote)
			}
		})
	}
}

// signingRegistry starts a loopback registry (its handler wrapped, when wrap is set) and makes
// the "ops" key pair with the real cosign CLI. The registry stops at cleanup, or earlier by stop.
// signedByOps is a configuration in which images on the loopback registry weigh +10 for their
// origin and are trusted only with a signature by the key "ops" (+30).
func signedByOps(cfg controlplane.SchedulerConfig, opsPEM string) controlplane.SchedulerConfig {
	cfg.OriginRules = []controlplane.OriginRule{{Pattern: "127.0.0.1:*/*", Weight: 10}}
	cfg.RequireSignature = true
	cfg.SigningKeys = []controlplane.SigningKey{{Name: "ops", PEM: opsPEM}}
	return cfg
}

func signingRegistry(t *testing.T, wrap func(http.Handler) http.Handler) (reg string, cosign *oci.Cosign, opsPEM string, stop func()) {
	t.Helper()
	cosign = &oci.Cosign{Bin: oci.CosignForTest(t), Dir: t.TempDir()}
	reg, stop, err := oci.StartRegistryWith(wrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if opsPEM, err = cosign.GenerateKeyPair("ops"); err != nil {
		t.Fatal(err)
	}
	return reg, cosign, opsPEM, stop
}
