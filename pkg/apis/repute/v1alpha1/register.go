package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	Group   = "repute.dev"
	Version = "v1alpha1"
	Kind    = "ReputationPolicy"
)

// SchemeGroupVersion is repute.dev/v1alpha1.
var SchemeGroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// Resource is the API resource of ReputationPolicy objects.
var Resource = SchemeGroupVersion.WithResource("reputationpolicies")

var (
	// SchemeBuilder registers the types, their defaults and (from the generated file) their
	// conversions to the internal policy.
	SchemeBuilder      = runtime.NewSchemeBuilder(addKnownTypes, RegisterDefaults)
	localSchemeBuilder = &SchemeBuilder
	// AddToScheme adds them to a scheme.
	AddToScheme = localSchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion, &ReputationPolicy{}, &ReputationPolicyList{})
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
