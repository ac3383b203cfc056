package reputectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/pkg/auditapi"
	"github.com/repute-dev/repute/pkg/version"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

// auditReader is what the commands read: the direct audit endpoint (audit.Client), a store file
// (audit.LocalClient), or the aggregated API through the kube-apiserver (aggregatedReader).
type auditReader interface {
	Images(ctx context.Context, query url.Values) (*audit.ImageList, error)
	Image(ctx context.Context, name string) (*audit.Image, error)
	History(ctx context.Context, query url.Values) (*audit.History, error)
	Decisions(ctx context.Context, query url.Values) (*audit.DecisionList, error)
	Policies(ctx context.Context, query url.Values) (*audit.PolicyList, error)
	Backup(ctx context.Context, w io.Writer) (int64, error)
	Simulate(ctx context.Context, proposed *v1alpha1.ReputationPolicy) (*audit.Simulation, error)
	Version(ctx context.Context) (*version.Info, error)
}

var _ auditReader = &audit.Client{}

// aggregatedReader reads audit.repute.dev/v1 through the kube-apiserver, which authenticates
// the caller with the kubeconfig's own credentials (every kubectl flag applies) and proxies to
// the scheduler: decisions, images, their history, policies and simulations. client-go does the
// requests, so errors are the apiserver's Status (forbidden, not found). Backups and the
// scheduler's version are on the direct endpoint only.
type aggregatedReader struct {
	client dynamic.Interface
	// rest reads what the dynamic client cannot ask for: a subresource with query parameters.
	rest rest.Interface
}

var _ auditReader = &aggregatedReader{}

func newAggregatedReader(cfg *rest.Config) (*aggregatedReader, error) {
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	restConfig := dynamic.ConfigFor(cfg)
	restConfig.APIPath, restConfig.GroupVersion = "/apis", &auditapi.SchemeGroupVersion
	rc, err := rest.RESTClientFor(restConfig)
	if err != nil {
		return nil, err
	}
	return &aggregatedReader{client: client, rest: rc}, nil
}

// errDirectOnly is what the commands the aggregated API does not serve say.
func errDirectOnly(what string) error {
	return fmt.Errorf("%s is served by the direct audit endpoint only: pass --audit-server (kubectl -n kube-system port-forward svc/repute-audit 8444, then --audit-server https://localhost:8444)", what)
}

// list reads one page of a resource (of a namespace, or of every one) into out.
func (r *aggregatedReader) list(ctx context.Context, resource, namespace string, query url.Values, selector map[string]string, out any) error {
	opts := metav1.ListOptions{Continue: query.Get("continue")}
	if n, err := strconv.ParseInt(query.Get("limit"), 10, 64); err == nil {
		opts.Limit = n
	}
	var terms []fields.Selector
	for field, value := range selector {
		if value != "" {
			terms = append(terms, fields.OneTermEqualSelector(field, value))
		}
	}
	if len(terms) > 0 {
		opts.FieldSelector = fields.AndSelectors(terms...).String()
	}
	l, err := r.client.Resource(auditapi.SchemeGroupVersion.WithResource(resource)).Namespace(namespace).List(ctx, opts)
	if err != nil {
		return err
	}
	return runtime.DefaultUnstructuredConverter.FromUnstructured(l.UnstructuredContent(), out)
}

func imageOf(img *auditapi.Image) audit.Image {
	return audit.Image{Ref: img.Ref, Verdict: verdictOf(img.Ref, &img.Verdict)}
}

// verdictOf is a verdict as the direct API keys it: under the digest-pinned name once the
// digest is known.
func verdictOf(ref string, in *auditapi.Verdict) *reputation.Verdict {
	key := ref
	if parsed, err := reputation.ParseImageRef(ref); err == nil && in.Digest != "" && parsed.Digest == "" {
		key = parsed.Registry + "/" + parsed.Repository + "@" + in.Digest
	}
	v := &reputation.Verdict{Image: ref, Key: key, Tier: in.Tier, Score: in.Score,
		DecidedBy: in.DecidedBy, PolicyVersion: in.PolicyVersion, EvaluatedAt: in.EvaluatedAt.Time}
	for _, e := range in.Evidence {
		v.Contributions = append(v.Contributions, reputation.Contribution{Signal: reputation.Signal(e.Signal), Observed: e.Observed,
			Points: e.Points, Rule: e.Rule, Tier: reputation.Tier(e.Tier), Finding: e.Finding})
	}
	return v
}

func (r *aggregatedReader) Images(ctx context.Context, query url.Values) (*audit.ImageList, error) {
	var list auditapi.ImageList
	if err := r.list(ctx, "images", "", query, map[string]string{"tier": query.Get("tier")}, &list); err != nil {
		return nil, err
	}
	minScore, maxScore := scoreBound(query.Get("minScore"), 0), scoreBound(query.Get("maxScore"), 100)
	out := &audit.ImageList{TypeMeta: audit.TypeMeta("ImageList"), Items: []audit.Image{}}
	out.Continue = list.Continue
	for i := range list.Items {
		img := imageOf(&list.Items[i])
		if registry := query.Get("registry"); registry != "" {
			if ref, err := reputation.ParseImageRef(img.Ref); err != nil || ref.Registry != registry {
				continue
			}
		}
		if img.Score < minScore || img.Score > maxScore {
			continue
		}
		out.Items = append(out.Items, img)
	}
	return out, nil
}

func scoreBound(text string, def int) int {
	if n, err := strconv.Atoi(text); err == nil {
		return n
	}
	return def
}

func (r *aggregatedReader) Image(ctx context.Context, name string) (*audit.Image, error) {
	u, err := r.client.Resource(auditapi.SchemeGroupVersion.WithResource("images")).Get(ctx, auditapi.ImageName(name), metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var img auditapi.Image
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), &img); err != nil {
		return nil, err
	}
	out := imageOf(&img)
	return &out, nil
}

func (r *aggregatedReader) Decisions(ctx context.Context, query url.Values) (*audit.DecisionList, error) {
	var list auditapi.DecisionList
	if err := r.list(ctx, "decisions", query.Get("namespace"), query, map[string]string{"pod": query.Get("pod"), "node": query.Get("node"), "tier": query.Get("tier")}, &list); err != nil {
		return nil, err
	}
	from, _ := time.Parse(time.RFC3339, query.Get("from"))
	to, _ := time.Parse(time.RFC3339, query.Get("to"))
	out := &audit.DecisionList{TypeMeta: audit.TypeMeta("DecisionList"), Items: []store.Decision{}}
	out.Continue = list.Continue
	for _, d := range list.Items {
		if uid := query.Get("uid"); uid != "" && d.UID != uid ||
			!from.IsZero() && d.Time.Time.Before(from) || !to.IsZero() && !d.Time.Time.Before(to) {
			continue
		}
		action := d.Action
		if action == "placed" {
			action = ""
		}
		out.Items = append(out.Items, store.Decision{Time: d.Time.Time, Namespace: d.Namespace, Pod: d.Pod, UID: d.UID, Node: d.Node,
			Pool: d.Pool, Tier: d.Tier, Score: d.Score, Reason: d.Reason, Action: action})
	}
	return out, nil
}

func (r *aggregatedReader) Policies(ctx context.Context, _ url.Values) (*audit.PolicyList, error) {
	var list auditapi.PolicyList
	if err := r.list(ctx, "policies", "", url.Values{}, nil, &list); err != nil {
		return nil, err
	}
	out := &audit.PolicyList{TypeMeta: audit.TypeMeta("PolicyList"), Items: []store.PolicyRecord{}}
	for _, p := range list.Items {
		out.Items = append(out.Items, store.PolicyRecord{Time: p.InForceSince.Time, Version: p.Name, Source: p.Source, Policy: p.Policy.Raw})
	}
	return out, nil
}

// History reads GET images/NAME/history, with the page and time bounds as its query.
func (r *aggregatedReader) History(ctx context.Context, query url.Values) (*audit.History, error) {
	req := r.rest.Get().Resource("images").Name(auditapi.ImageName(query.Get("image"))).SubResource("history")
	for _, param := range []string{"limit", "continue", "from", "to"} {
		if value := query.Get(param); value != "" {
			req = req.Param(param, value)
		}
	}
	body, err := req.Do(ctx).Raw()
	if err != nil {
		return nil, err
	}
	var h auditapi.ImageHistory
	if err := json.Unmarshal(body, &h); err != nil {
		return nil, fmt.Errorf("reading the history of %s: %w", query.Get("image"), err)
	}
	out := &audit.History{TypeMeta: audit.TypeMeta("History"), Ref: h.Ref, Items: make([]store.HistoryEntry, 0, len(h.Items))}
	out.Continue = h.Continue
	for i := range h.Items {
		out.Items = append(out.Items, store.HistoryEntry{Time: h.Items[i].Time.Time, Verdict: verdictOf(h.Ref, &h.Items[i].Verdict)})
	}
	return out, nil
}

// Simulate creates a Simulation and reads its status, as kubectl create -o yaml would.
func (r *aggregatedReader) Simulate(ctx context.Context, proposed *v1alpha1.ReputationPolicy) (*audit.Simulation, error) {
	policy, err := runtime.DefaultUnstructuredConverter.ToUnstructured(proposed)
	if err != nil {
		return nil, err
	}
	sim := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": auditapi.SchemeGroupVersion.String(), "kind": "Simulation", "spec": map[string]any{"policy": policy}}}
	created, err := r.client.Resource(auditapi.SchemeGroupVersion.WithResource("simulations")).Create(ctx, sim, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	var answered auditapi.Simulation
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(created.UnstructuredContent(), &answered); err != nil {
		return nil, err
	}
	if answered.Status == nil {
		return nil, errors.New("the simulation came back without a status")
	}
	return &audit.Simulation{TypeMeta: audit.TypeMeta("Simulation"), SimulationResult: *answered.Status}, nil
}

func (r *aggregatedReader) Backup(context.Context, io.Writer) (int64, error) {
	return 0, errDirectOnly("backup")
}

func (r *aggregatedReader) Version(context.Context) (*version.Info, error) {
	return nil, errors.New("the scheduler's version is served by the direct audit endpoint only: pass --audit-server")
}
