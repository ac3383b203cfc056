package reputation

import (
	"context"
	"fmt"
	"slices"

	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/metrics"
	rpolicy "github.com/repute-dev/repute/pkg/policy"
	"github.com/repute-dev/repute/reputation"
)

// startPolicy is the policy the scheduler starts with and where it came from.
type startPolicy struct {
	compiled *rpolicy.Compiled
	origin   policyOrigin
}

// initialPolicy is the args' policy, or, when args name a ReputationPolicy that exists and
// passes its checks, that object's: read once here so the first pod is placed under it. The
// returned follower (nil without policyName) keeps following the object.
func initialPolicy(ctx context.Context, args *config.ReputationArgs, h fwk.Handle) (startPolicy, *rpolicy.Follower, error) {
	logger := klog.FromContext(ctx)
	p, err := reputation.NewPolicy(config.Policy(&args.Policy))
	if err != nil {
		return startPolicy{}, nil, err
	}
	compiled := &rpolicy.Compiled{Spec: args.Policy, Policy: p}
	start := startPolicy{compiled: compiled, origin: policyOrigin{source: "plugin args", spec: compiled.Versioned()}}
	if args.PolicyName == "" || h.KubeConfig() == nil {
		return start, nil, nil
	}
	client, err := dynamic.NewForConfig(h.KubeConfig())
	if err != nil {
		return start, nil, err
	}
	follower := &rpolicy.Follower{Name: args.PolicyName, Client: client}
	followed, ok, err := follower.Initial(ctx)
	if !ok {
		follower.Fallback(p.Version())
	}
	switch {
	case err != nil:
		logger.Error(err, "ReputationPolicy unreadable at start: the args' policy is in force until it can be read", "reputationPolicy", args.PolicyName)
	case !ok:
		logger.Info("ReputationPolicy missing or invalid at start: the args' policy is in force until it is fixed", "reputationPolicy", args.PolicyName)
	default:
		start = startPolicy{compiled: followed, origin: policyOrigin{source: "ReputationPolicy/" + args.PolicyName, spec: followed.Versioned()}}
	}
	return start, follower, nil
}

// applyPolicy puts a new policy in force without a restart: every image is re-scored from the
// evidence in memory at once (a revoked key's signatures withdrawn first), the verdicts that
// change are published, and the pending pods they concern are retried through the verdict
// cache's listeners. When the trusted keys changed, images are verified again in the
// background.
func (pl *Reputation) applyPolicy(ctx context.Context, c *rpolicy.Compiled, generation int64) (rpolicy.Outcome, error) {
	pl.policyMu.Lock()
	defer pl.policyMu.Unlock()
	old := pl.engine.Policy()
	if pl.signatures != nil {
		if err := pl.signatures.Configure(c.Spec.Signature); err != nil {
			return rpolicy.Outcome{}, err
		}
	}
	reverify := !slices.EqualFunc(old.Signature.Keys, c.Policy.Signature.Keys, func(a, b reputation.KeyIdentity) bool {
		return a.Name == b.Name && a.Fingerprint == b.Fingerprint && slices.Equal(a.Repositories, b.Repositories)
	}) || pl.signaturePolicy.CheckIdentity != c.Spec.Signature.CheckIdentity
	pl.signaturePolicy = c.Spec.Signature

	before := pl.engine.Cache().Snapshot()
	pl.engine.SetPolicy(c.Policy)
	pl.engine.Reweigh(reputation.WithdrawSignatures(reputation.RevokedKeys(old, c.Policy)))
	after := pl.engine.Cache().Snapshot()
	tierChanges := 0
	for image, v := range after {
		if b := before[image]; b != nil && b.Tier != v.Tier {
			tierChanges++
		}
	}
	if reverify {
		pl.engine.Reevaluate(func(string, *reputation.Verdict) bool { return true })
	}
	pl.policyOrigin = policyOrigin{source: fmt.Sprintf("ReputationPolicy/%s generation %d", pl.policyName, generation), spec: c.Versioned()}
	if pl.store != nil && !pl.standingBy() {
		recordPolicy(ctx, pl.store, c.Policy, pl.policyOrigin)
	}
	metrics.PolicyReloads.WithLabelValues("applied").Inc()
	return rpolicy.Outcome{Images: len(after), TierChanges: tierChanges, Reverify: reverify}, nil
}
