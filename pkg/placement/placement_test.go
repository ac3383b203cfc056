package placement

import (
	"strings"
	"testing"
	"unicode/utf8"

	v1 "k8s.io/api/core/v1"

	"github.com/repute-dev/repute/reputation"
)

const pulled = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

// What runs is what counts: a container whose spec names a tag is placed by the digest the
// kubelet reports it pulled too, so a tag moved between verification and pull is caught.
func TestResolveCountsTheDigestThatRuns(t *testing.T) {
	verdicts := map[string]*reputation.Verdict{
		"reg.example/team/app:v1":           {Tier: reputation.TierTrusted, Score: 90},
		"reg.example/team/app@" + pulled:    {Tier: reputation.TierUnknown, Score: 50},
		"reg.example/team/pinned@" + pulled: {Tier: reputation.TierTrusted, Score: 90},
	}
	tests := []struct {
		name     string
		spec     string
		imageID  string
		wantTier reputation.Tier
		wantMiss int
	}{
		{"not running yet", "reg.example/team/app:v1", "", reputation.TierTrusted, 0},
		{"the tag moved before the pull", "reg.example/team/app:v1", "reg.example/team/app@" + pulled, reputation.TierUnknown, 0},
		{"pinned: the digest is what was verified", "reg.example/team/pinned@" + pulled, "reg.example/team/pinned@" + pulled, reputation.TierTrusted, 0},
		{"a pulled digest never assessed", "reg.example/team/app:v1", "docker-pullable://reg.example/team/app@sha256:" + "c" + pulled[8:], reputation.TierUnknown, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &v1.Pod{Spec: v1.PodSpec{Containers: []v1.Container{{Name: "app", Image: tt.spec}}}}
			if tt.imageID != "" {
				pod.Status.ContainerStatuses = []v1.ContainerStatus{{Name: "app", ImageID: tt.imageID}}
			}
			p := Resolve(pod, func(image string) *reputation.Verdict { return verdicts[image] })
			if p.Tier != tt.wantTier || p.Missing != tt.wantMiss {
				t.Errorf("tier %s, missing %d; want %s, %d", p.Tier, p.Missing, tt.wantTier, tt.wantMiss)
			}
		})
	}
}

func TestKubeletCannotSet(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"node-restriction.kubernetes.io/repute-pool", true},
		{"pools.node-restriction.kubernetes.io/repute", true},
		{"repute.dev/pool", false},
		{"evil-node-restriction.kubernetes.io/pool", false},
		{"node-restriction.kubernetes.io", false},
		{"node-restriction.kubernetes.io.evil.com/pool", false},
	}
	for _, tt := range tests {
		if got := KubeletCannotSet(tt.key); got != tt.want {
			t.Errorf("KubeletCannotSet(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

// The explanation annotation says pool, tier, score and reason, and never exceeds its bound,
// cutting between runes.
func TestExplanationIsBounded(t *testing.T) {
	verdict := func(reason string) *reputation.Verdict {
		return &reputation.Verdict{Tier: reputation.TierUntrusted, Score: 30, DecidedBy: reason}
	}
	tests := []struct {
		name     string
		p        Placement
		want     string // prefix
		wantFull bool
	}{
		{"short", Placement{Tier: reputation.TierUntrusted, Score: 30, Image: "quay.io/x/y:1", Verdict: verdict("unsigned")},
			"pool untrusted: tier untrusted, score 30; quay.io/x/y:1: ", true},
		{"long, multibyte at the cut", Placement{Tier: reputation.TierUntrusted, Score: 30, Image: "quay.io/x/y:1", Verdict: verdict(strings.Repeat("é", 2000))},
			"pool untrusted: tier untrusted, score 30; quay.io/x/y:1: ", false},
		{"missing verdicts", Placement{Tier: reputation.TierUnknown, Score: 50, Missing: 2},
			"pool unknown: tier unknown, score 50; 2 image(s) without a verdict yet", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.p.Explanation(string(tt.p.Tier))
			if !strings.HasPrefix(got, tt.want) || len(got) > maxExplanationBytes || !utf8.ValidString(got) {
				t.Fatalf("Explanation = %q (%d bytes), want a valid string starting %q within %d bytes", got, len(got), tt.want, maxExplanationBytes)
			}
			if full := !strings.HasSuffix(got, "…"); full != tt.wantFull {
				t.Errorf("Explanation = %q: cut %v, want cut %v", got, !full, !tt.wantFull)
			}
		})
	}
}
