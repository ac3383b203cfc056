package signature

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/repute-dev/repute/reputation"
)

func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

func TestParseDockerConfig(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		legacy  bool
		want    []RegistryCredential
		wantErr string
	}{
		{name: "auth field", data: `{"auths":{"registry.corp.example:5000":{"auth":"` + basicAuth("ci", "s3:cret") + `"}}}`,
			want: []RegistryCredential{{Host: "registry.corp.example:5000", Auth: authn.AuthConfig{Username: "ci", Password: "s3:cret"}}}},
		{name: "username and password, Docker Hub's URL", data: `{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"}}}`,
			want: []RegistryCredential{{Host: "docker.io", Auth: authn.AuthConfig{Username: "u", Password: "p"}}}},
		{name: "wildcard host and path prefix", data: `{"auths":{"*.corp.example/team":{"identitytoken":"tok"}}}`,
			want: []RegistryCredential{{Host: "*.corp.example", PathPrefix: "team", Auth: authn.AuthConfig{IdentityToken: "tok"}}}},
		{name: "legacy .dockercfg", legacy: true, data: `{"quay.io":{"auth":"` + basicAuth("robot", "x") + `"}}`,
			want: []RegistryCredential{{Host: "quay.io", Auth: authn.AuthConfig{Username: "robot", Password: "x"}}}},
		{name: "no auths", data: `{}`},
		{name: "not JSON", data: `{"auths":`, wantErr: ".dockerconfigjson: unexpected end"},
		{name: "auth not base64", data: `{"auths":{"r.example":{"auth":"%%%"}}}`, wantErr: `auths["r.example"].auth: not base64`},
		{name: "auth without colon", data: `{"auths":{"r.example":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("nocolon")) + `"}}}`, wantErr: "not user:password"},
		{name: "entry without credentials", data: `{"auths":{"r.example":{}}}`, wantErr: "no credentials"},
		{name: "bad wildcard", data: `{"auths":{"[.example":{"username":"u","password":"p"}}}`, wantErr: "bad wildcard"},
		{name: "empty host", data: `{"auths":{"https:///team":{"username":"u","password":"p"}}}`, wantErr: "not a registry host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDockerConfig([]byte(tt.data), tt.legacy)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("entry %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestRegistryCredentialMatches(t *testing.T) {
	tests := []struct {
		host, prefix, image string
		want                bool
	}{
		{"registry.corp.example", "", "registry.corp.example/team/api:v1", true},
		{"registry.corp.example", "", "registry.corp.example:5000/team/api:v1", false}, // ports must agree
		{"registry.corp.example:5000", "", "registry.corp.example:5000/team/api:v1", true},
		{"*.corp.example", "", "registry.corp.example/team/api:v1", true},
		{"*.corp.example", "", "a.b.corp.example/team/api:v1", false}, // one label per wildcard
		{"*.corp.example", "", "evil.example/corp.example/api:v1", false},
		{"registry.corp.example", "team", "registry.corp.example/team/api:v1", true},
		{"registry.corp.example", "team", "registry.corp.example/teamster/api:v1", false},
		{"docker.io", "", "nginx", true},
		{"quay.io", "", "nginx", false},
	}
	for _, tt := range tests {
		ref, err := reputation.ParseImageRef(tt.image)
		if err != nil {
			t.Fatal(err)
		}
		c := RegistryCredential{Host: tt.host, PathPrefix: tt.prefix}
		if got := c.Matches(ref); got != tt.want {
			t.Errorf("%s/%s matches %s = %v, want %v", tt.host, tt.prefix, tt.image, got, tt.want)
		}
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

// FuzzParseDockerConfig: any payload parses or fails with a reason; what parses has a host
// and some credential.
func FuzzParseDockerConfig(f *testing.F) {
	f.Add([]byte(`{"auths":{"registry.corp.example:5000":{"auth":"`+basicAuth("ci", "x")+`"}}}`), false)
	f.Add([]byte(`{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"}}}`), false)
	f.Add([]byte(`{"quay.io":{"identitytoken":"t"}}`), true)
	f.Add([]byte(`{"auths":{"*.x/[":{"auth":"%%"}}}`), false)
	f.Fuzz(func(t *testing.T, data []byte, legacy bool) {
		creds, err := ParseDockerConfig(data, legacy)
		if err != nil {
			return
		}
		for _, c := range creds {
			if c.Host == "" || c.Auth == (authn.AuthConfig{}) {
				t.Fatalf("accepted an entry without host or credentials: %+v", c)
			}
		}
	})
}
