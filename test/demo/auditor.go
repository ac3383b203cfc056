package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/repute-dev/repute/pkg/reputectl"
	"github.com/repute-dev/repute/test/controlplane"
)

// auditor is where the demo writes its users' kubeconfigs.
type auditor struct{ dir string }

func (a auditor) kubeconfig(account string) string {
	return filepath.Join(a.dir, account+".kubeconfig")
}

// auditorView grants a ServiceAccount the ClusterRole repute-auditor exactly as deploy/ ships
// it, then shows what that auditor reads with reputectl and an ordinary kubeconfig, through the
// kube-apiserver: the images, one image explained, its history, and the decisions that put pods
// in the untrusted pool.
func auditorView(ctx context.Context, cp *controlplane.ControlPlane, out io.Writer, a auditor, shopImage string) error {
	fmt.Fprintln(out, "\n• the auditor's view: a ServiceAccount bound to the shipped ClusterRole repute-auditor runs reputectl with an")
	fmt.Fprintln(out, "  ordinary kubeconfig. The kube-apiserver authenticates it and proxies to the scheduler's aggregated API")
	fmt.Fprintln(out, "  audit.repute.dev/v1 (APIService, verified TLS), which checks each request with a SubjectAccessReview")
	if err := grant(ctx, cp, a, "auditor", "repute-auditor"); err != nil {
		return err
	}
	return runReputectl(ctx, out, a, "auditor",
		[]string{"images"},
		[]string{"image", shopImage},
		[]string{"history", shopImage[strings.Index(shopImage, "@")+1:]}, // by digest alone
		[]string{"decisions", "-n", namespace, "--tier", "untrusted"})
}

// operatorView has an operator, granted the shipped repute-policy-simulator role, try a policy
// change before making it: distrust the platform registry (origin weight +10 → -15) until it
// is audited. diff shows the change against the policy in force, simulate what it would do.
// It returns the proposal's file.
func operatorView(ctx context.Context, cp *controlplane.ControlPlane, out io.Writer, a auditor, cfg controlplane.SchedulerConfig) (string, error) {
	fmt.Fprintln(out, "\n• the operator's view: before distrusting the platform registry (origin weight +10 → -15), ask what it would change")
	if err := grant(ctx, cp, a, "operator", "repute-policy-simulator", "repute-auditor"); err != nil {
		return "", err
	}
	proposed := cfg
	proposed.OriginRules = append([]controlplane.OriginRule(nil), cfg.OriginRules...)
	proposed.OriginRules[0].Weight = -15
	file := filepath.Join(a.dir, "proposed.yaml")
	if err := os.WriteFile(file, []byte(proposed.RenderPolicy(policyName)), 0o600); err != nil {
		return "", err
	}
	return file, runReputectl(ctx, out, a, "operator",
		[]string{"policy", "diff", "-f", file},
		[]string{"policy", "simulate", "-f", file, "-n", namespace})
}

// grant creates a ServiceAccount bound to shipped ClusterRoles and writes a kubeconfig for it,
// with a token from the TokenRequest API, as kubectl create token gets one.
func grant(ctx context.Context, cp *controlplane.ControlPlane, a auditor, account string, roles ...string) error {
	if _, err := cp.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, &v1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: account}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, name := range roles {
		role, err := controlplane.ShippedClusterRole(name)
		if err != nil {
			return err
		}
		if _, err := cp.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		if err := cp.BindClusterRole(ctx, "demo-"+account+"-"+name, name, namespace, account); err != nil {
			return err
		}
	}
	return cp.ServiceAccountKubeconfig(ctx, namespace, account, a.kubeconfig(account))
}

// runReputectl runs reputectl commands in this process as account, printing each command line
// first.
func runReputectl(ctx context.Context, out io.Writer, a auditor, account string, commands ...[]string) error {
	for _, args := range commands {
		shown := strings.ReplaceAll(strings.Join(args, " "), a.dir+"/", "")
		fmt.Fprintf(out, "\n$ reputectl %s\n", shown)
		cmd := reputectl.NewCommand("reputectl", out, out)
		cmd.SetArgs(append([]string{"--kubeconfig", a.kubeconfig(account)}, args...))
		// policy diff's "the policies differ" is its answer, not a failure.
		if err := cmd.ExecuteContext(ctx); err != nil && !errors.Is(err, reputectl.ErrDiffers) {
			return fmt.Errorf("reputectl %s: %w", shown, err)
		}
	}
	return nil
}

// TryNext are the commands make demo-keep suggests, each of which works against the demo left
// running: kubectl with the demo's kubeconfig, and kubectl and reputectl as the auditor.
func TryNext(kubeconfig string, a auditor) []string {
	kubectl := "kubectl --kubeconfig " + kubeconfig
	asAuditor := "kubectl --kubeconfig " + a.kubeconfig("auditor")
	reputectl := "go run ./cmd/reputectl --kubeconfig " + a.kubeconfig("auditor")
	return []string{
		kubectl + " get pods -n " + namespace + " -L repute.dev/tier -o wide",
		kubectl + " describe pod shop-2 -n " + namespace + "   # the repute.dev/placement annotation",
		kubectl + " describe reputationpolicy " + policyName + "   # status and Events",
		kubectl + " get events -n " + namespace + " --field-selector reason=Misplaced",
		asAuditor + " get decisions.audit.repute.dev -n " + namespace + " --field-selector tier=untrusted -o wide",
		asAuditor + " get images.audit.repute.dev",
		reputectl + " images",
		reputectl + " decisions -n " + namespace + " --tier untrusted",
	}
}
