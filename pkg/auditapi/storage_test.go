package auditapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation"
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

// A Simulation is answered only for a readable ReputationPolicy; anything else is a clear error
// that never reaches the simulator.
func TestSimulationsCreate(t *testing.T) {
	reached := false
	simulate := func(_ context.Context, p *v1alpha1.ReputationPolicy) (*audit.Simulation, error) {
		reached = true
		return &audit.Simulation{SimulationResult: audit.SimulationResult{ProposedVersion: "p-" + p.Name}}, nil
	}
	for _, tc := range []struct {
		name, policy string
		simulate     func(context.Context, *v1alpha1.ReputationPolicy) (*audit.Simulation, error)
		wantCode     int32
		wantMessage  string
	}{
		{"answered", `{"kind":"ReputationPolicy","metadata":{"name":"next"},"spec":{"baseScore":60}}`, simulate, 0, ""},
		{"no policy", ``, simulate, 400, "spec.policy: required"},
		{"misspelled field", `{"kind":"ReputationPolicy","spec":{"baseScroe":60}}`, simulate, 400, `unknown field "baseScroe"`},
		{"another kind", `{"kind":"ConfigMap"}`, simulate, 400, "want a ReputationPolicy"},
		{"a server without evidence", `{"kind":"ReputationPolicy"}`, nil, 503, "cannot simulate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reached = false
			in := &Simulation{Spec: SimulationSpec{Policy: runtime.RawExtension{Raw: []byte(tc.policy)}}}
			out, err := (&simulations{simulate: tc.simulate}).Create(context.Background(), in, nil, nil)
			if tc.wantCode == 0 {
				if err != nil || out.(*Simulation).Status == nil || out.(*Simulation).Status.ProposedVersion != "p-next" {
					t.Fatalf("Create = %+v, %v; want the simulation's answer in status", out, err)
				}
				return
			}
			var status apierrors.APIStatus
			if !errors.As(err, &status) || status.Status().Code != tc.wantCode || !strings.Contains(err.Error(), tc.wantMessage) {
				t.Errorf("Create: %v; want %d saying %q", err, tc.wantCode, tc.wantMessage)
			}
			if reached {
				t.Error("a refused simulation reached the simulator")
			}
		})
	}
}

// Without a store, what the store answers is a 503 that says why: none configured, or failed.
func TestWithoutAStore(t *testing.T) {
	failed := func() error { return errors.New("open /var/lib/repute/repute.db: no space left on device") }
	for _, tc := range []struct {
		name  string
		store records
		want  string
	}{
		{"none configured", records{}, "args store.path"},
		{"failed", records{ready: failed}, "degraded: open /var/lib/repute/repute.db: no space left"},
	} {
		ctx := context.Background()
		_, listErr := (&decisions{tc.store}).List(ctx, &metainternalversion.ListOptions{})
		_, policyErr := (&policies{tc.store}).List(ctx, &metainternalversion.ListOptions{})
		_, historyErr := (&imageHistory{records: tc.store}).Get(ctx, "redis:7.2", &HistoryOptions{})
		for what, err := range map[string]error{"decisions": listErr, "policies": policyErr, "history": historyErr} {
			if !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s, %s: %v; want a 503 saying %q", tc.name, what, err, tc.want)
			}
		}
	}
}

// Images are listed a page at a time, as kubectl asks for them: a flood of image names is never
// one response, and the pages cover every image once.
func TestImagesArePaged(t *testing.T) {
	all := map[string]*reputation.Verdict{}
	for i := range 1200 {
		all[fmt.Sprintf("registry.example/flood/img%04d:v1", i)] = &reputation.Verdict{Tier: reputation.TierUnknown}
	}
	s := &images{verdicts: func() (map[string]*reputation.Verdict, error) { return all, nil }}
	seen := map[string]bool{}
	pages := 0
	for token := ""; ; pages++ {
		obj, err := s.List(context.Background(), &metainternalversion.ListOptions{Continue: token})
		if err != nil || pages > 3 {
			t.Fatalf("page %d: %v", pages, err)
		}
		list := obj.(*ImageList)
		if len(list.Items) > maxListed {
			t.Fatalf("a page of %d images, want at most %d", len(list.Items), maxListed)
		}
		for _, img := range list.Items {
			if seen[img.Ref] {
				t.Fatalf("%s listed twice", img.Ref)
			}
			seen[img.Ref] = true
		}
		if token = list.Continue; token == "" {
			break
		}
	}
	if len(seen) != len(all) || pages != 2 {
		t.Errorf("%d images in %d pages, want all %d in 3", len(seen), pages+1, len(all))
	}
	if _, err := s.List(context.Background(), &metainternalversion.ListOptions{Continue: "%%%"}); !apierrors.IsBadRequest(err) {
		t.Errorf("a continue token this API did not hand out: %v, want 400", err)
	}
}
