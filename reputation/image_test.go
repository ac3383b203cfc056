package reputation

import (
	"strings"
	"testing"
)

const testDigest = "sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb"

func TestParseImageRef(t *testing.T) {
	tests := []struct {
		in         string
		wantName   string
		wantTag    string
		wantDigest string
		wantKey    string
		wantErr    string
	}{
		{in: "nginx", wantName: "docker.io/library/nginx", wantTag: "latest", wantKey: "docker.io/library/nginx:latest"},
		{in: "nginx:1.27", wantName: "docker.io/library/nginx", wantTag: "1.27", wantKey: "docker.io/library/nginx:1.27"},
		{in: "docker.io/bitnami/redis:7", wantName: "docker.io/bitnami/redis", wantTag: "7", wantKey: "docker.io/bitnami/redis:7"},
		{in: "index.docker.io/library/busybox", wantName: "docker.io/library/busybox", wantTag: "latest", wantKey: "docker.io/library/busybox:latest"},
		{in: "registry.internal/team/app@" + testDigest, wantName: "registry.internal/team/app", wantDigest: testDigest, wantKey: "registry.internal/team/app@" + testDigest},
		{in: "registry.internal/team/app:v2@" + testDigest, wantName: "registry.internal/team/app", wantTag: "v2", wantDigest: testDigest, wantKey: "registry.internal/team/app@" + testDigest},
		{in: "localhost:5000/app:dev", wantName: "localhost:5000/app", wantTag: "dev", wantKey: "localhost:5000/app:dev"},
		{in: "127.0.0.1:5000/app@" + testDigest, wantName: "127.0.0.1:5000/app", wantDigest: testDigest, wantKey: "127.0.0.1:5000/app@" + testDigest},
		// One image, every spelling a runtime pulls it by: one canonical form.
		{in: "library/nginx:1.27", wantName: "docker.io/library/nginx", wantTag: "1.27", wantKey: "docker.io/library/nginx:1.27"},
		{in: "docker.io/library/nginx:1.27", wantName: "docker.io/library/nginx", wantTag: "1.27", wantKey: "docker.io/library/nginx:1.27"},
		{in: "index.docker.io/library/nginx:1.27", wantName: "docker.io/library/nginx", wantTag: "1.27", wantKey: "docker.io/library/nginx:1.27"},
		{in: "registry-1.docker.io/library/nginx:1.27", wantName: "docker.io/library/nginx", wantTag: "1.27", wantKey: "docker.io/library/nginx:1.27"},
		{in: "DOCKER.IO/library/nginx:1.27", wantName: "docker.io/library/nginx", wantTag: "1.27", wantKey: "docker.io/library/nginx:1.27"},
		{in: "docker.io:443/library/nginx:1.27", wantName: "docker.io/library/nginx", wantTag: "1.27", wantKey: "docker.io/library/nginx:1.27"},
		{in: "nginx:1.27@" + testDigest, wantName: "docker.io/library/nginx", wantTag: "1.27", wantDigest: testDigest, wantKey: "docker.io/library/nginx@" + testDigest},
		{in: "QUAY.IO/evil/miner", wantName: "quay.io/evil/miner", wantTag: "latest", wantKey: "quay.io/evil/miner:latest"},
		{in: "quay.io:443/evil/miner", wantName: "quay.io/evil/miner", wantTag: "latest", wantKey: "quay.io/evil/miner:latest"},
		{in: "Quay.Io:443/evil/miner@" + testDigest, wantName: "quay.io/evil/miner", wantDigest: testDigest, wantKey: "quay.io/evil/miner@" + testDigest},
		{in: "registry.internal:5000/team/app:v1", wantName: "registry.internal:5000/team/app", wantTag: "v1", wantKey: "registry.internal:5000/team/app:v1"},
		{in: strings.Repeat("a", 250), wantErr: "canonical form"}, // library/ pushes it past 255
		{in: "", wantErr: "empty"},
		{in: "UPPER/case", wantErr: "invalid image reference"},
		{in: "nginx@sha256:short", wantErr: "invalid image reference"},
		{in: "a/b:c:d", wantErr: "invalid image reference"},
		{in: strings.Repeat("a", MaxImageRefLen+1), wantErr: "longer than"},
		{in: "r\x8bgistry.example/app:v1", wantErr: "not printable ASCII"}, // lowercasing would triple the byte
		{in: "régistry.example/app:v1", wantErr: "not printable ASCII"},
		{in: "registry.example/app:v1\n", wantErr: "not printable ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseImageRef(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseImageRef(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseImageRef(%q): %v", tt.in, err)
			}
			if got.Name() != tt.wantName || got.Tag != tt.wantTag || got.Digest != tt.wantDigest || got.Key() != tt.wantKey {
				t.Errorf("ParseImageRef(%q) = name %q tag %q digest %q key %q; want %q %q %q %q",
					tt.in, got.Name(), got.Tag, got.Digest, got.Key(), tt.wantName, tt.wantTag, tt.wantDigest, tt.wantKey)
			}
			if got.Pinned() != (tt.wantDigest != "") {
				t.Errorf("Pinned() = %v", got.Pinned())
			}
		})
	}
}

// FuzzParseImageRef checks that any input either parses into a reference that parses again to
// the same key, or fails with an error; it must never panic.
func FuzzParseImageRef(f *testing.F) {
	for _, s := range []string{"nginx", "nginx:1.27", "QUAY.IO:443/evil/miner", strings.Repeat("a", 250), "registry.internal/team/app@" + testDigest, "localhost:5000/a/b/c:t", "a/b:c:d", "@", ":", "x@sha256:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseImageRef(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		again, err := ParseImageRef(ref.String())
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", ref.String(), s, err)
		}
		if again != ref || again.String() != ref.String() {
			t.Fatalf("canonical form does not round-trip: %+v → %+v", ref, again)
		}
		if ref.Registry != strings.ToLower(ref.Registry) || strings.HasSuffix(ref.Registry, ":443") {
			t.Fatalf("registry %q is not canonical", ref.Registry)
		}
	})
}

func TestDigestOfImageID(t *testing.T) {
	digest := "sha256:" + strings.Repeat("a1", 32)
	for in, want := range map[string]string{
		"registry.internal/team/api@" + digest:    digest,
		"docker-pullable://nginx@" + digest:       digest,
		"sha256:" + strings.Repeat("c", 64):       "", // a configuration ID, not a manifest digest
		"registry.internal/team/api@sha256:short": "",
		"": "",
		"registry.internal/team/api@sha512:" + strings.Repeat("a", 64): "",
		"registry.internal/team/api@sha256:" + strings.Repeat("G", 64): "",
	} {
		if got := DigestOfImageID(in); got != want {
			t.Errorf("DigestOfImageID(%q) = %q, want %q", in, got, want)
		}
	}
}
