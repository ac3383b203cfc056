// Package metrics is Repute's Prometheus metrics, registered with component-base's legacy
// registry so that kube-scheduler serves them on its own /metrics endpoint next to its own.
// Every name starts with repute_.
package metrics

import (
	"sync"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/repute-dev/repute/reputation"
)

const subsystem = "repute"

var (
	// Verdicts is the number of images per tier in the verdict cache.
	Verdicts = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Subsystem: subsystem, Name: "verdicts",
		Help:           "Images in the verdict cache, by tier.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"tier"})
	// CacheSize is the number of verdicts cached, whatever their tier.
	CacheSize = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem: subsystem, Name: "verdict_cache_size",
		Help:           "Verdicts held in the verdict cache.",
		StabilityLevel: metrics.ALPHA,
	})
	// Evaluations counts completed evaluations by result: complete, incomplete (some evidence
	// could not be gathered and is retried) or unassessable (the reference does not parse).
	Evaluations = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "evaluations_total",
		Help:           "Image evaluations by result (complete, incomplete, unassessable).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	// EvaluationDuration is how long gathering and weighing one image's evidence took.
	EvaluationDuration = metrics.NewHistogram(&metrics.HistogramOpts{
		Subsystem: subsystem, Name: "evaluation_duration_seconds",
		Help:           "Time to gather and weigh one image's evidence, registry round trips included.",
		Buckets:        metrics.ExponentialBuckets(0.0005, 2, 16), // 0.5ms … 16s
		StabilityLevel: metrics.ALPHA,
	})
	// EvaluationQueueDepth is how many images wait for an evaluation worker.
	EvaluationQueueDepth = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem: subsystem, Name: "evaluation_queue_depth",
		Help:           "Images waiting for an evaluation worker.",
		StabilityLevel: metrics.ALPHA,
	})
	// EvaluationQueueWait is how long an image waited for a worker: with verdictWait, what a pod
	// with a first-seen image waits before it can be placed. Its buckets are finer than
	// client-go's workqueue histogram, whose decades (1 s, 10 s) cannot tell 2 s from 9 s.
	EvaluationQueueWait = metrics.NewHistogram(&metrics.HistogramOpts{
		Subsystem: subsystem, Name: "evaluation_queue_wait_seconds",
		Help:           "Time an image waited in the evaluation queue before a worker took it.",
		Buckets:        metrics.ExponentialBuckets(0.001, 1.5, 30), // 1ms … 127s
		StabilityLevel: metrics.ALPHA,
	})
	// VerificationFailures counts signature checks that did not verify, by kind: unverified (a
	// signature no trusted key made), invalid, or error (the registry could not be read).
	VerificationFailures = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "verification_failures_total",
		Help:           "Signature checks that did not verify, by kind (unverified, invalid, error).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"kind"})
	// StoreWriteDuration is the latency of one batched store commit, fsync included.
	StoreWriteDuration = metrics.NewHistogram(&metrics.HistogramOpts{
		Subsystem: subsystem, Name: "store_write_duration_seconds",
		Help:           "Latency of one batched reputation store commit, fsync included.",
		Buckets:        metrics.ExponentialBuckets(0.0001, 2, 16), // 0.1ms … 3.3s
		StabilityLevel: metrics.ALPHA,
	})
	// StoreRecords counts records committed to the store, by result.
	StoreRecords = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "store_records_total",
		Help:           "Records written to the reputation store, by result (committed, failed, dropped: refused by a full queue).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	// StoreBacklog is how many records wait for the store's writer.
	StoreBacklog = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem: subsystem, Name: "store_backlog",
		Help:           "Records waiting for the reputation store's writer.",
		StabilityLevel: metrics.ALPHA,
	})
	// StoreDegraded is 1 while the store cannot write (scheduling goes on from memory).
	StoreDegraded = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem: subsystem, Name: "store_degraded",
		Help:           "1 while the reputation store cannot write or could not be opened; scheduling goes on from memory.",
		StabilityLevel: metrics.ALPHA,
	})
	// PodsPlaced counts pods bound by Repute, by tier.
	PodsPlaced = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "pods_placed_total",
		Help:           "Pods bound by the Repute scheduler, by tier.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"tier"})
	// PodsMoved counts what happened to running pods whose tier no longer matched their pool.
	PodsMoved = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "misplaced_pods_total",
		Help:           "Running pods whose tier no longer matched their node's pool, by action (evicted, reported, blocked).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"action"})
	// FalcoAlerts counts the alerts the Falco endpoint took, by result (accepted, ignored,
	// rejected) and reason; FalcoRequestsRefused the requests it refused as a whole, by reason
	// (unauthenticated among them).
	FalcoAlerts = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "falco_alerts_total",
		Help:           "Falco alerts received, by result (accepted, ignored, rejected) and reason.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result", "reason"})
	FalcoRequestsRefused = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "falco_requests_refused_total",
		Help:           "Requests to the Falco endpoint refused as a whole, by reason (unauthenticated, too_large, standby, ...).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	// PolicyReloads counts policies put in force (or refused), by result.
	PolicyReloads = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "policy_reloads_total",
		Help:           "Policies loaded, by result (applied, invalid).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	// PolicyRefused is 1 while the ReputationPolicy's latest generation is refused: an older
	// policy stays in force until it is fixed. Alerts watch this, not the counter, which says
	// nothing once the refusal is old.
	PolicyRefused = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem: subsystem, Name: "policy_refused",
		Help:           "1 while the ReputationPolicy's latest generation is refused and an older policy stays in force.",
		StabilityLevel: metrics.ALPHA,
	})
)

// labelValues are every value each vector's label can take: their series exist, at 0, from the
// start, so alerts and dashboards see a rate of 0 rather than no data.
var labelValues = map[*metrics.CounterVec][]string{
	Evaluations:          {"complete", "incomplete", "unassessable"},
	VerificationFailures: {string(reputation.SignatureUnverified), string(reputation.SignatureInvalid), string(reputation.SignatureError)},
	StoreRecords:         {"committed", "failed", "dropped"},
	PodsPlaced:           tiers,
	PodsMoved:            {"evicted", "reported", "blocked"},
	PolicyReloads:        {"applied", "invalid"},
}

// InitFalcoSeries creates the Falco endpoint's series, at 0, for every (result, reason) pair and
// refusal reason it can count (the endpoint's package defines them), so alerts see a rate of 0.
func InitFalcoSeries(alertReasons map[string][]string, refusalReasons []string) {
	for result, reasons := range alertReasons {
		for _, reason := range reasons {
			FalcoAlerts.WithLabelValues(result, reason)
		}
	}
	for _, reason := range refusalReasons {
		FalcoRequestsRefused.WithLabelValues(reason)
	}
}

var tiers = []string{string(reputation.TierTrusted), string(reputation.TierUnknown), string(reputation.TierUntrusted)}

var registerOnce sync.Once

// Register adds the metrics to the legacy registry; calling it again does nothing.
func Register() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(Verdicts, CacheSize, Evaluations, EvaluationDuration, EvaluationQueueDepth, EvaluationQueueWait, VerificationFailures, FalcoAlerts, FalcoRequestsRefused,
			StoreWriteDuration, StoreRecords, StoreBacklog, StoreDegraded, PodsPlaced, PodsMoved, PolicyReloads, PolicyRefused)
		for vec, values := range labelValues {
			for _, v := range values {
				vec.WithLabelValues(v)
			}
		}
		for _, t := range tiers {
			Verdicts.WithLabelValues(t)
		}
	})
}

// VerdictChanged keeps the per-tier and size gauges in step with the cache; subscribe it to
// the cache before anything is published.
func VerdictChanged(_ string, old, v *reputation.Verdict) {
	if old != nil {
		Verdicts.WithLabelValues(string(old.Tier)).Dec()
	} else {
		CacheSize.Inc()
	}
	Verdicts.WithLabelValues(string(v.Tier)).Inc()
}

// VerdictForgotten takes a verdict dropped from the cache (its image unused) out of the gauges.
func VerdictForgotten(v *reputation.Verdict) {
	CacheSize.Dec()
	Verdicts.WithLabelValues(string(v.Tier)).Dec()
}

// Evaluated records one evaluation.
func Evaluated(ev *reputation.Evidence, _ *reputation.Verdict, elapsed time.Duration, incomplete bool) {
	result := "complete"
	switch {
	case ev == nil:
		result = "unassessable"
	case incomplete:
		result = "incomplete"
	}
	Evaluations.WithLabelValues(result).Inc()
	EvaluationDuration.Observe(elapsed.Seconds())
	if ev != nil && ev.Signature != nil {
		switch s := ev.Signature.State; s {
		case reputation.SignatureUnverified, reputation.SignatureInvalid, reputation.SignatureError:
			VerificationFailures.WithLabelValues(string(s)).Inc()
		}
	}
}

// StoreDropped records a record the store refused because its queue was full.
func StoreDropped() { StoreRecords.WithLabelValues("dropped").Inc() }

// StoreCommitted records one store commit.
func StoreCommitted(records int, elapsed time.Duration, backlog int64, err error) {
	StoreWriteDuration.Observe(elapsed.Seconds())
	StoreBacklog.Set(float64(backlog))
	if err != nil {
		StoreRecords.WithLabelValues("failed").Add(float64(records))
		StoreDegraded.Set(1)
		return
	}
	StoreRecords.WithLabelValues("committed").Add(float64(records))
	StoreDegraded.Set(0)
}
