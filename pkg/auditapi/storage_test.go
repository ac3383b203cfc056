package auditapi

import (
	"strings"
	"testing"

	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	"k8s.io/apimachinery/pkg/fields"
)

// Field selectors: exact matches on the fields a resource offers; anything else is a clear 400.
func TestFieldSelectors(t *testing.T) {
	for _, tc := range []struct {
		selector string
		want     map[string]string
		wantErr  string
	}{
		{"", map[string]string{}, ""},
		{"tier=untrusted,node=n1", map[string]string{"tier": "untrusted", "node": "n1"}, ""},
		{"metadata.namespace=team,metadata.name=api.1", map[string]string{"metadata.name": "api.1"}, ""},
		{"tier!=trusted", nil, "only = is supported"},
		{"colour=red", nil, `"colour": not a field to select by`},
	} {
		sel, err := fields.ParseSelector(tc.selector)
		if err != nil {
			t.Fatal(err)
		}
		got, err := selected(&metainternalversion.ListOptions{FieldSelector: sel}, decisionFields)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want an error saying %q", tc.selector, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.selector, got, err, tc.want)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%q: %s=%q, want %q", tc.selector, k, got[k], v)
			}
		}
	}
}

// image= matches any of an object's images in any spelling that canonicalizes to the same one,
// and the object names' ~ spelling too.
func TestImageSelectorMatchesAnySpelling(t *testing.T) {
	images := []string{"redis:7.2", "registry.internal/team/api@sha256:" + strings.Repeat("a", 64)}
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{"redis:7.2", true},
		{"docker.io/library/redis:7.2", true},
		{"docker.io~library~redis:7.2", true},
		{"registry.internal~team~api@sha256:" + strings.Repeat("a", 64), true},
		{"redis:7.4", false},
		{"::not a reference", false},
	} {
		if got := matches(map[string]string{"image": tc.value}, nil, images); got != tc.want {
			t.Errorf("image=%s: %v, want %v", tc.value, got, tc.want)
		}
	}
}
