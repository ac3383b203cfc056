package metrics

import (
	"errors"
	"testing"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"

	"github.com/repute-dev/repute/reputation"
)

func value(t *testing.T, m interface{ Get() (float64, error) }) float64 {
	t.Helper()
	v, err := m.Get()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

type counter struct{ metrics.CounterMetric }
type gauge struct{ metrics.GaugeMetric }

func (c counter) Get() (float64, error) { return testutil.GetCounterMetricValue(c.CounterMetric) }
func (g gauge) Get() (float64, error)   { return testutil.GetGaugeMetricValue(g.GaugeMetric) }

// Each hook moves exactly the series it should; values are read as deltas because the
// registry is process-wide.
func TestHooksMoveTheirSeries(t *testing.T) {
	Register()
	Register() // a second plugin instance must not panic on duplicate registration

	trusted := gauge{Verdicts.WithLabelValues("trusted")}
	unknown := gauge{Verdicts.WithLabelValues("unknown")}
	size := gauge{CacheSize}
	t0, u0, s0 := value(t, trusted), value(t, unknown), value(t, size)
	VerdictChanged("a", nil, &reputation.Verdict{Tier: reputation.TierUnknown})
	VerdictChanged("a", &reputation.Verdict{Tier: reputation.TierUnknown}, &reputation.Verdict{Tier: reputation.TierTrusted})
	VerdictChanged("b", nil, &reputation.Verdict{Tier: reputation.TierTrusted})
	if d := value(t, trusted) - t0; d != 2 {
		t.Errorf("trusted gauge moved %v, want +2", d)
	}
	if d := value(t, unknown) - u0; d != 0 {
		t.Errorf("unknown gauge moved %v, want 0 (one in, one out)", d)
	}
	if d := value(t, size) - s0; d != 2 {
		t.Errorf("cache size moved %v, want +2 (a changed, b is new)", d)
	}
	VerdictForgotten(&reputation.Verdict{Tier: reputation.TierTrusted}) // b: no pod uses it
	if d, ds := value(t, trusted)-t0, value(t, size)-s0; d != 1 || ds != 1 {
		t.Errorf("after forgetting b: trusted moved %v, cache size %v; want +1 and +1", d, ds)
	}

	tests := []struct {
		name       string
		ev         *reputation.Evidence
		incomplete bool
		result     string
		failure    string
	}{
		{"complete and verified", &reputation.Evidence{Signature: &reputation.SignatureEvidence{State: reputation.SignatureVerified}}, false, "complete", ""},
		{"registry down", &reputation.Evidence{Signature: &reputation.SignatureEvidence{State: reputation.SignatureError}}, true, "incomplete", "error"},
		{"signed by a stranger", &reputation.Evidence{Signature: &reputation.SignatureEvidence{State: reputation.SignatureUnverified}}, false, "complete", "unverified"},
		{"bad reference", nil, false, "unassessable", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evals := counter{Evaluations.WithLabelValues(tt.result)}
			before := value(t, evals)
			var failures counter
			var fBefore float64
			if tt.failure != "" {
				failures = counter{VerificationFailures.WithLabelValues(tt.failure)}
				fBefore = value(t, failures)
			}
			Evaluated(tt.ev, nil, 3*time.Millisecond, tt.incomplete)
			if d := value(t, evals) - before; d != 1 {
				t.Errorf("evaluations{result=%s} moved %v, want +1", tt.result, d)
			}
			if tt.failure != "" {
				if d := value(t, failures) - fBefore; d != 1 {
					t.Errorf("verification_failures{kind=%s} moved %v, want +1", tt.failure, d)
				}
			}
		})
	}

	committed, failed := counter{StoreRecords.WithLabelValues("committed")}, counter{StoreRecords.WithLabelValues("failed")}
	c0, f0 := value(t, committed), value(t, failed)
	StoreCommitted(5, time.Millisecond, 7, errors.New("disk full"))
	if value(t, gauge{StoreDegraded}) != 1 || value(t, gauge{StoreBacklog}) != 7 || value(t, failed)-f0 != 5 {
		t.Error("a failed commit must mark the store degraded, set the backlog and count 5 failed records")
	}
	dropped := counter{StoreRecords.WithLabelValues("dropped")}
	d0 := value(t, dropped)
	StoreDropped()
	if value(t, dropped)-d0 != 1 {
		t.Error("a dropped record must be counted")
	}
	StoreCommitted(3, time.Millisecond, 0, nil)
	if value(t, gauge{StoreDegraded}) != 0 || value(t, committed)-c0 != 3 {
		t.Error("a good commit must clear degraded and count 3 committed records")
	}
}
