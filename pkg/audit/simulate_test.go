package audit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
)

func TestSimulationRequests(t *testing.T) {
	s, _ := newTestServer(t)
	var got *v1alpha1.ReputationPolicy
	s.Simulate = func(_ context.Context, p *v1alpha1.ReputationPolicy) (*Simulation, error) {
		got = p
		return &Simulation{SimulationResult: SimulationResult{CurrentVersion: "p-old", ProposedVersion: "p-new"}}, nil
	}
	s.Authorizer = authorizerFor(rules{"operator": {"create simulations"}, "auditor": {"list images"}})
	s.Authenticator = tokenAuthn{"operator-token": "operator", "auditor-token": "auditor"}
	valid := `{"apiVersion":"repute.dev/v1alpha1","kind":"ReputationPolicy","metadata":{"name":"p"},"spec":{"baseScore":60}}`
	tests := []struct {
		name, method, token, contentType, body string
		wantCode                               int
		wantMessage                            string
	}{
		{"simulated", http.MethodPost, "operator-token", "application/json", valid, http.StatusOK, ""},
		{"anonymous", http.MethodPost, "", "application/json", valid, http.StatusUnauthorized, "Unauthorized"},
		{"auditor without the grant", http.MethodPost, "auditor-token", "application/json", valid, http.StatusForbidden, `cannot create resource "simulations"`},
		{"GET is not a simulation", http.MethodGet, "operator-token", "", "", http.StatusMethodNotAllowed, ""},
		{"misspelled field", http.MethodPost, "operator-token", "application/json", `{"kind":"ReputationPolicy","spec":{"baseScroe":60}}`, http.StatusBadRequest, `unknown field "baseScroe"`},
		{"two policies in one body", http.MethodPost, "operator-token", "application/json", valid + valid, http.StatusBadRequest, "more follows"},
		{"another kind", http.MethodPost, "operator-token", "application/json", `{"kind":"ConfigMap","spec":{}}`, http.StatusBadRequest, "want a ReputationPolicy"},
		{"YAML is not JSON", http.MethodPost, "operator-token", "application/yaml", "spec: {}", http.StatusUnsupportedMediaType, "application/json"},
		{"too large", http.MethodPost, "operator-token", "application/json", `{"kind":"ReputationPolicy","spec":{},"x":"` + strings.Repeat("a", MaxSimulationBodyBytes) + `"}`, http.StatusRequestEntityTooLarge, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got = nil
			r := httptest.NewRequest(tt.method, PathPrefix+"/simulations", strings.NewReader(tt.body))
			if tt.token != "" {
				r.Header.Set("Authorization", "Bearer "+tt.token)
			}
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != tt.wantCode {
				t.Fatalf("%s = %d %s, want %d", tt.method, w.Code, w.Body, tt.wantCode)
			}
			if tt.wantCode == http.StatusOK {
				sim := decode[Simulation](t, w)
				if sim.Kind != "Simulation" || sim.ProposedVersion != "p-new" || got == nil || *got.Spec.BaseScore != 60 {
					t.Errorf("simulation %+v from policy %+v", sim, got)
				}
				return
			}
			if got != nil {
				t.Error("a refused request reached the simulator")
			}
			if tt.wantMessage != "" {
				if st := decode[metav1.Status](t, w); !strings.Contains(st.Message, tt.wantMessage) {
					t.Errorf("message %q, want %q", st.Message, tt.wantMessage)
				}
			}
		})
	}
}
