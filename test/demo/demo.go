// Package demo is the README's first command: a real control plane, a real OCI registry on
// loopback and the real Repute scheduler, placing a handful of pods into their pools and saying
// why.
package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/pkg/sources/trivy"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/evidence"
	"github.com/repute-dev/repute/test/oci"
	"github.com/repute-dev/repute/test/podsecurity"
)

// Options for a demo run.
type Options struct {
	// Out receives the report.
	Out io.Writer
	// Keep leaves everything running and writes a kubeconfig to KubeconfigPath until ctx ends.
	Keep           bool
	KubeconfigPath string
}

const (
	schedulerName = "repute-scheduler"
	poolKey       = "node-restriction.kubernetes.io/repute-pool"
	namespace     = "demo"
)

// Run runs the demo to completion (or, with Keep, until ctx is cancelled).
func Run(ctx context.Context, opts Options) (err error) {
	out := opts.Out
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	controlplane.QuietLogs()

	tb := controlplane.NewProcessTB("repute-demo")
	defer tb.RunCleanups()
	defer func() {
		// The apiserver test server reports failures through the TB by panicking.
		if r := recover(); r != nil {
			err = fmt.Errorf("control plane: %v", r)
		}
	}()

	start := time.Now()
	say("• starting etcd and kube-apiserver in this process …")
	cp, err := controlplane.Start(tb, controlplane.Options{RBAC: true})
	if err != nil {
		return err
	}
	defer cp.Stop()
	say("  apiserver %s ready in %s", cp.Config.Host, time.Since(start).Round(time.Millisecond))

	reg, stopRegistry, err := oci.StartRegistry()
	if err != nil {
		return err
	}
	defer stopRegistry()
	say("• OCI registry (go-containerregistry) on %s; images signed by the real cosign CLI", reg)
	cosignBin, err := oci.FindCosign()
	if err != nil {
		return fmt.Errorf("%w (make demo builds it)", err)
	}
	keyDir, err := os.MkdirTemp("", "repute-demo-keys-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(keyDir)
	cosign := &oci.Cosign{Bin: cosignBin, Dir: keyDir}
	img, err := prepareImages(reg, cosign)
	if err != nil {
		return err
	}

	// Trivy Operator's CRDs, and the report it would write for billing's image.
	if err := evidence.InstallTrivyCRDs(ctx, cp.Config); err != nil {
		return err
	}
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	repo, digest, _ := strings.Cut(img.vulnerable, "@")
	registry, repository, _ := strings.Cut(repo, "/")
	report := evidence.VulnerabilityReport(namespace, "replicaset-billing-7c9f", registry, repository, digest, 2, "CVE-2024-3094")
	if _, err := dynamic.NewForConfigOrDie(cp.Config).Resource(trivy.VulnerabilityReports).Namespace(namespace).Create(ctx, report, metav1.CreateOptions{}); err != nil {
		return err
	}
	say("• Trivy Operator's CRDs installed; a VulnerabilityReport gives billing's image 2 critical CVEs (CVE-2024-3094)")
	falco, err := evidence.NewFalcoEndpoint(keyDir)
	if err != nil {
		return err
	}
	auditAddr, err := controlplane.FreeLoopbackAddress()
	if err != nil {
		return err
	}
	// The aggregator verifies the scheduler's certificate for the Service it is registered behind.
	auditCert, auditKey, err := controlplane.ServingCertificate(keyDir, controlplane.AuditService+".kube-system.svc")
	if err != nil {
		return err
	}

	cfg := controlplane.SchedulerConfig{
		Kubeconfig:    cp.Kubeconfig,
		SchedulerName: schedulerName,
		PoolLabelKey:  poolKey,
		OriginRules: []controlplane.OriginRule{
			{Pattern: "127.0.0.1:*/platform/*", Weight: 10},
			{Pattern: "docker.io/*", Tier: "unknown"},
			{Pattern: "*", Tier: "untrusted"},
		},
		RequireSignature: true,
		SigningKeys:      []controlplane.SigningKey{{Name: "platform", PEM: img.platformKey, Repositories: []string{"127.0.0.1:*/platform/*"}}},
		Falco:            controlplane.FalcoArgs{BindAddress: falco.BindAddress, TokenFile: falco.TokenFile},
		StorePath:        filepath.Join(keyDir, "repute.db"),
		ExtraArgs:        "      replacement: {mode: Evict}",
		Audit:            controlplane.AuditArgs{AggregatedBindAddress: auditAddr, TLSCertFile: auditCert, TLSKeyFile: auditKey},
		PolicyName:       policyName,
	}
	say("• starting the Repute scheduler (profile %s) with origin rules:", schedulerName)
	for i, r := range cfg.OriginRules {
		decision := fmt.Sprintf("weight %+d", r.Weight)
		if r.Tier != "" {
			decision = "tier " + r.Tier
		}
		say("    %d. %-24s → %s", i, r.Pattern, decision)
	}
	say("  signatures: key \"platform\" for 127.0.0.1:*/platform/*; verified +30, unknown key -10;")
	say("  trusted requires a verified signature;")
	say("  a tampered or replayed signature makes an image untrusted; more than 0 critical CVEs make it untrusted;")
	say("  a Critical Falco alert makes it untrusted for one half-life (24h), lesser ones cost points that decay")
	say("  (score starts at 50; trusted ≥ 70, untrusted < 30; a tag not pinned by digest costs 10)")
	if err := installPolicy(ctx, cp, cfg); err != nil {
		return err
	}
	say("  the policy is the ReputationPolicy %q (CRD installed): the scheduler follows it live", policyName)
	stopScheduler, serving, err := controlplane.StartReputeSchedulerServing(ctx, cfg.Render(), cp.Kubeconfig)
	if err != nil {
		return err
	}
	defer stopScheduler()
	if _, err := cp.RegisterAuditAPI(ctx, auditAddr, auditCert); err != nil { // gone with the control plane
		return err
	}
	stopControllers, err := controlplane.StartWorkloadControllers(ctx, cp.Config)
	if err != nil {
		return err
	}
	defer stopControllers()

	say("• creating pools: each node labelled and tainted %s=<pool>:NoSchedule", poolKey)
	nodes := []controlplane.NodeSpec{
		{Name: "trusted-1", Pool: "trusted"}, {Name: "trusted-2", Pool: "trusted"},
		{Name: "unknown-1", Pool: "unknown"},
		{Name: "untrusted-1", Pool: "untrusted"}, {Name: "untrusted-2", Pool: "untrusted"},
		{Name: "general-1"},
	}
	poolOf := map[string]string{}
	for _, n := range nodes {
		n.PoolKey = poolKey
		if _, err := controlplane.CreateNode(ctx, cp.Client, n); err != nil {
			return err
		}
		poolOf[n.Name] = n.Pool
		if n.Pool == "" {
			poolOf[n.Name] = "(none)"
		}
	}
	if err := falco.WaitUp(ctx, 30*time.Second); err != nil {
		return err
	}
	say("• Falco alert endpoint on %s (bearer token from a file, as from a Secret)", falco.URL)

	pods := []*v1.Pod{
		demoPod("api", img.signed),
		demoPod("web", img.unsignedTag),
		demoPod("worker", img.strangerSigned),
		demoPod("cache", img.replayed),
		demoPod("billing", img.vulnerable),
		demoPod("shop", img.shop),
		demoPod("redis", "redis:7.2"),
		demoPod("miner", "quay.io/evil/miner:latest"),
		withInit(demoPod("api-with-untrusted-init", img.signed), "ghcr.io/unknown/setup:1"),
		withTrustClaims(demoPod("miner-claiming-trust", "quay.io/evil/miner:latest")),
	}
	say("• creating %d pods with only schedulerName: %s (no tolerations, no node selectors)", len(pods), schedulerName)
	rows, err := createAndWaitPlaced(ctx, cp, pods)
	if err != nil {
		return err
	}
	say("")
	printRows(out, rows, poolOf)
	say("")
	say("There is no kubelet here: pods are bound to their nodes, and stay Pending, never running. Where the demo needs")
	say("a pod running (for Falco and the mover), it writes the status a kubelet would.")
	say("api, shop: signed by the platform key. web: unsigned. worker: signed by a key nobody trusts. cache: carries")
	say("api's signature, replayed onto other content. billing: signed, but Trivy found critical CVEs.")
	claimed, err := cp.Client.CoreV1().Pods(namespace).Get(ctx, "miner-claiming-trust", metav1.GetOptions{})
	if err != nil {
		return err
	}
	say("miner-claiming-trust was created with repute.dev/tier=trusted as label and annotation: pods cannot raise")
	say("their own tier, and Repute relabelled it repute.dev/tier=%s as it bound it (every placed pod carries its tier,", claimed.Labels["repute.dev/tier"])
	say("for NetworkPolicies). api-with-untrusted-init: a pod's least trusted image decides.")

	// shop runs (there is no kubelet here, so the demo writes the status one would), and so
	// does storefront, a Deployment of the same image. Falco catches a shell in shop. The alert
	// lowers the image's reputation: storefront's pod is moved, shop (no controller) reported.
	storefront, err := startStorefront(ctx, cp, img.shop)
	if err != nil {
		return err
	}
	if _, err := evidence.ReportContainerStatus(ctx, cp.Client, namespace, "shop", nil); err != nil {
		return err
	}
	const rule = "Terminal shell in container"
	alert := evidence.FalcoAlert(namespace, "shop", evidence.ContainerIDOf(img.shop)[:12], rule, "Critical")
	status, resp, err := falco.Post(ctx, falco.Token, alert)
	if err != nil {
		return err
	}
	if status != 200 || resp.Accepted != 1 {
		return fmt.Errorf("the Falco endpoint answered %d %+v to a valid alert", status, resp)
	}
	say("\n• Falco: Critical %q in demo/shop, posted to the endpoint: %d, %d accepted", rule, status, resp.Accepted)
	if rows, err = createAndWaitPlaced(ctx, cp, []*v1.Pod{demoPod("shop-2", img.shop)}); err != nil {
		return err
	}
	say("• a second shop pod, same image, created after the alert:\n")
	printRows(out, rows, poolOf)
	if err := showMove(ctx, cp, out, storefront, poolOf); err != nil {
		return err
	}

	access := auditor{dir: keyDir}
	if err := auditorView(ctx, cp, out, access, img.shop); err != nil {
		return err
	}
	proposal, err := operatorView(ctx, cp, out, access, cfg)
	if err != nil {
		return err
	}
	if err := applyProposal(ctx, cp, out, proposal); err != nil {
		return err
	}
	if err := showMetrics(ctx, cp, out, serving); err != nil {
		return err
	}

	if !opts.Keep {
		say("\n• done in %s; stopping the scheduler, apiserver and etcd.", time.Since(start).Round(time.Millisecond))
		return nil
	}
	path := opts.KubeconfigPath
	if path == "" {
		path = "repute-demo.kubeconfig"
	}
	if err := controlplane.WriteKubeconfig(cp.Config, path); err != nil {
		return err
	}
	abs, _ := filepath.Abs(path)
	say("\n• still running. Try next:")
	for _, c := range TryNext(abs, access) {
		say("    %s", c)
	}
	say("  Ctrl-C to stop.")
	<-ctx.Done()
	os.Remove(path)
	return nil
}

// printRows prints a pod per row and, under it, why, wrapped to fit maxWidth columns.
func printRows(out io.Writer, rows []row, poolOf map[string]string) {
	var table bytes.Buffer
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tTIER\tSCORE\tNODE\tPOOL\tIMAGE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.pod, r.tier, r.score, r.node, poolOf[r.node], shorten(r.image))
	}
	tw.Flush()
	lines := strings.Split(strings.TrimSuffix(table.String(), "\n"), "\n")
	fmt.Fprintln(out, lines[0])
	for i, r := range rows {
		fmt.Fprintln(out, lines[i+1])
		for j, line := range wrap(r.reason, maxWidth-len(reasonIndent)) {
			prefix := reasonIndent
			if j > 0 {
				prefix = strings.Repeat(" ", len(reasonIndent))
			}
			fmt.Fprintf(out, "%s%s\n", prefix, line)
		}
	}
}

// maxWidth is the terminal the demo fits; reasonIndent starts a pod's reason under its row.
const (
	maxWidth     = 120
	reasonIndent = "    why: "
)

// wrap breaks text into lines of at most width bytes, at spaces where it can.
func wrap(text string, width int) []string {
	var lines []string
	for len(text) > width {
		cut := strings.LastIndex(text[:width], " ")
		if cut <= 0 {
			cut = width
		}
		lines = append(lines, text[:cut])
		text = strings.TrimLeft(text[cut:], " ")
	}
	return append(lines, text)
}

// demoPod is a pod that meets the Pod Security Standard "restricted", as untrusted pods must to
// be placed: where it lands is its images' doing alone.
func demoPod(name, image string) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: v1.PodSpec{
			SchedulerName: schedulerName,
			Containers:    []v1.Container{{Name: "main", Image: image}},
		},
	}
	podsecurity.Restricted(&p.Spec)
	return p
}

func withInit(p *v1.Pod, image string) *v1.Pod {
	p.Spec.InitContainers = []v1.Container{{Name: "setup", Image: image}}
	podsecurity.Restricted(&p.Spec)
	return p
}

func withTrustClaims(p *v1.Pod) *v1.Pod {
	p.Labels = map[string]string{"repute.dev/tier": "trusted"}
	p.Annotations = map[string]string{"repute.dev/tier": "trusted"}
	return p
}

type row struct{ pod, image, tier, score, node, reason string }

// createAndWaitPlaced creates the pods, then waits for them as waitPlaced does.
func createAndWaitPlaced(ctx context.Context, cp *controlplane.ControlPlane, pods []*v1.Pod) ([]row, error) {
	for _, p := range pods {
		if _, err := cp.Client.CoreV1().Pods(namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	return waitPlaced(ctx, cp, pods)
}

// waitPlaced waits until every pod is bound with Repute's explanation on it, which reads
// "pool P: tier T, score S; <image>: <reason>".
func waitPlaced(ctx context.Context, cp *controlplane.ControlPlane, pods []*v1.Pod) ([]row, error) {
	var rows []row
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		rows = rows[:0]
		list, err := cp.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		bound := map[string]*v1.Pod{}
		for i := range list.Items {
			if list.Items[i].Spec.NodeName != "" {
				bound[list.Items[i].Name] = &list.Items[i]
			}
		}
		for _, p := range pods {
			got, ok := bound[p.Name]
			if !ok {
				return false, nil
			}
			rows = append(rows, parsePlaced(got))
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for pods to be placed: %w", err)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].pod < rows[j].pod })
	return rows, nil
}

// explanation matches the Reputation plugin's placement annotation.
var explanation = regexp.MustCompile(`^pool (\S+): tier (\S+), score (\d+); (\S+): (.*)$`)

func parsePlaced(p *v1.Pod) row {
	note := p.Annotations[placement.ExplanationAnnotation]
	m := explanation.FindStringSubmatch(note)
	if m == nil {
		return row{pod: p.Name, image: p.Spec.Containers[0].Image, node: p.Spec.NodeName, reason: note}
	}
	return row{pod: p.Name, node: p.Spec.NodeName, tier: m[2], score: m[3], image: m[4], reason: m[5]}
}

func shorten(image string) string {
	if at := strings.Index(image, "@sha256:"); at > 0 {
		return image[:at+len("@sha256:")+12] + "…"
	}
	return image
}

// demoImages are the images the demo's pods run.
type demoImages struct {
	platformKey                                   string
	signed, unsignedTag, strangerSigned, replayed string
	vulnerable, shop                              string
}

// prepareImages pushes the demo's images and signs them with the real cosign CLI.
func prepareImages(reg string, cosign *oci.Cosign) (demoImages, error) {
	var img demoImages
	var err error
	if img.platformKey, err = cosign.GenerateKeyPair("platform"); err != nil {
		return img, err
	}
	if _, err := cosign.GenerateKeyPair("stranger"); err != nil {
		return img, err
	}
	api, err := pushSigned(reg+"/platform/api:v1", cosign)
	if err != nil {
		return img, err
	}
	if _, err := oci.PushRandomImage(reg + "/platform/web:v1"); err != nil {
		return img, err
	}
	worker, err := oci.PushRandomImage(reg + "/platform/worker:v1")
	if err != nil {
		return img, err
	}
	if err := cosign.Sign("stranger", worker, false); err != nil {
		return img, err
	}
	// The legacy format keeps the replay visible: a valid signature over api's digest, copied.
	apiLegacy, err := oci.PushRandomImage(reg + "/platform/cache:v0")
	if err != nil {
		return img, err
	}
	if err := cosign.Sign("platform", apiLegacy, true); err != nil {
		return img, err
	}
	cache, err := oci.PushRandomImage(reg + "/platform/cache:v1")
	if err != nil {
		return img, err
	}
	if err := oci.CopyLegacySignature(apiLegacy, cache); err != nil {
		return img, err
	}
	if img.vulnerable, err = pushSigned(reg+"/platform/billing:v1", cosign); err != nil {
		return img, err
	}
	if img.shop, err = pushSigned(reg+"/platform/shop:v1", cosign); err != nil {
		return img, err
	}
	img.signed, img.unsignedTag, img.strangerSigned, img.replayed = api, reg+"/platform/web:v1", worker.String(), cache.String()
	return img, nil
}

// pushSigned pushes a fresh image and signs it with the platform key in the bundle format.
func pushSigned(tagged string, cosign *oci.Cosign) (string, error) {
	d, err := oci.PushRandomImage(tagged)
	if err != nil {
		return "", err
	}
	return d.String(), cosign.Sign("platform", d, false)
}
