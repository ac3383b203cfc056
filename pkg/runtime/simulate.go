package runtime

import (
	"context"
	v1 "k8s.io/api/core/v1"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/pkg/placement"
	rpolicy "github.com/repute-dev/repute/pkg/policy"
	"github.com/repute-dev/repute/reputation"
)

// simulate answers "what would this policy change?" from the evidence in memory: every image
// re-weighed under the proposed policy (signatures of keys it no longer trusts withdrawn, as
// applying it would), and every pod of Repute's profiles, running or pending, whose tier would
// change. Nothing is applied; no registry is contacted.
func (rt *Runtime) simulate(_ context.Context, proposed *v1alpha1.ReputationPolicy) (*audit.Simulation, error) {
	c, errs := rpolicy.Compile(&proposed.Spec)
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(audit.ReputationPolicyKind, proposed.Name, errs)
	}
	current := rt.engine.Policy()
	sims, notGathered := rt.engine.Simulate(c.Policy, reputation.WithdrawSignatures(reputation.RevokedKeys(current, c.Policy)))
	out := &audit.Simulation{SimulationResult: audit.SimulationResult{CurrentVersion: current.Version(), ProposedVersion: c.Policy.Version(),
		Images: []audit.ImageChange{}, Pods: []audit.PodChange{}, NotSimulated: notGathered}}
	slices.Sort(out.NotSimulated)

	before, after := map[string]*reputation.Verdict{}, map[string]*reputation.Verdict{}
	for _, s := range sims {
		before[s.Image], after[s.Image] = s.Before, s.After
		if s.Before.Tier == s.After.Tier && s.Before.Score == s.After.Score {
			out.Unchanged++
			continue
		}
		out.Images = append(out.Images, audit.ImageChange{Ref: s.Image, Before: audit.OutcomeOf(s.Before), After: audit.OutcomeOf(s.After)})
	}
	slices.SortFunc(out.Images, func(a, b audit.ImageChange) int { return strings.Compare(a.Ref, b.Ref) })

	pods, err := rt.informers.Core().V1().Pods().Lister().List(labels.Everything())
	if err != nil {
		return nil, err
	}
	for _, pod := range pods {
		if rt.Profile(pod.Spec.SchedulerName) == nil || pod.DeletionTimestamp != nil || placement.IsTerminal(pod) {
			continue
		}
		now, then := placement.Resolve(pod, rt.verdictsFrom(before)), placement.Resolve(pod, rt.verdictsFrom(after))
		if now.Tier == then.Tier {
			continue
		}
		// The pod's own phase: a bound pod is Pending until its kubelet starts it.
		phase := string(pod.Status.Phase)
		if phase == "" {
			phase = string(v1.PodPending)
		}
		out.Pods = append(out.Pods, audit.PodChange{Namespace: pod.Namespace, Name: pod.Name, Phase: phase, Node: pod.Spec.NodeName,
			Before: now.Tier, After: then.Tier, Image: then.Image})
	}
	slices.SortFunc(out.Pods, func(a, b audit.PodChange) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	if added := addedKeys(current, c.Policy); len(added) > 0 {
		out.Warnings = append(out.Warnings, "new trusted keys ("+strings.Join(added, ", ")+
			") cannot be simulated: the images they would verify are shown as they are now, and are verified when the policy is applied")
	}
	if len(notGathered) > 0 {
		out.Warnings = append(out.Warnings, "some images' evidence has not been gathered since the scheduler started; they are listed under notSimulated")
	}
	return out, nil
}

// verdictsFrom reads a simulation's verdicts; an image that could not be simulated keeps its
// current verdict, on both sides.
func (rt *Runtime) verdictsFrom(simulated map[string]*reputation.Verdict) func(string) *reputation.Verdict {
	return func(image string) *reputation.Verdict {
		if v, ok := simulated[image]; ok {
			return v
		}
		return rt.verdicts.Get(image)
	}
}

// addedKeys names keys the proposed policy trusts that the current one does not, as they are.
func addedKeys(current, proposed *reputation.Policy) []string {
	var added []string
	for name := range reputation.RevokedKeys(proposed, current) {
		added = append(added, name)
	}
	slices.Sort(added)
	return added
}
