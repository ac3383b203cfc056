// Package podsecurity shapes test pods for the Pod Security Standards, for unit tests and the
// harness alike (it imports nothing heavier than the core API).
package podsecurity

import v1 "k8s.io/api/core/v1"

// Restricted makes a pod spec meet the Pod Security Standard "restricted", which untrusted pods
// must meet to be placed by default: run as non-root, the runtime's seccomp profile, no
// privilege escalation, no capabilities. The tests' and the demo's pods use it so that their
// tier, not their security context, decides where they go.
func Restricted(spec *v1.PodSpec) {
	if spec.SecurityContext == nil {
		spec.SecurityContext = &v1.PodSecurityContext{}
	}
	nonRoot := true
	spec.SecurityContext.RunAsNonRoot = &nonRoot
	spec.SecurityContext.SeccompProfile = &v1.SeccompProfile{Type: v1.SeccompProfileTypeRuntimeDefault}
	restrict := func(sc **v1.SecurityContext) {
		if *sc == nil {
			*sc = &v1.SecurityContext{}
		}
		escalate := false
		(*sc).AllowPrivilegeEscalation = &escalate
		(*sc).Capabilities = &v1.Capabilities{Drop: []v1.Capability{"ALL"}}
	}
	for i := range spec.InitContainers {
		restrict(&spec.InitContainers[i].SecurityContext)
	}
	for i := range spec.Containers {
		restrict(&spec.Containers[i].SecurityContext)
	}
	for i := range spec.EphemeralContainers {
		restrict(&spec.EphemeralContainers[i].SecurityContext)
	}
}
