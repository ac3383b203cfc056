package reputation

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/reputation"
)

// Reasons an untrusted pod is kept off a node, or kept waiting, beyond its pool.
const (
	ErrReasonOtherNamespace = "node runs pods of another namespace (untrusted.isolation: PerNamespace)"
	ErrReasonNodeFull       = "node holds its maximum of untrusted pods (untrusted.maxPodsPerNode)"
)

// untrustedRules are the untrusted pool's restrictions, when any is on.
type untrustedRules struct {
	perNamespace   bool
	maxPodsPerNode int
	requireLimits  bool
}

func newUntrustedRules(spec config.UntrustedPoolSpec) untrustedRules {
	return untrustedRules{perNamespace: spec.Isolation == config.UntrustedIsolationPerNamespace,
		maxPodsPerNode: int(spec.MaxPodsPerNode), requireLimits: spec.RequireLimits}
}

// onNodes says whether Filter has to look at a node's pods for an untrusted pod.
func (r untrustedRules) onNodes() bool { return r.perNamespace || r.maxPodsPerNode > 0 }

// admitsOnNode checks the node's pods against the rules. It runs only for untrusted pods with a
// rule on, so other pods' Filter stays a pool lookup. Unschedulable (not unresolvable): the
// node may free up, and pods leaving a node requeue the pod.
func (r untrustedRules) admitsOnNode(pod *v1.Pod, nodeInfo fwk.NodeInfo) *fwk.Status {
	count := 0
	for _, pi := range nodeInfo.GetPods() {
		other := pi.GetPod()
		if other.UID == pod.UID || isNodeInfrastructure(other) {
			continue
		}
		if r.perNamespace && other.Namespace != pod.Namespace {
			return fwk.NewStatus(fwk.Unschedulable, ErrReasonOtherNamespace)
		}
		count++
	}
	if r.maxPodsPerNode > 0 && count >= r.maxPodsPerNode {
		return fwk.NewStatus(fwk.Unschedulable, ErrReasonNodeFull)
	}
	return nil
}

// isNodeInfrastructure tells DaemonSet and static (mirror) pods: they run on every node of a
// pool whatever its tenants, so they count neither as a neighbour nor towards a bound.
func isNodeInfrastructure(p *v1.Pod) bool {
	if _, mirror := p.Annotations[v1.MirrorPodAnnotationKey]; mirror {
		return true
	}
	c := metav1.GetControllerOf(p)
	return c != nil && c.Kind == "DaemonSet"
}

// missingLimits names the containers (init containers included) that lack a CPU or memory limit.
func missingLimits(pod *v1.Pod) []string {
	var names []string
	check := func(cs []v1.Container) {
		for i := range cs {
			l := cs[i].Resources.Limits
			if _, cpu := l[v1.ResourceCPU]; !cpu {
				names = append(names, cs[i].Name)
			} else if _, mem := l[v1.ResourceMemory]; !mem {
				names = append(names, cs[i].Name)
			}
		}
	}
	check(pod.Spec.InitContainers)
	check(pod.Spec.Containers)
	return names
}

// limitsStatus keeps an untrusted pod without limits out, saying which containers lack them.
func (r untrustedRules) limitsStatus(pod *v1.Pod, tier reputation.Tier) *fwk.Status {
	if !r.requireLimits || tier != reputation.TierUntrusted {
		return nil
	}
	if missing := missingLimits(pod); len(missing) > 0 {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, fmt.Sprintf(
			"untrusted pods must declare CPU and memory limits (untrusted.requireLimits); containers without them: %s", strings.Join(missing, ", ")))
	}
	return nil
}

// isSchedulableAfterPodLeft requeues an untrusted pod, held by a node rule, when a pod leaves
// a node: that node may now take it.
func (pl *Reputation) isSchedulableAfterPodLeft(logger klog.Logger, pod *v1.Pod, _, _ interface{}) (fwk.QueueingHint, error) {
	if !pl.untrusted.onNodes() || pl.stateFor(pod).Tier != reputation.TierUntrusted {
		return fwk.QueueSkip, nil
	}
	logger.V(5).Info("a pod left a node; the untrusted pod may fit there now", "pod", klog.KObj(pod))
	return fwk.Queue, nil
}
