package v1

import (
	"k8s.io/apimachinery/pkg/runtime"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
)

// SchemeGroupVersion is kubescheduler.config.k8s.io/v1, where plugin args are written.
var SchemeGroupVersion = schedconfigv1.SchemeGroupVersion

var (
	// SchemeBuilder registers the versioned args and their defaults; the generated conversions
	// register themselves through localSchemeBuilder.
	SchemeBuilder      = runtime.NewSchemeBuilder(addKnownTypes, RegisterDefaults)
	localSchemeBuilder = &SchemeBuilder
	// AddToScheme adds them to a scheme.
	AddToScheme = localSchemeBuilder.AddToScheme
)

func init() {
	// kube-scheduler converts plugin args through a scheme it builds lazily from its own
	// builder; registering there too lets our args take that path.
	schedconfigv1.SchemeBuilder.Register(addKnownTypes, RegisterDefaults, RegisterConversions)
}

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion, &ReputationArgs{})
	return nil
}
