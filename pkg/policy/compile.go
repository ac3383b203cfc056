// Package policy turns a ReputationPolicy into a policy the engine can put in force, follows
// the object the scheduler is told to follow, and reports back in its status.
package policy

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/apis/config/validation"
	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/reputation"
)

// Compiled is a checked policy, ready to put in force.
type Compiled struct {
	// Spec is the defaulted policy, as the scheduler args' policy block would hold it.
	Spec config.PolicySpec
	// Policy is the domain policy, stamped with its version.
	Policy *reputation.Policy
}

// Compile defaults a policy spec exactly as the scheduler args' policy block is defaulted (it
// is the same type), then runs every check the scheduler runs, keys included. Errors name their
// field under spec. This is the one way from a versioned policy to the domain's: the internal
// spec, then config.Policy.
func Compile(spec *v1alpha1.PolicySpec) (*Compiled, field.ErrorList) {
	specPath := field.NewPath("spec")
	rp := &v1alpha1.ReputationPolicy{}
	if spec != nil {
		rp.Spec = *spec.DeepCopy() // defaulting fills fields in: work on a copy
	}
	v1alpha1.SetObjectDefaults_ReputationPolicy(rp)
	var internal config.PolicySpec
	if err := v1alpha1.Convert_v1alpha1_PolicySpec_To_config_PolicySpec(&rp.Spec, &internal, nil); err != nil {
		return nil, field.ErrorList{field.InternalError(specPath, err)}
	}
	if errs := validation.ValidatePolicy(specPath, &internal); len(errs) > 0 {
		return nil, errs
	}
	p, err := reputation.NewPolicy(config.Policy(&internal))
	if err != nil {
		return nil, field.ErrorList{field.Invalid(specPath, "", err.Error())}
	}
	return &Compiled{Spec: internal, Policy: p}, nil
}

// Versioned is the policy as a ReputationPolicy's spec spells it, every default filled in: the
// form the store records, whatever the policy came from, so versions compare and diff alike.
func (c *Compiled) Versioned() *v1alpha1.PolicySpec {
	var out v1alpha1.PolicySpec
	if err := v1alpha1.Convert_config_PolicySpec_To_v1alpha1_PolicySpec(&c.Spec, &out, nil); err != nil {
		panic(err) // generated field-by-field copies of plain data: no error path
	}
	return &out
}

// Describe is a one-line account of what a policy change did, for status and logs.
func Describe(reweighed, tierChanges int, reverify bool) string {
	msg := fmt.Sprintf("in force; %d images re-scored from memory, %d changed tier", reweighed, tierChanges)
	if reverify {
		msg += "; trusted keys changed: images are being verified again in the background"
	}
	return msg
}
