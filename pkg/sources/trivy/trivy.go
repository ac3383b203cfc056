// Package trivy reads Trivy Operator's VulnerabilityReport and ClusterVulnerabilityReport objects
// from the cluster and hands each image's newest report to the engine as dependency evidence.
package trivy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/pkg/recent"
	"github.com/repute-dev/repute/reputation"
)

// The report kinds Trivy Operator writes.
var (
	GroupVersion           = schema.GroupVersion{Group: "aquasecurity.github.io", Version: "v1alpha1"}
	VulnerabilityReports   = GroupVersion.WithResource("vulnerabilityreports")
	ClusterVulnReports     = GroupVersion.WithResource("clustervulnerabilityreports")
	maxVulnerabilitiesRead = 10000
)

// Report is what Repute takes from one vulnerability report.
type Report struct {
	Name string
	// Namespace is a VulnerabilityReport's namespace, empty for a ClusterVulnerabilityReport.
	Namespace string
	// Registry, Repository, Tag and Digest identify the scanned image (digest optional).
	Registry, Repository, Tag, Digest string
	// Workload is what Trivy Operator scanned, from the report's labels; without a digest, the
	// report is mapped to the digests that workload's pods run.
	Workload Workload
	// MappedVia says how the digest was learnt when the report did not carry it.
	MappedVia                          string
	Critical, High, Medium, Low, Other int
	IDs, Packages                      []string
	Updated                            time.Time
}

// ParseReport reads a report object. Missing optional fields are fine; a report that does not
// say which image it is about, or whose counts are not numbers, is an error naming the field.
func ParseReport(obj map[string]any) (Report, error) {
	var r Report
	u := unstructured.Unstructured{Object: obj}
	r.Name = u.GetKind() + " " + strings.TrimPrefix(u.GetNamespace()+"/"+u.GetName(), "/")
	r.Namespace = u.GetNamespace()
	str := func(path ...string) string {
		s, _, _ := unstructured.NestedString(obj, path...)
		return s
	}
	r.Repository = str("report", "artifact", "repository")
	if r.Repository == "" {
		return r, errors.New("report.artifact.repository: required")
	}
	r.Registry, r.Tag, r.Digest = str("report", "registry", "server"), str("report", "artifact", "tag"), str("report", "artifact", "digest")
	if u.GetKind() != "ClusterVulnerabilityReport" {
		r.Workload = workloadOf(u)
	}
	for _, c := range []struct {
		field string
		into  *int
	}{{"criticalCount", &r.Critical}, {"highCount", &r.High}, {"mediumCount", &r.Medium}, {"lowCount", &r.Low}, {"unknownCount", &r.Other}} {
		v, found, err := unstructured.NestedFieldNoCopy(obj, "report", "summary", c.field)
		if err != nil || !found {
			continue
		}
		n, ok := count(v)
		if !ok {
			return r, fmt.Errorf("report.summary.%s: %v is not a count", c.field, v)
		}
		*c.into = n
	}
	if ts := str("report", "updateTimestamp"); ts != "" {
		t, err := time.Parse(time.RFC3339, ts)
		if err != nil {
			return r, fmt.Errorf("report.updateTimestamp: %w", err)
		}
		r.Updated = t
	}
	vulns, _, err := unstructured.NestedSlice(obj, "report", "vulnerabilities")
	if err != nil {
		return r, fmt.Errorf("report.vulnerabilities: %w", err)
	}
	for i, v := range vulns {
		if i >= maxVulnerabilitiesRead {
			break
		}
		m, ok := v.(map[string]any)
		if !ok {
			return r, fmt.Errorf("report.vulnerabilities[%d]: not an object", i)
		}
		if id, ok := m["vulnerabilityID"].(string); ok && id != "" {
			r.IDs = append(r.IDs, id)
		}
		if pkg, ok := m["resource"].(string); ok && pkg != "" {
			r.Packages = append(r.Packages, pkg)
		}
	}
	return r, nil
}

// Workload names a container of the object Trivy Operator scanned: the pods' controller (a
// ReplicaSet, StatefulSet, DaemonSet or Job) or a bare Pod.
type Workload struct{ Namespace, Kind, Name, Container string }

// The labels Trivy Operator puts on each report. A resource name too long for a label value is
// kept in an annotation of the same key.
const (
	labelResourceKind      = "trivy-operator.resource.kind"
	labelResourceName      = "trivy-operator.resource.name"
	labelResourceNamespace = "trivy-operator.resource.namespace"
	labelContainerName     = "trivy-operator.container.name"
)

func workloadOf(u unstructured.Unstructured) Workload {
	labels := u.GetLabels()
	w := Workload{Namespace: labels[labelResourceNamespace], Kind: labels[labelResourceKind], Name: labels[labelResourceName], Container: labels[labelContainerName]}
	if w.Name == "" {
		w.Name = u.GetAnnotations()[labelResourceName]
	}
	// A report speaks for workloads of its own namespace only, whatever its labels claim:
	// anyone who can write reports in one namespace must not file them against another's.
	// A report without one (cluster-scoped, or malformed) names no workload at all: a key with
	// an empty namespace would match no pod, and is no key (found by FuzzParseReport).
	w.Namespace = u.GetNamespace()
	if w.Namespace == "" || w.Kind == "" || w.Name == "" || w.Container == "" {
		return Workload{}
	}
	return w
}

// workloadsOf lists the workload keys of a pod's containers with the digests they run, read
// from the status the kubelet reports.
func workloadsOf(pod *v1.Pod) map[Workload]string {
	kind, name := "Pod", pod.Name
	if c := metav1.GetControllerOf(pod); c != nil {
		kind, name = c.Kind, c.Name
	}
	out := map[Workload]string{}
	for _, statuses := range [][]v1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, st := range statuses {
			if d := reputation.DigestOfImageID(st.ImageID); d != "" {
				out[Workload{Namespace: pod.Namespace, Kind: kind, Name: name, Container: st.Name}] = d
			}
		}
	}
	return out
}

// count accepts the number types decoders produce: int64 from the apiserver's JSON, float64
// from encoding/json. It refuses negatives, fractions and absurd sizes.
func count(v any) (int, bool) {
	var f float64
	switch n := v.(type) {
	case int64:
		f = float64(n)
	case float64:
		f = n
	case json.Number:
		x, err := n.Float64()
		if err != nil {
			return 0, false
		}
		f = x
	default:
		return 0, false
	}
	if f < 0 || f != math.Trunc(f) || f > 1<<30 {
		return 0, false
	}
	return int(f), true
}

// Image is the canonical name the report is about ("registry/repository"), as the engine's
// image references spell it.
func (r Report) Image() string {
	s := r.Repository
	if r.Registry != "" {
		s = r.Registry + "/" + r.Repository
	}
	ref, err := reputation.ParseImageRef(s)
	if err != nil {
		return ""
	}
	return ref.Name()
}

// Index holds every report per image digest and per image name and tag; when several speak
// for one image, the worst counts. Reports without a digest are also kept by workload, and filed
// under each digest the workload's pods run. A namespaced report counts only for a digest that
// pods of its own namespace run; a ClusterVulnerabilityReport (cluster-scoped, written by
// Trivy Operator's own account) counts everywhere.
type Index struct {
	mu       sync.RWMutex
	byDigest map[string]map[string]Report // digest → report name → report
	byTag    map[string]map[string]Report // "registry/repository:tag" → report name → report
	// byWorkload holds reports that carry no digest; workloadDigests the digests each
	// workload's pods were seen running, newest last; namespaceDigests those of any pod of a
	// namespace.
	byWorkload       map[Workload]Report
	workloadDigests  map[Workload][]string
	namespaceDigests map[string][]string
	now              func() time.Time
}

const (
	// maxDigestsPerWorkload bounds what a workload's rollouts leave behind.
	maxDigestsPerWorkload = 8
	// maxDigestsPerNamespace bounds the digests remembered as running in one namespace.
	maxDigestsPerNamespace = 1024
	// maxIDsMerged bounds the vulnerability IDs and packages of reports merged for one image.
	maxIDsMerged = 10000
)

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{byDigest: map[string]map[string]Report{}, byTag: map[string]map[string]Report{}, byWorkload: map[Workload]Report{},
		workloadDigests: map[Workload][]string{}, namespaceDigests: map[string][]string{}, now: time.Now}
}

// Put records a report, replacing the previous version of the same report. A report dated in
// the future is dated now: its own timestamp must not make it outlast the others. It returns
// the report as filed under each digest, for re-evaluating the images it concerns.
func (ix *Index) Put(r Report) []Report {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if now := ix.now(); r.Updated.After(now) {
		r.Updated = now
	}
	filed := []Report{r}
	if r.Digest != "" {
		file(ix.byDigest, r.Digest, r)
	} else if r.Workload != (Workload{}) {
		ix.byWorkload[r.Workload] = r
		for _, d := range ix.workloadDigests[r.Workload] {
			mapped := r.mappedTo(d)
			file(ix.byDigest, d, mapped)
			filed = append(filed, mapped)
		}
	}
	if r.Tag != "" {
		file(ix.byTag, r.Image()+":"+r.Tag, r)
	}
	return filed
}

// file puts a report under a key, replacing its own previous version only.
func file(into map[string]map[string]Report, key string, r Report) {
	if into[key] == nil {
		into[key] = map[string]Report{}
	}
	into[key][r.Name] = r
}

// mappedTo is the report filed under a digest the scanned workload's pods run.
func (r Report) mappedTo(digest string) Report {
	r.Digest = digest
	r.MappedVia = fmt.Sprintf("the imageID of %s %s/%s's container %s", r.Workload.Kind, r.Workload.Namespace, r.Workload.Name, r.Workload.Container)
	return r
}

// ObservePod learns from a pod's status which digests its workload, and its namespace, run. It
// returns the reports newly filed under a digest this way.
func (ix *Index) ObservePod(pod *v1.Pod) []Report {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.noteSpecDigests(pod)
	var filed []Report
	for w, d := range workloadsOf(pod) {
		ix.noteNamespaceDigest(pod.Namespace, d)
		known, added := recent.Append(ix.workloadDigests[w], d, maxDigestsPerWorkload)
		if !added {
			continue
		}
		ix.workloadDigests[w] = known
		if r, ok := ix.byWorkload[w]; ok {
			mapped := r.mappedTo(d)
			file(ix.byDigest, d, mapped)
			filed = append(filed, mapped)
		}
	}
	return filed
}

// ObserveSpec notes the digests a pod's spec pins as run in its namespace, before the kubelet
// reports them: the scheduler calls it before a new image is evaluated, so the namespace's own
// reports count for the pod's first placement.
func (ix *Index) ObserveSpec(pod *v1.Pod) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.noteSpecDigests(pod)
}

// noteSpecDigests notes every digest the pod's spec pins, in any container or image volume.
func (ix *Index) noteSpecDigests(pod *v1.Pod) {
	placement.ForEachImage(pod, func(image string) {
		if _, d, ok := strings.Cut(image, "@"); ok && strings.HasPrefix(d, "sha256:") {
			ix.noteNamespaceDigest(pod.Namespace, d)
		}
	})
}

// noteNamespaceDigest remembers that pods of the namespace run the digest; ix.mu is held.
func (ix *Index) noteNamespaceDigest(namespace, digest string) {
	if running, added := recent.Append(ix.namespaceDigests[namespace], digest, maxDigestsPerNamespace); added {
		ix.namespaceDigests[namespace] = running
	}
}

// Delete forgets a report, wherever it was filed; other reports about the same image stay. It
// returns the report as it was filed.
func (ix *Index) Delete(r Report) []Report {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	filed := []Report{r}
	digests := []string{r.Digest}
	if r.Digest == "" {
		if old, ok := ix.byWorkload[r.Workload]; ok && old.Name == r.Name {
			delete(ix.byWorkload, r.Workload)
		}
		digests = ix.workloadDigests[r.Workload]
	}
	for _, d := range digests {
		if old, ok := ix.byDigest[d][r.Name]; ok {
			unfile(ix.byDigest, d, r.Name)
			filed = append(filed, old)
		}
	}
	unfile(ix.byTag, r.Image()+":"+r.Tag, r.Name)
	return filed
}

func unfile(from map[string]map[string]Report, key, name string) {
	delete(from[key], name)
	if len(from[key]) == 0 {
		delete(from, key)
	}
}

// counts reports whether a report speaks for the digest: a cluster report always, a namespaced
// one only when pods of its namespace run that digest.
func (ix *Index) counts(r Report, digest string) bool {
	return r.Namespace == "" || (digest != "" && slices.Contains(ix.namespaceDigests[r.Namespace], digest))
}

// Lookup finds what the reports say of an image: by digest first (the content scanned is the
// content run), then by name and tag. When several reports count, the worst does: the most
// vulnerabilities of each severity, every ID and package any of them lists, and the newest date.
func (ix *Index) Lookup(ref reputation.ImageRef, resolvedDigest string) (Report, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, d := range []string{ref.Digest, resolvedDigest} {
		if d == "" {
			continue
		}
		if r, ok := ix.worst(ix.byDigest[d], d); ok {
			return r, true
		}
	}
	if ref.Tag != "" {
		digest := ref.Digest
		if digest == "" {
			digest = resolvedDigest
		}
		return ix.worst(ix.byTag[ref.Name()+":"+ref.Tag], digest)
	}
	return Report{}, false
}

// worst merges the reports that count for the digest.
func (ix *Index) worst(reports map[string]Report, digest string) (Report, bool) {
	names := make([]string, 0, len(reports))
	for name, r := range reports {
		if ix.counts(r, digest) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return Report{}, false
	}
	slices.Sort(names) // one merge order, so verdicts are reproducible
	out := reports[names[0]]
	out.IDs, out.Packages = slices.Clone(out.IDs), slices.Clone(out.Packages)
	for _, name := range names[1:] {
		r := reports[name]
		if r.Critical > out.Critical || (r.Critical == out.Critical && r.High > out.High) {
			out.Name, out.MappedVia = r.Name, r.MappedVia
		}
		out.Critical, out.High = max(out.Critical, r.Critical), max(out.High, r.High)
		out.Medium, out.Low, out.Other = max(out.Medium, r.Medium), max(out.Low, r.Low), max(out.Other, r.Other)
		out.IDs = mergeBounded(out.IDs, r.IDs)
		out.Packages = mergeBounded(out.Packages, r.Packages)
		if r.Updated.After(out.Updated) {
			out.Updated = r.Updated
		}
	}
	if len(names) > 1 {
		out.Name = fmt.Sprintf("%s (the worst of %d reports)", out.Name, len(names))
	}
	return out, true
}

func mergeBounded(into, more []string) []string {
	seen := make(map[string]bool, len(into))
	for _, s := range into {
		seen[s] = true
	}
	for _, s := range more {
		if len(into) >= maxIDsMerged {
			break
		}
		if !seen[s] {
			seen[s] = true
			into = append(into, s)
		}
	}
	return into
}

// Source gives the engine dependency evidence from the index. Put it after the signature
// source, which resolves tags to digests.
type Source struct{ Index *Index }

var _ reputation.EvidenceSource = (*Source)(nil)

// Name implements reputation.EvidenceSource.
func (s *Source) Name() string { return "trivy" }

// Collect implements reputation.EvidenceSource; it reads memory only.
func (s *Source) Collect(_ context.Context, ev *reputation.Evidence) error {
	r, ok := s.Index.Lookup(ev.Image, ev.ResolvedDigest)
	if !ok {
		return nil
	}
	name := r.Name
	if r.MappedVia != "" {
		name += " (digest from " + r.MappedVia + ")"
	}
	ev.Dependencies = &reputation.DependencyEvidence{
		Report: name, Critical: r.Critical, High: r.High, Medium: r.Medium, Low: r.Low, Unknown: r.Other,
		IDs: r.IDs, Packages: r.Packages,
	}
	if !r.Updated.IsZero() {
		ev.Dependencies.Age = s.Index.now().Sub(r.Updated)
	}
	return nil
}

// Watch fills the index from the cluster's reports, if Trivy Operator's CRDs are served, and
// calls changed for every report added, updated or deleted. It returns false when the CRDs are
// not installed (checked once, at start).
func Watch(ctx context.Context, disc discovery.DiscoveryInterface, client dynamic.Interface, ix *Index, changed func(Report)) bool {
	logger := klog.FromContext(ctx)
	resources, err := disc.ServerResourcesForGroupVersion(GroupVersion.String())
	if err != nil {
		logger.Info("Trivy Operator reports are not served; dependency evidence is off", "groupVersion", GroupVersion, "err", err)
		return false
	}
	served := map[string]bool{}
	for _, r := range resources.APIResources {
		served[r.Name] = true
	}
	factory := dynamicinformer.NewDynamicSharedInformerFactory(client, 0)
	for _, gvr := range []schema.GroupVersionResource{VulnerabilityReports, ClusterVulnReports} {
		if !served[gvr.Resource] {
			continue
		}
		handle := func(obj any, deleted bool) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			u, ok := obj.(*unstructured.Unstructured)
			if !ok {
				return
			}
			r, err := ParseReport(u.Object)
			if err != nil {
				logger.Info("Ignoring malformed vulnerability report", "report", klog.KObj(u), "err", err)
				return
			}
			filed := ix.Put
			if deleted {
				filed = ix.Delete
			}
			for _, r := range filed(r) {
				changed(r)
			}
		}
		_, err := factory.ForResource(gvr).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { handle(obj, false) },
			UpdateFunc: func(_, obj any) { handle(obj, false) },
			DeleteFunc: func(obj any) { handle(obj, true) },
		})
		if err != nil {
			logger.Error(err, "Watching vulnerability reports", "resource", gvr)
			return false
		}
	}
	factory.Start(ctx.Done())
	// Reports already in the cluster count from the first pod on; a watch that cannot list
	// (RBAC, say) must not hold the scheduler back for long.
	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for gvr, ok := range factory.WaitForCacheSync(syncCtx.Done()) {
		if !ok {
			logger.Info("Vulnerability reports not synced yet; continuing", "resource", gvr)
		}
	}
	go func() {
		<-ctx.Done()
		factory.Shutdown()
	}()
	return true
}

// WatchPods maps reports without a digest to the digests their workloads' pods run, as pod
// status reports them, and calls changed for every report so filed.
func WatchPods(pods cache.SharedIndexInformer, ix *Index, changed func(Report)) error {
	observe := func(obj any) {
		if pod, ok := obj.(*v1.Pod); ok {
			for _, r := range ix.ObservePod(pod) {
				changed(r)
			}
		}
	}
	_, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
	})
	return err
}

// Matches reports whether a verdict is about the image a report scanned, so that the engine can
// re-evaluate it when the report changes.
func Matches(r Report, v *reputation.Verdict) bool {
	if r.Digest != "" && strings.HasSuffix(v.Key, "@"+r.Digest) {
		return true
	}
	name := r.Image()
	return name != "" && r.Tag != "" && strings.HasPrefix(v.Image, name+":"+r.Tag)
}
