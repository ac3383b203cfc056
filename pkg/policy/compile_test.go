package policy

import (
	"strings"
	"testing"

	"k8s.io/utils/ptr"

	configv1 "github.com/repute-dev/repute/pkg/apis/config/v1"
	"github.com/repute-dev/repute/reputation"
)

func TestCompile(t *testing.T) {
	tests := []struct {
		name      string
		spec      *configv1.PolicySpec
		wantError string
		check     func(t *testing.T, c *Compiled)
	}{
		{name: "empty spec takes the args' defaults", spec: &configv1.PolicySpec{}, check: func(t *testing.T, c *Compiled) {
			if c.Policy.BaseScore != reputation.DefaultBaseScore || !c.Policy.Signature.RequireForTrusted {
				t.Errorf("defaults not applied: %+v", c.Policy)
			}
		}},
		{name: "nil spec is the empty one", spec: nil, check: func(t *testing.T, c *Compiled) {
			empty, _ := Compile(&configv1.PolicySpec{})
			if c.Policy.Version() != empty.Policy.Version() {
				t.Errorf("version %s, want %s", c.Policy.Version(), empty.Policy.Version())
			}
		}},
		{name: "out of range", spec: &configv1.PolicySpec{BaseScore: ptr.To[int32](-1)}, wantError: "spec.baseScore"},
		{name: "bad rule", spec: &configv1.PolicySpec{Origin: &configv1.OriginPolicy{Rules: []configv1.OriginRule{{Pattern: "nope"}}}}, wantError: "spec.origin.rules[0].pattern"},
		{name: "key that does not parse", spec: &configv1.PolicySpec{Signature: &configv1.SignaturePolicy{Keys: []configv1.SigningKey{{Name: "ops", PublicKey: "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"}}}},
			wantError: "spec.signature.keys[0].publicKey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before string
			if tt.spec != nil && tt.spec.BaseScore != nil {
				before = "set"
			}
			c, errs := Compile(tt.spec)
			if tt.wantError != "" {
				if len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), tt.wantError) {
					t.Fatalf("errors %v, want one naming %s", errs, tt.wantError)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			tt.check(t, c)
			if tt.spec != nil && (tt.spec.BaseScore != nil) != (before == "set") {
				t.Error("Compile defaulted the caller's spec in place")
			}
		})
	}
}
