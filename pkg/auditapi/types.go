// Package auditapi serves Repute's audit records as an aggregated Kubernetes API,
// audit.repute.dev/v1, registered with an APIService: the kube-apiserver authenticates the
// caller and proxies the request, and kubectl get prints tables through the Table protocol. It
// is k8s.io/apiserver's generic server over the reputation store, as metrics-server is over its
// own storage: read-only, with field selectors for what auditors filter on.
package auditapi

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

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

	Ref           string          `json:"ref"`
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
}

// ImageList is a list of images, ordered by reference.
type ImageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []Image `json:"items"`
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
	out.Evidence = append([]Evidence(nil), in.Evidence...) // values only
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
