package demo

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

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
	for _, row := range []string{
		`(?m)^api\s+127\.0\.0\.1:\d+/platform/api@sha256:\S+\s+trusted\s+90\s+trusted-\d\s+trusted\s+score 90 ≥ trusted threshold 70 \[origin \+10, signature verified \+30\]$`,
		`(?m)^web\s+127\.0\.0\.1:\d+/platform/web:v1\s+unknown\s+50\s+unknown-1\s+unknown\s+.*signature absent \+0\]$`,
		`(?m)^worker\s+127\.0\.0\.1:\d+/platform/worker@sha256:\S+\s+unknown\s+50\s+unknown-1\s+unknown\s+.*signature unverified -10\]$`,
		`(?m)^cache\s+127\.0\.0\.1:\d+/platform/cache@sha256:\S+\s+untrusted\s+60\s+untrusted-\d\s+untrusted\s+signature invalid → untrusted`,
		`(?m)^api-with-untrusted-init\s+ghcr\.io/unknown/setup:1\s+untrusted\s+40\s+untrusted-\d\s+untrusted\s+origin\.rules\[2\] \* → untrusted`,
		`(?m)^miner\s+quay\.io/evil/miner:latest\s+untrusted\s+40\s+untrusted-\d\s+untrusted\s`,
		`(?m)^miner-claiming-trust\s+quay\.io/evil/miner:latest\s+untrusted\s+40\s+untrusted-\d\s+untrusted\s`,
		`(?m)^billing\s+127\.0\.0\.1:\d+/platform/billing@sha256:\S+\s+untrusted\s+\d+\s+untrusted-\d\s+untrusted\s+dependencies\.maxCritical → untrusted`,
		`(?m)^shop\s+127\.0\.0\.1:\d+/platform/shop@sha256:\S+\s+trusted\s+90\s+trusted-\d\s+trusted\s+score 90`,
		`(?m)^shop-2\s+127\.0\.0\.1:\d+/platform/shop@sha256:\S+\s+untrusted\s+\d+\s+untrusted-\d\s+untrusted\s+behavior\.untrustedPriority Critical: "Terminal shell in container" within one half-life .*behavior Terminal shell in container -60\]$`,
		`(?m)^redis\s+redis:7\.2\s+unknown\s+40\s+unknown-1\s+unknown\s+origin\.rules\[1\] docker\.io/\* → unknown`,
		`Repute relabelled it repute\.dev/tier=untrusted as it bound it`,
		// The auditor's view, read through the RBAC-guarded audit API.
		`(?m)^\$ reputectl images\nIMAGE\s+TIER\s+SCORE\s+DECIDED BY\s+AGE\n127\.0\.0\.1:\d+/platform/api@sha256:[0-9a-f]{64}\s+trusted\s+90\s`,
		`(?m)^Tier:\s+untrusted\nScore:\s+30\nDecided by:\s+behavior\.untrustedPriority Critical`,
		`(?m)^  behavior\s+-60\s+untrusted\s+falco Critical "Terminal shell in container" ×1.* in pod demo/shop container main`,
		`(?m)^\$ reputectl history \S+shop@\S+\nTIME.*\n\S+\s+trusted\s+90\s.*\n\S+\s+untrusted\s+30\s`,
		`(?m)^\S+\s+demo\s+shop-2\s+placed\s+untrusted-\d\s+untrusted\s+untrusted\s+30\s`,
		// The live move: storefront's pod evicted from the trusted pool, its replacement placed
		// in the untrusted one; shop, with no controller, reported.
		`(?m)^  storefront-\S+ \(Deployment storefront, same image as shop\) evicted: runs in pool trusted on trusted-\d but its tier is now untrusted \(score 30\): .*Terminal shell in container`,
		`(?m)^  its replacement storefront-\S+, created by the ReplicaSet controller, was placed in pool untrusted on untrusted-\d$`,
		`(?m)^  shop: not evicted: no controller would recreate it`,
		`(?m)^\S+\s+demo\s+storefront-\S+\s+evicted\s+trusted-\d\s+trusted\s+untrusted\s+30\s`,
		// The operator's what-if: the diff is the one weight, and the simulation names what moves.
		`(?m)^-    weight: 10\n\+    weight: -15$`,
		`(?m)^  127\.0\.0\.1:\d+/platform/api@sha256:[0-9a-f]{64}\s+trusted → unknown\s+90 → 65\s+score 65 between thresholds 30 and 70$`,
		`(?m)^  127\.0\.0\.1:\d+/platform/web:v1\s+unknown → untrusted\s+50 → 25\s`,
		`(?m)^  demo\s+api\s+Pending\s+trusted-\d\s+trusted → unknown\s`,
		`(?m)^  demo\s+worker\s+Pending\s+unknown-1\s+unknown → untrusted\s`,
	} {
		if !regexp.MustCompile(row).MatchString(out.String()) {
			t.Errorf("demo output has no row matching %s\n%s", row, out.String())
		}
	}
}
