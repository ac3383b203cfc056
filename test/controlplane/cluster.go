package controlplane

import (
	"context"
	"fmt"
	"strings"
	"text/template"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
)

// NodeSpec describes a node to create. There is no kubelet: the node is an API object whose
// status says it is Ready with the given allocatable resources.
type NodeSpec struct {
	Name string
	// PoolKey and Pool, when Pool is set, label the node into a pool and taint it
	// <PoolKey>=<Pool>:NoSchedule, as an operator does.
	PoolKey, Pool string
	// Pods, CPU and Memory are allocatable; zero means 110 pods, 4 CPUs, 8Gi.
	Pods          int
	CPU, Memory   string
	ExtraTaints   []v1.Taint
	ExtraLabels   map[string]string
	SkipPoolTaint bool
}

// CreateNode creates a Ready node.
func CreateNode(ctx context.Context, client kubernetes.Interface, spec NodeSpec) (*v1.Node, error) {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: spec.Name, Labels: map[string]string{"kubernetes.io/hostname": spec.Name}}}
	for k, v := range spec.ExtraLabels {
		node.Labels[k] = v
	}
	if spec.Pool != "" {
		node.Labels[spec.PoolKey] = spec.Pool
		if !spec.SkipPoolTaint {
			node.Spec.Taints = append(node.Spec.Taints, v1.Taint{Key: spec.PoolKey, Value: spec.Pool, Effect: v1.TaintEffectNoSchedule})
		}
	}
	node.Spec.Taints = append(node.Spec.Taints, spec.ExtraTaints...)
	created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating node %s: %w", spec.Name, err)
	}
	pods, cpu, mem := spec.Pods, spec.CPU, spec.Memory
	if pods == 0 {
		pods = 110
	}
	if cpu == "" {
		cpu = "4"
	}
	if mem == "" {
		mem = "8Gi"
	}
	resources := v1.ResourceList{
		v1.ResourcePods:   *resource.NewQuantity(int64(pods), resource.DecimalSI),
		v1.ResourceCPU:    resource.MustParse(cpu),
		v1.ResourceMemory: resource.MustParse(mem),
	}
	created.Status = v1.NodeStatus{
		Capacity:    resources,
		Allocatable: resources,
		Phase:       v1.NodeRunning,
		Conditions: []v1.NodeCondition{{
			Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
		}},
	}
	updated, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("setting node %s ready: %w", spec.Name, err)
	}
	return updated, nil
}

// SchedulerConfig is what the Repute scheduler's KubeSchedulerConfiguration is rendered from.
type SchedulerConfig struct {
	// Kubeconfig is the scheduler's connection to the apiserver. With --config, kube-scheduler
	// ignores --kubeconfig, so it has to be in the file.
	Kubeconfig    string
	SchedulerName string
	// MoreProfiles are the schedulerNames of further profiles that enable Reputation with
	// the same args.
	MoreProfiles []string
	PoolLabelKey string
	// LeaderElect turns on leader election with the lease <LeaseNamespace>/<LeaseName>; the
	// lease name defaults to SchedulerName.
	LeaderElect               bool
	LeaseNamespace, LeaseName string
	// LeaseDuration, when set, shortens the lease (renewDeadline and retryPeriod follow), so a
	// failover test waits seconds, not the default 15.
	LeaseDuration time.Duration
	// MirrorNamespace turns the verdict snapshot on, in that namespace; MirrorKeySecret signs
	// it with the key the scheduler keeps in that Secret there.
	MirrorNamespace, MirrorKeySecret string
	// OriginRules is YAML for args.policy.origin.rules, indented by the template.
	OriginRules []OriginRule
	// RequireSignature keeps images without a verified signature out of the trusted tier (the
	// product default); origin-only scenarios turn it off.
	RequireSignature bool
	// SigningKeys are trusted cosign public keys.
	SigningKeys []SigningKey
	// Falco opens the Falco alert endpoint when BindAddress is set.
	Falco FalcoArgs
	// StorePath turns the reputation store on; VerdictWait overrides the default wait (e.g. "1s").
	StorePath, VerdictWait string
	// Audit serves the audit API when its BindAddress is set, the aggregated one when its
	// AggregatedBindAddress is.
	Audit AuditArgs
	// PolicyName makes the scheduler follow that ReputationPolicy.
	PolicyName string
	// ExtraArgs is raw YAML appended under args (e.g. to test a misspelled field).
	ExtraArgs string
}

// AuditArgs is args.audit as the config file spells it.
type AuditArgs struct {
	BindAddress, TLSCertFile, TLSKeyFile string
	// AggregatedBindAddress serves the aggregated API audit.repute.dev/v1.
	AggregatedBindAddress string
	// CertificateSecret and ServiceName have the scheduler keep its certificate in a Secret.
	CertificateSecret, ServiceName string
}

// FalcoArgs is args.falco as the config file spells it.
type FalcoArgs struct {
	BindAddress, TokenFile string
	MaxBodyBytes           int
}

// SigningKey is a trusted key as the config file spells it.
type SigningKey struct {
	Name, PEM    string
	Repositories []string
}

// OriginRule is one origin rule as the config file spells it.
type OriginRule struct {
	Pattern, Tier string
	Weight        int
}

var schedulerConfigTemplate = template.Must(template.New("config").Parse(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: {{printf "%q" .Kubeconfig}}
leaderElection:
  leaderElect: {{.LeaderElect}}
  resourceNamespace: {{or .LeaseNamespace "kube-system"}}
  resourceName: {{or .LeaseName .SchedulerName}}
{{- if .LeaseDuration}}
  leaseDuration: {{.LeaseDuration}}
  renewDeadline: {{.RenewDeadline}}
  retryPeriod: {{.RetryPeriod}}
{{- end}}
profiles:
{{- range $name := .SchedulerNames}}
- schedulerName: {{$name}}
  plugins:
    multiPoint:
      enabled:
      - name: Reputation
        weight: 3
    filter:
      disabled:
      - name: TaintToleration
    bind:
      disabled:
      - name: DefaultBinder
  pluginConfig:
  - name: Reputation
    args:
{{- template "args" $}}
{{- end}}
{{define "args"}}
      poolLabelKey: {{.PoolLabelKey}}
      policy:
        origin:
          rules:
{{- range .OriginRules}}
          - pattern: {{printf "%q" .Pattern}}
{{- if .Tier}}
            tier: {{.Tier}}
{{- end}}
{{- if .Weight}}
            weight: {{.Weight}}
{{- end}}
{{- end}}
        signature:
          requireForTrusted: {{.RequireSignature}}
{{- if .SigningKeys}}
          keys:
{{- range .SigningKeys}}
          - name: {{.Name}}
            publicKey: {{printf "%q" .PEM}}
            repositories:
{{- range .Repositories}}
            - {{printf "%q" .}}
{{- end}}
{{- end}}
{{- end}}
{{- if .StorePath}}
      store:
        path: {{printf "%q" .StorePath}}
{{- end}}
{{- if or .Audit.BindAddress .Audit.AggregatedBindAddress}}
      audit:
{{- if .Audit.BindAddress}}
        bindAddress: {{printf "%q" .Audit.BindAddress}}
{{- end}}
{{- if .Audit.TLSCertFile}}
        tlsCertFile: {{printf "%q" .Audit.TLSCertFile}}
        tlsKeyFile: {{printf "%q" .Audit.TLSKeyFile}}
{{- end}}
{{- if .Audit.CertificateSecret}}
        certificateSecret: {{printf "%q" .Audit.CertificateSecret}}
        serviceName: {{printf "%q" .Audit.ServiceName}}
{{- end}}
{{- if .Audit.AggregatedBindAddress}}
        aggregatedBindAddress: {{printf "%q" .Audit.AggregatedBindAddress}}
{{- end}}
{{- end}}
{{- if .PolicyName}}
      policyName: {{.PolicyName}}
{{- end}}
{{- if .MirrorNamespace}}
      mirror:
        namespace: {{.MirrorNamespace}}
{{- if .MirrorKeySecret}}
        hmacKeySecret: {{.MirrorKeySecret}}
{{- end}}
{{- end}}
{{- if .VerdictWait}}
      verdictWait: {{.VerdictWait}}
{{- end}}
{{- if .Falco.BindAddress}}
      falco:
        bindAddress: {{printf "%q" .Falco.BindAddress}}
        tokenFile: {{printf "%q" .Falco.TokenFile}}
{{- if .Falco.MaxBodyBytes}}
        maxBodyBytes: {{.Falco.MaxBodyBytes}}
{{- end}}
{{- end}}
{{- if .ExtraArgs}}
{{.ExtraArgs}}
{{- end}}
{{end}}`))

// Render returns the configuration file text.
func (c SchedulerConfig) Render() string {
	var b strings.Builder
	// kube-scheduler's validation wants renewDeadline < leaseDuration and retryPeriod×1.2 below it.
	data := struct {
		SchedulerConfig
		SchedulerNames             []string
		RenewDeadline, RetryPeriod time.Duration
	}{c, append([]string{c.SchedulerName}, c.MoreProfiles...), c.LeaseDuration * 2 / 3, c.LeaseDuration / 6}
	if err := schedulerConfigTemplate.Execute(&b, data); err != nil {
		panic(err) // the template is fixed and the inputs are plain strings
	}
	return b.String()
}

// RenderPolicy returns this configuration's policy as a ReputationPolicy manifest: the same
// origin rules, keys and signature requirement the scheduler configuration renders.
func (c SchedulerConfig) RenderPolicy(name string) string {
	spec := v1alpha1.PolicySpec{
		Signature: v1alpha1.SignaturePolicy{RequireForTrusted: ptr.To(c.RequireSignature)},
	}
	for _, r := range c.OriginRules {
		spec.Origin.Rules = append(spec.Origin.Rules, v1alpha1.OriginRule{Pattern: r.Pattern, Tier: r.Tier, Weight: int32(r.Weight)})
	}
	for _, k := range c.SigningKeys {
		spec.Signature.Keys = append(spec.Signature.Keys, v1alpha1.SigningKey{Name: k.Name, PublicKey: k.PEM, Repositories: k.Repositories})
	}
	obj := map[string]any{
		"apiVersion": v1alpha1.Group + "/" + v1alpha1.Version, "kind": v1alpha1.Kind,
		"metadata": map[string]any{"name": name}, "spec": spec,
	}
	b, err := yaml.Marshal(obj)
	if err != nil {
		panic(err) // plain data
	}
	return string(b)
}
