package runtime

import (
	"context"
	"fmt"
	"slices"

	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/metrics"
	rpolicy "github.com/repute-dev/repute/pkg/policy"
	"github.com/repute-dev/repute/reputation"
)

// readInitialPolicy puts the ReputationPolicy the args name in force, when it exists and passes
// its checks: read before the runtime is ready, so the first pod is placed under it. Otherwise
// the args' policy stays in force and the follower reports why in the object's status.
func (rt *Runtime) readInitialPolicy(ctx context.Context) {
	metrics.PolicyReloads.WithLabelValues("applied").Inc()
	if rt.follower == nil {
		return
	}
	logger := klog.FromContext(ctx)
	followed, ok, err := rt.follower.Initial(ctx)
	if !ok {
		rt.follower.Fallback(rt.Policy().Version())
	}
	switch {
	case err != nil:
		logger.Error(err, "ReputationPolicy unreadable at start: the args' policy is in force until it can be read", "reputationPolicy", rt.args.PolicyName)
	case !ok:
		logger.Info("ReputationPolicy missing or invalid at start: the args' policy is in force until it is fixed", "reputationPolicy", rt.args.PolicyName)
	default:
		rt.policyMu.Lock()
		defer rt.policyMu.Unlock()
		if rt.signatures != nil {
			if err := rt.signatures.Configure(followed.Spec.Signature); err != nil {
				logger.Error(err, "ReputationPolicy's keys refused at start: the args' policy is in force", "reputationPolicy", rt.args.PolicyName)
				return
			}
		}
		rt.signaturePolicy = followed.Spec.Signature
		rt.engine.SetPolicy(followed.Policy)
		rt.policyOrigin = policyOrigin{source: "ReputationPolicy/" + rt.args.PolicyName, spec: followed.Versioned()}
	}
}

// applyPolicy puts a new policy in force without a restart: every image is re-scored from the
// evidence in memory at once (a revoked key's signatures withdrawn first), the verdicts that
// change are published, and the pending pods they concern are retried through the verdict
// cache's listeners. When the trusted keys changed, images are verified again in the
// background.
func (rt *Runtime) applyPolicy(ctx context.Context, c *rpolicy.Compiled, generation int64) (rpolicy.Outcome, error) {
	rt.policyMu.Lock()
	defer rt.policyMu.Unlock()
	old := rt.engine.Policy()
	if rt.signatures != nil {
		if err := rt.signatures.Configure(c.Spec.Signature); err != nil {
			return rpolicy.Outcome{}, err
		}
	}
	reverify := !slices.EqualFunc(old.Signature.Keys, c.Policy.Signature.Keys, func(a, b reputation.KeyIdentity) bool {
		return a.Name == b.Name && a.Fingerprint == b.Fingerprint && slices.Equal(a.Repositories, b.Repositories)
	}) || rt.signaturePolicy.CheckIdentity != c.Spec.Signature.CheckIdentity
	rt.signaturePolicy = c.Spec.Signature

	before := rt.verdicts.Snapshot()
	rt.engine.SetPolicy(c.Policy)
	rt.engine.Reweigh(reputation.WithdrawSignatures(reputation.RevokedKeys(old, c.Policy)))
	after := rt.verdicts.Snapshot()
	tierChanges := 0
	for image, v := range after {
		if b := before[image]; b != nil && b.Tier != v.Tier {
			tierChanges++
		}
	}
	if reverify {
		rt.engine.Reevaluate(func(string, *reputation.Verdict) bool { return true })
	}
	rt.policyOrigin = policyOrigin{source: fmt.Sprintf("ReputationPolicy/%s generation %d", rt.args.PolicyName, generation), spec: c.Versioned()}
	if rt.store != nil && rt.Leading() {
		recordPolicy(ctx, rt.store, c.Policy, rt.policyOrigin)
	}
	metrics.PolicyReloads.WithLabelValues("applied").Inc()
	metrics.PolicyRefused.Set(0)
	return rpolicy.Outcome{Images: len(after), TierChanges: tierChanges, Reverify: reverify}, nil
}
