package demo

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/test/controlplane"
)

// policyName is the ReputationPolicy the demo's scheduler follows.
const policyName = "default"

// installPolicy installs Repute's CRDs and creates the ReputationPolicy the scheduler will
// follow, with the policy the configuration renders.
func installPolicy(ctx context.Context, cp *controlplane.ControlPlane, cfg controlplane.SchedulerConfig) error {
	if err := controlplane.InstallReputeCRDs(ctx, cp.Config); err != nil {
		return err
	}
	obj, err := policyObject([]byte(cfg.RenderPolicy(policyName)))
	if err != nil {
		return err
	}
	_, err = dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.Resource).Create(ctx, obj, metav1.CreateOptions{})
	return err
}

func policyObject(doc []byte) (*unstructured.Unstructured, error) {
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
		return nil, err
	}
	return obj, nil
}

// applyProposal puts the operator's proposal in force, as kubectl apply would, and shows what
// the scheduler made of it: the policy's status and Event, and the bound pods whose tier
// changed, relabelled in place (none of them has a controller to recreate it elsewhere).
func applyProposal(ctx context.Context, cp *controlplane.ControlPlane, out io.Writer, file string) error {
	fmt.Fprintln(out, "\n• the operator applies it (kubectl apply -f proposed.yaml); the scheduler follows the object live")
	doc, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	proposed, err := policyObject(doc)
	if err != nil {
		return err
	}
	before, err := tierLabels(ctx, cp)
	if err != nil {
		return err
	}
	policies := dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.Resource)
	current, err := policies.Get(ctx, policyName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	current.Object["spec"] = proposed.Object["spec"]
	updated, err := policies.Update(ctx, current, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	status, applied, err := controlplane.WaitPolicyStatus(ctx, cp.Config, policyName, updated.GetGeneration(), metav1.ConditionTrue, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  status: generation %d Applied=%s, policy %s: %s\n", updated.GetGeneration(), applied.Status, status.PolicyVersion, applied.Message)
	ev, err := controlplane.WaitPolicyEvent(ctx, cp.Client, policyName, "Normal", "Applied", "changed tier", 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  kubectl describe reputationpolicy %s: %s %s %s\n", policyName, ev.Type, ev.Reason, ev.Message)

	// The mover relabels each bound pod whose tier changed; wait until the labels settle.
	var after map[string]string
	var changed []string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if after, err = tierLabels(ctx, cp); err != nil {
			return false, err
		}
		changed = changed[:0]
		for pod, tier := range after {
			if before[pod] != "" && tier != before[pod] {
				changed = append(changed, pod)
			}
		}
		return len(changed) >= 3, nil // api, web and worker, as the simulation said
	})
	if err != nil {
		return fmt.Errorf("pods were not re-tiered after the policy change (changed: %v): %w", changed, err)
	}
	sort.Strings(changed)
	fmt.Fprintln(out, "  bound pods re-tiered (label repute.dev/tier; no controller would recreate them, so they stay, reported):")
	for _, pod := range changed {
		fmt.Fprintf(out, "    %-8s %s → %s\n", pod, before[pod], after[pod])
	}
	return nil
}

// tierLabels is each demo pod's repute.dev/tier label.
func tierLabels(ctx context.Context, cp *controlplane.ControlPlane) (map[string]string, error) {
	list, err := cp.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	tiers := map[string]string{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Labels[placement.TierLabel] != "" {
			tiers[p.Name] = p.Labels[placement.TierLabel]
		}
	}
	return tiers, nil
}

// showMetrics reads the scheduler's /metrics as Prometheus would (its serving certificate
// verified, the admin's token authorized by the apiserver) and prints Repute's non-zero series
// of a few families.
func showMetrics(ctx context.Context, cp *controlplane.ControlPlane, out io.Writer, serving controlplane.Serving) error {
	fmt.Fprintf(out, "\n• the scheduler's own /metrics (%s), a few of Repute's series:\n", serving.URL)
	pem, err := os.ReadFile(serving.CAFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, serving.URL+"/metrics", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+cp.Config.BearerToken)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s/metrics: %s", serving.URL, resp.Status)
	}
	families := []string{"repute_pods_placed_total", "repute_verdicts{", "repute_misplaced_pods_total", "repute_falco_alerts_total",
		"repute_policy_reloads_total", "repute_evaluation_queue_wait_seconds_count"}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.HasSuffix(line, " 0") {
			continue
		}
		for _, f := range families {
			if strings.HasPrefix(line, f) {
				fmt.Fprintf(out, "  %s\n", line)
			}
		}
	}
	return sc.Err()
}
