package policy

import (
	"strings"
	"testing"

	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/reputation"
)

func TestCompile(t *testing.T) {
	tests := []struct {
		name      string
		spec      *v1alpha1.PolicySpec
		wantError string
		check     func(t *testing.T, c *Compiled)
	}{
		{name: "empty spec takes the args' defaults", spec: &v1alpha1.PolicySpec{}, check: func(t *testing.T, c *Compiled) {
			if c.Policy.BaseScore != reputation.DefaultBaseScore || !c.Policy.Signature.RequireForTrusted {
				t.Errorf("defaults not applied: %+v", c.Policy)
			}
		}},
		{name: "nil spec is the empty one", spec: nil, check: func(t *testing.T, c *Compiled) {
			empty, _ := Compile(&v1alpha1.PolicySpec{})
			if c.Policy.Version() != empty.Policy.Version() {
				t.Errorf("version %s, want %s", c.Policy.Version(), empty.Policy.Version())
			}
		}},
		{name: "out of range", spec: &v1alpha1.PolicySpec{BaseScore: ptr.To[int32](-1)}, wantError: "spec.baseScore"},
		{name: "bad rule", spec: &v1alpha1.PolicySpec{Origin: v1alpha1.OriginPolicy{Rules: []v1alpha1.OriginRule{{Pattern: "nope"}}}}, wantError: "spec.origin.rules[0].pattern"},
		{name: "key that does not parse", spec: &v1alpha1.PolicySpec{Signature: v1alpha1.SignaturePolicy{Keys: []v1alpha1.SigningKey{{Name: "ops", PublicKey: "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"}}}},
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
