package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/repute-dev/repute/test/controlplane"
)

// installBlocks reads the sh blocks of the README's "Installing on a real cluster", in order.
func installBlocks(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Installing on a real cluster\n")
	if !ok {
		t.Fatal("README.md has no section Installing on a real cluster")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var blocks []string
	for {
		var block string
		if _, rest, ok := strings.Cut(section, "```sh\n"); ok {
			block, section, _ = strings.Cut(rest, "```")
			blocks = append(blocks, block)
			continue
		}
		return blocks
	}
}

// tool finds a CLI the README uses, built by make test into bin/tools.
func tool(t *testing.T, name string) string { return controlplane.CLIForTest(t, name) }

// Every command of the README's install section runs, as written, against a control plane of
// its own (the section installs and deletes cluster-wide objects): the pools are labelled and
// tainted, Helm installs the chart, the Falco token Secret is made, the checks run (a real
// Repute scheduler, started from the configuration the chart installed as the ServiceAccount
// it installed, places the check pod), the chart is upgraded and uninstalled and its CRD
// deleted, and then the one-file bundle installs it all again on the fresh CRD.
func TestReadmeInstallCommands(t *testing.T) {
	kubectl, helm := tool(t, "kubectl"), tool(t, "helm")
	blocks := installBlocks(t)
	if len(blocks) != 6 {
		t.Fatalf("the install section has %d sh blocks, this test runs 6: pools, helm install, bundle, Falco, check, upgrade and uninstall", len(blocks))
	}
	pools, helmInstall, bundle, falco, check, removal := blocks[0], blocks[1], blocks[2], blocks[3], blocks[4], blocks[5]
	quiet := controlplane.NewProcessTB(t.Name())
	t.Cleanup(quiet.RunCleanups)
	cp, err := controlplane.Start(quiet, controlplane.Options{RBAC: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	moduleDir, _ := filepath.Abs("../..")
	home := t.TempDir() // helm's caches and configuration
	run := func(block string, env ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", block)
		cmd.Dir = moduleDir
		cmd.Env = append(os.Environ(), append([]string{"KUBECONFIG=" + cp.Kubeconfig, "HOME=" + home,
			"PATH=" + filepath.Dir(kubectl) + ":" + filepath.Dir(helm) + ":" + os.Getenv("PATH")}, env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("README block failed: %v\n%s\noutput:\n%s", err, block, out)
		}
		return string(out)
	}

	for _, pool := range []string{"trusted", "unknown", "untrusted"} {
		// A node as it joins the cluster: unlabelled, untainted; the README's commands pool it.
		if _, err := controlplane.CreateNode(ctx, cp.Client, controlplane.NodeSpec{Name: "node-" + pool}); err != nil {
			t.Fatal(err)
		}
		run(pools, "NODE=node-"+pool, "POOL="+pool)
	}
	run(helmInstall)
	run(falco)

	// The chart installed no kubelet: its StatefulSet's replicas cannot run here. One replica of
	// the real binary stands in, with the configuration the chart installed (its listening
	// addresses and store path moved to loopback and a temporary file) and as the ServiceAccount
	// the chart installed, with only the chart's RBAC.
	cm, err := cp.Client.CoreV1().ConfigMaps("kube-system").Get(ctx, "repute-scheduler-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	config := cm.Data["scheduler-config.yaml"]
	for from, to := range map[string]string{
		`bindAddress: ":8443"`:           `bindAddress: "` + freeLoopbackAddress(t) + `"`,
		`bindAddress: ":8444"`:           `bindAddress: "` + freeLoopbackAddress(t) + `"`,
		`aggregatedBindAddress: ":8445"`: `aggregatedBindAddress: "` + freeLoopbackAddress(t) + `"`,
		"/var/lib/repute/repute.db":      filepath.Join(t.TempDir(), "repute.db"),
	} {
		if !strings.Contains(config, from) {
			t.Fatalf("the installed configuration has no %s", from)
		}
		config = strings.ReplaceAll(config, from, to)
	}
	kubeconfig := filepath.Join(t.TempDir(), "repute-scheduler.kubeconfig")
	if err := cp.ServiceAccountKubeconfig(ctx, "kube-system", "repute-scheduler", kubeconfig); err != nil {
		t.Fatal(err)
	}
	config = strings.Replace(config, "leaderElection:\n", "clientConnection:\n  kubeconfig: "+kubeconfig+"\nleaderElection:\n", 1)
	cmd, stderr, exited := startBinary(t, schedulerBinary(t), config)
	out := run(check)
	if !strings.Contains(out, "pool unknown") {
		// The placement may trail kubectl run: ask again until it is bound.
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, bindTimeout, true, func(ctx context.Context) (bool, error) {
			p, err := cp.Client.CoreV1().Pods("default").Get(ctx, "repute-check", metav1.GetOptions{})
			return err == nil && p.Spec.NodeName != "", nil
		})
		if err != nil {
			t.Fatalf("the check pod was not placed: %v\n%s\nscheduler log:\n%s", err, out, tail(stderr.String(), 30))
		}
		out = run(check[strings.LastIndex(check, "kubectl get pod"):])
	}
	if !strings.Contains(out, "pool unknown: tier unknown") {
		t.Errorf("the check printed %q, want the placement of an unknown image", out)
	}
	// The scheduler, with only the chart's RBAC, made the snapshot's key, kept its certificate
	// in a Secret and put the CA in the APIService's caBundle (no Service endpoint answers here).
	if _, err := cp.Client.CoreV1().Secrets("kube-system").Get(ctx, "repute-mirror-key", metav1.GetOptions{}); err != nil {
		t.Errorf("the snapshot's key: %v", err)
	}
	var caBundle string
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		caBundle = run("kubectl get apiservice v1.audit.repute.dev -o jsonpath='{.spec.caBundle}'")
		return caBundle != "", nil
	}); err != nil {
		t.Fatalf("the scheduler never set the APIService's caBundle\nscheduler log:\n%s", tail(stderr.String(), 30))
	}
	if kept := run("kubectl -n kube-system get secret repute-audit-tls -o jsonpath='{.data.ca\\.crt}'"); kept != caBundle {
		t.Errorf("the APIService's caBundle %q is not the kept certificate's CA %q", caBundle, kept)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	<-exited

	run(removal)
	for _, made := range []string{"repute-audit-tls", "repute-mirror-key"} {
		if _, err := cp.Client.CoreV1().Secrets("kube-system").Get(ctx, made, metav1.GetOptions{}); err == nil {
			t.Errorf("the README's removal left the Secret %s the scheduler made", made)
		}
	}
	if _, err := cp.Client.RbacV1().ClusterRoles().Get(ctx, "repute-auditor", metav1.GetOptions{}); err == nil {
		t.Error("helm uninstall left the ClusterRole repute-auditor")
	}
	run(bundle)
	for _, get := range []func() error{
		func() error {
			_, err := cp.Client.AppsV1().StatefulSets("kube-system").Get(ctx, "repute-scheduler", metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := cp.Client.RbacV1().ClusterRoles().Get(ctx, "repute-auditor", metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); err != nil {
			t.Errorf("after the bundle: %v", err)
		}
	}
	if out := run("kubectl get reputationpolicy default -o name"); strings.TrimSpace(out) != "reputationpolicy.repute.dev/default" {
		t.Errorf("after the bundle, the policy: %q", out)
	}
}
