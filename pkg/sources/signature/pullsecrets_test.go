package signature

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/kubernetes/fake"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/repute-dev/repute/pkg/shrink"
	"github.com/repute-dev/repute/reputation"
)

func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// Which secret entries apply to which images: the kubelet's rules, as go-containerregistry's
// Kubernetes keychain implements them.
func TestPullSecretMatchesAsTheKubelet(t *testing.T) {
	tests := []struct {
		key, image string
		want       bool
	}{
		{"registry.corp.example", "registry.corp.example/team/api:v1", true},
		{"registry.corp.example", "registry.corp.example:5000/team/api:v1", false}, // ports must agree
		{"registry.corp.example:5000", "registry.corp.example:5000/team/api:v1", true},
		{"https://registry.corp.example:5000/v2/", "registry.corp.example:5000/team/api:v1", true},
		{"*.corp.example", "registry.corp.example/team/api:v1", true},
		{"*.corp.example", "a.b.corp.example/team/api:v1", false}, // one label per wildcard
		{"*.corp.example", "evil.example/corp.example/api:v1", false},
		{"registry.corp.example/team", "registry.corp.example/team/api:v1", true},
		{"registry.corp.example/team", "registry.corp.example/other/api:v1", false},
		{"https://index.docker.io/v1/", "nginx", true},
		{"quay.io", "nginx", false},
	}
	for _, tt := range tests {
		t.Run(tt.key+" "+tt.image, func(t *testing.T) {
			client := fake.NewClientset(dockerSecret("team", "creds", tt.key, "u", "p"))
			ps := NewPullSecrets(client)
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "api"}, Spec: v1.PodSpec{
				ImagePullSecrets: []v1.LocalObjectReference{{Name: "creds"}}}}
			ps.Note(pod, tt.image)
			ref, err := reputation.ParseImageRef(tt.image)
			if err != nil {
				t.Fatal(err)
			}
			got := ps.For(context.Background(), ref)
			if matched := len(got) == 1 && got[0] == (authn.AuthConfig{Username: "u", Password: "p"}); matched != tt.want {
				t.Errorf("credentials = %+v, want matched %v", got, tt.want)
			}
		})
	}
}

// A pod listing thousands of pull secrets costs at most MaxPullSecretsPerPod Secret reads.
func TestPullSecretsPerPodAreBounded(t *testing.T) {
	client := fake.NewClientset()
	ps := NewPullSecrets(client)
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team"}}
	for i := range 2000 {
		pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, v1.LocalObjectReference{Name: fmt.Sprintf("s%d", i)})
	}
	ref, err := reputation.ParseImageRef("registry.corp.example/team/api:v1")
	if err != nil {
		t.Fatal(err)
	}
	ps.Note(pod, ref.String())
	ps.For(context.Background(), ref)
	reads := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "secrets" {
			reads++
		}
	}
	if reads == 0 || reads > MaxPullSecretsPerPod {
		t.Errorf("%d Secret reads for a pod listing 2000 pull secrets, want 1 to %d", reads, MaxPullSecretsPerPod)
	}
}

// Secrets and service accounts are read once per TTL, however many images ask.
func TestPullSecretReadsAreCached(t *testing.T) {
	client := fake.NewClientset(dockerSecret("team", "creds", "registry.corp.example", "u", "p"))
	ps := NewPullSecrets(client)
	clk := testingclock.NewFakeClock(time.Unix(1_800_000_000, 0))
	ps.reads = utilcache.NewLRUExpireCacheWithClock(maxCachedReads, clk)
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team"}, Spec: v1.PodSpec{ImagePullSecrets: []v1.LocalObjectReference{{Name: "creds"}}}}
	ref, err := reputation.ParseImageRef("registry.corp.example/team/api:v1")
	if err != nil {
		t.Fatal(err)
	}
	ps.Note(pod, ref.String())
	secretReads := func() int {
		n := 0
		for _, a := range client.Actions() {
			if a.GetVerb() == "get" && a.GetResource().Resource == "secrets" {
				n++
			}
		}
		return n
	}
	for range 3 {
		if got := ps.For(context.Background(), ref); len(got) != 1 {
			t.Fatalf("credentials = %+v, want one", got)
		}
	}
	if n := secretReads(); n != 1 {
		t.Errorf("secret read %d times within the TTL, want once", n)
	}
	clk.Step(time.Minute + time.Second)
	ps.For(context.Background(), ref)
	if n := secretReads(); n != 2 {
		t.Errorf("secret read %d times after the TTL, want twice", n)
	}
}

func dockerSecret(ns, name, registry, user, pass string) *v1.Secret {
	return &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       v1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{v1.DockerConfigJsonKey: []byte(`{"auths":{"` + registry + `":{"auth":"` + basicAuth(user, pass) + `"}}}`)},
	}
}

// Credentials come from the pod's own pull secrets and its service account's, only for the
// registry they name, and only for images those pods were noted pulling.
func TestPullSecretsFor(t *testing.T) {
	client := fake.NewClientset(
		dockerSecret("team", "own", "registry.corp.example", "pod-user", "p1"),
		dockerSecret("team", "from-sa", "registry.corp.example", "sa-user", "p2"),
		dockerSecret("team", "other-registry", "quay.io", "quay-user", "p3"),
		&v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "opaque"}, Type: v1.SecretTypeOpaque, Data: map[string][]byte{"x": []byte("y")}},
		&v1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "builder"},
			ImagePullSecrets: []v1.LocalObjectReference{{Name: "from-sa"}, {Name: "missing"}}},
	)
	ps := NewPullSecrets(client)
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "api"}, Spec: v1.PodSpec{
		ServiceAccountName: "builder",
		ImagePullSecrets:   []v1.LocalObjectReference{{Name: "own"}, {Name: "other-registry"}, {Name: "opaque"}},
	}}
	ps.Note(pod, "registry.corp.example/team/api:v1")
	ps.Note(pod, "registry.corp.example/team/api:v1") // a repeat changes nothing

	ref := func(s string) reputation.ImageRef {
		r, err := reputation.ParseImageRef(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	got := ps.For(context.Background(), ref("registry.corp.example/team/api@"+digestA))
	want := []authn.AuthConfig{{Username: "pod-user", Password: "p1"}, {Username: "sa-user", Password: "p2"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("credentials = %+v, want %+v", got, want)
	}
	if got := ps.For(context.Background(), ref("registry.corp.example/team/web:v1")); len(got) != 0 {
		t.Errorf("credentials for an image no noted pod pulls: %+v", got)
	}
	// A pod in another namespace never lends its secrets' names to this one: the lookup is in
	// the pod's own namespace.
	ps.Note(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere"}, Spec: v1.PodSpec{
		ImagePullSecrets: []v1.LocalObjectReference{{Name: "own"}}}}, "registry.corp.example/team/web:v1")
	if got := ps.For(context.Background(), ref("registry.corp.example/team/web:v1")); len(got) != 0 {
		t.Errorf("secret elsewhere/own does not exist, yet got %+v", got)
	}
}

// FuzzKeychainOf: any pull secret payload is read or refused with an error, and credentials it
// yields for an image are never empty.
func FuzzKeychainOf(f *testing.F) {
	f.Add([]byte(`{"auths":{"registry.corp.example:5000":{"auth":"`+basicAuth("ci", "x")+`"}}}`), false)
	f.Add([]byte(`{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"}}}`), false)
	f.Add([]byte(`{"quay.io":{"identitytoken":"t"}}`), true)
	f.Add([]byte(`{"auths":{"*.x/[":{"auth":"%%"}}}`), false)
	repo, err := name.NewRepository("registry.corp.example:5000/team/api")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, legacy bool) {
		secret := &v1.Secret{Type: v1.SecretTypeDockerConfigJson, Data: map[string][]byte{v1.DockerConfigJsonKey: data}}
		if legacy {
			secret = &v1.Secret{Type: v1.SecretTypeDockercfg, Data: map[string][]byte{v1.DockerConfigKey: data}}
		}
		kc, err := KeychainOf(context.Background(), secret)
		if err != nil {
			return
		}
		auth, err := kc.Resolve(repo)
		if err != nil || auth == authn.Anonymous {
			return
		}
		if _, err := auth.Authorization(); err != nil {
			t.Fatalf("a resolved credential has no authorization: %v", err)
		}
	})
}

// What Note learnt of an image goes when the engine forgets it: a repository's users go with
// its last image, and a flood of one-off images leaves nothing behind.
func TestForgottenImagesLeaveNoPullers(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(dockerSecret("team", "creds", "registry.corp.example", "u", "p"))
	ps := NewPullSecrets(client)
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team"}, Spec: v1.PodSpec{ImagePullSecrets: []v1.LocalObjectReference{{Name: "creds"}}}}
	v1Ref, v2Ref := "registry.corp.example/team/api:v1", "registry.corp.example/team/api:v2"
	ps.Note(pod, v1Ref)
	ps.Note(pod, v2Ref)
	ref, err := reputation.ParseImageRef(v2Ref)
	if err != nil {
		t.Fatal(err)
	}
	ps.Forget(v1Ref)
	if got := ps.For(ctx, ref); len(got) != 1 {
		t.Fatalf("after forgetting v1, v2 has %d credentials, want its repository's 1", len(got))
	}
	ps.Forget(v2Ref)
	if got := ps.For(ctx, ref); len(got) != 0 {
		t.Fatalf("after forgetting the repository's last image: %d credentials, want none", len(got))
	}
	ps.Note(pod, v2Ref) // used again: noted again
	if got := ps.For(ctx, ref); len(got) != 1 {
		t.Fatalf("noted again: %d credentials, want 1", len(got))
	}

	for i := range 10_000 {
		ps.Note(pod, fmt.Sprintf("registry.corp.example/flood/img%d:v1", i))
	}
	for i := range 10_000 {
		ps.Forget(fmt.Sprintf("registry.corp.example/flood/img%d:v1", i))
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.noted) != 1 || len(ps.users) != 1 || len(ps.imagesOf) != 1 || ps.peak >= shrink.MinPeak {
		t.Errorf("after a forgotten flood: %d noted, %d repositories, %d counted, peak %d; want only api:v2's, in maps rebuilt below the flood's size",
			len(ps.noted), len(ps.users), len(ps.imagesOf), ps.peak)
	}
}
