package demo

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/repute-dev/repute/pkg/reputectl"
	"github.com/repute-dev/repute/test/controlplane"

	"github.com/repute-dev/repute/test/oci"
)

// The README's first command, run as a test: every pod lands in the pool of its tier, and the
// table gives the reason.
func TestDemo(t *testing.T) {
	oci.CosignForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, Options{Out: &out}); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	// A reason wrapped under its pod is one line again.
	joined := strings.ReplaceAll(out.String(), "\n"+strings.Repeat(" ", len(reasonIndent)), " ")
	// A pod's row, and under it why, its wrapped lines joined.
	placed := func(pod, tier, score, node, image, why string) string {
		return `(?m)^` + pod + `\s+` + tier + `\s+` + score + `\s+` + node + `\s+` + tier + `\s+` + image + `\n    why: ` + why
	}
	const platform = `127\.0\.0\.1:\d+/platform/`
	for _, row := range []string{
		placed("api", "trusted", "90", `trusted-\d`, platform+`api@sha256:[0-9a-f]{12}…`, `score 90 ≥ trusted threshold 70 \[origin \+10, signature verified \+30\]$`),
		placed("web", "unknown", "50", "unknown-1", platform+`web:v1`, `.*signature absent \+0\]$`),
		placed("worker", "unknown", "50", "unknown-1", platform+`worker@sha256:\S+`, `.*signature unverified -10\]$`),
		placed("cache", "untrusted", "60", `untrusted-\d`, platform+`cache@sha256:\S+`, `signature invalid → untrusted`),
		placed("api-with-untrusted-init", "untrusted", "40", `untrusted-\d`, `ghcr\.io/unknown/setup:1`, `origin\.rules\[2\] \* → untrusted`),
		placed("miner", "untrusted", "40", `untrusted-\d`, `quay\.io/evil/miner:latest`, ``),
		placed("miner-claiming-trust", "untrusted", "40", `untrusted-\d`, `quay\.io/evil/miner:latest`, ``),
		placed("billing", "untrusted", `\d+`, `untrusted-\d`, platform+`billing@sha256:\S+`, `dependencies\.maxCritical → untrusted`),
		placed("shop", "trusted", "90", `trusted-\d`, platform+`shop@sha256:\S+`, `score 90`),
		placed("shop-2", "untrusted", `\d+`, `untrusted-\d`, platform+`shop@sha256:\S+`,
			`behavior\.untrustedPriority Critical: "Terminal shell in container" within one half-life .*behavior Terminal shell in container -60\]$`),
		placed("redis", "unknown", "40", "unknown-1", `redis:7\.2`, `origin\.rules\[1\] docker\.io/\* → unknown`),
		`Repute relabelled it repute\.dev/tier=untrusted as it bound it`,
		`There is no kubelet here: pods are bound to their nodes, and stay Pending, never running`,
		`the policy is the ReputationPolicy "default" \(CRD installed\)`,
		// The auditor's view, read through the RBAC-guarded audit API; digests cut in tables.
		`(?m)^\$ reputectl images\nIMAGE\s+TIER\s+SCORE\s+DECIDED BY\s+AGE\n` + platform + `api@sha256:[0-9a-f]{12}…\s+trusted\s+90\s`,
		`(?m)^Tier:\s+untrusted\nScore:\s+30\nDecided by:\s+behavior\.untrustedPriority Critical`,
		`(?m)^  behavior\s+-60\s+untrusted\s+falco Critical "Terminal shell in container" ×1`,
		`(?m)^\$ reputectl history sha256:[0-9a-f]{64}\nTIME.*\n\S+\s+trusted\s+90\s.*\n\S+\s+untrusted\s+30\s`,
		`(?m)^\S+\s+demo\s+shop-2\s+placed\s+untrusted-\d\s+untrusted\s+untrusted\s+30$`,
		// The live move: storefront's pod evicted from the trusted pool, its replacement placed
		// in the untrusted one; shop, with no controller, reported.
		`(?m)^  storefront-\S+ \(Deployment storefront, same image as shop\) evicted:\s+runs\s+in\s+pool\s+trusted\s+on\s+trusted-\d\s+but\s+its\s+tier\s+is\s+now\s+untrusted\s+\(score\s+30\):(?s:.*)Terminal shell in container`,
		`(?m)^  its replacement storefront-\S+, made by the ReplicaSet controller, is in pool untrusted on untrusted-\d$`,
		`(?m)^  shop: not evicted: no controller would recreate it`,
		`(?m)^\S+\s+demo\s+storefront-\S+\s+evicted\s+trusted-\d\s+trusted\s+untrusted\s+30$`,
		// The operator's what-if: the diff is the one weight, and the simulation names what moves.
		`(?m)^-    weight: 10\n\+    weight: -15$`,
		`(?m)^  ` + platform + `api@sha256:[0-9a-f]{12}…\s+trusted → unknown\s+90 → 65\s+score 65 between thresholds`,
		`(?m)^  ` + platform + `web:v1\s+unknown → untrusted\s+50 → 25\s`,
		`(?m)^  demo\s+api\s+Pending\s+trusted-\d\s+trusted → unknown\s`,
		`(?m)^  demo\s+worker\s+Pending\s+unknown-1\s+unknown → untrusted\s`,
		// ... then applied live: status, Event, and the pods the simulation named, relabelled.
		`(?m)^  status: generation 2 Applied=True, policy p-[0-9a-f]+: in force; 9 images re-scored from memory, 3 changed tier$`,
		`(?m)^  kubectl describe reputationpolicy default: Normal Applied in force; .*3 changed tier$`,
		`(?m)^    api\s+trusted → unknown\n    web\s+unknown → untrusted\n    worker\s+unknown → untrusted$`,
		// The scheduler's own /metrics.
		`(?m)^  repute_falco_alerts_total\{reason="recorded",result="accepted"\} 1$`,
		`(?m)^  repute_pods_placed_total\{tier="untrusted"\} \d+$`,
		`(?m)^  repute_policy_reloads_total\{result="applied"\} 2$`,
	} {
		if !regexp.MustCompile(row).MatchString(joined) {
			t.Errorf("demo output has no row matching %s\n%s", row, out.String())
		}
	}
	// It fits a 120-column terminal.
	for i, line := range strings.Split(out.String(), "\n") {
		if n := utf8.RuneCountInString(line); n > maxWidth {
			t.Errorf("line %d is %d columns wide, over %d: %s", i+1, n, maxWidth, line)
		}
	}
}

// make demo-keep leaves the demo running and suggests commands to try next; each of them works
// against it: kubectl (the real one, built by make test) with the demo's kubeconfig, and
// reputectl as the auditor.
func TestDemoKeepSuggestsCommandsThatWork(t *testing.T) {
	oci.CosignForTest(t)
	kubectl := controlplane.CLIForTest(t, "kubectl")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := &controlplane.LockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Out: out, Keep: true, KubeconfigPath: filepath.Join(t.TempDir(), "kubeconfig")})
	}()
	var suggested []string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		select {
		case err := <-done:
			return false, fmt.Errorf("the demo ended: %v\n%s", err, out.String())
		default:
		}
		_, next, ok := strings.Cut(out.String(), "Try next:\n")
		if !ok || !strings.Contains(next, "Ctrl-C") {
			return false, nil
		}
		for _, line := range strings.Split(next, "\n") {
			if c := strings.TrimSpace(line); strings.HasPrefix(c, "kubectl ") || strings.HasPrefix(c, "go run ./cmd/reputectl ") {
				suggested = append(suggested, c)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(suggested) < 5 {
		t.Fatalf("demo-keep suggests %d commands, want kubectl and reputectl ones:\n%s", len(suggested), out.String())
	}
	for _, c := range suggested {
		c, _, _ = strings.Cut(c, "   #") // the explanation after the command
		args := strings.Fields(c)
		var got bytes.Buffer
		var err error
		if args[0] == "kubectl" {
			cmd := exec.CommandContext(ctx, kubectl, args[1:]...)
			cmd.Stdout, cmd.Stderr = &got, &got
			err = cmd.Run()
		} else { // go run ./cmd/reputectl ARGS: reputectl in this process
			cmd := reputectl.NewCommand("reputectl", &got, &got)
			cmd.SetArgs(args[3:])
			err = cmd.ExecuteContext(ctx)
		}
		if err != nil || got.Len() == 0 || strings.Contains(got.String(), "No resources found") {
			t.Errorf("%s: %v\n%s", c, err, got.String())
		}
	}
	cancel()
	<-done
}
