// Package auditapi serves Repute's audit records as an aggregated Kubernetes API,
// audit.repute.dev/v1, registered with an APIService: the kube-apiserver authenticates the
// caller and proxies the request, and kubectl get prints tables through the Table protocol. It
// is k8s.io/apiserver's generic server over the reputation store, as metrics-server is over its
// own storage: read-only, with field selectors for what auditors filter on.
package auditapi

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation"
)

// GroupName is the API group; the existing direct endpoint's paths use the same name.
const GroupName = "audit.repute.dev"

// SchemeGroupVersion is audit.repute.dev/v1.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1"}

// Decision is one placement decision: where a pod went, as what tier, and why. Its name is the
// pod's, with the decision's time, so that a pod's decisions are distinct objects.
type Decision struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`

	Pod    string          `json:"pod"`
	UID    string          `json:"podUID,omitempty"`
	Action string          `json:"action"`
	Node   string          `json:"node"`
	Pool   string          `json:"pool"`
	Tier   reputation.Tier `json:"tier"`
	Score  int             `json:"score"`
	Image  string          `json:"image,omitempty"`
	Reason string          `json:"reason"`
	Time   metav1.Time     `json:"time"`
}

// DecisionList is a list of decisions, oldest first.
type DecisionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []Decision `json:"items"`
}

// Image is one image's current verdict. Its name is the reference as pods spell it, with each
// "/" as "~" (a name may hold no "/").
type Image struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`

	Ref     string `json:"ref"`
	Verdict `json:",inline"`
}

// Verdict is what an image was judged: its tier and score, and the evidence behind them.
type Verdict struct {
	Digest        string          `json:"digest,omitempty"`
	Tier          reputation.Tier `json:"tier"`
	Score         int             `json:"score"`
	DecidedBy     string          `json:"decidedBy"`
	PolicyVersion string          `json:"policyVersion"`
	EvaluatedAt   metav1.Time     `json:"evaluatedAt"`
	// Evidence is every piece of evidence and what it weighed, as the verdict explains it.
	Evidence []Evidence `json:"evidence,omitempty"`
}

// Evidence is one signal's contribution to a verdict.
type Evidence struct {
	Signal   string `json:"signal"`
	Observed string `json:"observed"`
	Points   int    `json:"points"`
	Rule     string `json:"rule,omitempty"`
	Tier     string `json:"tier,omitempty"`
	// Finding is a one-word summary, e.g. "verified" or "unpinned".
	Finding string `json:"finding,omitempty"`
}

// ImageList is a list of images, ordered by reference.
type ImageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []Image `json:"items"`
}

// ImageHistory is one page of an image's verdicts, oldest first: the images/history
// subresource. Its name is the image's.
type ImageHistory struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`

	// Ref is the reference the history is kept under (as pods spell it).
	Ref   string         `json:"ref"`
	Items []HistoryEntry `json:"items"`
	// Continue is the token for the next page (the continue option), "" on the last.
	Continue string `json:"continue,omitempty"`
}

// HistoryEntry is one verdict and when it was reached.
type HistoryEntry struct {
	Time    metav1.Time `json:"time"`
	Verdict Verdict     `json:"verdict"`
	// Reason is the verdict's explanation in one line.
	Reason string `json:"reason"`
}

// HistoryOptions page and bound a history: the query of GET images/NAME/history.
type HistoryOptions struct {
	metav1.TypeMeta `json:",inline"`

	// Limit is the most entries returned (at most 1000; default 100).
	Limit int64 `json:"limit,omitempty"`
	// Continue is the token a previous page returned.
	Continue string `json:"continue,omitempty"`
	// From and To bound the entries' times to [from, to): RFC 3339 times.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

// Simulation is a what-if: what a proposed ReputationPolicy would change, computed from the
// evidence the scheduler holds. It is created and answered, never stored, as a
// SubjectAccessReview is: nothing is applied.
type Simulation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SimulationSpec          `json:"spec"`
	Status *audit.SimulationResult `json:"status,omitempty"`
}

// SimulationSpec holds the proposal.
type SimulationSpec struct {
	// Policy is the proposed ReputationPolicy (repute.dev/v1alpha1), read strictly.
	Policy runtime.RawExtension `json:"policy"`
}

// Policy is a policy version that came into force: its name is the version. Policy is the
// defaulted ReputationPolicy spec it was.
type Policy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`

	InForceSince metav1.Time          `json:"inForceSince"`
	Source       string               `json:"source"`
	Policy       runtime.RawExtension `json:"policy"`
}

// PolicyList is every policy version that was in force, oldest first.
type PolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []Policy `json:"items"`
}

func (in *Policy) DeepCopyObject() runtime.Object {
	out := *in
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	in.Policy.DeepCopyInto(&out.Policy)
	return &out
}

func (in *PolicyList) DeepCopyObject() runtime.Object {
	out := *in
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]Policy, len(in.Items))
	for i := range in.Items {
		out.Items[i] = *in.Items[i].DeepCopyObject().(*Policy)
	}
	return &out
}

// DeepCopyObject copies: every field but the metadata is a value.
func (in *Decision) DeepCopyObject() runtime.Object {
	out := *in
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return &out
}

func (in *DecisionList) DeepCopyObject() runtime.Object {
	out := *in
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]Decision, len(in.Items))
	for i := range in.Items {
		out.Items[i] = *in.Items[i].DeepCopyObject().(*Decision)
	}
	return &out
}

func (in *Image) DeepCopyObject() runtime.Object {
	out := *in
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Evidence = slices.Clone(in.Evidence) // values only
	return &out
}

func (in *ImageHistory) DeepCopyObject() runtime.Object {
	out := *in
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Items = make([]HistoryEntry, len(in.Items))
	for i, e := range in.Items {
		e.Verdict.Evidence = slices.Clone(e.Verdict.Evidence)
		out.Items[i] = e
	}
	return &out
}

func (in *HistoryOptions) DeepCopyObject() runtime.Object {
	out := *in // values only
	return &out
}

func (in *Simulation) DeepCopyObject() runtime.Object {
	out := *in
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	in.Spec.Policy.DeepCopyInto(&out.Spec.Policy)
	if in.Status != nil {
		status := *in.Status // slices of values
		status.Images, status.Pods = slices.Clone(status.Images), slices.Clone(status.Pods)
		status.NotSimulated, status.Warnings = slices.Clone(status.NotSimulated), slices.Clone(status.Warnings)
		out.Status = &status
	}
	return &out
}

func (in *ImageList) DeepCopyObject() runtime.Object {
	out := *in
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]Image, len(in.Items))
	for i := range in.Items {
		out.Items[i] = *in.Items[i].DeepCopyObject().(*Image)
	}
	return &out
}
