// Package audit is Repute's read-only audit API: what was decided, when and why, read from the
// reputation store. Callers are authenticated and authorized by the cluster, the way
// kube-rbac-proxy and kube-scheduler's own secure port do it: a bearer token is checked with a
// TokenReview (or a client certificate against the cluster's client CA), and every request with
// a SubjectAccessReview on a resource of the API group audit.repute.dev, so auditors are granted
// access with ordinary RBAC.
package audit

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

const (
	// Group and Version name the API; RBAC rules grant its resources in this group.
	Group   = "audit.repute.dev"
	Version = "v1"
	// PathPrefix is where the API is served.
	PathPrefix = "/apis/" + Group + "/" + Version

	// Resources, as RBAC rules name them.
	ResourceImages    = "images"
	ResourceDecisions = "decisions"
	ResourcePolicies  = "policies"
	ResourceBackups   = "backups"
	// ResourceSimulations are what-if evaluations of a proposed policy (create only).
	ResourceSimulations = "simulations"
	// SubresourceHistory is an image's verdict history.
	SubresourceHistory = "history"

	// DefaultPageSize and MaxPageSize bound list responses; larger limits are clamped.
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Image is one image's current verdict. Ref is the reference as pods spell it, which is what
// verdicts are kept under; the verdict's Key is the digest-pinned name once the digest is known.
type Image struct {
	Ref string `json:"ref"`
	*reputation.Verdict
}

// ImageList is a page of images, ordered by reference.
type ImageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []Image `json:"items"`
}

// History is a page of one image's verdict history, oldest first.
type History struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Ref             string               `json:"ref"`
	Items           []store.HistoryEntry `json:"items"`
}

// DecisionList is a page of placement decisions, oldest first.
type DecisionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []store.Decision `json:"items"`
}

// PolicyList is a page of the policies that were in force, oldest first.
type PolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []store.PolicyRecord `json:"items"`
}

// TypeMeta is the apiVersion and kind of this API's objects.
// Page returns a list's items and the token for the next page ("" on the last).
func (l *ImageList) Page() ([]Image, string) { return l.Items, l.Continue }

// Page returns the history's entries and the token for the next page.
func (l *History) Page() ([]store.HistoryEntry, string) { return l.Items, l.Continue }

// Page returns the decisions and the token for the next page.
func (l *DecisionList) Page() ([]store.Decision, string) { return l.Items, l.Continue }

// Page returns the policies and the token for the next page.
func (l *PolicyList) Page() ([]store.PolicyRecord, string) { return l.Items, l.Continue }

func TypeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: Group + "/" + Version, Kind: kind}
}

// ImageFilter selects images for a list.
type ImageFilter struct {
	// Tier, when set, keeps only images of that tier.
	Tier reputation.Tier
	// Registry, when set, keeps only images from that registry (e.g. "docker.io").
	Registry string
	// MinScore and MaxScore bound the score, inclusive.
	MinScore, MaxScore int
}

// DecisionFilter selects placement decisions.
type DecisionFilter struct {
	Namespace, Pod, UID, Node string
	Tier                      reputation.Tier
}
