package scheme

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/apis/config/validation"
)

func decode(t testing.TB, args string) (*config.ReputationArgs, error) {
	t.Helper()
	doc := `apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: repute-scheduler
  pluginConfig:
  - name: Reputation
    args:
` + args
	obj, _, err := Codecs.UniversalDecoder().Decode([]byte(doc), nil, nil)
	if err != nil {
		return nil, err
	}
	cfg := obj.(*schedconfig.KubeSchedulerConfiguration)
	for _, pc := range cfg.Profiles[0].PluginConfig {
		if pc.Name == "Reputation" {
			a, ok := pc.Args.(*config.ReputationArgs)
			if !ok {
				t.Fatalf("args decoded as %T, want *config.ReputationArgs", pc.Args)
			}
			return a, nil
		}
	}
	t.Fatal("no Reputation pluginConfig after decoding")
	return nil, nil
}

func TestDecodeDefaults(t *testing.T) {
	got, err := decode(t, "      {}\n")
	if err != nil {
		t.Fatal(err)
	}
	want := &config.ReputationArgs{
		PoolLabelKey: "node-restriction.kubernetes.io/repute-pool",
		Pools: config.TierPools{
			Trusted:   config.PoolSpec{Name: "trusted", Placement: config.PlacementPack, PodSecurity: "privileged"},
			Unknown:   config.PoolSpec{Name: "unknown", Placement: config.PlacementSpread, PodSecurity: "baseline"},
			Untrusted: config.PoolSpec{Name: "untrusted", Placement: config.PlacementSpread, PodSecurity: "restricted"},
		},
		Policy: config.PolicySpec{
			BaseScore:  50,
			Thresholds: config.Thresholds{Trusted: 70, Untrusted: 30},
			Origin:     config.OriginPolicy{MutableTagPenalty: 10},
			Signature:  config.SignaturePolicy{VerifiedWeight: 30, UnverifiedWeight: -10, RequireForTrusted: true},
			Dependencies: config.DependencyPolicy{CriticalWeight: -20, HighWeight: -5,
				StaleAfter: metav1.Duration{Duration: 7 * 24 * time.Hour}},
			Behavior: config.BehaviorPolicy{
				HalfLife: metav1.Duration{Duration: 24 * time.Hour},
				PriorityWeights: map[string]int32{"Emergency": -100, "Alert": -80, "Critical": -60, "Error": -30,
					"Warning": -10, "Notice": -2, "Informational": 0, "Debug": 0},
				UntrustedPriority: "Critical", CrashLoopWeight: -15, OOMKillWeight: -10, RestartWeight: -2, MaxPodStatusPenaltyPerNamespace: 20,
			},
		},
		Falco:     config.FalcoIngest{MaxBodyBytes: 1 << 20},
		Store:     config.StoreSpec{MaxAge: metav1.Duration{Duration: 90 * 24 * time.Hour}, MaxHistoryPerImage: 1000, MaxDecisions: 1000000},
		Untrusted: config.UntrustedPoolSpec{Isolation: config.UntrustedIsolationNone},
		Replacement: config.ReplacementSpec{Mode: config.ReplacementReport, Upward: config.ReplacementNone, EvictionsPerMinute: 30,
			MaxConcurrentEvictions: 5, Margin: 5, SettleFor: metav1.Duration{Duration: 2 * time.Minute}, ProtectedPriority: 2000000000},
		Evaluation: config.EvaluationSpec{Workers: 4, ReverifyAfter: metav1.Duration{Duration: time.Hour},
			RetryAfter: metav1.Duration{Duration: 30 * time.Second}, MaxRetryAfter: metav1.Duration{Duration: 10 * time.Minute},
			RegistryTimeout: metav1.Duration{Duration: 5 * time.Second}, RegistryBackoff: metav1.Duration{Duration: 5 * time.Second},
			MaxRegistryBackoff: metav1.Duration{Duration: 5 * time.Minute}, MaxStaleness: metav1.Duration{Duration: 24 * time.Hour}, TagTTL: metav1.Duration{Duration: 5 * time.Minute}},
	}
	want.VerdictWait.Duration = 5 * time.Second
	got.TypeMeta = want.TypeMeta
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaulted args (-want,+got):\n%s", diff)
	}
	if errs := validation.ValidateReputationArgs(field.NewPath("args"), got); len(errs) > 0 {
		t.Errorf("defaults do not validate: %v", errs)
	}
}

func TestDecodeExplicit(t *testing.T) {
	got, err := decode(t, `      poolLabelKey: example.com/tier-pool
      pools:
        unknown: {name: quarantine, allowUnpooledNodes: true}
      policy:
        thresholds: {trusted: 80}
        origin:
          rules:
          - {pattern: "registry.internal/*", tier: trusted}
          - {pattern: "docker.io/*", weight: -15}
        behavior: {priorityWeights: {Critical: -90}, untrustedPriority: ""}
        signature: {checkIdentity: true}
      falco: {bindAddress: ":9443", tokenFile: /etc/repute/falco/token}
      evaluation: {workers: 8, reverifyAfter: 0s, registryTimeouts: {"registry.slow.example:5000": 15s}}
`)
	if err != nil {
		t.Fatal(err)
	}
	if got.PoolLabelKey != "example.com/tier-pool" || got.Pools.Unknown.Name != "quarantine" || !got.Pools.Unknown.AllowUnpooledNodes ||
		got.Pools.Unknown.Placement != config.PlacementSpread || got.Pools.Trusted.Name != "trusted" {
		t.Errorf("pools = %+v key %q", got.Pools, got.PoolLabelKey)
	}
	if got.Policy.Thresholds != (config.Thresholds{Trusted: 80, Untrusted: 30}) {
		t.Errorf("thresholds = %+v, want trusted 80 and the default untrusted 30", got.Policy.Thresholds)
	}
	wantRules := []config.OriginRule{{Pattern: "registry.internal/*", Tier: "trusted"}, {Pattern: "docker.io/*", Weight: -15}}
	if w := got.Policy.Behavior.PriorityWeights; w["Critical"] != -90 || w["Warning"] != -10 {
		t.Errorf("priorityWeights = %v, want Critical overridden to -90 and the other priorities defaulted", w)
	}
	if got.Policy.Behavior.UntrustedPriority != "" || got.Falco.BindAddress != ":9443" || got.Falco.TokenFile != "/etc/repute/falco/token" {
		t.Errorf("behavior/falco = %+v %+v, want untrustedPriority switched off and the endpoint configured", got.Policy.Behavior, got.Falco)
	}
	if !got.Policy.Signature.CheckIdentity || !got.Policy.Signature.RequireForTrusted {
		t.Errorf("signature = %+v, want the identity check on and requireForTrusted still defaulted", got.Policy.Signature)
	}
	if ev := got.Evaluation; ev.Workers != 8 || ev.ReverifyAfter.Duration != 0 || ev.RetryAfter.Duration != 30*time.Second ||
		ev.RegistryTimeouts["registry.slow.example:5000"].Duration != 15*time.Second {
		t.Errorf("evaluation = %+v, want 8 workers, no re-verification, a per-registry timeout and the default retries", ev)
	}
	if diff := cmp.Diff(wantRules, got.Policy.Origin.Rules); diff != "" {
		t.Errorf("rules (-want,+got):\n%s", diff)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name, args string
		// wantDecodeErr is a strict-decoding error; wantField a validation error's field path.
		wantDecodeErr, wantField string
	}{
		{name: "misspelled field", args: "      poolLabelKy: x\n", wantDecodeErr: `unknown field "poolLabelKy"`},
		{name: "misspelled nested field", args: "      policy: {origin: {rulez: []}}\n", wantDecodeErr: `unknown field "policy.origin.rulez"`},
		{name: "wrong type", args: "      policy: {baseScore: high}\n", wantDecodeErr: "baseScore"},
		{name: "bad tier", args: "      policy: {origin: {rules: [{pattern: 'a/*', tier: sometimes}]}}\n", wantField: "args.policy.origin.rules[0].tier"},
		{name: "bad pattern", args: "      policy: {origin: {rules: [{pattern: 'noslash', weight: 1}]}}\n", wantField: "args.policy.origin.rules[0].pattern"},
		{name: "crossed thresholds", args: "      policy: {thresholds: {trusted: 20, untrusted: 40}}\n", wantField: "args.policy.thresholds.untrusted"},
		{name: "shared pool", args: "      pools: {unknown: {name: untrusted}}\n", wantField: "args.pools.untrusted.name"},
		{name: "bad placement", args: "      pools: {trusted: {placement: Random}}\n", wantField: "args.pools.trusted.placement"},
		{name: "bad label key", args: "      poolLabelKey: 'not a key'\n", wantField: "args.poolLabelKey"},
		{name: "non-positive wait", args: "      verdictWait: 0s\n", wantField: "args.verdictWait"},
		{name: "an unverified signature cannot raise the score", args: "      policy: {signature: {unverifiedWeight: 5}}\n", wantField: "args.policy.signature.unverifiedWeight"},
		{name: "unparsable key", args: "      policy: {signature: {keys: [{name: ops, publicKey: 'not a key'}]}}\n", wantField: "args.policy.signature.keys[0].publicKey"},
		{name: "a vulnerability cannot raise the score", args: "      policy: {dependencies: {highWeight: 1}}\n", wantField: "args.policy.dependencies.highWeight"},
		{name: "misspelled Falco priority", args: "      policy: {behavior: {priorityWeights: {Critcal: -50}}}\n", wantField: "args.policy.behavior.priorityWeights"},
		{name: "behavior cannot raise the score", args: "      policy: {behavior: {crashLoopWeight: 5}}\n", wantField: "args.policy.behavior.crashLoopWeight"},
		{name: "unknown untrusted priority", args: "      policy: {behavior: {untrustedPriority: Severe}}\n", wantField: "args.policy.behavior.untrustedPriority"},
		{name: "unauthenticated Falco endpoint", args: "      falco: {bindAddress: ':9443'}\n", wantField: "args.falco.tokenFile"},
		{name: "mTLS without TLS", args: "      falco: {bindAddress: ':9443', clientCAFile: /ca.pem}\n", wantField: "args.falco.tlsCertFile"},
		{name: "unbounded body", args: "      falco: {maxBodyBytes: 0}\n", wantField: "args.falco.maxBodyBytes"},
		{name: "relative store path", args: "      store: {path: repute.db}\n", wantField: "args.store.path"},
		{name: "audit API without a port", args: "      audit: {bindAddress: localhost}\n", wantField: "args.audit.bindAddress"},
		{name: "aggregated audit API on a host name", args: "      audit: {bindAddress: ':8444', aggregatedBindAddress: 'localhost:8445'}\n", wantField: "args.audit.aggregatedBindAddress"},
		{name: "two mirror keys", args: "      mirror: {namespace: kube-system, hmacKeyFile: /key, hmacKeySecret: repute-mirror-key}\n", wantField: "args.mirror.hmacKeySecret"},
		{name: "mirror key Secret without the mirror", args: "      mirror: {hmacKeySecret: repute-mirror-key}\n", wantField: "args.mirror.namespace"},
		{name: "certificate Secret without a namespace", args: "      audit: {bindAddress: ':8444', certificateSecret: repute-audit-tls}\n", wantField: "args.audit.certificateSecret"},
		{name: "certificate for a Service that cannot be", args: "      audit: {bindAddress: ':8444', certificateSecret: kube-system/tls, serviceName: Repute_Audit}\n", wantField: "args.audit.serviceName"},
		{name: "aggregated audit API on a named port", args: "      audit: {bindAddress: ':8444', aggregatedBindAddress: ':https'}\n", wantField: "args.audit.aggregatedBindAddress"},
		{name: "unknown untrusted isolation", args: "      untrusted: {isolation: perNamespace}\n", wantField: "args.untrusted.isolation"},
		{name: "unknown replacement mode", args: "      replacement: {mode: evict}\n", wantField: "args.replacement.mode"},
		{name: "no evictions", args: "      replacement: {evictionsPerMinute: 0}\n", wantField: "args.replacement.evictionsPerMinute"},
		{name: "negative pods per node", args: "      untrusted: {maxPodsPerNode: -1}\n", wantField: "args.untrusted.maxPodsPerNode"},
		{name: "audit certificate without its key", args: "      audit: {bindAddress: ':8444', tlsCertFile: /tls.crt}\n", wantField: "args.audit.tlsKeyFile"},
		{name: "no workers", args: "      evaluation: {workers: 0}\n", wantField: "args.evaluation.workers"},
		{name: "retries that never back off", args: "      evaluation: {retryAfter: 1m, maxRetryAfter: 10s}\n", wantField: "args.evaluation.maxRetryAfter"},
		{name: "re-verification that spins", args: "      evaluation: {reverifyAfter: 1s}\n", wantField: "args.evaluation.reverifyAfter"},
		{name: "registry timeout for a path", args: "      evaluation: {registryTimeouts: {'r.example/team': 10s}}\n", wantField: "args.evaluation.registryTimeouts[r.example/team]"},
		{name: "zero registry timeout", args: "      evaluation: {registryTimeouts: {'r.example:5000': 0s}}\n", wantField: "args.evaluation.registryTimeouts[r.example:5000]"},
		{name: "unnamed key", args: "      policy: {signature: {keys: [{publicKey: 'x'}]}}\n", wantField: "args.policy.signature.keys[0].name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args, err := decode(t, tt.args)
			if tt.wantDecodeErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantDecodeErr) {
					t.Fatalf("decode error = %v, want one containing %q", err, tt.wantDecodeErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			errs := validation.ValidateReputationArgs(field.NewPath("args"), args)
			var fields []string
			for _, e := range errs {
				fields = append(fields, e.Field)
			}
			if len(fields) != 1 || fields[0] != tt.wantField {
				t.Errorf("validation fields = %v, want exactly [%s] (%v)", fields, tt.wantField, errs)
			}
		})
	}
}

// FuzzDecodeArgs feeds arbitrary text as the args block: decoding fails with an error or
// yields args that validation can judge; nothing panics.
func FuzzDecodeArgs(f *testing.F) {
	for _, s := range []string{"{}", "poolLabelKey: a/b", "policy: {origin: {rules: [{pattern: '*', tier: untrusted}]}}", "pools: {trusted: {name: x}}", "verdictWait: -1s", "[", "policy: {baseScore: 1e99}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, args string) {
		indented := "      " + strings.ReplaceAll(args, "\n", "\n      ") + "\n"
		a, err := decode(t, indented)
		if err != nil {
			return
		}
		_ = validation.ValidateReputationArgs(field.NewPath("args"), a)
	})
}
