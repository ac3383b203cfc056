package trivy

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/repute-dev/repute/reputation"
)

const digest = "sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb"

// sampleReport is shaped as Trivy Operator writes a VulnerabilityReport.
func sampleReport() map[string]any {
	var obj map[string]any
	_ = json.Unmarshal([]byte(`{
  "apiVersion": "aquasecurity.github.io/v1alpha1", "kind": "VulnerabilityReport",
  "metadata": {"name": "replicaset-api-7d9f-api", "namespace": "team"},
  "report": {
    "artifact": {"repository": "team/api", "tag": "v1", "digest": "`+digest+`"},
    "registry": {"server": "registry.internal"},
    "os": {"family": "debian", "name": "12.5"},
    "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50.1"},
    "summary": {"criticalCount": 2, "highCount": 1, "mediumCount": 0, "lowCount": 3, "unknownCount": 0},
    "updateTimestamp": "2026-11-20T10:00:00Z",
    "vulnerabilities": [
      {"vulnerabilityID": "CVE-2024-3094", "resource": "xz-utils", "severity": "CRITICAL", "title": "backdoor",
       "installedVersion": "5.6.0", "fixedVersion": "5.6.1", "publishedDate": "2024-03-29T00:00:00Z", "lastModifiedDate": "2024-03-29T00:00:00Z"}
    ]
  }
}`), &obj)
	return obj
}

func TestParseReport(t *testing.T) {
	r, err := ParseReport(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	if r.Image() != "registry.internal/team/api" || r.Tag != "v1" || r.Digest != digest || r.Critical != 2 || r.High != 1 || r.Low != 3 {
		t.Errorf("parsed %+v (image %s)", r, r.Image())
	}
	if len(r.IDs) != 1 || r.IDs[0] != "CVE-2024-3094" || r.Packages[0] != "xz-utils" || r.Name != "VulnerabilityReport team/replicaset-api-7d9f-api" {
		t.Errorf("parsed %+v", r)
	}

	bad := []struct {
		name, wantErr string
		mutate        func(map[string]any)
	}{
		{"no repository", "report.artifact.repository", func(o map[string]any) {
			delete(o["report"].(map[string]any)["artifact"].(map[string]any), "repository")
		}},
		{"count not a number", "report.summary.criticalCount", func(o map[string]any) {
			o["report"].(map[string]any)["summary"].(map[string]any)["criticalCount"] = "two"
		}},
		{"negative count", "report.summary.highCount", func(o map[string]any) {
			o["report"].(map[string]any)["summary"].(map[string]any)["highCount"] = int64(-1)
		}},
		{"bad timestamp", "report.updateTimestamp", func(o map[string]any) { o["report"].(map[string]any)["updateTimestamp"] = "yesterday" }},
		{"vulnerability not an object", "report.vulnerabilities[0]", func(o map[string]any) { o["report"].(map[string]any)["vulnerabilities"] = []any{"CVE"} }},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			obj := sampleReport()
			tt.mutate(obj)
			if _, err := ParseReport(obj); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestIndexLookupAndSource(t *testing.T) {
	r, err := ParseReport(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	ix := NewIndex()
	ix.now = func() time.Time { return r.Updated.Add(time.Hour) }
	ix.Put(r)
	older := r
	older.Critical, older.Updated = 0, r.Updated.Add(-time.Hour)
	ix.Put(older) // an older report never replaces a newer one
	src := &Source{Index: ix}
	tests := []struct {
		name, image, resolved string
		wantCritical          int
	}{
		{"by digest in the reference", "registry.internal/team/api@" + digest, "", 2},
		{"by the digest a tag resolved to", "registry.internal/team/api:other", digest, 2},
		{"by name and tag", "registry.internal/team/api:v1", "", 2},
		{"another image", "registry.internal/team/web:v1", "", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref, _ := reputation.ParseImageRef(tt.image)
			ev := &reputation.Evidence{Image: ref, ResolvedDigest: tt.resolved}
			if err := src.Collect(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.wantCritical < 0 && ev.Dependencies != nil:
				t.Errorf("found a report for %s: %+v", tt.image, ev.Dependencies)
			case tt.wantCritical >= 0 && (ev.Dependencies == nil || ev.Dependencies.Critical != tt.wantCritical || ev.Dependencies.Age != time.Hour):
				t.Errorf("dependencies = %+v, want %d critical, 1h old", ev.Dependencies, tt.wantCritical)
			}
		})
	}
	ix.Delete(r)
	ref, _ := reputation.ParseImageRef("registry.internal/team/api:v1")
	if _, ok := ix.Lookup(ref, ""); ok {
		t.Error("report still found after deletion")
	}
	if !Matches(r, &reputation.Verdict{Key: "registry.internal/team/api@" + digest}) || Matches(r, &reputation.Verdict{Key: "x/y:z", Image: "x/y:z"}) {
		t.Error("Matches disagrees with the report's image")
	}
}

// FuzzParseReport: any JSON object parses or fails with a reason; nothing panics.
func FuzzParseReport(f *testing.F) {
	b, _ := json.Marshal(sampleReport())
	f.Add(b)
	f.Add([]byte(`{"report":{"artifact":{"repository":"a"},"summary":{"criticalCount":-5}}}`))
	f.Add([]byte(`{"report":{"vulnerabilities":[1,2]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var obj map[string]any
		if json.Unmarshal(data, &obj) != nil || obj == nil {
			return
		}
		r, err := ParseReport(obj)
		if err == nil && (r.Repository == "" || r.Critical < 0 || r.High < 0) {
			t.Fatalf("accepted an invalid report: %+v", r)
		}
	})
}
