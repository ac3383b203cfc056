package auditapi

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

// The field selectors each resource takes, beyond metadata.name and metadata.namespace.
var (
	decisionFields = []string{"tier", "node", "pool", "action", "pod", "image"}
	imageFields    = []string{"tier", "image"}
)

// maxListed bounds one list: the store is paged with limit/continue, as kubectl asks for it.
const maxListed = 500

// records is the store, or nil without one; ready says why it failed, if it did.
type records struct {
	records audit.Records
	ready   func() error
}

// decisions is the decisions resource: the store's placement decisions, namespaced.
type decisions struct{ records }

var (
	_ rest.Storage              = &decisions{}
	_ rest.Scoper               = &decisions{}
	_ rest.Lister               = &decisions{}
	_ rest.SingularNameProvider = &decisions{}
)

func (s *decisions) New() runtime.Object     { return &Decision{} }
func (s *decisions) NewList() runtime.Object { return &DecisionList{} }
func (s *decisions) Destroy()                {}
func (s *decisions) NamespaceScoped() bool   { return true }
func (s *decisions) GetSingularName() string { return "decision" }

func (s *decisions) List(ctx context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	if s.records.records == nil {
		return nil, audit.NoStore(s.ready)
	}
	want, err := selected(opts, decisionFields)
	if err != nil {
		return nil, err
	}
	namespace := genericapirequest.NamespaceValue(ctx)
	page := store.Page{Limit: pageLimit(opts), After: opts.Continue, MaxScanned: audit.MaxScannedPerRequest}
	items, next, err := s.records.records.Decisions(page, func(d *store.Decision) bool {
		return (namespace == "" || d.Namespace == namespace) && matches(want, map[string]string{
			"metadata.name": decisionName(d), "tier": string(d.Tier), "node": d.Node, "pool": d.Pool,
			"action": actionOf(d), "pod": d.Pod}, d.Images)
	})
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	list := &DecisionList{Items: make([]Decision, 0, len(items))}
	list.Continue = next
	for i := range items {
		list.Items = append(list.Items, decisionOf(&items[i]))
	}
	return list, nil
}

func (s *decisions) ConvertToTable(_ context.Context, obj runtime.Object, _ runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: "the pod and the decision's time"},
		{Name: "Pod", Type: "string"},
		{Name: "Action", Type: "string"},
		{Name: "Tier", Type: "string"},
		{Name: "Score", Type: "integer"},
		{Name: "Node", Type: "string"},
		{Name: "Time", Type: "string", Format: "date-time"},
		{Name: "Pool", Type: "string", Priority: 1},
		{Name: "Reason", Type: "string", Priority: 1},
	}}
	add := func(d *Decision) {
		table.Rows = append(table.Rows, metav1.TableRow{Object: runtime.RawExtension{Object: d},
			Cells: []any{d.Name, d.Pod, d.Action, string(d.Tier), d.Score, d.Node, d.Time.UTC().Format("2006-01-02T15:04:05Z"), d.Pool, d.Reason}})
	}
	switch o := obj.(type) {
	case *DecisionList:
		table.Continue = o.Continue
		for i := range o.Items {
			add(&o.Items[i])
		}
	case *Decision:
		add(o)
	default:
		return nil, fmt.Errorf("not a decision: %T", obj)
	}
	return table, nil
}

// images is the images resource: each image's current verdict, cluster-scoped.
type images struct {
	verdicts func() (map[string]*reputation.Verdict, error)
}

var (
	_ rest.Storage              = &images{}
	_ rest.Scoper               = &images{}
	_ rest.Lister               = &images{}
	_ rest.Getter               = &images{}
	_ rest.SingularNameProvider = &images{}
)

func (s *images) New() runtime.Object     { return &Image{} }
func (s *images) NewList() runtime.Object { return &ImageList{} }
func (s *images) Destroy()                {}
func (s *images) NamespaceScoped() bool   { return false }
func (s *images) GetSingularName() string { return "image" }

func (s *images) List(_ context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	want, err := selected(opts, imageFields)
	if err != nil {
		return nil, err
	}
	after, err := audit.ImageAfter(opts.Continue)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	all, err := s.verdicts()
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	list := &ImageList{Items: []Image{}}
	var refs []string
	refs, list.Continue = audit.PageImages(all, after, pageLimit(opts), func(ref string, v *reputation.Verdict) bool {
		return matches(want, map[string]string{"metadata.name": ImageName(ref), "tier": string(v.Tier)}, []string{ref})
	})
	for _, ref := range refs {
		list.Items = append(list.Items, imageOf(ref, all[ref]))
	}
	return list, nil
}

// pageLimit is a list's page size: the caller's limit, at most maxListed.
func pageLimit(opts *metainternalversion.ListOptions) int {
	if opts.Limit > 0 && opts.Limit < maxListed {
		return int(opts.Limit)
	}
	return maxListed
}

func (s *images) Get(_ context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	all, err := s.verdicts()
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	// Any spelling that canonicalizes to the image, or a digest, as the direct endpoint takes.
	ref, ok := audit.FindImage(all, strings.ReplaceAll(name, "~", "/"))
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: GroupName, Resource: "images"}, name)
	}
	img := imageOf(ref, all[ref])
	return &img, nil
}

func (s *images) ConvertToTable(_ context.Context, obj runtime.Object, _ runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: "the reference, each / as ~"},
		{Name: "Tier", Type: "string"},
		{Name: "Score", Type: "integer"},
		{Name: "Decided By", Type: "string"},
		{Name: "Evaluated", Type: "string", Format: "date-time"},
		{Name: "Digest", Type: "string", Priority: 1},
		{Name: "Policy", Type: "string", Priority: 1},
	}}
	add := func(img *Image) {
		table.Rows = append(table.Rows, metav1.TableRow{Object: runtime.RawExtension{Object: img},
			Cells: []any{img.Name, string(img.Tier), img.Score, img.DecidedBy, img.EvaluatedAt.UTC().Format("2006-01-02T15:04:05Z"), img.Digest, img.PolicyVersion}})
	}
	switch o := obj.(type) {
	case *ImageList:
		table.Continue = o.Continue
		for i := range o.Items {
			add(&o.Items[i])
		}
	case *Image:
		add(o)
	default:
		return nil, fmt.Errorf("not an image: %T", obj)
	}
	return table, nil
}

// ImageName is an image's object name: its reference with each "/" as "~".
func ImageName(ref string) string { return strings.ReplaceAll(ref, "/", "~") }

func imageOf(ref string, v *reputation.Verdict) Image {
	return Image{ObjectMeta: metav1.ObjectMeta{Name: ImageName(ref), CreationTimestamp: metav1.NewTime(v.EvaluatedAt)},
		Ref: ref, Verdict: verdictOf(v)}
}

func verdictOf(v *reputation.Verdict) Verdict {
	out := Verdict{Tier: v.Tier, Score: v.Score, DecidedBy: v.DecidedBy, PolicyVersion: v.PolicyVersion, EvaluatedAt: metav1.NewTime(v.EvaluatedAt)}
	if _, digest, ok := strings.Cut(v.Key, "@"); ok && strings.HasPrefix(digest, "sha256:") {
		out.Digest = digest
	}
	for _, c := range v.Contributions {
		out.Evidence = append(out.Evidence, Evidence{Signal: string(c.Signal), Observed: c.Observed, Points: c.Points, Rule: c.Rule,
			Tier: string(c.Tier), Finding: c.Finding})
	}
	return out
}

// imageHistory is the images/history subresource: an image's verdicts from the store, a page
// at a time (HistoryOptions), found by any spelling of the image, as the direct endpoint does.
type imageHistory struct {
	records
	verdicts func() (map[string]*reputation.Verdict, error)
}

var (
	_ rest.Storage           = &imageHistory{}
	_ rest.Scoper            = &imageHistory{}
	_ rest.GetterWithOptions = &imageHistory{}
)

func (s *imageHistory) New() runtime.Object   { return &ImageHistory{} }
func (s *imageHistory) Destroy()              {}
func (s *imageHistory) NamespaceScoped() bool { return false }

func (s *imageHistory) NewGetOptions() (runtime.Object, bool, string) {
	return &HistoryOptions{}, false, ""
}

func (s *imageHistory) Get(_ context.Context, name string, options runtime.Object) (runtime.Object, error) {
	if s.records.records == nil {
		return nil, audit.NoStore(s.ready)
	}
	opts, ok := options.(*HistoryOptions)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("history options: %T", options))
	}
	query := url.Values{"image": {strings.ReplaceAll(name, "~", "/")}}
	setIf(query, "continue", opts.Continue)
	setIf(query, "from", opts.From)
	setIf(query, "to", opts.To)
	if opts.Limit != 0 {
		query.Set("limit", strconv.FormatInt(opts.Limit, 10))
	}
	q, err := audit.ParseHistoryQuery(query) // the direct endpoint's bounds and messages
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	current, err := s.verdicts()
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	h, err := audit.ReadHistory(s.records.records, current, q)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	out := &ImageHistory{ObjectMeta: metav1.ObjectMeta{Name: ImageName(h.Ref)}, Ref: h.Ref, Items: make([]HistoryEntry, 0, len(h.Items)), Continue: h.Continue}
	for _, e := range h.Items {
		out.Items = append(out.Items, HistoryEntry{Time: metav1.NewTime(e.Time), Verdict: verdictOf(e.Verdict), Reason: e.Verdict.Reason()})
	}
	return out, nil
}

func setIf(query url.Values, key, value string) {
	if value != "" {
		query.Set(key, value)
	}
}

func (s *imageHistory) ConvertToTable(_ context.Context, obj runtime.Object, _ runtime.Object) (*metav1.Table, error) {
	h, ok := obj.(*ImageHistory)
	if !ok {
		return nil, fmt.Errorf("not an image history: %T", obj)
	}
	table := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Time", Type: "string", Format: "date-time"},
		{Name: "Tier", Type: "string"},
		{Name: "Score", Type: "integer"},
		{Name: "Policy", Type: "string"},
		{Name: "Reason", Type: "string"},
		{Name: "Digest", Type: "string", Priority: 1},
	}}
	table.Continue = h.Continue
	for i := range h.Items {
		e := &h.Items[i]
		// Each row's object is the history's: an entry has no metadata of its own.
		table.Rows = append(table.Rows, metav1.TableRow{Object: runtime.RawExtension{Object: h}, Cells: []any{e.Time.UTC().Format("2006-01-02T15:04:05Z"), string(e.Verdict.Tier),
			e.Verdict.Score, e.Verdict.PolicyVersion, e.Reason, e.Verdict.Digest}})
	}
	return table, nil
}

// simulations is the simulations resource: create only. A created Simulation comes back with
// its status, what the proposal would change; nothing is kept or applied.
type simulations struct {
	simulate func(context.Context, *v1alpha1.ReputationPolicy) (*audit.Simulation, error)
}

var (
	_ rest.Storage              = &simulations{}
	_ rest.Scoper               = &simulations{}
	_ rest.Creater              = &simulations{}
	_ rest.SingularNameProvider = &simulations{}
)

func (s *simulations) New() runtime.Object     { return &Simulation{} }
func (s *simulations) Destroy()                {}
func (s *simulations) NamespaceScoped() bool   { return false }
func (s *simulations) GetSingularName() string { return "simulation" }

func (s *simulations) Create(ctx context.Context, obj runtime.Object, validate rest.ValidateObjectFunc, _ *metav1.CreateOptions) (runtime.Object, error) {
	in, ok := obj.(*Simulation)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a Simulation: %T", obj))
	}
	if validate != nil {
		if err := validate(ctx, obj); err != nil {
			return nil, err
		}
	}
	if s.simulate == nil {
		return nil, apierrors.NewServiceUnavailable("this server cannot simulate: it holds no evidence")
	}
	if len(in.Spec.Policy.Raw) == 0 {
		return nil, apierrors.NewBadRequest("spec.policy: required: the proposed ReputationPolicy")
	}
	proposed, err := audit.DecodeProposedPolicy(in.Spec.Policy.Raw)
	if err != nil {
		return nil, err
	}
	result, err := s.simulate(ctx, proposed)
	if err != nil {
		return nil, err
	}
	out := in.DeepCopyObject().(*Simulation)
	out.CreationTimestamp = metav1.Now()
	out.Status = &result.SimulationResult
	return out, nil
}

func (s *simulations) ConvertToTable(_ context.Context, obj runtime.Object, _ runtime.Object) (*metav1.Table, error) {
	sim, ok := obj.(*Simulation)
	if !ok {
		return nil, fmt.Errorf("not a simulation: %T", obj)
	}
	table := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Current", Type: "string", Description: "the policy in force"},
		{Name: "Proposed", Type: "string", Description: "the proposed policy's version"},
		{Name: "Images Changed", Type: "integer"},
		{Name: "Unchanged", Type: "integer"},
		{Name: "Pods Re-tiered", Type: "integer"},
	}}
	if st := sim.Status; st != nil {
		table.Rows = append(table.Rows, metav1.TableRow{Object: runtime.RawExtension{Object: sim},
			Cells: []any{st.CurrentVersion, st.ProposedVersion, len(st.Images), st.Unchanged, len(st.Pods)}})
	}
	return table, nil
}

func decisionName(d *store.Decision) string { return fmt.Sprintf("%s.%d", d.Pod, d.Time.UnixNano()) }

func actionOf(d *store.Decision) string {
	if d.Action == "" {
		return "placed"
	}
	return d.Action
}

func decisionOf(d *store.Decision) Decision {
	out := Decision{ObjectMeta: metav1.ObjectMeta{Name: decisionName(d), Namespace: d.Namespace, CreationTimestamp: metav1.NewTime(d.Time)},
		Pod: d.Pod, UID: d.UID, Action: actionOf(d), Node: d.Node, Pool: d.Pool, Tier: d.Tier, Score: d.Score,
		Reason: d.Reason, Time: metav1.NewTime(d.Time)}
	if len(d.Images) > 0 {
		out.Image = d.Images[0]
	}
	return out
}

// selected reads a list's field selector: exact matches on the fields given, metadata.name and
// metadata.namespace (the namespace is the request's, already applied).
func selected(opts *metainternalversion.ListOptions, allowed []string) (map[string]string, error) {
	want := map[string]string{}
	if opts == nil || opts.FieldSelector == nil || opts.FieldSelector.Empty() {
		return want, nil
	}
	for _, r := range opts.FieldSelector.Requirements() {
		if r.Operator != "=" && r.Operator != "==" {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("field selector %s: only = is supported", r.Field))
		}
		if r.Field != "metadata.name" && r.Field != "metadata.namespace" && !slices.Contains(allowed, r.Field) {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("field selector %q: not a field to select by (metadata.name, metadata.namespace, %s)", r.Field, strings.Join(allowed, ", ")))
		}
		if r.Field != "metadata.namespace" {
			want[r.Field] = r.Value
		}
	}
	return want, nil
}

// matches says whether an object's fields pass the selector; "image" matches any of its
// images, in any spelling that canonicalizes to the same reference.
func matches(want, have map[string]string, images []string) bool {
	for field, value := range want {
		if field == "image" {
			if !slices.ContainsFunc(images, func(img string) bool { return sameImage(img, value) }) {
				return false
			}
			continue
		}
		if have[field] != value {
			return false
		}
	}
	return true
}

func sameImage(a, b string) bool {
	if a == b {
		return true
	}
	ra, errA := reputation.ParseImageRef(a)
	rb, errB := reputation.ParseImageRef(strings.ReplaceAll(b, "~", "/"))
	return errA == nil && errB == nil && ra.String() == rb.String()
}

// policies is the policies resource: every policy version that was in force, cluster-scoped.
type policies struct{ records }

var (
	_ rest.Storage              = &policies{}
	_ rest.Scoper               = &policies{}
	_ rest.Lister               = &policies{}
	_ rest.Getter               = &policies{}
	_ rest.SingularNameProvider = &policies{}
)

func (s *policies) New() runtime.Object     { return &Policy{} }
func (s *policies) NewList() runtime.Object { return &PolicyList{} }
func (s *policies) Destroy()                {}
func (s *policies) NamespaceScoped() bool   { return false }
func (s *policies) GetSingularName() string { return "policy" }

func (s *policies) List(_ context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	want, err := selected(opts, nil)
	if err != nil {
		return nil, err
	}
	all, err := s.all()
	if err != nil {
		return nil, err
	}
	list := &PolicyList{Items: []Policy{}}
	for _, p := range all {
		if matches(want, map[string]string{"metadata.name": p.Name}, nil) {
			list.Items = append(list.Items, p)
		}
	}
	return list, nil
}

func (s *policies) Get(_ context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	all, err := s.all()
	if err != nil {
		return nil, err
	}
	for i := range all {
		if all[i].Name == name {
			return &all[i], nil
		}
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: GroupName, Resource: "policies"}, name)
}

func (s *policies) all() ([]Policy, error) {
	if s.records.records == nil {
		return nil, audit.NoStore(s.ready)
	}
	kept, err := s.records.records.Policies()
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	out := make([]Policy, 0, len(kept))
	for _, r := range kept {
		out = append(out, Policy{ObjectMeta: metav1.ObjectMeta{Name: r.Version, CreationTimestamp: metav1.NewTime(r.Time)},
			InForceSince: metav1.NewTime(r.Time), Source: r.Source, Policy: runtime.RawExtension{Raw: r.Policy}})
	}
	return out, nil
}

func (s *policies) ConvertToTable(_ context.Context, obj runtime.Object, _ runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: "the policy version"},
		{Name: "In Force Since", Type: "string", Format: "date-time"},
		{Name: "Source", Type: "string"},
	}}
	add := func(p *Policy) {
		table.Rows = append(table.Rows, metav1.TableRow{Object: runtime.RawExtension{Object: p},
			Cells: []any{p.Name, p.InForceSince.UTC().Format("2006-01-02T15:04:05Z"), p.Source}})
	}
	switch o := obj.(type) {
	case *PolicyList:
		for i := range o.Items {
			add(&o.Items[i])
		}
	case *Policy:
		add(o)
	default:
		return nil, fmt.Errorf("not a policy: %T", obj)
	}
	return table, nil
}
