package auditapi

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	aggregatoropenapi "k8s.io/kube-aggregator/pkg/generated/openapi"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// The OpenAPI model names of the API's types: the generic server builds its schema, and the
// type converter server-side apply needs, from these definitions.
func (Decision) OpenAPIModelName() string     { return "dev.repute.audit.v1.Decision" }
func (DecisionList) OpenAPIModelName() string { return "dev.repute.audit.v1.DecisionList" }
func (Image) OpenAPIModelName() string        { return "dev.repute.audit.v1.Image" }
func (ImageList) OpenAPIModelName() string    { return "dev.repute.audit.v1.ImageList" }
func (Policy) OpenAPIModelName() string       { return "dev.repute.audit.v1.Policy" }
func (PolicyList) OpenAPIModelName() string   { return "dev.repute.audit.v1.PolicyList" }
func (Evidence) OpenAPIModelName() string     { return "dev.repute.audit.v1.Evidence" }
func (Verdict) OpenAPIModelName() string      { return "dev.repute.audit.v1.Verdict" }
func (ImageHistory) OpenAPIModelName() string { return "dev.repute.audit.v1.ImageHistory" }
func (HistoryEntry) OpenAPIModelName() string { return "dev.repute.audit.v1.HistoryEntry" }
func (Simulation) OpenAPIModelName() string   { return "dev.repute.audit.v1.Simulation" }

// definitions are the OpenAPI definitions of the API's types, written out (small, flat types),
// and of the meta types they use, as kube-aggregator generates them.
func definitions(ref common.ReferenceCallback) map[string]common.OpenAPIDefinition {
	defs := aggregatoropenapi.GetOpenAPIDefinitions(ref)
	objectMeta, listMeta, time := metav1.ObjectMeta{}.OpenAPIModelName(), metav1.ListMeta{}.OpenAPIModelName(), metav1.Time{}.OpenAPIModelName()
	str := func(description string) spec.Schema {
		s := *spec.StringProperty()
		s.Description = description
		return s
	}
	integer := func(description string) spec.Schema {
		s := *spec.Int64Property()
		s.Description = description
		return s
	}
	refTo := func(name string) spec.Schema { return spec.Schema{SchemaProps: spec.SchemaProps{Ref: ref(name)}} }
	object := func(description string, props map[string]spec.Schema, deps ...string) common.OpenAPIDefinition {
		props["apiVersion"], props["kind"] = str("the API version"), str("the kind")
		return common.OpenAPIDefinition{Schema: spec.Schema{SchemaProps: spec.SchemaProps{
			Description: description, Type: []string{"object"}, Properties: props}}, Dependencies: deps}
	}
	list := func(description, item string) common.OpenAPIDefinition {
		return object(description, map[string]spec.Schema{
			"metadata": refTo(listMeta),
			"items":    {SchemaProps: spec.SchemaProps{Type: []string{"array"}, Items: &spec.SchemaOrArray{Schema: &spec.Schema{SchemaProps: spec.SchemaProps{Ref: ref(item)}}}}},
		}, listMeta, item)
	}
	defs[Decision{}.OpenAPIModelName()] = object("A placement decision: where a pod went, as what tier, and why.", map[string]spec.Schema{
		"metadata": refTo(objectMeta), "pod": str("the pod"), "podUID": str("the pod's UID"),
		"action": str("placed, evicted, reported, blocked or recovered"), "node": str("the node"), "pool": str("the node's pool"),
		"tier": str("the pod's tier"), "score": integer("the deciding image's score"), "image": str("the deciding image"),
		"reason": str("why"), "time": refTo(time),
	}, objectMeta, time)
	defs[DecisionList{}.OpenAPIModelName()] = list("Placement decisions, oldest first.", Decision{}.OpenAPIModelName())
	evidence := Evidence{}.OpenAPIModelName()
	defs[evidence] = common.OpenAPIDefinition{Schema: spec.Schema{SchemaProps: spec.SchemaProps{
		Description: "One signal's contribution to a verdict.", Type: []string{"object"},
		Properties: map[string]spec.Schema{"signal": str("origin, signature, dependencies or behavior"), "observed": str("what was seen"),
			"points": integer("how far it moved the score"), "rule": str("the policy rule"), "tier": str("a tier it imposes"),
			"finding": str("a one-word summary")}}}}
	verdictProps := func() map[string]spec.Schema {
		return map[string]spec.Schema{"digest": str("the digest, once known"),
			"tier": str("the tier"), "score": integer("the score"), "decidedBy": str("what decided the tier"),
			"policyVersion": str("the policy it was weighed under"), "evaluatedAt": refTo(time),
			"evidence": {SchemaProps: spec.SchemaProps{Type: []string{"array"}, Items: &spec.SchemaOrArray{Schema: &spec.Schema{SchemaProps: spec.SchemaProps{Ref: ref(evidence)}}}}}}
	}
	verdict := Verdict{}.OpenAPIModelName()
	defs[verdict] = common.OpenAPIDefinition{Schema: spec.Schema{SchemaProps: spec.SchemaProps{
		Description: "What an image was judged, and the evidence behind it.", Type: []string{"object"}, Properties: verdictProps()}},
		Dependencies: []string{time, evidence}}
	imageProps := verdictProps() // the verdict inline
	imageProps["metadata"], imageProps["ref"] = refTo(objectMeta), str("the reference as pods spell it")
	defs[Image{}.OpenAPIModelName()] = object("An image's current verdict.", imageProps, objectMeta, time, evidence)
	entry := HistoryEntry{}.OpenAPIModelName()
	defs[entry] = common.OpenAPIDefinition{Schema: spec.Schema{SchemaProps: spec.SchemaProps{
		Description: "A verdict and when it was reached.", Type: []string{"object"},
		Properties: map[string]spec.Schema{"time": refTo(time), "verdict": refTo(verdict), "reason": str("the verdict in one line")}}},
		Dependencies: []string{time, verdict}}
	defs[ImageHistory{}.OpenAPIModelName()] = object("A page of an image's verdicts, oldest first.", map[string]spec.Schema{
		"metadata": refTo(objectMeta), "ref": str("the reference the history is kept under"), "continue": str("the next page's token"),
		"items": {SchemaProps: spec.SchemaProps{Type: []string{"array"}, Items: &spec.SchemaOrArray{Schema: &spec.Schema{SchemaProps: spec.SchemaProps{Ref: ref(entry)}}}}},
	}, objectMeta, entry)
	free := func(description string) spec.Schema {
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"object"}, Description: description},
			VendorExtensible: spec.VendorExtensible{Extensions: spec.Extensions{"x-kubernetes-preserve-unknown-fields": true}}}
	}
	defs[Simulation{}.OpenAPIModelName()] = object("A what-if: what a proposed ReputationPolicy would change. Created and answered, never stored.", map[string]spec.Schema{
		"metadata": refTo(objectMeta),
		"spec": {SchemaProps: spec.SchemaProps{Type: []string{"object"}, Required: []string{"policy"},
			Properties: map[string]spec.Schema{"policy": free("the proposed ReputationPolicy (repute.dev/v1alpha1)")}}},
		"status": free("what would change: images and pods re-tiered, what could not be simulated"),
	}, objectMeta)
	defs[ImageList{}.OpenAPIModelName()] = list("Images and their verdicts, by reference.", Image{}.OpenAPIModelName())
	defs[Policy{}.OpenAPIModelName()] = object("A policy version that came into force.", map[string]spec.Schema{
		"metadata": refTo(objectMeta), "inForceSince": refTo(time), "source": str("where it came from"), "policy": free("the defaulted ReputationPolicy spec"),
	}, objectMeta, time)
	defs[PolicyList{}.OpenAPIModelName()] = list("Every policy version that was in force, oldest first.", Policy{}.OpenAPIModelName())
	return defs
}
