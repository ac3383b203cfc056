// Package placement says where a pod belongs: the tier of its least trusted image, and the pool
// each scheduler profile keeps for that tier. The plugin reads it on every cycle, the mover to
// find pods in the wrong pool, and the audit API's simulations to say which pods a policy would
// move. It reads verdicts only; it gathers nothing.
package placement

import (
	"fmt"
	"strings"
	"unicode/utf8"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/reputation"
)

// Placement is a pod's tier and why: the least trusted of its images decides.
type Placement struct {
	Tier reputation.Tier
	// Score is the lowest image score; Verdict is the verdict of Image, the image that decided
	// the tier.
	Score   int
	Image   string
	Verdict *reputation.Verdict
	// Missing counts images that have no verdict yet.
	Missing int
}

// Reason explains the placement in one line.
func (p Placement) Reason() string {
	if p.Missing > 0 {
		return fmt.Sprintf("%d image(s) without a verdict yet: unknown until assessed", p.Missing)
	}
	if p.Verdict == nil {
		return "no image"
	}
	return fmt.Sprintf("%s: %s", p.Image, p.Verdict.Reason())
}

// Resolve places a pod by the verdicts verdictOf gives (the cache's, or a simulation's). Images
// without a verdict make the pod unknown: only evidence that was assessed can make it trusted.
func Resolve(pod *v1.Pod, verdictOf func(image string) *reputation.Verdict) Placement {
	p := Placement{Tier: reputation.TierTrusted, Score: 100}
	ForEachAssessedImage(pod, func(image string) {
		v := verdictOf(image)
		if v == nil {
			p.Missing++
			p.Tier = reputation.Worse(p.Tier, reputation.TierUnknown)
			return
		}
		if p.Verdict == nil || reputation.LessTrusted(v.Tier, p.Verdict.Tier) || (v.Tier == p.Verdict.Tier && v.Score < p.Verdict.Score) {
			p.Image, p.Verdict = image, v
		}
		p.Tier = reputation.Worse(p.Tier, v.Tier)
		p.Score = min(p.Score, v.Score)
	})
	return p
}

// ForEachImage visits every image a pod runs or mounts: init, regular and ephemeral
// containers, and image volumes. Any of them can carry code onto the node.
func ForEachImage(pod *v1.Pod, visit func(image string)) {
	for i := range pod.Spec.InitContainers {
		visit(pod.Spec.InitContainers[i].Image)
	}
	for i := range pod.Spec.Containers {
		visit(pod.Spec.Containers[i].Image)
	}
	for i := range pod.Spec.EphemeralContainers {
		visit(pod.Spec.EphemeralContainers[i].Image)
	}
	for i := range pod.Spec.Volumes {
		if img := pod.Spec.Volumes[i].Image; img != nil {
			visit(img.Reference)
		}
	}
}

// ForEachAssessedImage visits every image whose verdict counts for the pod: those its spec
// names (ForEachImage) and, for each container whose spec names a tag, the digest the kubelet
// reports it pulled, as "<name>@<digest>": a tag may have moved between the verification and
// the pull, and what runs is what counts. A pod not yet running has only its spec's.
func ForEachAssessedImage(pod *v1.Pod, visit func(image string)) {
	ForEachImage(pod, visit)
	forEachPulledDigest(pod, pod.Status.InitContainerStatuses, visit)
	forEachPulledDigest(pod, pod.Status.ContainerStatuses, visit)
	forEachPulledDigest(pod, pod.Status.EphemeralContainerStatuses, visit)
}

func forEachPulledDigest(pod *v1.Pod, statuses []v1.ContainerStatus, visit func(image string)) {
	for i := range statuses {
		st := &statuses[i]
		digest := reputation.DigestOfImageID(st.ImageID)
		if digest == "" {
			continue
		}
		spec := specImage(pod, st.Name)
		if spec == "" || strings.Contains(spec, "@") {
			continue // pinned: the kubelet pulls that digest
		}
		name := spec
		if colon := strings.LastIndex(spec, ":"); colon > strings.LastIndex(spec, "/") {
			name = spec[:colon]
		}
		visit(name + "@" + digest)
	}
}

// specImage is the image a container of the pod is spelled with in its spec.
func specImage(pod *v1.Pod, container string) string {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == container {
			return pod.Spec.InitContainers[i].Image
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == container {
			return pod.Spec.Containers[i].Image
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		if pod.Spec.EphemeralContainers[i].Name == container {
			return pod.Spec.EphemeralContainers[i].Image
		}
	}
	return ""
}

// Uses reports whether the pod's verdict depends on the image, as spelled.
func Uses(pod *v1.Pod, image string) bool {
	uses := false
	ForEachAssessedImage(pod, func(i string) { uses = uses || i == image })
	return uses
}

// SameImages reports whether two versions of a pod run and mount the same images, the digests
// the kubelet pulled included.
func SameImages(a, b *v1.Pod) bool {
	var images []string
	ForEachAssessedImage(a, func(image string) { images = append(images, image) })
	i, same := 0, true
	ForEachAssessedImage(b, func(image string) {
		same = same && i < len(images) && images[i] == image
		i++
	})
	return same && i == len(images)
}

// IsTerminal says a pod has finished and holds no place in any pool.
func IsTerminal(pod *v1.Pod) bool {
	return pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
}

// Profile is one scheduler profile's pools: which node label names a node's pool, and the
// pool each tier's pods go to. Profiles of one scheduler share verdicts, never pools.
type Profile struct {
	// Name is the profile's schedulerName.
	Name    string
	PoolKey string
	Pools   map[reputation.Tier]config.PoolSpec
	// Events records Events about this profile's pods.
	Events events.EventRecorder
	// Activate retries pending pods of this profile at once.
	Activate func(pods map[string]*v1.Pod)
}

// NewProfile builds a profile's pools from (defaulted) args.
func NewProfile(name string, args *config.ReputationArgs, recorder events.EventRecorder, activate func(map[string]*v1.Pod)) *Profile {
	p := &Profile{Name: name, PoolKey: args.PoolLabelKey, Pools: map[reputation.Tier]config.PoolSpec{}, Events: recorder, Activate: activate}
	for _, t := range reputation.Tiers {
		p.Pools[t] = *args.Pools.PoolFor(t)
	}
	return p
}

// KubeletCannotSet reports whether NodeRestriction keeps kubelets from setting the node label
// key: keys under node-restriction.kubernetes.io/ or one of its subdomains.
func KubeletCannotSet(labelKey string) bool {
	prefix, _, found := strings.Cut(labelKey, "/")
	return found && (prefix == nodeRestrictionDomain || strings.HasSuffix(prefix, "."+nodeRestrictionDomain))
}

// nodeRestrictionDomain is the label domain the NodeRestriction admission plugin reserves.
const nodeRestrictionDomain = "node-restriction.kubernetes.io"

// TierOfNode is the tier whose pool the node is in; pooled is false for unpooled nodes and
// pools no tier uses.
func (p *Profile) TierOfNode(node *v1.Node) (reputation.Tier, bool) {
	name, ok := node.Labels[p.PoolKey]
	if !ok {
		return "", false
	}
	for tier, spec := range p.Pools {
		if spec.Name == name {
			return tier, true
		}
	}
	return "", false
}

// PoolName is the node's pool label value, or "(none)".
func (p *Profile) PoolName(node *v1.Node) string {
	if name, ok := node.Labels[p.PoolKey]; ok {
		return name
	}
	return "(none)"
}

// Belongs reports whether a running pod of the tier is where it belongs: on a node of its
// tier's pool, or outside every tier's pool where the tier allows unpooled nodes.
func (p *Profile) Belongs(tier reputation.Tier, node *v1.Node) bool {
	if nodeTier, pooled := p.TierOfNode(node); pooled {
		return nodeTier == tier
	}
	return p.Pools[tier].AllowUnpooledNodes
}

// TierLabel is set on every pod Repute places, as it is bound, so that NetworkPolicies,
// admission policies and RuntimeClass choices can select pods by tier. A value the pod brought
// with it is overwritten: labels never raise trust.
const TierLabel = "repute.dev/tier"

// ExplanationAnnotation is set on every pod Repute places, in the same write as its binding: why
// it went to its pool, for kubectl describe. It is never read back: annotations never raise
// trust, and the store's decision record is the audited copy.
const ExplanationAnnotation = "repute.dev/placement"

// maxExplanationBytes bounds the annotation: a pod with many images gets the start of the
// story on the pod, and all of it in the decision record.
const maxExplanationBytes = 1024

// Explanation is the ExplanationAnnotation's value for a pod placed in pool.
func (p Placement) Explanation(pool string) string {
	note := fmt.Sprintf("pool %s: tier %s, score %d; %s", pool, p.Tier, p.Score, p.Reason())
	if len(note) <= maxExplanationBytes {
		return note
	}
	cut := maxExplanationBytes - len("…")
	for cut > 0 && !utf8.RuneStart(note[cut]) {
		cut--
	}
	return note[:cut] + "…"
}
