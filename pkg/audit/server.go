package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/version"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

// Records is what the API reads: the scheduler's open store, or a store file opened read-only.
type Records interface {
	Verdicts() (map[string]*reputation.Verdict, error)
	History(image string, page store.Page) ([]store.HistoryEntry, string, error)
	Decisions(page store.Page, match func(*store.Decision) bool) ([]store.Decision, string, error)
	Policies() ([]store.PolicyRecord, error)
	Backup(w io.Writer) (int64, error)
}

// Server answers the audit API. Every request but the health checks must be authenticated
// (401 otherwise) and authorized for the resource it reads (403 otherwise).
type Server struct {
	// Records is the store; nil when the scheduler runs without one, and then only images
	// (from Images) can be listed.
	Records Records
	// Images, when set, gives the current verdicts: the scheduler's live cache, which is newer
	// than the store by at most one batch. Without it, images come from Records.
	Images func() map[string]*reputation.Verdict
	// Authenticator and Authorizer are the cluster's: TokenReview and SubjectAccessReview.
	Authenticator authenticator.Request
	Authorizer    authorizer.Authorizer
	// Ready, when set, reports a degraded store; /readyz then fails with its error.
	Ready func() error
	// Simulate, when set, weighs every image under a proposed policy and changes nothing
	// (POST simulations). Its errors are API errors (422 for a policy that fails checks).
	Simulate func(ctx context.Context, proposed *v1alpha1.ReputationPolicy) (*Simulation, error)
}

// VersionPath answers which Repute runs, as the kube-apiserver's /version does: to any
// authenticated caller the cluster lets get that path (system:public-info-viewer does, for all).
const VersionPath = "/version"

func (s *Server) version(w http.ResponseWriter, r *http.Request, who user.Info) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeStatus(w, apierrors.NewMethodNotSupported(schema.GroupResource{Group: Group}, r.Method).ErrStatus)
		return
	}
	attrs := authorizer.AttributesRecord{User: who, Verb: "get", Path: VersionPath}
	if decision, reason, err := s.Authorizer.Authorize(r.Context(), attrs); decision != authorizer.DecisionAllow {
		msg := fmt.Sprintf("User %q cannot get path %q", who.GetName(), VersionPath)
		if reason != "" {
			msg += ": " + reason
		}
		if err != nil {
			msg += ": " + err.Error()
		}
		writeStatus(w, apierrors.NewForbidden(schema.GroupResource{}, "", errors.New(msg)).ErrStatus)
		return
	}
	_ = writeJSON(w, version.Get())
}

// route is one endpoint: the authorization it needs and the handler that answers it.
type route struct {
	verb, resource, subresource string
	// post marks the one endpoint that takes a body; every other is GET (or HEAD).
	post  bool
	serve func(s *Server, w http.ResponseWriter, r *http.Request, name string) error
}

var routes = map[string]route{
	"images":    {verb: "list", resource: ResourceImages, serve: (*Server).listImages},
	"images/":   {verb: "get", resource: ResourceImages, serve: (*Server).getImage},
	"history":   {verb: "get", resource: ResourceImages, subresource: SubresourceHistory, serve: (*Server).history},
	"decisions": {verb: "list", resource: ResourceDecisions, serve: (*Server).decisions},
	"policies":  {verb: "list", resource: ResourcePolicies, serve: (*Server).policies},
	"backup":    {verb: "get", resource: ResourceBackups, serve: (*Server).backup},
	// Creating a simulation reads everything and changes nothing; it is a separate grant
	// because it reveals how every image would fare under any policy.
	"simulations": {verb: "create", resource: ResourceSimulations, post: true, serve: (*Server).simulate},
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz", "/livez":
		_, _ = io.WriteString(w, "ok")
		return
	case "/readyz":
		if s.Ready != nil {
			if err := s.Ready(); err != nil {
				http.Error(w, "reputation store degraded: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = io.WriteString(w, "ok")
		return
	}
	// Who is asking comes first: an anonymous caller learns nothing, not even which paths exist.
	// The audience goes in the context, as the generic apiserver's filter puts it: TokenReview
	// then accepts only tokens issued for this API.
	resp, ok, err := s.Authenticator.AuthenticateRequest(r.WithContext(authenticator.WithAudiences(r.Context(), authenticator.Audiences{Audience})))
	if err != nil || !ok {
		if err != nil {
			klog.FromContext(r.Context()).V(2).Info("Audit API request not authenticated", "err", err)
		}
		writeStatus(w, apierrors.NewUnauthorized("Unauthorized").ErrStatus)
		return
	}
	if r.URL.Path == VersionPath {
		s.version(w, r, resp.User)
		return
	}
	rt, name, found := match(r.URL.Path)
	if !found {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: Group}, r.URL.Path).ErrStatus)
		return
	}
	if !rt.allows(r.Method) {
		writeStatus(w, apierrors.NewMethodNotSupported(schema.GroupResource{Group: Group, Resource: rt.resource}, r.Method).ErrStatus)
		return
	}
	attrs := authorizer.AttributesRecord{
		User: resp.User, Verb: rt.verb, APIGroup: Group, APIVersion: Version, Resource: rt.resource,
		Subresource: rt.subresource, Name: name, ResourceRequest: true, Path: r.URL.Path,
	}
	if rt.resource == ResourceDecisions {
		// Decisions of one namespace can be granted with a RoleBinding in that namespace; every
		// other resource is cluster-wide, whatever the query says.
		attrs.Namespace = r.URL.Query().Get("namespace")
	}
	if rt.subresource == SubresourceHistory {
		attrs.Name = r.URL.Query().Get("image")
	}
	decision, reason, err := s.Authorizer.Authorize(r.Context(), attrs)
	if decision != authorizer.DecisionAllow {
		writeStatus(w, forbidden(attrs, reason, err))
		return
	}
	if _, err := ParseRawQuery(r.URL.RawQuery); err != nil {
		writeError(w, r, err)
		return
	}
	if err := rt.serve(s, w, r, name); err != nil {
		writeError(w, r, err)
	}
}

// allows says whether a route answers a method: POST for the one that takes a body, GET and
// HEAD for the rest.
func (rt route) allows(method string) bool {
	if rt.post {
		return method == http.MethodPost
	}
	return method == http.MethodGet || method == http.MethodHead
}

// match finds the route of a path under PathPrefix, and the image name of a get.
func match(path string) (route, string, bool) {
	rest, ok := strings.CutPrefix(path, PathPrefix+"/")
	if !ok {
		return route{}, "", false
	}
	if name, ok := strings.CutPrefix(rest, "images/"); ok && name != "" {
		return routes["images/"], name, true
	}
	rt, ok := routes[rest]
	return rt, "", ok && rest != "images/"
}

// forbidden is the apiserver's own wording, so a 403 reads the same here as from kubectl.
func forbidden(a authorizer.AttributesRecord, reason string, err error) metav1.Status {
	resource := a.Resource
	if a.Subresource != "" {
		resource += "/" + a.Subresource
	}
	scope := "at the cluster scope"
	if a.Namespace != "" {
		scope = fmt.Sprintf("in the namespace %q", a.Namespace)
	}
	msg := fmt.Sprintf("User %q cannot %s resource %q in API group %q %s", a.User.GetName(), a.Verb, resource, Group, scope)
	if reason != "" {
		msg += ": " + reason
	}
	if err != nil {
		msg += ": " + err.Error()
	}
	return apierrors.NewForbidden(schema.GroupResource{Group: Group, Resource: resource}, a.Name, errors.New(msg)).ErrStatus
}

// noStore answers store-backed requests when there is no store: it failed (Ready says why),
// or none is configured.
func (s *Server) noStore() error { return NoStore(s.Ready) }

// NoStore is the 503 for a request the store would answer when there is none: it failed
// (ready, if set, says why), or none is configured.
func NoStore(ready func() error) error {
	if ready != nil {
		if err := ready(); err != nil {
			return apierrors.NewServiceUnavailable("reputation store degraded: " + err.Error())
		}
	}
	return apierrors.NewServiceUnavailable("the scheduler runs without a reputation store (args store.path): nothing is recorded")
}

func (s *Server) verdicts() (map[string]*reputation.Verdict, error) {
	if s.Images != nil {
		return s.Images(), nil
	}
	if s.Records == nil {
		return nil, s.noStore()
	}
	return s.Records.Verdicts()
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request, _ string) error {
	q, err := ParseImageQuery(r.URL.Query())
	if err != nil {
		return err
	}
	all, err := s.verdicts()
	if err != nil {
		return err
	}
	list := ImageList{TypeMeta: TypeMeta("ImageList"), Items: []Image{}}
	var refs []string
	refs, list.Continue = PageImages(all, q.After, q.Limit, func(_ string, v *reputation.Verdict) bool { return q.Matches(v) })
	for _, ref := range refs {
		list.Items = append(list.Items, Image{Ref: ref, Verdict: all[ref]})
	}
	return writeJSON(w, list)
}

// PageImages is one page of images by reference: those after the reference after ("" from the
// first) that keep accepts, at most limit of them, and the continue token of the next page ("" on
// the last). Both audit APIs page images with it, so neither answers a flood of images at once.
func PageImages(all map[string]*reputation.Verdict, after string, limit int, keep func(ref string, v *reputation.Verdict) bool) (refs []string, next string) {
	refs = make([]string, 0, min(len(all), limit+1))
	for ref, v := range all {
		if ref > after && keep(ref, v) {
			refs = append(refs, ref)
		}
	}
	slices.Sort(refs)
	if len(refs) > limit {
		refs = refs[:limit]
		next = imageCursor(refs[len(refs)-1])
	}
	return refs, next
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request, name string) error {
	if _, err := parseQuery(r.URL.Query()); err != nil {
		return err
	}
	all, err := s.verdicts()
	if err != nil {
		return err
	}
	ref, ok := FindImage(all, name)
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Group: Group, Resource: ResourceImages}, name)
	}
	img := Image{Ref: ref, Verdict: all[ref]}
	return writeJSON(w, struct {
		metav1.TypeMeta `json:",inline"`
		Image           `json:",inline"`
	}{TypeMeta("Image"), img})
}

var digestPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// FindImage finds the verdict an auditor means by name: the reference as pods spell it or any
// spelling that canonicalizes to it, or a digest. A digest pulled under several names has a verdict per name (origin rules
// weigh names); the least trusted one is returned, as it is the one placement follows.
func FindImage(all map[string]*reputation.Verdict, name string) (string, bool) {
	if _, ok := all[name]; ok {
		return name, true
	}
	suffix := "@" + name
	if !digestPattern.MatchString(name) {
		ref, err := reputation.ParseImageRef(name)
		if err != nil {
			return "", false
		}
		// The same image spelled another way: "docker.io/library/redis:7.2" for pods' "redis:7.2",
		// or the reverse. Verdicts are kept under the pods' spellings, so each is canonicalized.
		canonical := ref.String()
		if _, ok := all[canonical]; ok {
			return canonical, true
		}
		if !ref.Pinned() {
			for spelled := range all {
				if r, err := reputation.ParseImageRef(spelled); err == nil && r.String() == canonical {
					return spelled, true
				}
			}
			return "", false
		}
		suffix = "@" + ref.Digest
	}
	best := ""
	for ref, v := range all {
		if !strings.HasSuffix(ref, suffix) && !strings.HasSuffix(v.Key, suffix) {
			continue
		}
		if b := all[best]; best == "" || reputation.LessTrusted(v.Tier, b.Tier) ||
			(v.Tier == b.Tier && (v.Score < b.Score || (v.Score == b.Score && ref < best))) {
			best = ref
		}
	}
	return best, best != ""
}

func (s *Server) history(w http.ResponseWriter, r *http.Request, _ string) error {
	q, err := ParseHistoryQuery(r.URL.Query())
	if err != nil {
		return err
	}
	if s.Records == nil {
		return s.noStore()
	}
	all, _ := s.verdicts() // without the cache, the reference as given
	h, err := ReadHistory(s.Records, all, q)
	if err != nil {
		return err
	}
	return writeJSON(w, h)
}

// ReadHistory reads one page of an image's verdict history. History is kept under the
// reference pods use; a digest or another spelling of it finds it through the current verdicts.
func ReadHistory(records Records, current map[string]*reputation.Verdict, q HistoryQuery) (*History, error) {
	ref := q.Image
	if found, ok := FindImage(current, q.Image); ok {
		ref = found
	}
	entries, next, err := records.History(ref, q.Page)
	if err != nil {
		return nil, err
	}
	h := &History{TypeMeta: TypeMeta("History"), Ref: ref, Items: entries}
	h.Continue = next
	if h.Items == nil {
		h.Items = []store.HistoryEntry{}
	}
	return h, nil
}

func (s *Server) decisions(w http.ResponseWriter, r *http.Request, _ string) error {
	q, err := ParseDecisionQuery(r.URL.Query())
	if err != nil {
		return err
	}
	if s.Records == nil {
		return s.noStore()
	}
	items, next, err := s.Records.Decisions(q.Page, q.Matches)
	if err != nil {
		return err
	}
	list := DecisionList{TypeMeta: TypeMeta("DecisionList"), Items: items}
	list.Continue = next
	if list.Items == nil {
		list.Items = []store.Decision{}
	}
	return writeJSON(w, list)
}

func (s *Server) policies(w http.ResponseWriter, r *http.Request, _ string) error {
	q, err := ParsePageQuery(r.URL.Query())
	if err != nil {
		return err
	}
	if s.Records == nil {
		return s.noStore()
	}
	all, err := s.Records.Policies()
	if err != nil {
		return err
	}
	list := PolicyList{TypeMeta: TypeMeta("PolicyList"), Items: []store.PolicyRecord{}}
	if q.Offset < len(all) {
		end := min(len(all), q.Offset+q.Limit)
		list.Items = append(list.Items, all[q.Offset:end]...)
		if end < len(all) {
			list.Continue = fmt.Sprint(end)
		}
	}
	return writeJSON(w, list)
}

func (s *Server) backup(w http.ResponseWriter, r *http.Request, _ string) error {
	if _, err := parseQuery(r.URL.Query()); err != nil {
		return err
	}
	if s.Records == nil {
		return s.noStore()
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="repute-%s.db"`, time.Now().UTC().Format("20060102T150405Z")))
	n, err := s.Records.Backup(w)
	if err != nil {
		// The status line is gone with the first byte; the short body and the log tell.
		klog.FromContext(r.Context()).Error(err, "Audit API backup failed part way", "bytes", n)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

func writeStatus(w http.ResponseWriter, st metav1.Status) {
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	st.Status = metav1.StatusFailure
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
	_ = json.NewEncoder(w).Encode(st)
}

// writeError answers a handler's error: a bad parameter is a 400 that names it, an API error
// keeps its status, anything else is the store failing (500, and logged).
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var pe *ParamError
	var se apierrors.APIStatus
	switch {
	case errors.As(err, &pe):
		writeStatus(w, metav1.Status{Code: http.StatusBadRequest, Reason: metav1.StatusReasonBadRequest, Message: pe.Error(),
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: metav1.CauseTypeFieldValueInvalid, Field: pe.Param, Message: pe.Message}}}})
	case errors.As(err, &se):
		writeStatus(w, se.Status())
	default:
		klog.FromContext(r.Context()).Error(err, "Audit API request failed", "path", r.URL.Path)
		writeStatus(w, apierrors.NewInternalError(err).ErrStatus)
	}
}
