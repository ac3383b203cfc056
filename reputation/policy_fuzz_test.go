package reputation

import (
	"strings"
	"testing"
)

// FuzzMatchOrigin checks that any pattern either validates or is refused with a message, and
// that a valid pattern never lets an image's registry be matched by the repository part:
// whatever the pattern, the registry glob alone decides the registry.
func FuzzMatchOrigin(f *testing.F) {
	for _, s := range [][2]string{
		{"registry.internal/*", "registry.internal/team/app:1"},
		{"*.corp.example/*", "evil.io/x.corp.example/y:1"},
		{"docker.io/library/*", "nginx"},
		{"*", "quay.io/a/b@" + testDigest},
		{"[/x", "a/b"},
		{"reg/[", "reg/x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, image string) {
		if err := ValidateOriginPattern(pattern); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		ref, err := ParseImageRef(image)
		if err != nil {
			return
		}
		if !MatchOrigin(pattern, ref) || pattern == "*" {
			return
		}
		registryGlob, _, _ := strings.Cut(pattern, "/")
		if !MatchOrigin(registryGlob+"/*", ref) {
			t.Fatalf("pattern %q matched %s although its registry glob %q does not match registry %q", pattern, ref, registryGlob, ref.Registry)
		}
	})
}
