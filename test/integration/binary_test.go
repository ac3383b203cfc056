package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/deploy"
	"github.com/repute-dev/repute/test/controlplane"
)

var (
	buildOnce   sync.Once
	builtBinary string
	buildErr    error
)

// schedulerBinary returns the repute-scheduler binary: $REPUTE_SCHEDULER_BIN (make test builds
// it), or one built once per test run from ./cmd/repute-scheduler.
func schedulerBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("REPUTE_SCHEDULER_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "repute-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBinary = filepath.Join(dir, "repute-scheduler")
		out, err := exec.Command("go", "build", "-o", builtBinary, "github.com/repute-dev/repute/cmd/repute-scheduler").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building repute-scheduler: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBinary
}

// startBinary runs the scheduler binary with a config file; stderr is captured.
func startBinary(t *testing.T, bin, config string, flags ...string) (*exec.Cmd, *controlplane.LockedBuffer, <-chan error) {
	t.Helper()
	return startBinaryWithEnv(t, bin, config, nil, flags...)
}

// startBinaryWithEnv is startBinary with variables added to the process's environment.
func startBinaryWithEnv(t *testing.T, bin, config string, env []string, flags ...string) (*exec.Cmd, *controlplane.LockedBuffer, <-chan error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &controlplane.LockedBuffer{}
	if len(flags) == 0 {
		flags = []string{"--secure-port=0"}
	}
	cmd := exec.Command(bin, append([]string{"--config=" + path, "-v=2"}, flags...)...)
	cmd.Stderr = stderr
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		exited <- cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	return cmd, stderr, exited
}

// The built binary, started as a process with a config file, takes its own leader-election
// lease, schedules pods into their pools, and serves Repute's metrics on kube-scheduler's
// secure /metrics, behind the cluster's authentication and authorization.
func TestBinarySchedulesPods(t *testing.T) {
	bin := schedulerBinary(t)
	e := newEnv(t)
	trustedNode := e.node("trusted", "trusted")
	untrustedNode := e.node("untrusted", "untrusted")
	cfg := e.config()
	cfg.LeaderElect = true
	securePort := freeLoopbackAddress(t)
	_, port, _ := strings.Cut(securePort, ":")
	_, stderr, exited := startBinary(t, bin, cfg.Render(), "--bind-address=127.0.0.1", "--secure-port="+port,
		"--authentication-kubeconfig="+cluster.Kubeconfig, "--authorization-kubeconfig="+cluster.Kubeconfig)

	e.create(e.pod("trusted", trustedImage))
	e.create(e.pod("untrusted", untrustedImage))
	select {
	case err := <-exited:
		t.Fatalf("repute-scheduler exited early: %v\n%s", err, stderr.String())
	default:
	}
	if got := e.waitBound("trusted", 60*time.Second); got != trustedNode {
		t.Errorf("trusted pod on %s, want %s", got, trustedNode)
	}
	if got := e.waitBound("untrusted", bindTimeout); got != untrustedNode {
		t.Errorf("untrusted pod on %s, want %s", got, untrustedNode)
	}

	// Its lease is its own, never kube-system/kube-scheduler.
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		lease, err := e.client.CoordinationV1().Leases("kube-system").Get(ctx, e.schedulerName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "", nil
	})
	if err != nil {
		t.Errorf("no held lease kube-system/%s: %v", e.schedulerName, err)
	}
	if _, err := e.client.CoordinationV1().Leases("kube-system").Get(e.ctx, "kube-scheduler", metav1.GetOptions{}); err == nil {
		t.Errorf("the default kube-scheduler lease exists: Repute must not take it")
	}

	// Placements are counted by PostBind, which may trail the binding a moment.
	var text string
	err = wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		text = scrapeMetrics(t, "https://"+securePort+"/metrics", cluster.Config.BearerToken)
		return strings.Contains(text, `repute_pods_placed_total{tier="untrusted"} 1`), nil
	})
	for _, want := range []string{
		`repute_pods_placed_total{tier="trusted"} 1`,
		`repute_pods_placed_total{tier="untrusted"} 1`,
		`repute_verdicts{tier="trusted"} 1`,
		`repute_verdicts{tier="untrusted"} 1`,
		`repute_verdict_cache_size 2`,
		`repute_evaluations_total{result="complete"} 2`,
		`repute_evaluation_duration_seconds_count 2`,
		`repute_policy_reloads_total{result="applied"} 1`,
		"scheduler_schedule_attempts_total", // kube-scheduler's own, from the same endpoint
		// The engine's queue: both images waited in it, and neither waits now.
		`repute_evaluation_queue_depth 0`,
		`repute_evaluation_queue_wait_seconds_count 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("repute metrics:\n%s", grepLines(text, "repute_"))
	}
	if anonymous := scrapeStatus(t, "https://"+securePort+"/metrics", ""); anonymous != http.StatusForbidden && anonymous != http.StatusUnauthorized {
		t.Errorf("anonymous /metrics = %d, want 401 or 403", anonymous)
	}

	// What deploy/monitoring ships works against this scrape: every series its alerts and
	// dashboard read is served, and its ClusterRole is what a scraper needs, no less.
	for _, name := range shippedMonitoringMetrics(t) {
		if !strings.Contains(text, "\n"+name+"{") && !strings.Contains(text, "\n"+name+" ") {
			t.Errorf("deploy/monitoring reads %s, which /metrics does not serve", name)
		}
	}
	e.installShippedClusterRole("repute-metrics-reader")
	e.serviceAccount("prometheus")
	if code := scrapeStatus(t, "https://"+securePort+"/metrics", e.token("prometheus")); code != http.StatusForbidden {
		t.Errorf("/metrics for a service account without the role = %d, want 403", code)
	}
	e.bindClusterRole("repute-metrics-reader", "prometheus")
	if code := scrapeStatus(t, "https://"+securePort+"/metrics", e.token("prometheus")); code != http.StatusOK {
		t.Errorf("/metrics for a service account with repute-metrics-reader = %d, want 200", code)
	}
}

// seriesName is a metric name where a PromQL selector starts: name{.
var seriesName = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)

// shippedMonitoringMetrics lists the metrics deploy/monitoring's alert rules and dashboard
// select, leaving out up (Prometheus makes it, not the target).
func shippedMonitoringMetrics(t *testing.T) []string {
	t.Helper()
	var exprs []string
	rules, err := deploy.Files.ReadFile("monitoring/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct{ Expr string }
			}
		}
	}
	if err := yaml.Unmarshal(rules, &rule); err != nil {
		t.Fatal(err)
	}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	dashboard, err := deploy.Files.ReadFile("monitoring/repute-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dashboard, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			exprs = append(exprs, target.Expr)
		}
	}
	seen := map[string]bool{"up": true}
	var names []string
	for _, expr := range exprs {
		for _, m := range seriesName.FindAllStringSubmatch(expr, -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				names = append(names, m[1])
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %v in deploy/monitoring's queries", names)
	}
	return names
}

// scrapeMetrics reads a /metrics endpoint as Prometheus would, with a bearer token.
func scrapeMetrics(t *testing.T, url, token string) string {
	t.Helper()
	body, code := scrape(t, url, token)
	if code != http.StatusOK {
		t.Fatalf("GET %s = %d: %s", url, code, body)
	}
	return body
}

func scrapeStatus(t *testing.T, url, token string) int {
	_, code := scrape(t, url, token)
	return code
}

func scrape(t *testing.T, url, token string) (string, int) {
	t.Helper()
	// The scheduler's serving certificate is self-signed at start, as in a default deployment.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp.StatusCode
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// What the runtime cannot start with stops the binary too, after New has returned: here the
// Falco endpoint's address is taken.
func TestBinaryExitsWhenAnEndpointCannotListen(t *testing.T) {
	bin := schedulerBinary(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	e := newEnv(t)
	cfg := e.config()
	cfg.Falco = controlplane.FalcoArgs{BindAddress: taken.Addr().String(), TokenFile: filepath.Join(t.TempDir(), "token")}
	_, stderr, exited := startBinary(t, bin, cfg.Render())
	waitFailed(t, exited, 60*time.Second)
	if msg := stderr.String(); !strings.Contains(msg, "address already in use") || !strings.Contains(msg, "Repute could not start") {
		t.Errorf("stderr does not say why:\n%s", msg)
	}
}

// waitFailed waits for the binary to exit with an error.
func waitFailed(t *testing.T, exited <-chan error, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-exited:
		if err == nil {
			t.Fatal("repute-scheduler exited 0")
		}
	case <-time.After(timeout):
		t.Fatal("repute-scheduler kept running")
	}
}

// Bad plugin args stop the binary at startup, with a message that names the field.
func TestBinaryRejectsBadArgs(t *testing.T) {
	bin := schedulerBinary(t)
	tests := []struct {
		name   string
		mutate func(*controlplane.SchedulerConfig)
		// wantStderr is what the error must say; klog quotes the error, so quotes in it arrive
		// escaped.
		wantStderr string
	}{
		{"misspelled field", func(c *controlplane.SchedulerConfig) { c.ExtraArgs = "      poolLabelKy: repute.dev/typo" }, `unknown field \"poolLabelKy\"`},
		{"invalid tier", func(c *controlplane.SchedulerConfig) {
			c.OriginRules = append(c.OriginRules, controlplane.OriginRule{Pattern: "registry.internal/*", Tier: "sometimes"})
		}, "policy.origin.rules[3].tier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.config()
			tt.mutate(&cfg)
			_, stderr, exited := startBinary(t, bin, cfg.Render())
			waitFailed(t, exited, 30*time.Second)
			if msg := stderr.String(); !strings.Contains(msg, tt.wantStderr) {
				t.Errorf("stderr does not contain %s:\n%s", tt.wantStderr, msg)
			}
		})
	}
}
