package trivy

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	ix.ObservePod(podOf("api-7d9f-x1", digest)) // pods of the report's namespace run the digest
	ix.Put(r)
	older := r
	older.Name, older.Critical, older.Updated = "VulnerabilityReport team/older-scan", 0, r.Updated.Add(-time.Hour)
	ix.Put(older) // another report about the image: the worst counts
	src := &Source{Index: ix}
	tests := []struct {
		name, image, resolved string
		wantCritical          int
	}{
		{"by digest in the reference", "registry.internal/team/api@" + digest, "", 2},
		{"by the digest a tag resolved to", "registry.internal/team/api:other", digest, 2},
		{"by name and tag, the digest resolved", "registry.internal/team/api:v1", digest, 2},
		{"by name and tag alone: a namespace's report cannot speak for a tag", "registry.internal/team/api:v1", "", -1},
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
	ix.Delete(older)
	ref, _ := reputation.ParseImageRef("registry.internal/team/api:v1")
	if _, ok := ix.Lookup(ref, digest); ok {
		t.Error("report still found after deletion")
	}
	if !Matches(r, &reputation.Verdict{Key: "registry.internal/team/api@" + digest}) || Matches(r, &reputation.Verdict{Key: "x/y:z", Image: "x/y:z"}) {
		t.Error("Matches disagrees with the report's image")
	}
}

// workloadReport is a report as Trivy Operator writes it for a ReplicaSet's container when it
// does not record the digest: only the labels say which workload it scanned.
func workloadReport() map[string]any {
	obj := sampleReport()
	delete(obj["report"].(map[string]any)["artifact"].(map[string]any), "digest")
	obj["metadata"].(map[string]any)["labels"] = map[string]any{
		"trivy-operator.resource.kind": "ReplicaSet", "trivy-operator.resource.name": "api-7d9f",
		"trivy-operator.resource.namespace": "team", "trivy-operator.container.name": "api",
	}
	return obj
}

// podOf is a pod of ReplicaSet api-7d9f whose container api runs the given digest.
func podOf(name, imageDigest string) *v1.Pod {
	controller := true
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "api-7d9f", Controller: &controller}}},
		Status: v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{
			{Name: "api", ImageID: "registry.internal/team/api@" + imageDigest},
			{Name: "sidecar", ImageID: "registry.internal/mesh/proxy@" + otherDigest},
		}},
	}
}

const otherDigest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

// A report without a digest reaches the digest its workload's pods run, whichever arrives
// first, and only for the container it scanned.
func TestReportsWithoutDigestAreMappedThroughTheWorkloadsPods(t *testing.T) {
	r, err := ParseReport(workloadReport())
	if err != nil {
		t.Fatal(err)
	}
	if want := (Workload{Namespace: "team", Kind: "ReplicaSet", Name: "api-7d9f", Container: "api"}); r.Workload != want || r.Digest != "" {
		t.Fatalf("parsed workload %+v digest %q, want %+v and none", r.Workload, r.Digest, want)
	}
	pinned, _ := reputation.ParseImageRef("registry.internal/team/api@" + digest)
	sidecar, _ := reputation.ParseImageRef("registry.internal/mesh/proxy@" + otherDigest)
	for _, order := range []string{"report first", "pod first"} {
		t.Run(order, func(t *testing.T) {
			ix := NewIndex()
			var filed []Report
			if order == "report first" {
				ix.Put(r)
				filed = ix.ObservePod(podOf("api-7d9f-x1", digest))
			} else {
				ix.ObservePod(podOf("api-7d9f-x1", digest))
				filed = ix.Put(r)
			}
			if len(filed) == 0 || filed[len(filed)-1].Digest != digest || !Matches(filed[len(filed)-1], &reputation.Verdict{Key: pinned.String()}) {
				t.Fatalf("filed %+v, want the report filed under %s", filed, digest)
			}
			got, ok := ix.Lookup(pinned, "")
			if !ok || got.Critical != 2 || !strings.Contains(got.MappedVia, "ReplicaSet team/api-7d9f's container api") {
				t.Fatalf("lookup by the pod's digest = %+v, %v", got, ok)
			}
			if _, ok := ix.Lookup(sidecar, ""); ok {
				t.Error("the report was filed under the sidecar's digest too")
			}
			if again := ix.ObservePod(podOf("api-7d9f-x2", digest)); len(again) != 0 {
				t.Errorf("a second pod of the same workload and digest filed the report again: %+v", again)
			}
			removed := ix.Delete(r)
			if _, ok := ix.Lookup(pinned, ""); ok || len(removed) != 2 {
				t.Errorf("after deletion: still found %v, removed %+v", ok, removed)
			}
		})
	}
	// A ClusterVulnerabilityReport is about an image, not a workload.
	cluster := workloadReport()
	cluster["kind"] = "ClusterVulnerabilityReport"
	if cr, _ := ParseReport(cluster); cr.Workload != (Workload{}) {
		t.Errorf("cluster report has workload %+v", cr.Workload)
	}
}

// FuzzParseReport: any JSON object parses or fails with a reason; nothing panics.
func FuzzParseReport(f *testing.F) {
	b, _ := json.Marshal(sampleReport())
	f.Add(b)
	f.Add([]byte(`{"report":{"artifact":{"repository":"a"},"summary":{"criticalCount":-5}}}`))
	f.Add([]byte(`{"report":{"vulnerabilities":[1,2]}}`))
	w, _ := json.Marshal(workloadReport())
	f.Add(w)
	f.Fuzz(func(t *testing.T, data []byte) {
		var obj map[string]any
		if json.Unmarshal(data, &obj) != nil || obj == nil {
			return
		}
		r, err := ParseReport(obj)
		if err == nil && (r.Repository == "" || r.Critical < 0 || r.High < 0) {
			t.Fatalf("accepted an invalid report: %+v", r)
		}
		if w := r.Workload; err == nil && w != (Workload{}) && (w.Kind == "" || w.Name == "" || w.Container == "" || w.Namespace == "") {
			t.Fatalf("accepted a partial workload: %+v", w)
		}
	})
}

// Reports are trust inputs anyone with report write in a namespace can forge. A forged report
// cannot hide another's CVEs: the worst report counts, a future date is clamped, a report counts
// only where pods of its own namespace run the digest, and deleting a forgery keeps the rest.
func TestForgedReportsCannotHideVulnerabilities(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	real, err := ParseReport(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	forge := func(namespace string) Report {
		obj := sampleReport()
		md := obj["metadata"].(map[string]any)
		md["name"], md["namespace"] = "forged", namespace
		rep := obj["report"].(map[string]any)
		rep["summary"] = map[string]any{"criticalCount": 0.0, "highCount": 0.0}
		rep["vulnerabilities"] = []any{}
		rep["updateTimestamp"] = "2099-01-01T00:00:00Z"
		r, err := ParseReport(obj)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	pinned, _ := reputation.ParseImageRef("registry.internal/team/api@" + digest)
	for _, namespace := range []string{"attacker", "team"} {
		t.Run("forged in "+namespace, func(t *testing.T) {
			ix := NewIndex()
			ix.now = func() time.Time { return now }
			ix.ObservePod(podOf("api-7d9f-x1", digest))
			ix.Put(real)
			forged := forge(namespace)
			ix.Put(forged)
			got, ok := ix.Lookup(pinned, "")
			if !ok || got.Critical != 2 || !slices.Contains(got.IDs, "CVE-2024-3094") || got.Updated.After(now) {
				t.Errorf("with a forged report in %s: %+v, want the real 2 criticals and CVE-2024-3094, dated no later than now", namespace, got)
			}
			ix.Delete(forged)
			if got, ok := ix.Lookup(pinned, ""); !ok || got.Critical != 2 {
				t.Errorf("deleting the forgery dropped the real report: %+v %v", got, ok)
			}
		})
	}
	// Labels claiming another namespace's workload are not believed.
	claims := workloadReport()
	claims["metadata"].(map[string]any)["namespace"] = "attacker"
	cr, err := ParseReport(claims)
	if err != nil {
		t.Fatal(err)
	}
	if cr.Workload.Namespace != "attacker" {
		t.Errorf("a report in attacker filed under workload %+v", cr.Workload)
	}
}

// A namespaced report counts for a digest its namespace's pods pin anywhere in their spec
// (containers, ephemeral containers, image volumes) before the kubelet reports them, and not
// for a digest only another namespace pins.
func TestNamespacedReportsCountForDigestsTheNamespacePins(t *testing.T) {
	pinned := "registry.internal/team/api@" + digest
	tests := []struct {
		name string
		pod  v1.PodSpec
		ns   string
		want bool
	}{
		{"container", v1.PodSpec{Containers: []v1.Container{{Name: "c", Image: pinned}}}, "team", true},
		{"init container", v1.PodSpec{InitContainers: []v1.Container{{Name: "c", Image: pinned}}}, "team", true},
		{"ephemeral container", v1.PodSpec{EphemeralContainers: []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{Name: "c", Image: pinned}}}}, "team", true},
		{"image volume", v1.PodSpec{Volumes: []v1.Volume{{Name: "v", VolumeSource: v1.VolumeSource{Image: &v1.ImageVolumeSource{Reference: pinned}}}}}, "team", true},
		{"tag only", v1.PodSpec{Containers: []v1.Container{{Name: "c", Image: "registry.internal/team/api:v1"}}}, "team", false},
		{"another namespace pins it", v1.PodSpec{Containers: []v1.Container{{Name: "c", Image: pinned}}}, "elsewhere", false},
	}
	ref, err := reputation.ParseImageRef(pinned)
	if err != nil {
		t.Fatal(err)
	}
	report, err := ParseReport(sampleReport()) // filed in namespace team
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := NewIndex()
			ix.ObserveSpec(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: tt.ns, Name: "p"}, Spec: tt.pod})
			ix.Put(report)
			if _, ok := ix.Lookup(ref, ""); ok != tt.want {
				t.Errorf("team's report counts: %v, want %v", ok, tt.want)
			}
		})
	}
}
