package audit

import (
	"errors"
	"net/url"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
)

// FuzzParseQuery feeds arbitrary query strings to every parser: none may panic, and every
// refusal must be a ParamError, which the API turns into a 400 that names the parameter.
func FuzzParseQuery(f *testing.F) {
	for _, seed := range []string{
		"", "tier=trusted&registry=docker.io&minScore=10&maxScore=90&limit=5",
		"continue=cmVnaXN0cnkuaW50ZXJuYWwvdGVhbS9hcGk", "image=sha256:abc&from=2026-11-22T10:00:00Z&to=2026-11-23T10:00:00Z",
		"namespace=team&pod=api-0&node=n1&uid=1234&tier=untrusted&continue=000000000000000000000000000000ff",
		"%%%", "a=%zz", "limit=99999999999999999999", "tier=trusted&tier=unknown", "continue=-1",
	} {
		f.Add(seed)
	}
	parsers := []func(url.Values) error{
		func(v url.Values) error { _, err := ParseImageQuery(v); return err },
		func(v url.Values) error { _, err := ParseHistoryQuery(v); return err },
		func(v url.Values) error { _, err := ParseDecisionQuery(v); return err },
		func(v url.Values) error { _, err := ParsePageQuery(v); return err },
	}
	f.Fuzz(func(t *testing.T, raw string) {
		values, err := ParseRawQuery(raw)
		var pe *ParamError
		if err != nil {
			if !errors.As(err, &pe) {
				t.Fatalf("ParseRawQuery(%q) = %T %v, want a ParamError", raw, err, err)
			}
			return
		}
		for i, parse := range parsers {
			if err := parse(values); err != nil && !errors.As(err, &pe) {
				t.Fatalf("parser %d on %q = %T %v, want a ParamError", i, raw, err, err)
			}
		}
	})
}

// FuzzDecodeProposedPolicy feeds arbitrary bodies to the reader of a proposed policy (the direct
// endpoint's body, the aggregated Simulation's spec.policy): none may panic, every refusal is a
// 400, and what it accepts is a ReputationPolicy.
func FuzzDecodeProposedPolicy(f *testing.F) {
	for _, seed := range []string{
		`{"apiVersion":"repute.dev/v1alpha1","kind":"ReputationPolicy","metadata":{"name":"p"},"spec":{"baseScore":60}}`,
		`{"kind":"ReputationPolicy","spec":{"origin":{"rules":[{"pattern":"*","tier":"untrusted"}]}}}`,
		`{"kind":"ConfigMap"}`, `{"spec":{"baseScroe":1}}`, `{}{}`, `[]`, `null`, ``, `{"spec":{"baseScore":1e999}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := DecodeProposedPolicy(body)
		if err != nil {
			if !apierrors.IsBadRequest(err) {
				t.Fatalf("DecodeProposedPolicy(%q) = %T %v, want a 400", body, err, err)
			}
			return
		}
		if p == nil || (p.Kind != "" && p.Kind != v1alpha1.Kind) {
			t.Fatalf("DecodeProposedPolicy(%q) accepted %+v", body, p)
		}
	})
}
