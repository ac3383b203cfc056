package audit

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

// ParamError is a bad query parameter; the API answers it with a 400 that names the parameter.
type ParamError struct {
	Param, Value, Message string
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("query parameter %q (%q): %s", e.Param, e.Value, e.Message)
}

// ParseRawQuery decodes a query string, refusing it whole when any pair is malformed (the
// standard library would drop that pair silently), with an error that names the pair's key.
func ParseRawQuery(raw string) (url.Values, error) {
	values, err := url.ParseQuery(raw)
	if err == nil {
		return values, nil
	}
	for _, pair := range strings.Split(raw, "&") {
		key, value, _ := strings.Cut(pair, "=")
		if _, kerr := url.QueryUnescape(key); kerr != nil {
			return nil, &ParamError{Param: key, Message: "malformed parameter name"}
		} else if _, verr := url.QueryUnescape(value); verr != nil {
			k, _ := url.QueryUnescape(key)
			return nil, &ParamError{Param: k, Value: value, Message: "malformed percent-encoding"}
		}
	}
	return nil, &ParamError{Message: err.Error()}
}

// query reads URL query parameters, refusing unknown and repeated ones: a typo such as "teir"
// must not silently widen an auditor's answer.
type query struct {
	values url.Values
}

func parseQuery(values url.Values, allowed ...string) (query, error) {
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !slices.Contains(allowed, name) {
			return query{}, &ParamError{Param: name, Value: values.Get(name), Message: "unknown parameter; known: " + strings.Join(allowed, ", ")}
		}
		if len(values[name]) > 1 {
			return query{}, &ParamError{Param: name, Value: strings.Join(values[name], ","), Message: "given more than once"}
		}
	}
	return query{values: values}, nil
}

func (q query) string(name string) string { return q.values.Get(name) }

func (q query) int(name string, def, lo, hi int) (int, error) {
	s := q.values.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, &ParamError{Param: name, Value: s, Message: fmt.Sprintf("must be an integer from %d to %d", lo, hi)}
	}
	return n, nil
}

func (q query) time(name string) (time.Time, error) {
	s := q.values.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, &ParamError{Param: name, Value: s, Message: "must be an RFC 3339 time, e.g. 2026-11-22T10:00:00Z"}
	}
	return t, nil
}

func (q query) tier(name string) (reputation.Tier, error) {
	s := q.values.Get(name)
	if s == "" {
		return "", nil
	}
	t, err := reputation.ParseTier(s)
	if err != nil {
		return "", &ParamError{Param: name, Value: s, Message: "must be trusted, unknown or untrusted"}
	}
	return t, nil
}

// dnsName reads a namespace, pod or node name, which Kubernetes restricts to DNS subdomains.
func (q query) dnsName(name string) (string, error) {
	s := q.values.Get(name)
	if s == "" {
		return "", nil
	}
	if errs := validation.IsDNS1123Subdomain(s); len(errs) > 0 {
		return "", &ParamError{Param: name, Value: s, Message: strings.Join(errs, "; ")}
	}
	return s, nil
}

// limit reads the page size; larger requests are clamped to MaxPageSize, as the apiserver does.
func (q query) limit() (int, error) {
	n, err := q.int("limit", DefaultPageSize, 1, 1<<30)
	return min(n, MaxPageSize), err
}

// storeCursor reads a continue token handed out for a store page.
func (q query) storeCursor() (string, error) {
	s := q.values.Get("continue")
	if s == "" {
		return "", nil
	}
	if b, err := hex.DecodeString(s); err != nil || len(b) != 16 {
		return "", &ParamError{Param: "continue", Value: s, Message: "not a continue token this API handed out"}
	}
	return s, nil
}

// timeRange reads from and to and checks that they are in order.
func (q query) timeRange() (from, to time.Time, err error) {
	if from, err = q.time("from"); err != nil {
		return
	}
	if to, err = q.time("to"); err != nil {
		return
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		err = &ParamError{Param: "to", Value: q.values.Get("to"), Message: "must be after from"}
	}
	return
}

// MaxScannedPerRequest bounds the store records one request reads: a filter that matches
// little gets a short page and a continue token, not a scan of the whole store.
const MaxScannedPerRequest = 20_000

func (q query) storePage() (store.Page, error) {
	page := store.Page{MaxScanned: MaxScannedPerRequest}
	var err error
	if page.From, page.To, err = q.timeRange(); err != nil {
		return page, err
	}
	if page.Limit, err = q.limit(); err != nil {
		return page, err
	}
	page.After, err = q.storeCursor()
	return page, err
}

// ImageQuery is a parsed images list request.
type ImageQuery struct {
	ImageFilter
	Limit int
	// After is the last reference of the previous page.
	After string
}

// ParseImageQuery reads tier, registry, minScore, maxScore, limit and continue.
func ParseImageQuery(values url.Values) (ImageQuery, error) {
	var iq ImageQuery
	q, err := parseQuery(values, "tier", "registry", "minScore", "maxScore", "limit", "continue")
	if err != nil {
		return iq, err
	}
	if iq.Tier, err = q.tier("tier"); err != nil {
		return iq, err
	}
	iq.Registry = strings.ToLower(q.string("registry"))
	if iq.Registry != "" && strings.ContainsAny(iq.Registry, "/@ ") {
		return iq, &ParamError{Param: "registry", Value: iq.Registry, Message: `must be a registry host such as "docker.io", without a repository`}
	}
	if iq.MinScore, err = q.int("minScore", 0, 0, 100); err != nil {
		return iq, err
	}
	if iq.MaxScore, err = q.int("maxScore", 100, 0, 100); err != nil {
		return iq, err
	}
	if iq.MinScore > iq.MaxScore {
		return iq, &ParamError{Param: "maxScore", Value: q.string("maxScore"), Message: "must not be below minScore"}
	}
	if iq.Limit, err = q.limit(); err != nil {
		return iq, err
	}
	iq.After, err = ImageAfter(q.string("continue"))
	return iq, err
}

func imageCursor(ref string) string { return base64.RawURLEncoding.EncodeToString([]byte(ref)) }

// ImageAfter reads an images list's continue token: the reference its page ended at ("" for
// none).
func ImageAfter(token string) (string, error) {
	if token == "" {
		return "", nil
	}
	ref, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(ref) == 0 {
		return "", &ParamError{Param: "continue", Value: token, Message: "not a continue token this API handed out"}
	}
	return string(ref), nil
}

// HistoryQuery is a parsed history request.
type HistoryQuery struct {
	Image string
	store.Page
}

// ParseHistoryQuery reads image (required), from, to, limit and continue.
func ParseHistoryQuery(values url.Values) (HistoryQuery, error) {
	var hq HistoryQuery
	q, err := parseQuery(values, "image", "from", "to", "limit", "continue")
	if err != nil {
		return hq, err
	}
	if hq.Image = q.string("image"); hq.Image == "" {
		return hq, &ParamError{Param: "image", Message: "required: an image reference or a digest such as sha256:…"}
	}
	hq.Page, err = q.storePage()
	return hq, err
}

// DecisionQuery is a parsed decisions request.
type DecisionQuery struct {
	DecisionFilter
	store.Page
}

// ParseDecisionQuery reads namespace, pod, uid, node, tier, from, to, limit and continue.
func ParseDecisionQuery(values url.Values) (DecisionQuery, error) {
	var dq DecisionQuery
	q, err := parseQuery(values, "namespace", "pod", "uid", "node", "tier", "from", "to", "limit", "continue")
	if err != nil {
		return dq, err
	}
	if dq.Namespace, err = q.dnsName("namespace"); err != nil {
		return dq, err
	}
	if dq.Pod, err = q.dnsName("pod"); err != nil {
		return dq, err
	}
	if dq.Node, err = q.dnsName("node"); err != nil {
		return dq, err
	}
	dq.UID = q.string("uid")
	if dq.Tier, err = q.tier("tier"); err != nil {
		return dq, err
	}
	dq.Page, err = q.storePage()
	return dq, err
}

// Matches reports whether a decision passes the filter (its time range is applied by the store).
func (f DecisionFilter) Matches(d *store.Decision) bool {
	return (f.Namespace == "" || d.Namespace == f.Namespace) && (f.Pod == "" || d.Pod == f.Pod) &&
		(f.UID == "" || d.UID == f.UID) && (f.Node == "" || d.Node == f.Node) && (f.Tier == "" || d.Tier == f.Tier)
}

// Matches reports whether an image's verdict passes the filter.
func (f ImageFilter) Matches(v *reputation.Verdict) bool {
	if f.Tier != "" && v.Tier != f.Tier {
		return false
	}
	if v.Score < f.MinScore || v.Score > f.MaxScore {
		return false
	}
	if f.Registry != "" {
		ref, err := reputation.ParseImageRef(v.Image)
		if err != nil || ref.Registry != f.Registry {
			return false
		}
	}
	return true
}

// PageQuery is a plain page request, for short lists such as policies.
type PageQuery struct {
	Limit, Offset int
}

// ParsePageQuery reads limit and continue.
func ParsePageQuery(values url.Values) (PageQuery, error) {
	var pq PageQuery
	q, err := parseQuery(values, "limit", "continue")
	if err != nil {
		return pq, err
	}
	if pq.Limit, err = q.limit(); err != nil {
		return pq, err
	}
	pq.Offset, err = q.int("continue", 0, 0, 1<<30)
	if err != nil {
		err = &ParamError{Param: "continue", Value: q.string("continue"), Message: "not a continue token this API handed out"}
	}
	return pq, err
}
