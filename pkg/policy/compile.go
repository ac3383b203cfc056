// Package policy turns a ReputationPolicy into a policy the engine can put in force, follows
// the object the scheduler is told to follow, and reports back in its status.
package policy

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/repute-dev/repute/pkg/apis/config"
	configv1 "github.com/repute-dev/repute/pkg/apis/config/v1"
	"github.com/repute-dev/repute/pkg/apis/config/validation"
	"github.com/repute-dev/repute/reputation"
)

// Compiled is a checked policy, ready to put in force.
type Compiled struct {
	// Spec is the defaulted policy, as the scheduler args' policy block would hold it.
	Spec config.PolicySpec
	// Policy is the domain policy, stamped with its version.
	Policy *reputation.Policy
}

// Compile defaults a policy spec exactly as the scheduler args are defaulted, then runs every
// check the scheduler runs, keys included. Errors name their field under spec.
func Compile(spec *configv1.PolicySpec) (*Compiled, field.ErrorList) {
	specPath := field.NewPath("spec")
	// Defaulting fills nested pointers: work on a copy.
	var copied configv1.PolicySpec
	if spec != nil {
		b, err := json.Marshal(spec)
		if err == nil {
			err = json.Unmarshal(b, &copied)
		}
		if err != nil {
			return nil, field.ErrorList{field.InternalError(specPath, err)}
		}
	}
	args := &configv1.ReputationArgs{Policy: &copied}
	configv1.SetDefaults_ReputationArgs(args)
	var internal config.ReputationArgs
	configv1.Convert_v1_ReputationArgs_To_config_ReputationArgs(args, &internal)
	if errs := validation.ValidatePolicy(specPath, &internal.Policy); len(errs) > 0 {
		return nil, errs
	}
	p, err := reputation.NewPolicy(config.Policy(&internal.Policy))
	if err != nil {
		return nil, field.ErrorList{field.Invalid(specPath, "", err.Error())}
	}
	return &Compiled{Spec: internal.Policy, Policy: p}, nil
}

// Versioned is the policy as a ReputationPolicy's spec spells it, every default filled in: the
// form the store records, whatever the policy came from, so versions compare and diff alike.
func (c *Compiled) Versioned() *configv1.PolicySpec {
	var v1 configv1.ReputationArgs
	configv1.Convert_config_ReputationArgs_To_v1_ReputationArgs(&config.ReputationArgs{Policy: c.Spec}, &v1)
	return v1.Policy
}

// Describe is a one-line account of what a policy change did, for status and logs.
func Describe(reweighed, tierChanges int, reverify bool) string {
	msg := fmt.Sprintf("in force; %d images re-scored from memory, %d changed tier", reweighed, tierChanges)
	if reverify {
		msg += "; trusted keys changed: images are being verified again in the background"
	}
	return msg
}
