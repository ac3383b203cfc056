package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/reputation"
)

// MaxSimulationBodyBytes bounds a proposed policy: keys and rules fit in far less.
const MaxSimulationBodyBytes = 1 << 20

// Simulation is what a proposed policy would change, computed from the evidence the scheduler
// holds; nothing is applied.
type Simulation struct {
	metav1.TypeMeta `json:",inline"`
	SimulationResult
}

// SimulationResult is a simulation's findings: the body of the direct endpoint's Simulation and
// the status of the aggregated API's.
type SimulationResult struct {
	// CurrentVersion is the policy in force; ProposedVersion the one simulated.
	CurrentVersion  string `json:"currentVersion"`
	ProposedVersion string `json:"proposedVersion"`
	// Images lists every image whose tier or score would change; Unchanged counts the rest.
	Images    []ImageChange `json:"images"`
	Unchanged int           `json:"unchanged"`
	// Pods lists the running and pending pods whose tier would change.
	Pods []PodChange `json:"pods"`
	// NotSimulated are images whose evidence has not been gathered since the scheduler
	// started (their verdicts came from the store); they are re-weighed once it has.
	NotSimulated []string `json:"notSimulated,omitempty"`
	// Warnings say what the simulation could not know.
	Warnings []string `json:"warnings,omitempty"`
}

// Outcome is a tier, a score and the rule that decided.
type Outcome struct {
	Tier      reputation.Tier `json:"tier"`
	Score     int             `json:"score"`
	DecidedBy string          `json:"decidedBy"`
}

// OutcomeOf summarizes a verdict.
func OutcomeOf(v *reputation.Verdict) Outcome {
	return Outcome{Tier: v.Tier, Score: v.Score, DecidedBy: v.DecidedBy}
}

// ImageChange is one image now and under the proposed policy.
type ImageChange struct {
	Ref    string  `json:"ref"`
	Before Outcome `json:"before"`
	After  Outcome `json:"after"`
}

// PodChange is one pod whose tier would change. Phase is the pod's status.phase; Node, where it
// is bound (in the wrong pool until moved), empty for a pod waiting to be placed.
type PodChange struct {
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Phase     string          `json:"phase"`
	Node      string          `json:"node,omitempty"`
	Before    reputation.Tier `json:"beforeTier"`
	After     reputation.Tier `json:"afterTier"`
	// Image is the image that decides the pod's tier under the proposed policy.
	Image string `json:"image"`
}

func (s *Server) simulate(w http.ResponseWriter, r *http.Request, _ string) error {
	if _, err := parseQuery(r.URL.Query()); err != nil {
		return err
	}
	if s.Simulate == nil {
		return apierrors.NewServiceUnavailable("this server cannot simulate: it holds no evidence (offline store)")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &apierrors.StatusError{ErrStatus: metav1.Status{Code: http.StatusUnsupportedMediaType, Reason: metav1.StatusReasonUnsupportedMediaType,
			Message: fmt.Sprintf("Content-Type %q: send the proposed ReputationPolicy as application/json", ct)}}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSimulationBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("a proposed policy is at most %d bytes", MaxSimulationBodyBytes))
		}
		return apierrors.NewBadRequest("reading the proposed policy: " + err.Error())
	}
	proposed, err := DecodeProposedPolicy(body)
	if err != nil {
		return err
	}
	sim, err := s.Simulate(r.Context(), proposed)
	if err != nil {
		return err
	}
	sim.TypeMeta = TypeMeta("Simulation")
	return writeJSON(w, sim)
}

// DecodeProposedPolicy reads a proposed ReputationPolicy strictly: an unknown field is an error,
// not a rule silently left out of the what-if.
func DecodeProposedPolicy(body []byte) (*v1alpha1.ReputationPolicy, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var proposed v1alpha1.ReputationPolicy
	if err := dec.Decode(&proposed); err != nil {
		return nil, apierrors.NewBadRequest("the proposed policy must be a ReputationPolicy as JSON: " + err.Error())
	}
	if dec.More() {
		return nil, apierrors.NewBadRequest("the proposed policy must be one ReputationPolicy: more follows it")
	}
	if proposed.Kind != "" && proposed.Kind != v1alpha1.Kind {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the proposed policy is a %s, want a %s", proposed.Kind, v1alpha1.Kind))
	}
	return &proposed, nil
}

// ReputationPolicyKind names the kind in Invalid errors about a proposed policy.
var ReputationPolicyKind = schema.GroupKind{Group: v1alpha1.Group, Kind: v1alpha1.Kind}
