package behavior

import (
	"slices"
	"time"

	"github.com/repute-dev/repute/reputation"
)

// Recorder files observations in the ledger and has the verdicts they concern rescored.
type Recorder struct {
	Ledger *reputation.BehaviorLedger
	// Rescore is called once per batch with every ledger key the batch touched.
	Rescore func(keys []string)
	// Persist, when set, is told of every event as filed, so it outlives a restart.
	Persist func(e reputation.BehaviorEvent, keys []string)
	// Standby, when it reports true, makes Record drop everything and the alert endpoint refuse
	// alerts: a standby replica leaves behavior to the leader.
	Standby func() bool
	Now     func() time.Time
}

func (r *Recorder) standingBy() bool { return r != nil && r.Standby != nil && r.Standby() }

// Record files a batch of observations. An event without a time, or dated in the future (clock
// skew between nodes), is dated now: skew must not make a penalty heavier or longer-lived.
func (r *Recorder) Record(batch []Observed) {
	if len(batch) == 0 || r.standingBy() {
		return
	}
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	var touched []string
	for _, o := range batch {
		e := o.Event
		if e.At.IsZero() || e.At.After(now) {
			e.At = now
		}
		r.Ledger.Record(e, o.Target.Keys...)
		if r.Persist != nil {
			r.Persist(e, o.Target.Keys)
		}
		for _, k := range o.Target.Keys {
			if !slices.Contains(touched, k) {
				touched = append(touched, k)
			}
		}
	}
	if r.Rescore != nil {
		r.Rescore(touched)
	}
}
