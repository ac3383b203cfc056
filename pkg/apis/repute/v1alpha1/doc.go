// Package v1alpha1 is the repute.dev/v1alpha1 API: ReputationPolicy, the trust policy as a
// cluster-scoped object that operators edit and the scheduler follows without a restart. Its
// CustomResourceDefinition, deploy/crds/repute.dev_reputationpolicies.yaml, is generated from
// these types and their doc comments by controller-gen (hack/update-codegen.sh). The scheduler
// args' policy block is this package's PolicySpec, so the two can never drift apart.
//
// +k8s:deepcopy-gen=package
// +k8s:conversion-gen=github.com/repute-dev/repute/pkg/apis/config
// +k8s:defaulter-gen=TypeMeta
// +groupName=repute.dev
package v1alpha1
