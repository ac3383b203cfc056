package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/repute-dev/repute/pkg/audit"
	reputectlcmd "github.com/repute-dev/repute/pkg/reputectl"
	"github.com/repute-dev/repute/pkg/version"
	"github.com/repute-dev/repute/test/controlplane"
)

// The audit API against the real apiserver with RBAC on: the scheduler runs as the shipped
// ServiceAccount with only the shipped RBAC, callers are checked with TokenReview and
// SubjectAccessReview, and the shipped repute-auditor role is what grants access.
func TestAuditAPIIsGuardedByClusterRBAC(t *testing.T) {
	e := newEnv(t)
	applyDeployBase(t, e, false, "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
	schedulerKubeconfig := kubeconfigFor(t, e, "kube-system", "repute-scheduler")

	dir := t.TempDir()
	certFile, keyFile, err := controlplane.ServingCertificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	bind := freeLoopbackAddress(t)
	cfg := e.config()
	cfg.Kubeconfig = schedulerKubeconfig
	cfg.StorePath = filepath.Join(dir, "repute.db")
	cfg.Audit = controlplane.AuditArgs{BindAddress: bind, TLSCertFile: certFile, TLSKeyFile: keyFile}
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfg.Render())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	trustedNode := e.node("trusted", "trusted")
	e.node("untrusted", "untrusted")
	e.create(e.pod("api", trustedImage))
	e.create(e.pod("miner", untrustedImage))
	if got := e.waitBound("api", bindTimeout); got != trustedNode {
		t.Fatalf("api bound to %s, want %s: the scheduler's own RBAC falls short", got, trustedNode)
	}
	e.waitBound("miner", bindTimeout)
	e.waitPlacement("miner", bindTimeout) // decisions are recorded as pods bind

	for _, sa := range []string{"auditor", "stranger", "backup-operator"} {
		e.serviceAccount(sa)
	}
	e.bindClusterRole("repute-auditor", "auditor")
	e.bindClusterRole("repute-audit-backup", "backup-operator")
	client := func(token string) *audit.Client {
		rc := &rest.Config{Host: "https://" + bind, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAFile: certFile}}
		hc, err := rest.HTTPClientFor(rc)
		if err != nil {
			t.Fatal(err)
		}
		return &audit.Client{HTTP: hc, Server: rc.Host}
	}
	auditor := client(e.auditToken("auditor"))

	// The decision of a pod that just bound is written off the scheduling cycle: poll for it.
	var decisions *audit.DecisionList
	err = wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		decisions, err = auditor.Decisions(ctx, url.Values{"namespace": {e.ns}})
		return err == nil && len(decisions.Items) == 2, err
	})
	if err != nil {
		t.Fatalf("auditor reading decisions: %v (got %+v)", err, decisions)
	}
	for _, d := range decisions.Items {
		want := map[string]string{"api": "trusted", "miner": "untrusted"}[d.Pod]
		if string(d.Tier) != want || d.Node == "" || d.Reason == "" {
			t.Errorf("decision %+v: want tier %q with a node and a reason", d, want)
		}
	}
	images, err := auditor.Images(e.ctx, url.Values{"tier": {"untrusted"}})
	if err != nil {
		t.Fatal(err)
	}
	if !hasImage(images, untrustedImage) || hasImage(images, trustedImage) {
		t.Errorf("untrusted images = %+v, want %s and not %s", images.Items, untrustedImage, trustedImage)
	}
	img, err := auditor.Image(e.ctx, trustedImage)
	if err != nil || img.Tier != "trusted" || len(img.Contributions) == 0 {
		t.Errorf("Image(%s) = %+v, %v; want trusted with its contributions", trustedImage, img, err)
	}
	if h, err := auditor.History(e.ctx, url.Values{"image": {trustedImage}}); err != nil || len(h.Items) == 0 {
		t.Errorf("history of %s = %+v, %v; want at least its first verdict", trustedImage, h, err)
	}

	tests := []struct {
		name  string
		call  func(ctx context.Context) error
		check func(error) bool
		want  string
	}{
		{"anonymous", func(ctx context.Context) error { _, err := client("").Images(ctx, nil); return err },
			apierrors.IsUnauthorized, "Unauthorized"},
		{"a token issued for the apiserver, not the audit API", func(ctx context.Context) error { _, err := client(e.token("auditor")).Images(ctx, nil); return err },
			apierrors.IsUnauthorized, "Unauthorized"},
		{"forged token", func(ctx context.Context) error { _, err := client("not-a-token").Images(ctx, nil); return err },
			apierrors.IsUnauthorized, "Unauthorized"},
		{"authenticated without the role", func(ctx context.Context) error {
			_, err := client(e.auditToken("stranger")).Images(ctx, nil)
			return err
		},
			apierrors.IsForbidden, `User "system:serviceaccount:` + e.ns + `:stranger" cannot list resource "images"`},
		{"the auditor role does not include backups", func(ctx context.Context) error { _, err := auditor.Backup(ctx, discard{}); return err },
			apierrors.IsForbidden, `cannot get resource "backups"`},
		{"the backup role does not include decisions", func(ctx context.Context) error {
			_, err := client(e.auditToken("backup-operator")).Decisions(ctx, nil)
			return err
		}, apierrors.IsForbidden, `cannot list resource "decisions"`},
		{"bad parameter", func(ctx context.Context) error {
			_, err := auditor.Decisions(ctx, url.Values{"from": {"yesterday"}})
			return err
		},
			apierrors.IsBadRequest, `"from"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(e.ctx)
			if !tt.check(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	_, err = auditor.Decisions(e.ctx, url.Values{"from": {"yesterday"}})
	if status, ok := err.(apierrors.APIStatus); !ok {
		t.Errorf("bad parameter: %v, want a Status", err)
	} else if d := status.Status().Details; d == nil || len(d.Causes) != 1 || d.Causes[0].Field != "from" {
		t.Errorf("400 details = %+v, want one cause for the field from", d)
	}
	n, err := client(e.auditToken("backup-operator")).Backup(e.ctx, discard{})
	if err != nil || n == 0 {
		t.Errorf("backup as repute-audit-backup = %d bytes, %v", n, err)
	}

	// reputectl as an auditor would run it, with a token issued for the audit API; then a backup
	// taken with a token reputectl mints itself, read offline.
	live := []string{"--audit-server", "https://" + bind, "--audit-ca", certFile}
	auditorToken := []string{"--audit-token-file", e.auditTokenFile("auditor")}
	out := reputectl(t, append(append(live, auditorToken...), "image", trustedImage)...)
	for _, want := range []string{"Image:", trustedImage, "Tier:", "trusted", "Evidence:", "origin"} {
		if !strings.Contains(out, want) {
			t.Errorf("reputectl image lacks %q:\n%s", want, out)
		}
	}
	out = reputectl(t, append(append(live, auditorToken...), "decisions", "-A", "--tier", "untrusted")...)
	if !strings.Contains(out, e.ns) || !strings.Contains(out, "miner") || strings.Contains(out, " api ") {
		t.Errorf("reputectl decisions --tier untrusted:\n%s", out)
	}
	// The server's version, which the cluster's own RBAC (system:public-info-viewer) lets any
	// authenticated caller read, as the kube-apiserver's /version.
	out = reputectl(t, append(append(live, auditorToken...), "version", "-o", "json")...)
	var versions struct{ ClientVersion, ServerVersion *version.Info }
	if err := json.Unmarshal([]byte(out), &versions); err != nil || versions.ServerVersion == nil || *versions.ServerVersion != version.Get() {
		t.Errorf("reputectl version -o json = %s (%v), want the server's version, this build's %+v", out, err, version.Get())
	}
	backupFile := filepath.Join(t.TempDir(), "backup.db")
	if _, err := runReputectl(append(append(live, auditorToken...), "backup", "-f", backupFile)...); !apierrors.IsForbidden(err) {
		t.Errorf("reputectl backup as an auditor: %v, want forbidden", err)
	}
	if _, err := runReputectl(append(live, "--kubeconfig", kubeconfigFor(t, e, e.ns, "auditor"), "images")...); err == nil || !strings.Contains(err.Error(), "does not send your apiserver token") {
		t.Errorf("reputectl with only an apiserver token in the kubeconfig: %v, want a refusal before sending it", err)
	}
	admin := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := controlplane.WriteKubeconfig(cluster.Config, admin); err != nil {
		t.Fatal(err)
	}
	reputectl(t, append(live, "--kubeconfig", admin, "--audit-service-account", e.ns+"/backup-operator", "backup", "-f", backupFile)...)
	out = reputectl(t, "--store", backupFile, "decisions", "-n", e.ns)
	if !strings.Contains(out, "api") || !strings.Contains(out, "miner") {
		t.Errorf("the backup read offline lacks the decisions:\n%s", out)
	}
}

// reputectl runs the command line in this process and returns its standard output.
func reputectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runReputectl(args...)
	if err != nil {
		t.Fatalf("reputectl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func runReputectl(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	cmd := reputectlcmd.NewCommand("reputectl", &out, &errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func hasImage(list *audit.ImageList, ref string) bool {
	for _, img := range list.Items {
		if img.Ref == ref {
			return true
		}
	}
	return false
}

func (e *env) serviceAccount(name string) {
	e.t.Helper()
	sa := &v1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns}}
	if _, err := e.client.CoreV1().ServiceAccounts(e.ns).Create(e.ctx, sa, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// token asks the apiserver for a short-lived token of a service account of this env.
func (e *env) token(serviceAccount string) string {
	e.t.Helper()
	token, err := cluster.ServiceAccountToken(e.ctx, e.ns, serviceAccount)
	if err != nil {
		e.t.Fatal(err)
	}
	return token
}

// auditToken asks for a short-lived token of a service account of this env, issued for the audit
// API's audience, as reputectl --audit-service-account does.
func (e *env) auditToken(serviceAccount string) string {
	e.t.Helper()
	token, err := cluster.ServiceAccountToken(e.ctx, e.ns, serviceAccount, audit.Audience)
	if err != nil {
		e.t.Fatal(err)
	}
	return token
}

// auditTokenFile writes auditToken to a file, as kubectl create token --audience would.
func (e *env) auditTokenFile(serviceAccount string) string {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), serviceAccount+".token")
	if err := os.WriteFile(path, []byte(e.auditToken(serviceAccount)), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// bindClusterRole grants a shipped ClusterRole to a service account of this env, once it
// is in effect.
// installShippedClusterRole creates a ClusterRole as deploy/ ships it, unless it exists.
func (e *env) installShippedClusterRole(name string) {
	e.t.Helper()
	role, err := controlplane.ShippedClusterRole(name)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.client.RbacV1().ClusterRoles().Create(e.ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatal(err)
	}
}

func (e *env) bindClusterRole(role, serviceAccount string) {
	e.t.Helper()
	name := e.prefix + role + "-" + serviceAccount
	if err := cluster.BindClusterRole(e.ctx, name, role, e.ns, serviceAccount); err != nil {
		e.t.Fatalf("binding %s to %s: %v", role, serviceAccount, err)
	}
	e.t.Cleanup(func() {
		_ = e.client.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// kubeconfigFor writes a kubeconfig that authenticates as a service account.
func kubeconfigFor(t *testing.T, e *env, ns, serviceAccount string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), serviceAccount+".kubeconfig")
	if err := cluster.ServiceAccountKubeconfig(e.ctx, ns, serviceAccount, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func freeLoopbackAddress(t *testing.T) string {
	t.Helper()
	addr, err := controlplane.FreeLoopbackAddress()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
