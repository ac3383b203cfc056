package v1alpha1

import (
	"k8s.io/apimachinery/pkg/conversion"

	"github.com/repute-dev/repute/pkg/apis/config"
)

// The policy's conversions are generated; these names for them are written out so that the
// args' generated conversions, in another package, find them (generators do not read each
// other's output).

// Convert_v1alpha1_PolicySpec_To_config_PolicySpec converts a policy to its internal form.
func Convert_v1alpha1_PolicySpec_To_config_PolicySpec(in *PolicySpec, out *config.PolicySpec, s conversion.Scope) error {
	return autoConvert_v1alpha1_PolicySpec_To_config_PolicySpec(in, out, s)
}

// Convert_config_PolicySpec_To_v1alpha1_PolicySpec converts an internal policy to this version.
func Convert_config_PolicySpec_To_v1alpha1_PolicySpec(in *config.PolicySpec, out *PolicySpec, s conversion.Scope) error {
	return autoConvert_config_PolicySpec_To_v1alpha1_PolicySpec(in, out, s)
}
