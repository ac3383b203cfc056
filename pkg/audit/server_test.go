package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/repute-dev/repute/pkg/version"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

// Unit tests use a token table and an RBAC-like rule table; the real TokenReview and
// SubjectAccessReview path is tested in test/integration against an apiserver with RBAC.
var (
	t0     = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	apiRef = "registry.internal/team/api@sha256:" + strings.Repeat("a", 64)
	// The same digest pulled under a second name.
	mirrorRef = "mirror.example/team/api@sha256:" + strings.Repeat("a", 64)
	redisRef  = "docker.io/bitnami/redis:7.2"
	minerRef  = "quay.io/evil/miner:latest"
)

type tokenAuthn map[string]string

func (t tokenAuthn) AuthenticateRequest(r *http.Request) (*authenticator.Response, bool, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if name, known := t[token]; ok && known {
		return &authenticator.Response{User: &user.DefaultInfo{Name: name}}, true, nil
	}
	return nil, false, nil
}

// rules grants "user" → "verb resource[/subresource] [namespace]".
type rules map[string][]string

func (rs rules) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	resource := a.GetResource()
	if a.GetSubresource() != "" {
		resource += "/" + a.GetSubresource()
	}
	if !a.IsResourceRequest() {
		resource = a.GetPath() // "get /version"
	}
	for _, r := range rs[a.GetUser().GetName()] {
		f := strings.Fields(r)
		if f[0] == a.GetVerb() && f[1] == resource && (len(f) < 3 || f[2] == a.GetNamespace()) && (a.GetAPIGroup() == Group || !a.IsResourceRequest()) {
			return authorizer.DecisionAllow, "", nil
		}
	}
	return authorizer.DecisionNoOpinion, "no RBAC rule allows it", nil
}

func newTestServer(t *testing.T) (*Server, *store.Store) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "repute.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	verdict := func(ref string, tier reputation.Tier, score int, at time.Time) *reputation.Verdict {
		return &reputation.Verdict{Image: ref, Key: ref, Tier: tier, Score: score, DecidedBy: "test", PolicyVersion: "p1", EvaluatedAt: at}
	}
	for i, v := range []*reputation.Verdict{
		verdict(apiRef, reputation.TierUnknown, 50, t0),
		verdict(apiRef, reputation.TierTrusted, 90, t0.Add(time.Hour)),
		verdict(mirrorRef, reputation.TierUntrusted, 20, t0),
		verdict(redisRef, reputation.TierUnknown, 40, t0),
		verdict(minerRef, reputation.TierUntrusted, 0, t0),
	} {
		if err := st.AppendVerdict(ctx, v.Image, v); err != nil {
			t.Fatalf("verdict %d: %v", i, err)
		}
	}
	var ds []store.Decision
	for i := range 30 {
		ns := "team"
		if i%3 == 0 {
			ns = "other"
		}
		ds = append(ds, store.Decision{Time: t0.Add(time.Duration(i) * time.Minute), Namespace: ns, Pod: fmt.Sprintf("p%02d", i),
			Node: "n1", Pool: "trusted", Tier: reputation.TierTrusted, Score: 90})
	}
	if err := st.AppendDecisions(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"p1", "p2", "p3"} {
		if err := st.AppendPolicy(ctx, store.PolicyRecord{Time: t0, Version: v, Source: "test", Policy: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	return &Server{
		Records:       st,
		Authenticator: tokenAuthn{"auditor-token": "auditor", "nobody-token": "nobody", "team-token": "team-lead"},
		Authorizer: authorizer.AuthorizerFunc(rules{
			"auditor":   {"list images", "get images", "get images/history", "list decisions", "list policies", "get backups", "get /version"},
			"team-lead": {"list decisions team", "list images team"},
		}.Authorize),
	}, st
}

func get(t *testing.T, s http.Handler, token, path string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("response %d %q: %v", w.Code, w.Body.String(), err)
	}
	return v
}

func TestAccessIsAuthenticatedAndAuthorized(t *testing.T) {
	s, _ := newTestServer(t)
	tests := []struct {
		name, token, path string
		wantCode          int
		wantMessage       string
	}{
		{"anonymous", "", PathPrefix + "/images", http.StatusUnauthorized, "Unauthorized"},
		{"unknown token", "forged", PathPrefix + "/decisions", http.StatusUnauthorized, "Unauthorized"},
		{"anonymous on an unknown path learns nothing", "", PathPrefix + "/secrets", http.StatusUnauthorized, "Unauthorized"},
		{"no role", "nobody-token", PathPrefix + "/images", http.StatusForbidden, `User "nobody" cannot list resource "images" in API group "audit.repute.dev" at the cluster scope`},
		{"no role for history", "nobody-token", PathPrefix + "/history?image=x", http.StatusForbidden, `cannot get resource "images/history"`},
		{"namespaced role, other namespace", "team-token", PathPrefix + "/decisions?namespace=other", http.StatusForbidden, `in the namespace "other"`},
		{"namespaced role, all namespaces", "team-token", PathPrefix + "/decisions", http.StatusForbidden, "at the cluster scope"},
		{"namespaced role, its namespace", "team-token", PathPrefix + "/decisions?namespace=team", http.StatusOK, ""},
		{"a namespace does not scope images", "team-token", PathPrefix + "/images?namespace=team", http.StatusForbidden, "at the cluster scope"},
		{"auditor", "auditor-token", PathPrefix + "/images", http.StatusOK, ""},
		{"unknown path", "auditor-token", PathPrefix + "/secrets", http.StatusNotFound, "not found"},
		{"health needs no token", "", "/healthz", http.StatusOK, ""},
		{"the version needs a token", "", VersionPath, http.StatusUnauthorized, "Unauthorized"},
		{"the version needs a grant", "nobody-token", VersionPath, http.StatusForbidden, `User "nobody" cannot get path "/version"`},
		{"version", "auditor-token", VersionPath, http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := get(t, s, tt.token, tt.path)
			if w.Code != tt.wantCode {
				t.Fatalf("GET %s = %d %s, want %d", tt.path, w.Code, w.Body, tt.wantCode)
			}
			if tt.path == VersionPath && tt.wantCode == http.StatusOK {
				if v := decode[version.Info](t, w); v != version.Get() {
					t.Errorf("version = %+v, want this build's %+v", v, version.Get())
				}
			}
			if tt.wantMessage != "" {
				st := decode[metav1.Status](t, w)
				if st.Kind != "Status" || int(st.Code) != tt.wantCode || !strings.Contains(st.Message, tt.wantMessage) {
					t.Errorf("status = %+v, want code %d and a message with %q", st, tt.wantCode, tt.wantMessage)
				}
			}
		})
	}
	r := httptest.NewRequest(http.MethodPost, PathPrefix+"/images", strings.NewReader("{}"))
	r.Header.Set("Authorization", "Bearer auditor-token")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST to a read-only API = %d, want 405", w.Code)
	}
}

func TestBadQueryParametersAreNamed(t *testing.T) {
	s, _ := newTestServer(t)
	tests := []struct{ path, param string }{
		{"/images?tier=trustworthy", "tier"},
		{"/images?teir=trusted", "teir"},
		{"/images?minScore=-1", "minScore"},
		{"/images?maxScore=abc", "maxScore"},
		{"/images?minScore=80&maxScore=20", "maxScore"},
		{"/images?registry=docker.io/library", "registry"},
		{"/images?limit=0", "limit"},
		{"/images?continue=%%%", "continue"},
		{"/images?continue=!!!", "continue"},
		{"/images?tier=trusted&tier=untrusted", "tier"},
		{"/history", "image"},
		{"/history?image=x&from=yesterday", "from"},
		{"/history?image=x&from=2026-11-22T10:00:00Z&to=2026-11-21T10:00:00Z", "to"},
		{"/decisions?namespace=Not_A_Namespace", "namespace"},
		{"/decisions?node=" + strings.Repeat("n", 300), "node"},
		{"/decisions?continue=abcd", "continue"},
		{"/decisions?tier=maybe", "tier"},
		{"/policies?continue=x", "continue"},
		{"/backup?full=1", "full"},
		{"/images/" + url.PathEscape(apiRef) + "?verbose=1", "verbose"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			w := get(t, s, "auditor-token", PathPrefix+tt.path)
			if w.Code != http.StatusBadRequest {
				t.Fatalf("GET %s = %d %s, want 400", tt.path, w.Code, w.Body)
			}
			st := decode[metav1.Status](t, w)
			if st.Details == nil || len(st.Details.Causes) != 1 || st.Details.Causes[0].Field != tt.param || !strings.Contains(st.Message, `"`+tt.param+`"`) {
				t.Errorf("400 for %s = %+v, want it to name %q", tt.path, st, tt.param)
			}
		})
	}
}

func TestListImagesFiltersAndPages(t *testing.T) {
	s, _ := newTestServer(t)
	refs := func(l ImageList) string {
		var out []string
		for _, it := range l.Items {
			out = append(out, it.Ref)
		}
		return strings.Join(out, " ")
	}
	tests := []struct{ query, want string }{
		{"", strings.Join([]string{redisRef, mirrorRef, minerRef, apiRef}, " ")},
		{"?tier=untrusted", mirrorRef + " " + minerRef},
		{"?registry=docker.io", redisRef},
		{"?registry=DOCKER.IO", redisRef},
		{"?minScore=30&maxScore=60", redisRef},
		{"?tier=trusted&minScore=95", ""},
	}
	for _, tt := range tests {
		w := get(t, s, "auditor-token", PathPrefix+"/images"+tt.query)
		if l := decode[ImageList](t, w); w.Code != http.StatusOK || refs(l) != tt.want || l.Kind != "ImageList" {
			t.Errorf("images%s = %d %q (kind %q), want %q", tt.query, w.Code, refs(l), l.Kind, tt.want)
		}
	}
	var paged []string
	next := ""
	for pages := 0; ; pages++ {
		w := get(t, s, "auditor-token", PathPrefix+"/images?limit=3&continue="+next)
		l := decode[ImageList](t, w)
		if w.Code != http.StatusOK || pages > 3 || len(l.Items) > 3 {
			t.Fatalf("page %d: %d %s", pages, w.Code, w.Body)
		}
		paged = append(paged, refs(l))
		if next = l.Continue; next == "" {
			break
		}
	}
	if got := strings.Join(paged, " "); got != tests[0].want {
		t.Errorf("paged images = %q, want %q", got, tests[0].want)
	}
}

func TestGetImageByReferenceOrDigest(t *testing.T) {
	s, _ := newTestServer(t)
	tests := []struct {
		name, wantRef string
		wantTier      reputation.Tier
	}{
		{apiRef, apiRef, reputation.TierTrusted},
		// A digest under two names: the least trusted name answers, as placement follows it.
		{"sha256:" + strings.Repeat("a", 64), mirrorRef, reputation.TierUntrusted},
		{"bitnami/redis:7.2", redisRef, reputation.TierUnknown},
	}
	for _, tt := range tests {
		w := get(t, s, "auditor-token", PathPrefix+"/images/"+tt.name)
		img := decode[Image](t, w)
		if w.Code != http.StatusOK || img.Ref != tt.wantRef || img.Verdict == nil || img.Tier != tt.wantTier {
			t.Errorf("image %s = %d %s, want %s as %s", tt.name, w.Code, w.Body, tt.wantRef, tt.wantTier)
		}
	}
	for _, name := range []string{"sha256:" + strings.Repeat("b", 64), "nope/never:1", "UPPER/Case"} {
		if w := get(t, s, "auditor-token", PathPrefix+"/images/"+name); w.Code != http.StatusNotFound {
			t.Errorf("image %s = %d, want 404", name, w.Code)
		}
	}
}

func TestHistoryDecisionsAndPolicies(t *testing.T) {
	s, _ := newTestServer(t)
	w := get(t, s, "auditor-token", PathPrefix+"/history?image=sha256:"+strings.Repeat("a", 64))
	h := decode[History](t, w)
	if w.Code != http.StatusOK || h.Ref != mirrorRef || len(h.Items) != 1 {
		t.Errorf("history by digest = %d %s", w.Code, w.Body)
	}
	w = get(t, s, "auditor-token", PathPrefix+"/history?image="+url.QueryEscape(apiRef)+"&from=2026-11-22T10:30:00Z")
	if h = decode[History](t, w); len(h.Items) != 1 || h.Items[0].Verdict.Tier != reputation.TierTrusted {
		t.Errorf("history from 10:30 = %s, want only the trusted verdict", w.Body)
	}

	var pods []string
	next := ""
	for pages := 0; ; pages++ {
		w := get(t, s, "team-token", PathPrefix+"/decisions?namespace=team&limit=7&from=2026-11-22T10:05:00Z&continue="+next)
		l := decode[DecisionList](t, w)
		if w.Code != http.StatusOK || pages > 5 {
			t.Fatalf("decisions page %d: %d %s", pages, w.Code, w.Body)
		}
		for _, d := range l.Items {
			pods = append(pods, d.Pod)
		}
		if next = l.Continue; next == "" {
			break
		}
	}
	// From minute 5, namespace team: every minute not divisible by 3 up to 29.
	if len(pods) != 17 || pods[0] != "p05" || pods[16] != "p29" {
		t.Errorf("decisions of namespace team from 10:05 = %v", pods)
	}
	w = get(t, s, "auditor-token", PathPrefix+"/decisions?pod=p03")
	if l := decode[DecisionList](t, w); len(l.Items) != 1 || l.Items[0].Namespace != "other" {
		t.Errorf("decisions of pod p03 = %s", w.Body)
	}

	w = get(t, s, "auditor-token", PathPrefix+"/policies?limit=2")
	l := decode[PolicyList](t, w)
	if len(l.Items) != 2 || l.Continue == "" {
		t.Fatalf("first policy page = %s", w.Body)
	}
	w = get(t, s, "auditor-token", PathPrefix+"/policies?limit=2&continue="+l.Continue)
	if l = decode[PolicyList](t, w); len(l.Items) != 1 || l.Items[0].Version != "p3" || l.Continue != "" {
		t.Errorf("second policy page = %s", w.Body)
	}
}

func TestBackupIsAUsableStore(t *testing.T) {
	s, _ := newTestServer(t)
	w := get(t, s, "auditor-token", PathPrefix+"/backup")
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("backup = %d %v", w.Code, w.Header())
	}
	path := filepath.Join(t.TempDir(), "restored.db")
	if err := store.Restore(bytes.NewReader(w.Body.Bytes()), path); err != nil {
		t.Fatal(err)
	}
	restored, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	if ds, _, err := restored.Decisions(store.Page{}, nil); err != nil || len(ds) != 30 {
		t.Errorf("restored backup has %d decisions (%v), want 30", len(ds), err)
	}
}

func TestReadinessReportsADegradedStore(t *testing.T) {
	s, _ := newTestServer(t)
	if w := get(t, s, "", "/readyz"); w.Code != http.StatusOK {
		t.Errorf("readyz with a healthy store = %d", w.Code)
	}
	s.Ready = func() error { return errors.New("write /var/lib/repute/repute.db: no space left on device") }
	if w := get(t, s, "", "/readyz"); w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "no space left") {
		t.Errorf("readyz with a degraded store = %d %q", w.Code, w.Body)
	}
}

func TestWithoutAStoreOnlyImagesAnswer(t *testing.T) {
	s, _ := newTestServer(t)
	s.Records = nil
	s.Images = func() map[string]*reputation.Verdict {
		return map[string]*reputation.Verdict{redisRef: {Image: redisRef, Key: redisRef, Tier: reputation.TierUnknown, Score: 40}}
	}
	if w := get(t, s, "auditor-token", PathPrefix+"/images"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), redisRef) {
		t.Errorf("images from the live cache = %d %s", w.Code, w.Body)
	}
	for _, p := range []string{"/decisions", "/policies", "/backup", "/history?image=x"} {
		w := get(t, s, "auditor-token", PathPrefix+p)
		body, _ := io.ReadAll(w.Body)
		if w.Code != http.StatusServiceUnavailable || !strings.Contains(string(body), "store.path") {
			t.Errorf("%s without a store = %d %s, want 503 naming store.path", p, w.Code, body)
		}
	}
}

func authorizerFor(rs rules) authorizer.Authorizer { return authorizer.AuthorizerFunc(rs.Authorize) }

// Verdicts are kept under the spelling pods use; an auditor may spell the image any way that
// canonicalizes to it, and is answered with the pods' spelling.
func TestFindImageBySpelling(t *testing.T) {
	all := map[string]*reputation.Verdict{
		"redis:7.2":                     {Tier: reputation.TierUnknown},
		"docker.io/bitnami/nginx:1.27":  {Tier: reputation.TierUnknown},
		"registry.internal/team/api:v1": {Tier: reputation.TierTrusted},
		"quay.io/evil/miner:latest":     {Tier: reputation.TierUntrusted},
	}
	for _, tc := range []struct{ name, want string }{
		{"redis:7.2", "redis:7.2"},
		{"docker.io/library/redis:7.2", "redis:7.2"},
		{"index.docker.io/library/redis:7.2", "redis:7.2"},
		{"library/redis:7.2", "redis:7.2"},
		{"bitnami/nginx:1.27", "docker.io/bitnami/nginx:1.27"},
		{"REGISTRY.INTERNAL/team/api:v1", "registry.internal/team/api:v1"},
		{"quay.io/evil/miner", "quay.io/evil/miner:latest"},
		{"redis:7.4", ""},
		{"docker.io/library/redis", ""},
	} {
		got, ok := FindImage(all, tc.name)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("FindImage(%q) = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}
