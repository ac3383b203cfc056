package v1

import (
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"

	"github.com/repute-dev/repute/pkg/apis/config"
)

// SchemeGroupVersion is kubescheduler.config.k8s.io/v1, where plugin args are written.
var SchemeGroupVersion = schedconfigv1.SchemeGroupVersion

var (
	// SchemeBuilder registers the versioned args, their defaults and conversions.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes, addDefaultingFuncs, addConversionFuncs)
	// AddToScheme adds them to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func init() {
	// See the internal package: kube-scheduler's lazily built plugin-args scheme reads this builder.
	schedconfigv1.SchemeBuilder.Register(addKnownTypes, addDefaultingFuncs, addConversionFuncs)
}

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion, &ReputationArgs{})
	return nil
}

func addDefaultingFuncs(scheme *runtime.Scheme) error {
	scheme.AddTypeDefaultingFunc(&ReputationArgs{}, func(obj interface{}) { SetDefaults_ReputationArgs(obj.(*ReputationArgs)) })
	return nil
}

func addConversionFuncs(scheme *runtime.Scheme) error {
	if err := scheme.AddConversionFunc((*ReputationArgs)(nil), (*config.ReputationArgs)(nil), func(a, b interface{}, _ conversion.Scope) error {
		Convert_v1_ReputationArgs_To_config_ReputationArgs(a.(*ReputationArgs), b.(*config.ReputationArgs))
		return nil
	}); err != nil {
		return err
	}
	return scheme.AddConversionFunc((*config.ReputationArgs)(nil), (*ReputationArgs)(nil), func(a, b interface{}, _ conversion.Scope) error {
		Convert_config_ReputationArgs_To_v1_ReputationArgs(a.(*config.ReputationArgs), b.(*ReputationArgs))
		return nil
	})
}
