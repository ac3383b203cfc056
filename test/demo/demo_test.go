package demo

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"
)

// The README's first command, run as a test: every pod lands in the pool of its tier, and the
// table gives the reason.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, Options{Out: &out}); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, row := range []string{
		`(?m)^api\s+127\.0\.0\.1:\d+/platform/api@sha256:\S+\s+trusted\s+75\s+trusted-\d\s+trusted\s+score 75 ≥ trusted threshold 70$`,
		`(?m)^api-by-tag\s+127\.0\.0\.1:\d+/platform/api:v1\s+unknown\s+65\s+unknown-1\s+unknown\s+score 65 between thresholds`,
		`(?m)^api-with-untrusted-init\s+ghcr\.io/unknown/setup:1\s+untrusted\s+40\s+untrusted-\d\s+untrusted\s+origin\.rules\[2\] \* → untrusted$`,
		`(?m)^miner\s+quay\.io/evil/miner:latest\s+untrusted\s+40\s+untrusted-\d\s+untrusted\s`,
		`(?m)^miner-claiming-trust\s+quay\.io/evil/miner:latest\s+untrusted\s+40\s+untrusted-\d\s+untrusted\s`,
		`(?m)^redis\s+redis:7\.2\s+unknown\s+40\s+unknown-1\s+unknown\s+origin\.rules\[1\] docker\.io/\* → unknown$`,
	} {
		if !regexp.MustCompile(row).MatchString(out.String()) {
			t.Errorf("demo output has no row matching %s\n%s", row, out.String())
		}
	}
}
