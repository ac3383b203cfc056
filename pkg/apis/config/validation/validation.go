// Package validation checks ReputationArgs after defaulting, naming each bad field by its path.
package validation

import (
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/reputation"
)

// ValidateReputationArgs returns every problem in args, each with its field path.
func ValidateReputationArgs(path *field.Path, args *config.ReputationArgs) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, metav1validation.ValidateLabelName(args.PoolLabelKey, path.Child("poolLabelKey"))...)

	pools := path.Child("pools")
	seen := map[string]string{}
	for _, tp := range []struct {
		tier reputation.Tier
		spec config.PoolSpec
	}{{reputation.TierTrusted, args.Pools.Trusted}, {reputation.TierUnknown, args.Pools.Unknown}, {reputation.TierUntrusted, args.Pools.Untrusted}} {
		p := pools.Child(string(tp.tier))
		for _, msg := range validationLabelValue(tp.spec.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), tp.spec.Name, msg))
		}
		if tp.spec.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), "every tier needs a pool"))
		} else if other, dup := seen[tp.spec.Name]; dup {
			errs = append(errs, field.Duplicate(p.Child("name"), tp.spec.Name+" (also the "+other+" pool: tiers must not share a pool)"))
		}
		seen[tp.spec.Name] = string(tp.tier)
		if !placements.Has(tp.spec.Placement) {
			errs = append(errs, field.NotSupported(p.Child("placement"), tp.spec.Placement, sets.List(placements)))
		}
	}

	if args.VerdictWait.Duration <= 0 {
		errs = append(errs, field.Invalid(path.Child("verdictWait"), args.VerdictWait.Duration.String(), "must be positive"))
	}
	errs = append(errs, validatePolicy(path.Child("policy"), &args.Policy)...)
	return errs
}

var placements = sets.New(config.PlacementPack, config.PlacementSpread)

func validationLabelValue(v string) []string {
	if v == "" {
		return nil
	}
	return k8svalidation.IsValidLabelValue(v)
}

func validatePolicy(path *field.Path, spec *config.PolicySpec) field.ErrorList {
	var errs field.ErrorList
	for _, e := range config.Policy(spec).Validate() {
		errs = append(errs, field.Invalid(path.Child(e.Field), e.Value, e.Message))
	}
	return errs
}
